"""The sink under faults, on real processes: kill -9, a Postgres outage, a replay from 0.

After each, the ledger holds every line once and ``reconcile`` is clean
(stock table = ``stock_levels`` = ledger sums), SPEC "What is promised".
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from app.settings import Settings
from devstack import DevStack
from devstack.postgres import EmbeddedPostgres
from sink.commits import PostgresCommits
from sink.migrate import migrate
from tests.conftest import produce
from tests.helpers import WorkerProcess, metric, wait_for
from tests.sink.conftest import (
    history,
    ledger_count,
    ledger_lines,
    pg,
    produce_fast,
    wait_converged,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class PacedProducer(threading.Thread):
    """Steady load in the background: ``chunk`` events every ``every`` seconds."""

    def __init__(self, bootstrap: str, topic: str, events: list[Any], chunk: int, every: float):
        super().__init__(daemon=True)
        self.args = (bootstrap, topic, events, chunk, every)
        self.error: BaseException | None = None

    def run(self) -> None:
        bootstrap, topic, events, chunk, every = self.args
        try:
            for i in range(0, len(events), chunk):
                started = time.monotonic()
                asyncio.run(produce_fast(bootstrap, topic, events[i : i + chunk]))
                time.sleep(max(0.0, every - (time.monotonic() - started)))  # pacing, not waiting
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the test by finish()
            self.error = exc

    def finish(self, timeout: float = 60) -> None:
        self.join(timeout)
        assert not self.is_alive(), "producer did not finish"
        if self.error is not None:
            raise self.error


def restart(worker: WorkerProcess) -> None:
    """Start the killed worker again on its own RocksDB (what a supervisor does)."""
    worker.start()
    worker.wait_ready()


def test_kill9_mid_batch_each_event_once(
    stack: DevStack, app_env: dict[str, str], worker: WorkerProcess
) -> None:
    dsn = app_env["RETAIL_DATABASE_URL"]
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    events = history(["S1", "S2", "S3"], 1200, seed=1)
    worker.extra_env["RETAIL_APPLY_BATCH_MAX"] = "50"  # more, smaller batches to land in
    expected = ledger_lines(events)
    half = len(events) // 2
    load = PacedProducer(stack.broker.bootstrap, topic, events[:half], 150, 0.2)
    load.start()

    def rows_above(n: int) -> bool:
        assert load.error is None, load.error
        return ledger_count(dsn) > n

    # 1st kill: while the load is flowing and batches are being committed
    wait_for(lambda: rows_above(500), timeout=60, what="first ledger rows", interval=0.05)
    worker.kill()
    load.finish()
    restart(worker)
    # 2nd kill: under load again, as soon as the new worker commits (paced
    # slower than the worker applies, and ~6 s long, longer than a rejoin
    # after kill -9, so the kill lands before the end)
    load = PacedProducer(stack.broker.bootstrap, topic, events[half:], 20, 0.2)
    load.start()
    seen = ledger_count(dsn)
    wait_for(lambda: rows_above(seen + 100), timeout=60, what="rows after restart", interval=0.02)
    worker.kill()
    load.finish()
    assert ledger_count(dsn) < expected, "the kill came too late to be mid-stream"
    restart(worker)

    wait_converged(app_env, expected)


def test_a_database_restored_empty_under_a_worker_is_filled_again(
    stack: DevStack, app_env: dict[str, str], worker: WorkerProcess
) -> None:
    """The sink inside a worker starts where PostgreSQL's ``sink_offsets`` say,
    not where a consumer group committed: a database that comes back from an
    empty backup is written again from the topics' beginning."""
    dsn = app_env["RETAIL_DATABASE_URL"]
    events = history(["S1", "S2"], 300, seed=15)
    asyncio.run(produce_fast(stack.broker.bootstrap, app_env["RETAIL_EVENTS_TOPIC"], events))
    wait_converged(app_env, ledger_lines(events))
    worker.stop()  # its sink commits its group's offsets as it stops
    pg(dsn, "TRUNCATE ledger, stock_levels, outlet_sync, dead_letters, sales_minute, sink_offsets")
    assert ledger_count(dsn) == 0
    restart(worker)
    wait_converged(app_env, ledger_lines(events))


def _applied_seq(worker: WorkerProcess, store: str) -> int:
    r = httpx.get(f"{worker.url}/api/stores/{store}/stock/SKU-00", timeout=5)
    return int(r.json()["applied_seq"]) if r.status_code == 200 else -1


def test_postgres_outage_under_load_everything_arrives_once(
    stack: DevStack, app_env: dict[str, str], own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    env = {**app_env, "RETAIL_DATABASE_URL": own_postgres.url("postgres")}
    dsn = env["RETAIL_DATABASE_URL"]
    topic = env["RETAIL_EVENTS_TOPIC"]
    worker = WorkerProcess(env=env, data_dir=tmp_path / "w")
    worker.start()
    try:
        worker.wait_ready()
        before = history(["S1", "S2"], 300, seed=2)
        asyncio.run(produce_fast(stack.broker.bootstrap, topic, before))
        wait_for(
            lambda: ledger_count(dsn) == ledger_lines(before),
            timeout=60,
            what="the first events in Postgres",
        )

        own_postgres.stop()  # a fast shutdown: clients are cut off, the data stays
        during = history(["S1", "S2"], 900, seed=3, first_seq=301)
        load = PacedProducer(stack.broker.bootstrap, topic, during, 150, 0.2)
        load.start()
        # stream processing goes on without Postgres ...
        wait_for(
            lambda: _applied_seq(worker, "S1") == 1200 and _applied_seq(worker, "S2") == 1200,
            timeout=60,
            what="the worker to apply every event while Postgres is down",
        )
        load.finish()
        # ... and says how far Postgres is behind
        wait_for(
            lambda: metric(worker.url, "retail_sink_behind_seconds") > 2.0,
            timeout=30,
            what="retail_sink_behind_seconds to grow",
        )
        assert metric(worker.url, "retail_sink_errors_total") > 0

        own_postgres.start()
        wait_converged(env, ledger_lines(before) + ledger_lines(during))
        wait_for(
            lambda: metric(worker.url, "retail_sink_behind_seconds") < 2.0,
            timeout=30,
            what="the sink to catch up",
        )
    finally:
        worker.stop()


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The exact ends: Tansu's ListOffsets stops at the last batch's first record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from app.changelog_ends import exact_end_offsets

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = await exact_end_offsets(consumer, [TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


DOMAIN_TABLES = {
    "ledger": "SELECT * FROM ledger ORDER BY store_id, outlet_seq, line_no",
    "stock_levels": "SELECT * FROM stock_levels ORDER BY store_id, sku",
    "outlet_sync": "SELECT * FROM outlet_sync ORDER BY store_id",
    "sales_minute": "SELECT * FROM sales_minute ORDER BY store_id, minute",
    "dead_letters": "SELECT * FROM dead_letters ORDER BY key",
}


def _snapshot(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(r) for r in pg(dsn, sql)] for name, sql in DOMAIN_TABLES.items()}


def test_replay_from_offset_zero_changes_nothing(
    stack: DevStack, app_env: dict[str, str], worker: WorkerProcess, tmp_path: Path
) -> None:
    dsn = app_env["RETAIL_DATABASE_URL"]
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    events = history(["S1", "S2"], 400, seed=4)
    asyncio.run(produce_fast(stack.broker.bootstrap, topic, events))
    asyncio.run(produce(stack.broker.bootstrap, topic, [b"not json"]))
    wait_converged(app_env, ledger_lines(events))
    wait_for(
        lambda: len(pg(dsn, "SELECT 1 FROM dead_letters")) == 1, timeout=30, what="dead letter"
    )
    before = _snapshot(dsn)
    worker.stop()

    # A fresh app id: a new consumer group reads the events topic from offset 0,
    # rebuilds its tables and sends everything to the sink again, same database.
    app2 = f"replay-{uuid.uuid4().hex[:6]}"
    env2 = {**app_env, "RETAIL_APP_ID": app2}
    replay = WorkerProcess(env=env2, data_dir=tmp_path / "replay")
    replay.start()
    try:
        replay.wait_ready()
        applied = f"{app2}.applied"

        def drained() -> bool:
            ends = asyncio.run(_end_offsets(stack.broker.bootstrap, applied))
            done = {
                r["partition"]: r["offset"]
                for r in pg(
                    dsn, 'SELECT partition, "offset" FROM sink_offsets WHERE topic = $1', applied
                )
            }
            return bool(ends) and all(done.get(p, -1) >= end - 1 for p, end in ends.items() if end)

        wait_for(
            lambda: _applied_seq(replay, "S1") == 400 and _applied_seq(replay, "S2") == 400,
            timeout=120,
            what="the replay to apply every event",
        )
        wait_for(drained, timeout=120, what="the replay's sink to commit all it was sent")
        wait_converged(env2, ledger_lines(events))  # the new table agrees with Postgres
    finally:
        replay.stop()

    after = _snapshot(dsn)
    for name in DOMAIN_TABLES:
        assert after[name] == before[name], f"the replay changed {name}"


def test_the_sync_views_postgres_reader_rides_out_an_outage(
    own_postgres: EmbeddedPostgres,
) -> None:
    """``PostgresCommits.refresh`` runs in a Faust timer: raising would stop the worker."""
    dsn = own_postgres.url("postgres")
    asyncio.run(migrate(dsn))
    pg(dsn, "INSERT INTO outlet_sync (store_id, applied_seq, highest_seq) VALUES ('S1', 7, 7)")
    commits = PostgresCommits(Settings(database_url=SecretStr(dsn)))

    async def through_an_outage() -> list[int]:
        """One event loop, as in the worker; PostgreSQL stops under its open connection."""
        seen = []
        await commits.refresh()
        seen.append(commits.stores["S1"].applied_seq)
        await asyncio.to_thread(own_postgres.stop)
        await commits.refresh()  # the connection dies under the query: no exception
        seen.append(commits.stores["S1"].applied_seq)
        await commits.refresh()  # connection refused now: the same
        seen.append(commits.stores["S1"].applied_seq)
        await asyncio.to_thread(own_postgres.start)
        await asyncio.to_thread(
            pg, dsn, "UPDATE outlet_sync SET applied_seq = 9 WHERE store_id = 'S1'"
        )
        await commits.refresh()  # a fresh connection once PostgreSQL is back
        seen.append(commits.stores["S1"].applied_seq)
        await commits.close()
        return seen

    # the last answer stays while PostgreSQL is away, then the new one comes
    assert asyncio.run(through_an_outage()) == [7, 7, 7, 9]


def test_stopping_postgres_with_clients_connected_is_a_clean_fast_shutdown(
    own_postgres: EmbeddedPostgres,
) -> None:
    """SIGTERM is PostgreSQL's smart shutdown, which waits for every client to
    leave: with the sink connected it waited out the stop timeout, was killed
    -9, and the next start replayed minutes of WAL (the benchmark's Postgres
    outage then outlasted the start's wait). The stop must disconnect the
    clients, checkpoint, and leave nothing to recover."""

    async def hold_a_connection(ready: threading.Event, gone: threading.Event) -> None:
        conn = await asyncpg.connect(own_postgres.url(), timeout=5)
        ready.set()
        while not conn.is_closed() and not gone.is_set():
            try:
                await conn.fetchval("SELECT 1")
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                break  # the server going away is what this waits for
            await asyncio.sleep(0.05)

    ready, gone = threading.Event(), threading.Event()
    client = threading.Thread(target=asyncio.run, args=(hold_a_connection(ready, gone),))
    client.start()
    try:
        assert ready.wait(30)
        started = time.monotonic()
        own_postgres.stop()
        assert time.monotonic() - started < 20  # a smart shutdown waits for the client
        log = own_postgres.log_path.read_text()
        assert "fast shutdown request" in log and "database system is shut down" in log
        own_postgres.start()
        after = own_postgres.log_path.read_text()[len(log) :]
        assert "was shut down at" in after and "interrupted" not in after, after[-2000:]
    finally:
        gone.set()
        client.join(30)
