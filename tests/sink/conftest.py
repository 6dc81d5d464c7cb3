"""Helpers for the Postgres sink tests: histories, fast producing, Postgres probes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from app.settings import Settings
from devstack.postgres import EmbeddedPostgres
from sink.reconcile import Difference, reconcile
from tests.helpers import make_event, wait_for

SKUS = [f"SKU-{i:02d}" for i in range(12)]


def history(
    stores: list[str], n: int, *, seed: int = 7, first_seq: int = 1
) -> list[dict[str, Any]]:
    """``n`` events per store, every type that moves stock, counts included.

    Within each store the seqs are lightly shuffled (gaps that fill later,
    SPEC rule 3) and a few events are sent twice (duplicates, rule 2).
    """
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for store in stores:
        events = []
        for seq in range(first_seq, first_seq + n):
            kind = rng.choices(
                ["sale", "receipt", "return", "adjustment", "count"], [60, 15, 8, 7, 4]
            )[0]
            skus = rng.sample(SKUS, rng.randint(1, 3))
            lines = [
                {"sku": s, "qty": rng.randint(1, 5 if kind != "receipt" else 40)} for s in skus
            ]
            extra: dict[str, Any] = {}
            if kind == "adjustment":
                extra["reason"] = "damage"
            events.append(make_event(store, seq, kind, lines, **extra))
        for i in range(0, len(events) - 3, 7):  # local reordering
            j = i + rng.randint(1, 3)
            events[i], events[j] = events[j], events[i]
        dups = [dict(e) for e in rng.sample(events, max(1, n // 50))]
        for d in dups:
            events.insert(rng.randrange(len(events)), d)
        out.extend(events)
    return out


def ledger_lines(events: list[dict[str, Any]]) -> int:
    """Rows the ledger must hold: one per line of each distinct (store, seq)."""
    seen = {(e["store_id"], e["outlet_seq"]): len(e["lines"]) for e in events}
    return sum(seen.values())


async def produce_fast(
    bootstrap: str, topic: str, events: list[dict[str, Any]], *, pack: int = 1
) -> None:
    """Send in order per store (key = store_id), many in flight, like the forwarder;
    ``pack`` > 1: runs of a store's events in one record, as it drains a backlog."""
    from aiokafka import AIOKafkaProducer

    records: list[tuple[bytes, list[dict[str, Any]]]] = []
    for e in events:
        key = e["store_id"].encode()
        if pack > 1 and records and records[-1][0] == key and len(records[-1][1]) < pack:
            records[-1][1].append(e)
        else:
            records.append((key, [e]))
    # aiokafka keeps one batch in flight per partition: order per store is kept
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, orjson.dumps(run if pack > 1 else run[0]), key=key)
            for key, run in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def pg(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except (asyncpg.UndefinedTableError, asyncpg.CannotConnectNowError):
        return []


def ledger_count(dsn: str) -> int:
    rows = pg(dsn, "SELECT count(*) AS n FROM ledger")
    return int(rows[0]["n"]) if rows else 0


def settings_for(env: dict[str, str]) -> Settings:
    return Settings(
        kafka_brokers=env["RETAIL_KAFKA_BROKERS"],
        database_url=SecretStr(env["RETAIL_DATABASE_URL"]),
        app_id=env["RETAIL_APP_ID"],
        events_topic=env["RETAIL_EVENTS_TOPIC"],
    )


def wait_converged(env: dict[str, str], expected_rows: int, *, timeout: float = 90) -> None:
    """Every line in the ledger once, and table = stock_levels = ledger (reconcile clean)."""
    dsn = env["RETAIL_DATABASE_URL"]
    wait_for(
        lambda: ledger_count(dsn) >= expected_rows,
        timeout=timeout,
        what=f"{expected_rows} ledger rows",
        interval=0.5,
    )
    last: list[list[Difference]] = [[]]

    def clean() -> bool:
        last[0] = asyncio.run(reconcile(settings_for(env)))
        return not last[0]

    try:
        wait_for(clean, timeout=timeout, what="reconcile clean", interval=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; differences: {last[0][:10]}") from None
    assert ledger_count(dsn) == expected_rows
    dup = pg(
        dsn,
        "SELECT count(*) AS n FROM (SELECT store_id, outlet_seq FROM ledger"
        " GROUP BY store_id, outlet_seq HAVING count(DISTINCT event_id) > 1) d",
    )
    assert dup[0]["n"] == 0


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, to stop and start without touching the shared one."""
    server = EmbeddedPostgres(tmp_path / "pg")
    server.start()
    try:
        yield server
    finally:
        server.kill()
