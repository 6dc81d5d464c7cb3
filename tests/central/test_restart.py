"""A worker restarted right after kill -9 applies again without waiting out its dead self.

Its old member stays in the consumer group until the session times out; the
restarted worker makes it leave first (``app/rejoin.py``), and so does the
Postgres sink inside it (a consumer group of its own). A worker or sink that
waited for the dead member's session to expire would miss this test's
deadline (one session after the kill); one that makes it leave meets it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from devstack import DevStack
from tests.conftest import produce
from tests.helpers import WorkerProcess, make_event, wait_for
from tests.sink.conftest import pg

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Tansu holds every join for half a session (measured: 3 s at 6 s, 22.5 s at
# 45 s), so the session is long enough to tell the two apart, and no longer.
SESSION_S = 20


def applied_seq(url: str, store: str) -> int:
    try:
        response = httpx.get(f"{url}/api/stores/{store}/stock/A", timeout=2)
    except httpx.TransportError:  # still starting
        return -1
    return int(response.json()["applied_seq"]) if response.status_code == 200 else -1


def in_postgres(dsn: str, seq: int) -> bool:
    return bool(pg(dsn, "SELECT 1 FROM ledger WHERE store_id = 'S1' AND outlet_seq = $1", seq))


def test_restart_after_kill_rejoins_without_waiting_for_the_session(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **app_env,
        "RETAIL_BROKER_SESSION_TIMEOUT_S": str(SESSION_S),
        "RETAIL_BROKER_HEARTBEAT_INTERVAL_S": "3",
    }
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    dsn = app_env["RETAIL_DATABASE_URL"]
    worker = WorkerProcess(env=env, data_dir=tmp_path / "w")
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(produce(stack.broker.bootstrap, topic, [make_event("S1", 1)]))
        wait_for(lambda: applied_seq(worker.url, "S1") == 1, timeout=60, what="seq 1 applied")
        member_file = tmp_path / "w" / "worker" / "consumer-member-id"
        assert member_file.read_text().startswith("faust-"), "the member id is saved"
        # the sink inside the worker (its own group) saves its member id too
        wait_for(lambda: in_postgres(dsn, 1), timeout=60, what="seq 1 in PostgreSQL")
        assert (tmp_path / "w" / "worker" / "sink-member-id").read_text(), "the sink's id is saved"

        worker.kill()
        killed_at = time.monotonic()
        worker.start()
        asyncio.run(produce(stack.broker.bootstrap, topic, [make_event("S1", 2)]))
        # a worker that waited for its dead member's session would need > SESSION_S
        wait_for(
            lambda: applied_seq(worker.url, "S1") == 2,
            timeout=SESSION_S - 1 - (time.monotonic() - killed_at),
            what="seq 2 applied by the restarted worker",
        )
        wait_for(
            lambda: in_postgres(dsn, 2),
            timeout=SESSION_S - 1 - (time.monotonic() - killed_at),
            what="seq 2 written to PostgreSQL by the restarted worker's sink",
        )
    finally:
        worker.stop()
