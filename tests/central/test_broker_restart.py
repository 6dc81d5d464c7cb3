"""Tansu on S3 storage: partition ends, and a worker across a broker kill -9 (issue #9).

Tansu 0.6.0 answers ListOffsets (``end_offsets``) on S3 storage with the base
offset + 1 of the first batch written in the partition's last second (S3
lists ``LastModified`` in whole seconds), far below the end; a restarted
worker's recovery trusted it and stopped with ``ConsistencyError`` (or read
short). ``app/changelog_ends.py`` finds the end by fetching; these tests pin
both the quirk and the fix, and run a worker through a broker kill -9 and
restart, a worker kill -9 (recovery with local RocksDB) and a fresh worker
(recovery of every table from the changelogs alone), comparing the stock with
the reference model each time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.changelog_ends import exact_end_offsets
from devstack import DevStack
from devstack.broker import TansuBroker
from devstack.stack import create_topics
from tests.central.test_crash import wrong_stock
from tests.conftest import produce
from tests.helpers import WorkerProcess, isolated_app_env, wait_for
from tests.model import random_history, reference_stock

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STORES = [f"S{i:02d}" for i in range(1, 7)]
SKUS = [f"K{i}" for i in range(1, 11)]
PER_STORE = 120
PARTITIONS = 4


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """Tansu on S3 storage (loopback moto) + PostgreSQL, for this module only."""
    devstack = DevStack(tmp_path_factory.mktemp("s3stack"), partitions=PARTITIONS, persistent=True)
    devstack.start()
    try:
        yield devstack
    finally:
        devstack.stop()


# --- partition ends ---------------------------------------------------------


async def _produce_batches(bootstrap: str, topic: str, sizes: list[list[int]]) -> None:
    """One record batch per request, of each given size, to each partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, batch_sizes in enumerate(sizes):
            for size in batch_sizes:
                batch = producer.create_batch()
                for i in range(size):
                    assert batch.append(key=None, value=b"v%d" % i, timestamp=None) is not None
                await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()


async def _ends(bootstrap: str, topic: str, n: int) -> tuple[dict[int, int], dict[int, int]]:
    """(ListOffsets answers, exact ends) per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(n)]
        listed = await consumer.end_offsets(tps)
        exact = await exact_end_offsets(consumer, tps)
        return {tp.partition: listed[tp] for tp in tps}, {tp.partition: exact[tp] for tp in tps}
    finally:
        await consumer.stop()


def _delete_last_batch(broker: TansuBroker, topic: str, partition: int) -> int:
    """Remove a partition's last batch object; return its base offset.

    What a broker killed between advancing ``watermark.json`` and writing the
    batch leaves behind: a watermark past the last record, never filled.
    """
    import boto3

    assert broker.s3 is not None
    env = broker.s3.client_env()
    s3 = boto3.client(
        "s3",
        endpoint_url=broker.s3.endpoint,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    prefix = f"clusters/tansu_cluster/topics/{topic}/partitions/{partition:0>10}/records/"
    listing = s3.list_objects_v2(Bucket=broker.s3.bucket, Prefix=prefix)
    last = max(obj["Key"] for obj in listing["Contents"])
    s3.delete_object(Bucket=broker.s3.bucket, Key=last)
    return int(last.rsplit("/", 1)[1][:20])


def test_exact_ends_on_s3_across_a_broker_kill(s3_stack: DevStack) -> None:
    broker = s3_stack.broker
    topic = f"ends-{random.randrange(1 << 30):08x}"
    asyncio.run(create_topics(broker.bootstrap, {topic: 3}))
    sizes = [[1, 5, 3, 10, 1], [7, 1, 1, 20], [4, 4, 4, 4]]
    asyncio.run(_produce_batches(broker.bootstrap, topic, sizes))
    acked = {p: sum(s) for p, s in enumerate(sizes)}

    listed, exact = asyncio.run(_ends(broker.bootstrap, topic, 3))
    assert exact == acked
    # the quirk itself: if this fails, Tansu answers ListOffsets right and
    # app/changelog_ends.py may be dropped
    assert any(listed[p] < acked[p] for p in acked), (listed, acked)

    s3_stack.restart_broker(kill=True)
    asyncio.run(_produce_batches(broker.bootstrap, topic, [[2, 6, 1]] * 3))
    acked = {p: n + 9 for p, n in acked.items()}
    listed, exact = asyncio.run(_ends(broker.bootstrap, topic, 3))
    assert exact == acked, f"after kill -9: exact {exact}, acked {acked}, listed {listed}"

    # a hole at the end (the last batch never written): the end is the last record
    hole_at = _delete_last_batch(broker, topic, 1)
    _, exact = asyncio.run(_ends(broker.bootstrap, topic, 3))
    assert exact == {**acked, 1: hole_at}


# --- a worker across broker and worker kills --------------------------------


def _applied(url: str, store: str) -> int:
    response = httpx.get(f"{url}/api/stores/{store}/stock/K1", timeout=5)
    return int(response.json()["applied_seq"]) if response.status_code == 200 else -1


class Supervised:
    """A worker restarted whenever it exits on its own (as ``sim`` and a deployment do)."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.exits: list[int] = []

    def alive(self) -> bool:
        proc = self.worker.proc
        if proc is not None and proc.poll() is not None:
            self.exits.append(proc.returncode)
            assert len(self.exits) <= 5, f"worker keeps exiting:\n{self.worker.log_tail()}"
            self.worker.proc = None
            self.worker.start()
        return True

    def applied_all(self, upto: int) -> bool:
        self.alive()
        return all(_applied(self.worker.url, s) >= upto for s in STORES)


def test_worker_across_broker_kill_restart_on_s3(s3_stack: DevStack, tmp_path: Path) -> None:
    rng = random.Random(9)
    events = random_history(rng, STORES, SKUS, PER_STORE)
    want = reference_stock(events)
    thirds = [PER_STORE // 3, 2 * PER_STORE // 3, PER_STORE]

    def chunk(lo: int, hi: int) -> list[dict[str, Any]]:
        part = [e for e in events if lo < e["outlet_seq"] <= hi]
        return part + rng.sample(part, k=len(part) // 20)  # a few sent twice

    env = {
        **isolated_app_env(s3_stack),
        **s3_stack.broker.client_env(),  # a longer fetch wait on S3 storage
        "RETAIL_APPLY_BATCH_MAX": "50",
    }
    topic = env["RETAIL_EVENTS_TOPIC"]
    bootstrap = s3_stack.broker.bootstrap
    w1 = Supervised(WorkerProcess(env=env, data_dir=tmp_path / "w1"))
    w2 = WorkerProcess(env=env, data_dir=tmp_path / "w2")
    w1.worker.start()
    try:
        w1.worker.wait_ready()
        asyncio.run(produce(bootstrap, topic, chunk(0, thirds[0])))
        wait_for(lambda: w1.applied_all(thirds[0]), timeout=120, what="first third applied")

        # the broker: kill -9 and restart on the same bucket, the worker running
        s3_stack.restart_broker(kill=True)
        asyncio.run(produce(bootstrap, topic, chunk(thirds[0], thirds[1])))
        wait_for(lambda: w1.applied_all(thirds[1]), timeout=180, what="second third applied")

        # the worker: kill -9; it recovers with its local RocksDB against the
        # changelog ends the broker reports (ConsistencyError before the fix)
        w1.worker.kill()
        w1.worker.start()
        asyncio.run(produce(bootstrap, topic, chunk(thirds[1], thirds[2])))
        wait_for(lambda: w1.applied_all(PER_STORE), timeout=180, what="everything applied")
        assert not wrong_stock(w1.worker.url, want, STORES, SKUS)
        w1.worker.stop()

        # a worker with no local state rebuilds every table from the changelogs
        w2.start()
        w2.wait_ready()
        wait_for(
            lambda: all(_applied(w2.url, s) == PER_STORE for s in STORES),
            timeout=180,
            what="fresh worker recovered every store's progress",
        )
        wrong = wrong_stock(w2.url, want, STORES, SKUS)
        assert not wrong, f"fresh worker's stock differs (got, want): {wrong}"
        assert w2.proc is not None and w2.proc.poll() is None, w2.log_tail()
    finally:
        w1.worker.stop()
        w2.stop()
