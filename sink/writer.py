"""Write one batch of the stream's output to PostgreSQL in one transaction.

Idempotence is data (STYLE): every statement says why it is safe to repeat.

- ``ledger``: keyed by (store_id, outlet_seq, line_no), ``ON CONFLICT DO
  NOTHING``; the apply agent re-emits rows for duplicates so a lost record is
  repaired, and a repeated one is a no-op (SPEC "Postgres converges").
- ``stock_levels``: a snapshot only overwrites the row when its ``ver`` is
  higher. ``ver`` counts the changes made to that key (one per event effect or
  reservation change), so for a given history it is the same number whoever
  computes it: after a crash, a redelivery or a replay from offset 0. The
  snapshot's ``applied_seq`` is *not* a version: it includes the store's
  watermark at the moment the key was written, which depends on how the events
  were batched, so a replayed key can come back with a lower ``applied_seq``
  and a newer ``on_hand``. Guarding on it first would freeze such a row.
- a withdrawn void (another void of its sale had a smaller seq): its ledger
  rows are set to ``ignored``; setting them again changes nothing.
- ``outlet_sync`` / ``sales_minute``: guarded by their monotonic counters.
- ``sink_offsets``: the consumed offsets, in the same transaction; records at
  or below them are skipped, so a replayed batch writes nothing at all.

COPY into temp tables then one ``INSERT … SELECT`` per table keeps a batch at a
handful of round trips (STYLE "Batches, not events").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

LEDGER_COLUMNS = (
    "store_id", "outlet_seq", "line_no", "event_id", "type", "sku", "qty", "effect",
    "unit_price_cents", "reason", "ref", "occurred_at", "recorded_at", "applied_at",
    "sent_at",
)  # fmt: skip
STOCK_COLUMNS = ("store_id", "sku", "on_hand", "reserved", "applied_seq", "ver", "updated_at")

_LEDGER_LIST = ", ".join(LEDGER_COLUMNS)
_STOCK_LIST = ", ".join(STOCK_COLUMNS)

INSERT_LEDGER = f"""
WITH ins AS (
    INSERT INTO ledger ({_LEDGER_LIST})
    SELECT {_LEDGER_LIST} FROM tmp_ledger
    ON CONFLICT (store_id, outlet_seq, line_no) DO NOTHING
    RETURNING store_id, recorded_at
)
SELECT store_id, count(*) AS n,
       extract(epoch FROM min(recorded_at))::float8 AS oldest,
       extract(epoch FROM max(recorded_at))::float8 AS newest
FROM ins GROUP BY store_id
"""

# Rows of a withdrawn void: inserted before (an earlier record of the same
# partition, or this batch's INSERT_LEDGER), so the update finds them.
WITHDRAW_VOIDS = """
UPDATE ledger SET effect = 'ignored'
FROM unnest($1::text[], $2::bigint[]) AS w(store_id, outlet_seq)
WHERE ledger.store_id = w.store_id AND ledger.outlet_seq = w.outlet_seq
  AND ledger.type = 'void' AND ledger.effect <> 'ignored'
"""

# SPEC "What is promised": stock_levels converges to the table. ``ver`` is the
# key's version (see the module docstring), so an older or repeated snapshot
# never overwrites a newer one.
UPSERT_STOCK = f"""
INSERT INTO stock_levels AS s ({_STOCK_LIST})
SELECT {_STOCK_LIST} FROM tmp_stock
ON CONFLICT (store_id, sku) DO UPDATE SET
    on_hand = excluded.on_hand, reserved = excluded.reserved,
    applied_seq = excluded.applied_seq, ver = excluded.ver,
    updated_at = excluded.updated_at
WHERE s.ver < excluded.ver
"""

UPSERT_SYNC = """
INSERT INTO outlet_sync AS o (store_id, applied_seq, highest_seq, missing, gaps,
    duplicates, conflicts, events, lag_p50_ms, lag_p99_ms, last_recorded_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)
ON CONFLICT (store_id) DO UPDATE SET
    applied_seq = excluded.applied_seq, highest_seq = excluded.highest_seq,
    missing = excluded.missing, gaps = excluded.gaps,
    duplicates = excluded.duplicates, conflicts = excluded.conflicts,
    events = excluded.events, lag_p50_ms = excluded.lag_p50_ms,
    lag_p99_ms = excluded.lag_p99_ms, last_recorded_at = excluded.last_recorded_at,
    updated_at = clock_timestamp()
WHERE (o.events, o.duplicates, o.conflicts)
    < (excluded.events, excluded.duplicates, excluded.conflicts)
"""

UPSERT_SALES = """
INSERT INTO sales_minute AS m (store_id, minute, units, revenue_cents, events)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (store_id, minute) DO UPDATE SET
    units = excluded.units, revenue_cents = excluded.revenue_cents,
    events = excluded.events
WHERE m.events < excluded.events
"""

INSERT_DEAD = """
INSERT INTO dead_letters (key, kind, store_id, reasons, event, at)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6)
ON CONFLICT (key) DO NOTHING
"""

UPSERT_OFFSETS = """
INSERT INTO sink_offsets AS o (topic, partition, "offset")
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])
ON CONFLICT (topic, partition) DO UPDATE SET
    "offset" = GREATEST(o."offset", excluded."offset"),
    updated_at = clock_timestamp()
"""

LOCK_OFFSETS = """
SELECT topic, partition, "offset" FROM sink_offsets
WHERE (topic, partition) IN (SELECT * FROM unnest($1::text[], $2::int[]))
ORDER BY topic, partition
FOR UPDATE
"""


@dataclass(slots=True)
class SinkRecord:
    topic: str
    partition: int
    offset: int
    value: dict[str, Any]


@dataclass(slots=True)
class StoreCommit:
    """What one batch committed for one store (for the lag figures)."""

    rows: int
    oldest_recorded_at: float
    newest_recorded_at: float


@dataclass(slots=True)
class WriteResult:
    ledger_rows: int = 0
    stock_rows: int = 0
    skipped_records: int = 0
    #: store_id -> the ledger rows this batch inserted (not the repeated ones)
    stores: dict[str, StoreCommit] = field(default_factory=dict)


def _ts(value: Any) -> datetime:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value))


def _ts_or_none(value: Any) -> datetime | None:
    """A row from a worker older than the ``sent_at`` column has none."""
    return None if value is None else _ts(value)


async def ensure_temp_tables(conn: asyncpg.Connection) -> None:
    """Session temp tables for COPY (emptied at every COMMIT or ROLLBACK)."""
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS tmp_ledger"
        " (LIKE ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
        " CREATE TEMP TABLE IF NOT EXISTS tmp_stock"
        " (LIKE stock_levels INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )


@dataclass
class _Batch:
    ledger: list[tuple[Any, ...]] = field(default_factory=list)
    stock: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    sync: dict[str, dict[str, Any]] = field(default_factory=dict)
    sales: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    dead: list[tuple[Any, ...]] = field(default_factory=list)
    #: (store_id, outlet_seq) of withdrawn voids
    withdrawn: set[tuple[str, int]] = field(default_factory=set)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, value: dict[str, Any]) -> None:
        if "reasons" in value:  # a dead letter (SPEC rule 6)
            self.dead.append(
                (
                    value["key"],
                    value.get("kind", "invalid"),
                    value.get("store_id"),
                    orjson.dumps(value["reasons"]).decode(),
                    orjson.dumps(value.get("event")).decode(),
                    _ts(value["at"]),
                )
            )
            return
        for row in value.get("ledger", ()):
            self.ledger.append(
                (
                    row["store_id"], row["outlet_seq"], row["line_no"], row["event_id"],
                    row["type"], row["sku"], row["qty"], row["effect"],
                    row.get("unit_price_cents"), row.get("reason"), row.get("ref"),
                    _ts(row["occurred_at"]), _ts(row["recorded_at"]), _ts(row["applied_at"]),
                    _ts_or_none(row.get("sent_at")),
                )
            )  # fmt: skip
        self.withdrawn.update((value["store_id"], int(seq)) for seq in value.get("withdrawn", ()))
        for snap in value.get("stock", ()):
            k = (snap["store_id"], snap["sku"])
            old = self.stock.get(k)
            if old is None or old["ver"] <= snap["ver"]:
                self.stock[k] = snap
        progress = value.get("progress")
        if progress:
            old_p = self.sync.get(value["store_id"])
            if old_p is None or _sync_version(old_p) <= _sync_version(progress):
                self.sync[value["store_id"]] = progress
        for bucket in value.get("sales", ()):
            sk = (bucket["store_id"], bucket["minute"])
            old_b = self.sales.get(sk)
            if old_b is None or old_b["events"] <= bucket["events"]:
                self.sales[sk] = bucket


def _sync_version(p: dict[str, Any]) -> tuple[int, int, int]:
    return (int(p["events"]), int(p.get("duplicates", 0)), int(p.get("conflicts", 0)))


async def write_batch(conn: asyncpg.Connection, records: Sequence[SinkRecord]) -> WriteResult:
    """Write ``records`` in one transaction; a repeated or replayed batch changes nothing."""
    result = WriteResult()
    tps = sorted({(r.topic, r.partition) for r in records})
    async with conn.transaction():
        # Lock this batch's offset rows: a second worker that still holds a
        # revoked partition waits here, then skips what we wrote.
        done = {
            (r["topic"], r["partition"]): r["offset"]
            for r in await conn.fetch(LOCK_OFFSETS, [t for t, _ in tps], [p for _, p in tps])
        }
        batch = _Batch()
        for rec in records:
            tp = (rec.topic, rec.partition)
            if rec.offset <= done.get(tp, -1):
                result.skipped_records += 1
                continue
            batch.offsets[tp] = max(batch.offsets.get(tp, -1), rec.offset)
            batch.add(rec.value)

        if batch.ledger:
            await conn.copy_records_to_table(
                "tmp_ledger", records=batch.ledger, columns=LEDGER_COLUMNS
            )
            for r in await conn.fetch(INSERT_LEDGER):
                result.ledger_rows += r["n"]
                result.stores[r["store_id"]] = StoreCommit(r["n"], r["oldest"], r["newest"])
        if batch.withdrawn:
            stores, seqs = zip(*sorted(batch.withdrawn), strict=True)
            await conn.execute(WITHDRAW_VOIDS, list(stores), list(seqs))
        if batch.stock:
            await conn.copy_records_to_table(
                "tmp_stock",
                records=[
                    (
                        s["store_id"], s["sku"], s["on_hand"], s.get("reserved", 0),
                        s["applied_seq"], s["ver"], _ts(s["updated_at"]),
                    )
                    for s in batch.stock.values()
                ],
                columns=STOCK_COLUMNS,
            )  # fmt: skip
            status = await conn.execute(UPSERT_STOCK)
            result.stock_rows = int(status.split()[-1])
        if batch.sync:
            await conn.executemany(
                UPSERT_SYNC,
                [
                    (
                        p["store_id"], p["applied_seq"], p["highest_seq"], p.get("missing", 0),
                        orjson.dumps(p.get("gaps", [])).decode(), p.get("duplicates", 0),
                        p.get("conflicts", 0), p["events"], p.get("lag_p50_ms"),
                        p.get("lag_p99_ms"),
                        _ts(p["last_recorded_at"]) if p.get("last_recorded_at") else None,
                    )
                    for p in batch.sync.values()
                ],
            )  # fmt: skip
        if batch.sales:
            await conn.executemany(
                UPSERT_SALES,
                [
                    (b["store_id"], _ts(b["minute"]), b["units"], b["revenue_cents"], b["events"])
                    for b in batch.sales.values()
                ],
            )
        if batch.dead:
            await conn.executemany(INSERT_DEAD, batch.dead)
        if batch.offsets:
            items = sorted(batch.offsets.items())
            await conn.execute(
                UPSERT_OFFSETS,
                [t for (t, _), _ in items],
                [p for (_, p), _ in items],
                [o for _, o in items],
            )
    return result
