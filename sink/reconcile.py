"""Compare the live ``stock`` table with ``stock_levels`` and the ledger sums.

SPEC "What is promised": once the stream is drained, ``stock_levels`` equals the
``stock`` table and the ledger holds every accepted event once. Three views of
``on_hand`` per (store, sku) must agree:

- the table, read from its changelog topic ``{app_id}-stock-changelog`` to the
  end (the last value per key wins, a tombstone deletes the key);
- ``stock_levels``;
- the ledger: a count sets ``on_hand``, so it is the qty of the latest count
  (highest ``outlet_seq``, 0 if none) plus the deltas after it; ``ignored`` rows
  count for nothing. That is SPEC rule 4, so the sum does not depend on the
  order the events arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import orjson

from app.settings import Settings

KEY_SEP = "\x1f"

LEDGER_ON_HAND = """
WITH last_count AS (
    SELECT DISTINCT ON (store_id, sku) store_id, sku, outlet_seq AS seq, qty
    FROM ledger WHERE effect = 'count'
    ORDER BY store_id, sku, outlet_seq DESC, line_no DESC
)
SELECT l.store_id, l.sku,
       coalesce(c.qty, 0) + coalesce(sum(l.qty) FILTER (
           WHERE l.effect = 'delta' AND l.outlet_seq > coalesce(c.seq, 0)), 0) AS on_hand
FROM ledger l LEFT JOIN last_count c USING (store_id, sku)
GROUP BY l.store_id, l.sku, c.qty, c.seq
"""


@dataclass(frozen=True, slots=True)
class Difference:
    """One (store, sku) whose three views disagree; ``None`` = no row there."""

    store_id: str
    sku: str
    table: int | None
    stock_levels: int | None
    ledger: int | None

    @property
    def reason(self) -> str:
        if self.table is None:
            return "missing from the stock table"
        if self.stock_levels is None:
            return "missing from stock_levels"
        parts = []
        if self.stock_levels != self.table:
            parts.append("stock_levels ≠ table")
        if self.ledger != self.table:
            parts.append("ledger ≠ table")
        return ", ".join(parts)


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-stock-changelog"


async def read_table(settings: Settings, topic: str | None = None) -> dict[tuple[str, str], int]:
    """The live ``stock`` table: its changelog read to the end, last value per key.

    Faust writes table keys and values with the json codec: the key is the
    JSON string ``"store\\x1fsku"``, the value a JSON object with ``on_hand``.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from app.changelog_ends import FETCH_WAIT_MS, records_to_end
    from app.security import aiokafka_security

    topic = topic or changelog_topic(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        # Tansu on S3 answers nothing when it cannot list a partition in time
        fetch_max_wait_ms=FETCH_WAIT_MS,
        **aiokafka_security(settings),
    )
    await consumer.start()
    table: dict[tuple[str, str], int] = {}
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer.force_metadata_update()  # the first lookup may be lazy
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return table
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # not end_offsets: Tansu on S3 under-reports it (app/changelog_ends.py)
        async for msg in records_to_end(consumer, tps):
            key = orjson.loads(msg.key)
            store_id, _, sku = str(key).partition(KEY_SEP)
            if msg.value is None:
                table.pop((store_id, sku), None)
            else:
                table[(store_id, sku)] = int(orjson.loads(msg.value).get("on_hand", 0))
    finally:
        await consumer.stop()
    return table


async def read_postgres(
    dsn: str,
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """(stock_levels on_hand, ledger-implied on_hand) per (store, sku)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            levels = {
                (r["store_id"], r["sku"]): int(r["on_hand"])
                for r in await conn.fetch("SELECT store_id, sku, on_hand FROM stock_levels")
            }
            ledger = {
                (r["store_id"], r["sku"]): int(r["on_hand"])
                for r in await conn.fetch(LEDGER_ON_HAND)
            }
    finally:
        await conn.close()
    return levels, ledger


def compare(
    table: dict[tuple[str, str], int],
    levels: dict[tuple[str, str], int],
    ledger: dict[tuple[str, str], int],
) -> list[Difference]:
    diffs = []
    for key in sorted(table.keys() | levels.keys() | ledger.keys()):
        t, s = table.get(key), levels.get(key)
        # a key with no ledger rows (e.g. only reservations) implies 0 units
        g = ledger.get(key, 0)
        if t is None and s is None and g == 0:
            continue  # only ledger rows that changed nothing (an ignored void)
        if t is None or s != t or g != t:
            diffs.append(Difference(key[0], key[1], t, s, ledger.get(key)))
    return diffs


async def reconcile(settings: Settings) -> list[Difference]:
    """Every (store, sku) where the table, ``stock_levels`` and the ledger disagree."""
    table = await read_table(settings)
    levels, ledger = await read_postgres(settings.database_url.get_secret_value())
    return compare(table, levels, ledger)
