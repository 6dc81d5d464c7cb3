"""A consumer tailing a partition that a hundred producers write reads every acked record.

On Tansu a fetch can return a batch before an earlier one is readable
(app/fetch_holes.py). Without the guard, this load made the tailing aiokafka
consumer skip an acknowledged batch in one run of four, measured with
``FETCH_HOLE_WAIT_S=0 pytest tests/central/test_fetch_holes.py`` (the variable
is for showing the loss; the unit tests in tests/unit/test_fetch_holes.py
show it every time).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app import fetch_holes, metrics
from devstack.stack import DevStack, create_topics

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PRODUCERS = 100
SENDS = 200  # each: a page of 1-3 records, awaited like an outlet's
#: Tansu's fetch lists every batch of a partition (README, Known limits): four
#: partitions of 10,000 records each keep the tail's fetches fast
PARTITIONS = 4


async def _produce(bootstrap: str, topic: str, producer_no: int, acked: set[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for n in range(SENDS):
            names = [f"{producer_no}:{n}:{i}" for i in range(1 + n % 3)]
            partition = producer_no % PARTITIONS
            sent = [await producer.send(topic, n.encode(), partition=partition) for n in names]
            await asyncio.gather(*sent)
            acked.update(names)
    finally:
        await producer.stop()


async def _tail(
    bootstrap: str, topic: str, acked: set[str], done: asyncio.Event, read: Counter[str]
) -> None:
    """Read until every acked record is read, or 30 s after the producers are done."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = None
        while deadline is None or asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                read.update(m.value.decode() for m in records if m.value is not None)
            if done.is_set():
                if acked.issubset(read):
                    return
                deadline = deadline or asyncio.get_running_loop().time() + 30
    finally:
        await consumer.stop()


async def _race(bootstrap: str) -> tuple[set[str], Counter[str]]:
    topic = f"holes-{uuid.uuid4().hex[:6]}"
    await create_topics(bootstrap, {topic: PARTITIONS})
    acked: set[str] = set()
    read: Counter[str] = Counter()
    done = asyncio.Event()
    tail = asyncio.create_task(_tail(bootstrap, topic, acked, done, read))
    await asyncio.gather(*(_produce(bootstrap, topic, p, acked) for p in range(PRODUCERS)))
    done.set()
    await tail
    return acked, read


def test_a_tailing_consumer_reads_every_acked_record(stack: DevStack) -> None:
    fetch_holes.install(float(os.environ.get("FETCH_HOLE_WAIT_S", "5")))
    try:
        acked, read = asyncio.run(_race(stack.broker.bootstrap))
    finally:
        fetch_holes.install(0)
    seen = metrics.REGISTRY.get_sample_value("retail_fetch_holes_total", {"outcome": "seen"})
    missing = sorted(acked - set(read))
    assert not missing, f"{len(missing)} acked records never read: {missing[:5]}"
    assert not [name for name, n in read.items() if n > 1]
    assert len(acked) == PRODUCERS * sum(1 + n % 3 for n in range(SENDS))
    print(f"holes seen and fetched again: {seen or 0:.0f}")
