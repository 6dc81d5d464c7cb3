"""The bulk producer's batches on a real broker: exact ends where readers need them."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.changelog_ends import exact_end_offsets
from devstack.stack import DevStack
from tables.bulk import BulkProducer


async def _flush_and_read_ends(bootstrap: str) -> dict[str, tuple[int, int]]:
    changelog, applied = (
        f"bulk-{uuid.uuid4().hex[:6]}-{name}" for name in ("changelog", "applied")
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in (changelog, applied)])
    finally:
        await admin.close()
    bulk = BulkProducer(bootstrap)
    try:
        bulk.extend(changelog, 0, [(f"k{i}".encode(), b"v") for i in range(5)])
        for i in range(5):
            bulk.add(applied, 0, b"S1", f"r{i}".encode())
        await bulk.flush()
    finally:
        await bulk.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = {}
        for topic in (changelog, applied):
            tp = TopicPartition(topic, 0)
            listed = (await consumer.end_offsets([tp]))[tp]
            exact = (await exact_end_offsets(consumer, [tp]))[tp]
            ends[topic.rsplit("-", 1)[1]] = (listed, exact)
        return ends
    finally:
        await consumer.stop()


def test_changelogs_end_exactly_and_other_topics_go_in_one_batch(stack: DevStack) -> None:
    """A changelog flush ends with a one-record batch, so the broker's ListOffsets
    is exact for Faust's recovery. Other topics go as one batch per partition:
    Tansu answers ListOffsets with the last batch's first offset + 1, so 1 here
    shows one batch (each batch costs Tansu's memory storage on every fetch)."""
    ends = asyncio.run(_flush_and_read_ends(stack.broker.bootstrap))
    assert ends["changelog"] == (5, 5)
    assert ends["applied"] == (1, 5)
