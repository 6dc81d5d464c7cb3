"""Prometheus metrics of a central worker (``GET /metrics`` on the worker's web port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

EVENTS_APPLIED = Counter(
    "retail_events_applied_total", "Events applied for the first time", registry=REGISTRY
)
DUPLICATES = Counter("retail_duplicates_total", "Duplicate events dropped", registry=REGISTRY)
DEAD_LETTERS = Counter(
    "retail_dead_letters_total", "Events sent to dead letters", ["kind"], registry=REGISTRY
)
GAPS = Gauge(
    "retail_gap_seqs", "Missing seqs below the highest applied, all stores", registry=REGISTRY
)
APPLY_LAG = Histogram(
    "retail_apply_lag_seconds",
    "recorded_at at the outlet to applied centrally",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "retail_apply_batch_seconds", "Time to apply and flush one batch", registry=REGISTRY
)
FLUSH_SECONDS = Histogram(
    "retail_apply_flush_seconds",
    "Part of a batch spent waiting for the broker to acknowledge its writes (the worker idles)",
    registry=REGISTRY,
)
FETCH_HOLES = Counter(
    "retail_fetch_holes_total",
    "Fetched batches that skipped offsets: seen (fetched again), filled, read_past (lost)",
    ["outcome"],
    registry=REGISTRY,
)
CHANGELOG_SELF_READS = Counter(
    "retail_changelog_self_reads_total",
    "Own changelog records read back after recovery and not applied (app/changelog_guard.py)",
    registry=REGISTRY,
)
PARTITIONS_WARMING = Gauge(
    "retail_partitions_warming",
    "Partitions this worker restores as a standby before it takes them over (app/warmup.py)",
    registry=REGISTRY,
)
WARMUP_RECORDS_TO_GO = Gauge(
    "retail_warmup_records_to_go",
    "Changelog records this worker still reads before its warming partitions are warm",
    registry=REGISTRY,
)
WARM_HANDOVERS = Counter(
    "retail_warm_handovers_total",
    "Rebalances this worker asked for to take over partitions it had warmed up",
    registry=REGISTRY,
)
SINK_ROWS = Counter("retail_sink_rows_total", "Ledger rows written to Postgres", registry=REGISTRY)
SINK_LAG = Histogram(
    "retail_sink_lag_seconds",
    "recorded_at at the outlet to committed in Postgres",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
SINK_ERRORS = Counter(
    "retail_sink_errors_total", "Failed Postgres batches (retried)", registry=REGISTRY
)
SINK_BEHIND = Gauge(
    "retail_sink_behind_seconds", "Age of the oldest record not yet in Postgres", registry=REGISTRY
)
