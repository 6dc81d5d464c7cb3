"""A worker joining a chain with history takes partitions over only once it holds them warm.

Faust alone moves partitions to the joining worker at once, and their stores
wait while it restores their tables from the changelogs (a minute and more at
a chain's scale: README, "Scaling out"). With ``app/warmup.py`` the first
worker keeps applying every store while the second reads those changelogs as
a standby; the second then asks for a rebalance and takes them over.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from devstack import DevStack
from tests.helpers import WorkerProcess, make_event, metric, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STORES = [f"W{i:02d}" for i in range(1, 17)]
#: per store: packed records of PACK events of LINES distinct SKUs each, so
#: the changelogs hold ~50,000 records: seconds to restore, not instants
RECORDS, PACK, LINES = 20, 50, 3


def applied(url: str) -> dict[str, int]:
    """Each store's applied_seq, every worker's stores merged (``/api/sync``)."""
    try:
        body = httpx.get(f"{url}/api/sync", timeout=5).json()
    except (httpx.TransportError, ValueError):
        return {}
    return {row["store_id"]: int(row["applied_seq"]) for row in body.get("stores", [])}


def local_stores(url: str) -> set[str]:
    body = httpx.get(f"{url}/api/sync", params={"scope": "local"}, timeout=5).json()
    return {row["store_id"] for row in body["stores"]}


async def send(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 << 20)
    await producer.start()
    try:
        for store, value in records:
            await producer.send(topic, value, key=store.encode())
        await producer.flush()
    finally:
        await producer.stop()


def history() -> list[tuple[str, bytes]]:
    """Receipts: every line a key of its own (no alerts), packed as the forwarder packs a backlog."""
    records = []
    for store in STORES:
        seq = 0
        for _ in range(RECORDS):
            events = []
            for _ in range(PACK):
                seq += 1
                lines = [{"sku": f"K{seq}-{i}", "qty": 5} for i in range(LINES)]
                events.append(make_event(store, seq, "receipt", lines))
            records.append((store, orjson.dumps(events)))
    return records


def one_sale_each(seq: int) -> list[tuple[str, bytes]]:
    return [
        (s, orjson.dumps(make_event(s, seq, "sale", [{"sku": "K1-0", "qty": 1}]))) for s in STORES
    ]


def test_a_joining_worker_warms_up_before_it_takes_partitions(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path
) -> None:
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    last = RECORDS * PACK
    first = WorkerProcess(env=app_env, data_dir=tmp_path / "first")
    second = WorkerProcess(env=app_env, data_dir=tmp_path / "second")
    first.start()
    try:
        first.wait_ready()
        asyncio.run(send(stack.broker.bootstrap, topic, history()))
        wait_for(
            lambda: applied(first.url) == dict.fromkeys(STORES, last),
            timeout=120,
            what="the history applied by the first worker",
        )

        second.start()
        second.wait_ready()
        wait_for(
            lambda: metric(second.url, "retail_partitions_warming") > 0,
            timeout=60,
            what="the second worker warming partitions up",
        )
        # while it warms up, the first worker still applies every store
        asyncio.run(send(stack.broker.bootstrap, topic, one_sale_each(last + 1)))
        wait_for(
            lambda: applied(first.url) == dict.fromkeys(STORES, last + 1),
            timeout=10,  # 11 s here with the warm-up off: half the stores wait for the restore
            what="every store's sale applied while the second worker warms up",
        )
        assert metric(second.url, "retail_warm_handovers_total") == 0, (
            "the history is too small to see the warm-up: the second worker was warm already"
        )
        assert local_stores(first.url) == set(STORES), "the first worker kept every store"

        # warm: it asks for a rebalance and takes its partitions over
        wait_for(
            lambda: (
                metric(second.url, "retail_warm_handovers_total") >= 1
                and metric(second.url, "retail_partitions_warming") == 0
            ),
            timeout=120,
            what="the second worker taking over the partitions it warmed up",
        )
        wait_for(lambda: bool(local_stores(second.url)), timeout=30, what="stores on the second")
        taken = local_stores(second.url)
        assert taken and taken < set(STORES)
        # and it holds their history: the sale applied on top of it, a new one too
        asyncio.run(send(stack.broker.bootstrap, topic, one_sale_each(last + 2)))
        wait_for(
            lambda: applied(first.url) == dict.fromkeys(STORES, last + 2),
            timeout=30,
            what="every store's second sale applied by the two workers",
        )
        for store in sorted(taken)[:3]:
            stock = httpx.get(f"{second.url}/api/stores/{store}/stock/K1-0", timeout=5).json()
            assert stock["on_hand"] == 5 - 2, stock
    finally:
        second.stop()
        first.stop()
