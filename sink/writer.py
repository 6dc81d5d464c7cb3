"""Write one batch of the stream's output to PostgreSQL in one transaction.

Idempotence is data (STYLE): ledger rows are keyed by (store_id, outlet_seq,
line_no) and inserted ``ON CONFLICT DO NOTHING``; ``stock_levels`` is only
overwritten by a snapshot with a higher (applied_seq, ver); the consumed
offsets go to ``sink_offsets`` in the same transaction, and records at or below
them are skipped, so a replayed batch is a no-op.
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
)  # fmt: skip


@dataclass(slots=True)
class SinkRecord:
    topic: str
    partition: int
    offset: int
    value: dict[str, Any]


@dataclass(slots=True)
class WriteResult:
    ledger_rows: int = 0
    skipped_records: int = 0
    recorded_at: list[float] = field(default_factory=list)


def _ts(value: Any) -> datetime:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value))


async def ensure_temp_tables(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS tmp_ledger"
        " (LIKE ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )


async def write_batch(conn: asyncpg.Connection, records: Sequence[SinkRecord]) -> WriteResult:
    result = WriteResult()
    async with conn.transaction():
        done = {
            (r["topic"], r["partition"]): r["offset"]
            for r in await conn.fetch(
                'SELECT topic, partition, "offset" FROM sink_offsets FOR UPDATE'
            )
        }
        ledger: list[tuple[Any, ...]] = []
        stock: dict[tuple[str, str], dict[str, Any]] = {}
        sync: dict[str, dict[str, Any]] = {}
        sales: dict[tuple[str, str], dict[str, Any]] = {}
        dead: list[tuple[Any, ...]] = []
        offsets: dict[tuple[str, int], int] = {}
        for rec in records:
            tp = (rec.topic, rec.partition)
            if rec.offset <= done.get(tp, -1):
                result.skipped_records += 1
                continue
            offsets[tp] = max(offsets.get(tp, -1), rec.offset)
            value = rec.value
            if "reasons" in value:
                dead.append(
                    (
                        value["key"],
                        value.get("kind", "invalid"),
                        value.get("store_id"),
                        orjson.dumps(value["reasons"]).decode(),
                        orjson.dumps(value.get("event")).decode(),
                        _ts(value["at"]),
                    )
                )
                continue
            for row in value.get("ledger", ()):
                ledger.append(
                    (
                        row["store_id"], row["outlet_seq"], row["line_no"], row["event_id"],
                        row["type"], row["sku"], row["qty"], row["effect"],
                        row.get("unit_price_cents"), row.get("reason"), row.get("ref"),
                        _ts(row["occurred_at"]), _ts(row["recorded_at"]), _ts(row["applied_at"]),
                    )
                )  # fmt: skip
                result.recorded_at.append(_ts(row["recorded_at"]).timestamp())
            for snap in value.get("stock", ()):
                k = (snap["store_id"], snap["sku"])
                old = stock.get(k)
                if old is None or (old["applied_seq"], old["ver"]) <= (
                    snap["applied_seq"],
                    snap["ver"],
                ):
                    stock[k] = snap
            if value.get("progress"):
                sync[value["store_id"]] = value["progress"]
            for bucket in value.get("sales", ()):
                sales[(bucket["store_id"], bucket["minute"])] = bucket

        if ledger:
            await conn.copy_records_to_table("tmp_ledger", records=ledger, columns=LEDGER_COLUMNS)
            status = await conn.execute(
                f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)})"
                f" SELECT {', '.join(LEDGER_COLUMNS)} FROM tmp_ledger"
                " ON CONFLICT (store_id, outlet_seq, line_no) DO NOTHING"
            )
            result.ledger_rows = int(status.split()[-1])
        if stock:
            await conn.executemany(
                """
                INSERT INTO stock_levels AS s
                    (store_id, sku, on_hand, reserved, applied_seq, ver, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (store_id, sku) DO UPDATE SET
                    on_hand = excluded.on_hand, reserved = excluded.reserved,
                    applied_seq = excluded.applied_seq, ver = excluded.ver,
                    updated_at = excluded.updated_at
                WHERE (s.applied_seq, s.ver) < (excluded.applied_seq, excluded.ver)
                """,
                [
                    (
                        s["store_id"], s["sku"], s["on_hand"], s["reserved"],
                        s["applied_seq"], s["ver"], _ts(s["updated_at"]),
                    )
                    for s in stock.values()
                ],
            )  # fmt: skip
        if sync:
            await conn.executemany(
                """
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
                WHERE (o.events, o.duplicates) <= (excluded.events, excluded.duplicates)
                """,
                [
                    (
                        p["store_id"], p["applied_seq"], p["highest_seq"], p.get("missing", 0),
                        orjson.dumps(p.get("gaps", [])).decode(), p["duplicates"],
                        p.get("conflicts", 0), p["events"], p.get("lag_p50_ms"),
                        p.get("lag_p99_ms"),
                        _ts(p["last_recorded_at"]) if p.get("last_recorded_at") else None,
                    )
                    for p in sync.values()
                ],
            )  # fmt: skip
        if sales:
            await conn.executemany(
                """
                INSERT INTO sales_minute AS m (store_id, minute, units, revenue_cents, events)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (store_id, minute) DO UPDATE SET
                    units = excluded.units, revenue_cents = excluded.revenue_cents,
                    events = excluded.events
                WHERE m.events < excluded.events
                """,
                [
                    (b["store_id"], _ts(b["minute"]), b["units"], b["revenue_cents"], b["events"])
                    for b in sales.values()
                ],
            )
        if dead:
            await conn.executemany(
                """
                INSERT INTO dead_letters (key, kind, store_id, reasons, event, at)
                VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6)
                ON CONFLICT (key) DO NOTHING
                """,
                dead,
            )
        if offsets:
            await conn.executemany(
                """
                INSERT INTO sink_offsets AS o (topic, partition, "offset") VALUES ($1, $2, $3)
                ON CONFLICT (topic, partition) DO UPDATE SET
                    "offset" = GREATEST(o."offset", excluded."offset"),
                    updated_at = clock_timestamp()
                """,
                [(t, p, o) for (t, p), o in offsets.items()],
            )
    return result
