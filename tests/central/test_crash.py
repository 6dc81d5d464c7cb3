"""Workers killed with SIGKILL mid-stream: the tables still equal the reference model."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devstack import DevStack
from tests.conftest import produce
from tests.helpers import WorkerProcess, wait_for
from tests.model import random_history, reference_stock

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STORES = [f"S{i:02d}" for i in range(1, 9)]
SKUS = [f"K{i}" for i in range(1, 13)]


def applied(url: str, store: str) -> int:
    response = httpx.get(f"{url}/api/stores/{store}/stock/K1", timeout=5)
    return int(response.json()["applied_seq"]) if response.status_code == 200 else -1


def all_applied(url: str, per_store: int) -> bool:
    return all(applied(url, s) == per_store for s in STORES)


def wrong_stock(
    url: str,
    want: dict[tuple[str, str], int],
    stores: list[str] = STORES,
    skus: list[str] = SKUS,
) -> dict[tuple[str, str], tuple[int, int]]:
    """(store, sku) -> (got, want) where the worker's stock view differs from ``want``."""
    wrong = {}
    with httpx.Client(timeout=5) as client:
        for store in stores:
            for sku in skus:
                got = client.get(f"{url}/api/stores/{store}/stock/{sku}").json()["on_hand"]
                if got != want.get((store, sku), 0):
                    wrong[(store, sku)] = (got, want.get((store, sku), 0))
    return wrong


def check_stock(url: str, want: dict[tuple[str, str], int]) -> None:
    wrong = wrong_stock(url, want)
    assert not wrong, f"stock differs from the reference (got, want): {wrong}"


def pg_scalar(dsn: str, query: str) -> int | None:
    async def run() -> int | None:
        conn = await asyncpg.connect(dsn)
        try:
            value = await conn.fetchval(query)
            return None if value is None else int(value)
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except asyncpg.UndefinedTableError:
        return None


def deliveries(events: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Each store's events in seq order with some re-sent (a forwarder retrying)."""
    out = []
    for event in events:
        out.append(event)
        if rng.random() < 0.05:
            out.append(event)
    return out


def test_kill_worker_three_times_mid_stream(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path
) -> None:
    rng = random.Random(7)
    per_store = 400
    events = random_history(rng, STORES, SKUS, per_store)
    want = reference_stock(events)
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    worker = WorkerProcess(env={**app_env, "RETAIL_APPLY_BATCH_MAX": "50"}, data_dir=tmp_path / "w")
    worker.start()
    try:
        worker.wait_ready()
        chunks = [deliveries(events[i::4], rng) for i in range(4)]
        for kill_round, chunk in enumerate(chunks):
            asyncio.run(produce(stack.broker.bootstrap, topic, chunk))
            if kill_round < 3:
                # kill while it is still applying what was just produced
                worker.kill()
                worker.start()
                worker.wait_ready()
        wait_for(lambda: all_applied(worker.url, per_store), timeout=120, what="every seq applied")
        check_stock(worker.url, want)
        resent = sum(len(c) for c in chunks) - len(events)
        dsn = app_env["RETAIL_DATABASE_URL"]
        counted = wait_for(
            lambda: (n := pg_scalar(dsn, "SELECT sum(duplicates) FROM outlet_sync")) and n,
            timeout=30,
            what="duplicates counted in outlet_sync",
        )
        assert resent >= 1 and counted >= 1
    finally:
        worker.stop()


def test_two_workers_one_killed_survivor_takes_over(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path
) -> None:
    rng = random.Random(11)
    per_store = 300
    events = random_history(rng, STORES, SKUS, per_store)
    want = reference_stock(events)
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    env = {**app_env, "RETAIL_APPLY_BATCH_MAX": "50"}
    w1 = WorkerProcess(env=env, data_dir=tmp_path / "w1")
    w2 = WorkerProcess(env=env, data_dir=tmp_path / "w2")
    w1.start()
    w2.start()
    try:
        w1.wait_ready()
        w2.wait_ready()
        half = len(events) // 2
        asyncio.run(produce(stack.broker.bootstrap, topic, events[:half]))
        w2.kill()
        asyncio.run(produce(stack.broker.bootstrap, topic, deliveries(events[half:], rng)))
        wait_for(lambda: all_applied(w1.url, per_store), timeout=120, what="survivor applied all")
        check_stock(w1.url, want)
    finally:
        w1.stop()
        w2.stop()
