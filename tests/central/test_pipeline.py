"""Events on the topic reach the stock table, the central view and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from devstack import DevStack
from tests.conftest import produce
from tests.helpers import WorkerProcess, make_event, wait_for

pytestmark = pytest.mark.e2e


def stock(worker: WorkerProcess, store: str, sku: str) -> dict[str, int]:
    response = httpx.get(f"{worker.url}/api/stores/{store}/stock/{sku}", timeout=5)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def pg(dsn: str, query: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except asyncpg.UndefinedTableError:
        return []


def test_events_reach_view_and_postgres(
    stack: DevStack, app_env: dict[str, str], worker: WorkerProcess
) -> None:
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    events = [
        make_event("S1", 1, "receipt", [{"sku": "A", "qty": 10}]),
        make_event("S1", 2, "sale", [{"sku": "A", "qty": 3}, {"sku": "B", "qty": 1}]),
        make_event("S2", 1, "sale", [{"sku": "A", "qty": 2}]),
    ]
    dup = dict(events[1])
    before = time.time()
    asyncio.run(produce(stack.broker.bootstrap, topic, [*events, dup]))
    after = time.time()

    wait_for(
        lambda: stock(worker, "S1", "A")["applied_seq"] == 2,
        timeout=30,
        what="S1 applied up to seq 2",
    )
    assert stock(worker, "S1", "A")["on_hand"] == 7
    assert stock(worker, "S1", "B")["on_hand"] == -1
    wait_for(lambda: stock(worker, "S2", "A")["on_hand"] == -2, timeout=30, what="S2 applied")

    dsn = app_env["RETAIL_DATABASE_URL"]
    rows = wait_for(
        lambda: (
            (r := pg(dsn, "SELECT store_id, sku, on_hand FROM stock_levels")) and len(r) == 3 and r
        ),
        timeout=30,
        what="three stock_levels rows",
    )
    assert {(r["store_id"], r["sku"]): r["on_hand"] for r in rows} == {
        ("S1", "A"): 7,
        ("S1", "B"): -1,
        ("S2", "A"): -2,
    }
    ledger = pg(dsn, "SELECT count(*) AS n FROM ledger")
    assert ledger[0]["n"] == 4  # 1 + 2 + 1 lines, the duplicate not twice
    # each row keeps when its record was sent (the Kafka timestamp), which
    # splits the sync lag into the store side and the centre
    stamps = pg(dsn, "SELECT sent_at, applied_at FROM ledger")
    for row in stamps:
        assert row["sent_at"] is not None
        assert before - 0.01 <= row["sent_at"].timestamp() <= after + 0.01
        assert row["sent_at"] <= row["applied_at"]
    sync = wait_for(
        lambda: pg(dsn, "SELECT duplicates FROM outlet_sync WHERE store_id = 'S1'"),
        timeout=10,
        what="outlet_sync row",
    )
    assert sync[0]["duplicates"] == 1


def test_the_first_void_in_seq_order_counts_when_a_later_one_came_first(
    stack: DevStack, app_env: dict[str, str], worker: WorkerProcess
) -> None:
    """SPEC rules 1 and 4 with two voids of one sale: seq 3 voids it, the count at
    seq 4 supersedes that, and seq 5 changes nothing. Seq 5 arrives first and is
    applied; when seq 3 comes it takes its place, everywhere."""
    topic, dsn = app_env["RETAIL_EVENTS_TOPIC"], app_env["RETAIL_DATABASE_URL"]
    sale = make_event("S1", 2, "sale", [{"sku": "A", "qty": 2}])
    void = {"lines": [{"sku": "A", "qty": 2}], "ref": sale["event_id"]}
    asyncio.run(
        produce(
            stack.broker.bootstrap,
            topic,
            [
                make_event("S1", 1, "receipt", [{"sku": "A", "qty": 10}]),
                sale,
                make_event("S1", 4, "count", [{"sku": "A", "qty": 20}]),
                make_event("S1", 5, "void", **void),
            ],
        )
    )
    wait_for(lambda: stock(worker, "S1", "A")["on_hand"] == 22, timeout=30, what="seq 5 applied")
    asyncio.run(produce(stack.broker.bootstrap, topic, [make_event("S1", 3, "void", **void)]))
    wait_for(lambda: stock(worker, "S1", "A")["on_hand"] == 20, timeout=30, what="seq 5 withdrawn")
    # seq 3's row, the correction of seq 5's and the key's snapshot come in one
    # applied record, so one sink transaction: once the row is there, so are they
    effects = wait_for(
        lambda: (
            (r := pg(dsn, "SELECT outlet_seq, effect FROM ledger WHERE type = 'void' ORDER BY 1"))
            and len(r) == 2
            and r
        ),
        timeout=30,
        what="both voids in the ledger",
    )
    assert [tuple(r) for r in effects] == [(3, "delta"), (5, "ignored")]
    assert [r["on_hand"] for r in pg(dsn, "SELECT on_hand FROM stock_levels")] == [20]
    dead = wait_for(
        lambda: pg(dsn, "SELECT reasons::text AS r FROM dead_letters WHERE kind = 'void_rejected'"),
        timeout=30,
        what="the withdrawal reported",
    )
    assert "seq 5 withdrawn" in dead[0]["r"]


def test_garbage_goes_to_dead_letters_and_stream_goes_on(
    stack: DevStack, app_env: dict[str, str], worker: WorkerProcess
) -> None:
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    bad_schema = make_event("S1", 1, schema="retail.v0")
    asyncio.run(
        produce(
            stack.broker.bootstrap,
            topic,
            [b"not json", bad_schema, make_event("S1", 1, "receipt", [{"sku": "A", "qty": 5}])],
        )
    )
    wait_for(lambda: stock(worker, "S1", "A")["on_hand"] == 5, timeout=30, what="S1 applied")
    dsn = app_env["RETAIL_DATABASE_URL"]
    dead = wait_for(
        lambda: (r := pg(dsn, "SELECT reasons::text AS r FROM dead_letters")) and len(r) == 2 and r,
        timeout=30,
        what="two dead letters",
    )
    reasons = " ".join(r["r"] for r in dead)
    assert "not JSON" in reasons
    assert "unknown schema" in reasons


async def _partitions(bootstrap: str, *topics: str) -> dict[str, int]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        return {t: len(await producer.partitions_for(t)) for t in topics}
    finally:
        await producer.stop()


def test_applied_topic_has_its_own_partition_count(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path
) -> None:
    """``RETAIL_APPLIED_PARTITIONS=1`` (devstack's choice on Tansu): the worker
    creates ``applied`` with one partition, and the dead letters and
    reservations with ``RETAIL_TOPIC_PARTITIONS``; the sink inside the worker
    reads ``applied`` with the dead letters, and both reach PostgreSQL."""
    env = {**app_env, "RETAIL_APPLIED_PARTITIONS": "1"}
    worker = WorkerProcess(env=env, data_dir=tmp_path / "worker")
    worker.start()
    try:
        worker.wait_ready()
        events = [make_event(s, 1, "receipt", [{"sku": "A", "qty": 5}]) for s in ("S1", "S2", "S3")]
        asyncio.run(produce(stack.broker.bootstrap, env["RETAIL_EVENTS_TOPIC"], [b"{", *events]))
        dsn = env["RETAIL_DATABASE_URL"]
        wait_for(
            lambda: (
                len(pg(dsn, "SELECT 1 FROM ledger")) == 3
                and len(pg(dsn, "SELECT 1 FROM dead_letters")) == 1
            ),
            timeout=60,
            what="three ledger rows and a dead letter in PostgreSQL",
        )
    finally:
        worker.stop()
    app_id = env["RETAIL_APP_ID"]
    counts = asyncio.run(
        _partitions(
            stack.broker.bootstrap,
            f"{app_id}.applied",
            env["RETAIL_DEAD_LETTERS_TOPIC"],
            f"{app_id}.reservations",
        )
    )
    assert counts == {
        f"{app_id}.applied": 1,
        env["RETAIL_DEAD_LETTERS_TOPIC"]: stack.partitions,
        f"{app_id}.reservations": stack.partitions,
    }
