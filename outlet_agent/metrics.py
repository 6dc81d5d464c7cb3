"""Prometheus metrics of one outlet agent (``GET /metrics``), in its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class OutletMetrics:
    def __init__(self, store_id: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"store_id": store_id}
        r = self.registry
        self.accepted = Counter(
            "outlet_events_accepted", "Events made durable (201)", ["store_id"], registry=r
        ).labels(**labels)
        self.duplicates = Counter(
            "outlet_events_duplicate",
            "Repeats of a client_txn_id with the same content (200)",
            ["store_id"],
            registry=r,
        ).labels(**labels)
        self._rejected = Counter(
            "outlet_events_rejected",
            "Events refused, by HTTP status (401, 403, 409, 413, 422, 503)",
            ["store_id", "status"],
            registry=r,
        )
        self._errors = Counter(
            "outlet_errors",
            "Errors by kind (log, forward, central)",
            ["store_id", "kind"],
            registry=r,
        )
        self.forwarded = Counter(
            "outlet_forwarded_events",
            "Events acknowledged by the broker (rate() = forward rate)",
            ["store_id"],
            registry=r,
        ).labels(**labels)
        self.forward_records = Counter(
            "outlet_forwarded_records",
            "Kafka records sent (a packed record holds several events)",
            ["store_id"],
            registry=r,
        ).labels(**labels)
        self.forward_pages = Counter(
            "outlet_forward_pages",
            "Pages sent, each waiting for its acknowledgement: a backlog's round trips",
            ["store_id"],
            registry=r,
        ).labels(**labels)
        self.backlog = Gauge(
            "outlet_backlog_events",
            "Events durable but not yet acked by the broker",
            ["store_id"],
            registry=r,
        ).labels(**labels)
        self.oldest_unsent_age = Gauge(
            "outlet_oldest_unsent_age_seconds",
            "Age of the oldest unforwarded event",
            ["store_id"],
            registry=r,
        ).labels(**labels)
        self.last_seq = Gauge(
            "outlet_last_seq", "Highest outlet_seq assigned", ["store_id"], registry=r
        ).labels(**labels)
        self.forwarded_seq = Gauge(
            "outlet_forwarded_seq",
            "Every seq up to this was acked by the broker",
            ["store_id"],
            registry=r,
        ).labels(**labels)
        self.broker_connected = Gauge(
            "outlet_broker_connected",
            "1 if the last send to the broker succeeded",
            ["store_id"],
            registry=r,
        ).labels(**labels)
        self.group_size = Histogram(
            "outlet_group_commit_events",
            "Events per group commit",
            ["store_id"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
            registry=r,
        ).labels(**labels)
        self._labels = labels

    def rejected(self, status: int, n: int = 1) -> None:
        self._rejected.labels(status=str(status), **self._labels).inc(n)

    def error(self, kind: str) -> None:
        self._errors.labels(kind=kind, **self._labels).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
