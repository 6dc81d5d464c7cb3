"""``python -m sink run``: the sink as its own process, on real processes.

- kill -9 of the sink process mid-stream, then a restart: the ledger holds every
  line once and reconcile is clean (the same promise as the in-worker sink);
- moving the sink out of a worker (a new consumer group) starts each partition
  after what PostgreSQL already has, rather than from the beginning;
- the worker's sync view still shows the Postgres side, read from PostgreSQL;
- a database restored empty is filled again from the topics' beginning, though
  the sink's consumer group has committed past everything;
- a store draining a backlog alone reaches PostgreSQL in records under 1 MB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.changelog_ends import records_to_end
from devstack import DevStack
from devstack.process import free_port
from sim.cluster import SinkProcess
from tests.helpers import WorkerProcess, wait_for
from tests.sink.conftest import (
    history,
    ledger_count,
    ledger_lines,
    pg,
    produce_fast,
    wait_converged,
)
from tests.sink.test_faults import PacedProducer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@contextmanager
def worker_and_sink(
    env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[WorkerProcess, SinkProcess]]:
    """A worker without its own sink, and ``python -m sink run`` beside it."""
    worker = WorkerProcess(
        env=env, data_dir=tmp_path / "w", extra_env={"RETAIL_SINK_ENABLED": "false"}
    )
    sink = SinkProcess({**env, "RETAIL_SINK_METRICS_PORT": str(free_port())}, tmp_path / "sink")
    worker.start()
    sink.start()
    try:
        worker.wait_ready()
        yield worker, sink
    finally:
        sink.stop()
        worker.stop()


def _sink_log(sink: SinkProcess) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(sink.data_dir.glob("sink-*.log"))
    )


def _sync_rows(worker: WorkerProcess) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{worker.url}/api/sync", timeout=5)
    return {row["store_id"]: row for row in r.json()["stores"]} if r.status_code == 200 else {}


def test_sink_process_kill9_mid_stream_each_event_once(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path
) -> None:
    dsn = app_env["RETAIL_DATABASE_URL"]
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    with worker_and_sink(app_env, tmp_path) as (worker, sink):
        events = history(["S1", "S2", "S3"], 900, seed=11)
        expected = ledger_lines(events)
        # the load starts once the sink holds its partitions and lasts ~6 s, so
        # a slow start cannot leave the whole history to one first batch
        wait_for(lambda: "assigned" in _sink_log(sink), timeout=60, what="the sink's partitions")
        load = PacedProducer(stack.broker.bootstrap, topic, events, 30, 0.2)
        load.start()
        wait_for(lambda: ledger_count(dsn) > 100, timeout=60, what="first rows from the sink")
        sink.kill()
        assert ledger_count(dsn) < expected, "the kill came too late to be mid-stream"
        sink.start()
        load.finish()
        wait_converged(app_env, expected)

        # the sync view reads the Postgres side from PostgreSQL: caught up
        def caught_up() -> bool:
            rows = _sync_rows(worker)
            return len(rows) == 3 and all(
                r["pg_behind_s"] == 0.0 and r["pg_committed_at"] is not None
                and r["pg_commit_lag_ms"] is not None
                for r in rows.values()
            )  # fmt: skip

        wait_for(caught_up, timeout=30, what="the sync view to show Postgres caught up")
        # the sink's own /metrics: every ledger row it wrote, after the restart
        port = sink.env["RETAIL_SINK_METRICS_PORT"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        rows = [ln for ln in text.splitlines() if ln.startswith("retail_sink_rows_total ")]
        assert rows and float(rows[0].split()[1]) > 0, text[-1500:]
    assert "sink stopped" in _sink_log(sink)  # SIGTERM: the batch in hand, then a clean stop


def test_moving_the_sink_out_of_the_worker_rereads_nothing(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path
) -> None:
    dsn = app_env["RETAIL_DATABASE_URL"]
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    first = history(["S1", "S2"], 400, seed=12)
    worker = WorkerProcess(env=app_env, data_dir=tmp_path / "w")  # the sink inside
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(produce_fast(stack.broker.bootstrap, topic, first))
        wait_for(
            lambda: ledger_count(dsn) == ledger_lines(first),
            timeout=60,
            what="the in-worker sink to write the first events",
        )
    finally:
        worker.stop()

    with worker_and_sink(app_env, tmp_path) as (_, sink):
        second = history(["S1", "S2"], 300, seed=13, first_seq=401)
        asyncio.run(produce_fast(stack.broker.bootstrap, topic, second))
        wait_converged(app_env, ledger_lines(first) + ledger_lines(second))
    text = _sink_log(sink)
    assigned = [ln for ln in text.splitlines() if "start after sink_offsets" in ln]
    assert assigned, text[-2000:]
    # every partition that had records for the old sink starts after them
    assert not any(" 0 start after" in ln for ln in assigned), assigned


def test_a_database_restored_empty_is_filled_again(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path
) -> None:
    dsn = app_env["RETAIL_DATABASE_URL"]
    events = history(["S1", "S2"], 300, seed=14)
    with worker_and_sink(app_env, tmp_path) as (_, sink):
        asyncio.run(produce_fast(stack.broker.bootstrap, app_env["RETAIL_EVENTS_TOPIC"], events))
        wait_converged(app_env, ledger_lines(events))
        sink.stop()  # its group has committed every offset it wrote
        # the database comes back from an empty backup: rows and sink_offsets gone
        pg(
            dsn,
            "TRUNCATE ledger, stock_levels, outlet_sync, dead_letters, sales_minute, sink_offsets",
        )
        assert ledger_count(dsn) == 0
        sink.start()
        wait_converged(app_env, ledger_lines(events))
    assert " from their beginning" in _sink_log(sink)


def test_a_store_alone_draining_reaches_postgres_in_records_under_1_mb(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path
) -> None:
    """A backlog of one store, there before the worker starts: its groups are big and
    all one store's. Before records were cut, one group's ledger lines made one
    record of well over 1 MB, which Apache Kafka refuses by default."""
    dsn = app_env["RETAIL_DATABASE_URL"]
    events = history(["S1"], 3000, seed=21)
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    asyncio.run(produce_fast(stack.broker.bootstrap, topic, events, pack=50))  # as the agent
    with worker_and_sink(app_env, tmp_path):
        wait_converged(app_env, ledger_lines(events))
        [sync] = pg(dsn, "SELECT applied_seq FROM outlet_sync WHERE store_id = 'S1'")
        assert sync["applied_seq"] == 3000
    values = asyncio.run(_all_values(stack.broker.bootstrap, f"{app_env['RETAIL_APP_ID']}.applied"))
    s1 = [orjson.loads(v) for v in values]
    s1 = [r for r in s1 if r.get("store_id") == "S1"]
    assert max(len(v) for v in values) < 1 << 20
    assert any("progress" not in r for r in s1), "no group was big enough to be cut"


async def _all_values(bootstrap: str, topic: str) -> list[bytes]:
    """Every record value of ``topic``, read up to its exact end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, f"{topic} has no partitions"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return [m.value async for m in records_to_end(consumer, tps) if m.value is not None]
    finally:
        await consumer.stop()
