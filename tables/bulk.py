"""The fast changelog path: many records per produce request, one future per batch.

Faust sends each table write as its own message through its producer buffer
(~250 us of CPU per write here), which caps a worker at a few thousand writes
a second. A batch of the apply agent writes thousands of keys at once, so we
build aiokafka record batches per (topic, partition) ourselves, send them, and
wait for the broker's acks, then record the changelog offsets in RocksDB as
Faust's own ``_on_changelog_sent`` would (so recovery reads only what is new).

Tansu on memory storage answers ListOffsets (``end_offsets``) with the base
offset of a partition's *last record batch* plus one, so the records after the
first one of a multi-record batch sit beyond it. So each flush ends every
changelog partition with a one-record batch: that answer is then exact for any
reader. The other topics written here (applied, transfers, dead letters) go as
one batch per partition: their readers follow committed offsets and never ask
for the end, and Tansu lists every batch of a partition for every fetch that
finds data, so each extra batch costs it CPU for the rest of the run.
On S3 storage it is not (the first batch of the last whole second wins, see
``app/changelog_ends.py``), so Faust's recovery does not rely on it: it reads
each changelog to its last record. On Apache Kafka the tail costs one extra
small batch per partition per flush.

Under ``processing_guarantee=exactly_once`` writes go through Faust's
transactional producer instead (see ``tables/writer.py``): a separate producer
would sit outside the transaction.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from app import faults

_partitioner = DefaultPartitioner()


@lru_cache(maxsize=1 << 17)
def partition_for(key: str, partitions: int) -> int:
    """The partition the default producer picks for ``key`` (murmur2).

    Cached: murmur2 is pure Python here (~5 us), and the views ask it once per
    store or alert they read (a few hundred stores, a bounded set of keys).
    """
    all_partitions = list(range(partitions))
    return int(_partitioner(key.encode(), all_partitions, all_partitions))


#: queued records per (topic, partition or None = by key)
Pending = dict[tuple[str, int | None], list[tuple[bytes | None, bytes | None]]]


class UnknownPartition(RuntimeError):
    """A topic has fewer partitions than the tables' source topic: a setup error."""


class BulkProducer:
    """Collects records for one batch; :meth:`flush` sends them and waits for acks."""

    def __init__(self, bootstrap: str, *, freeze_points: bool = False, **config: Any) -> None:
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "linger_ms": 0,
            "max_batch_size": 1 << 20,
            "max_request_size": 16 << 20,
            "enable_idempotence": False,
            **config,
        }
        self._producer_obj: AIOKafkaProducer | None = None
        self._pending: Pending = defaultdict(list)
        self._partitions: dict[str, list[int]] = {}
        #: topics queued through :meth:`extend` (the changelogs): a one-record tail
        self._exact_ends: set[str] = set()
        self._started = False
        #: TEST ONLY: this producer carries the apply flush's freeze point (app/faults.py)
        self.freeze_points = freeze_points

    @property
    def _producer(self) -> AIOKafkaProducer:
        assert self._producer_obj is not None, "BulkProducer.start() first"
        return self._producer_obj

    async def start(self) -> None:
        """Connect (aiokafka needs a running loop, so not in ``__init__``)."""
        if not self._started:
            self._producer_obj = AIOKafkaProducer(**self._config)
            await self._producer_obj.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._producer.stop()
            self._started = False

    def add(
        self, topic: str, partition: int | None, key: bytes | None, value: bytes | None
    ) -> None:
        """Queue a record; ``partition=None`` partitions by key like the default producer."""
        self._pending[(topic, partition)].append((key, value))

    def extend(self, topic: str, partition: int, records: list[tuple[bytes, bytes]]) -> None:
        """Queue many records for one partition of a changelog (sent with an exact end)."""
        self._exact_ends.add(topic)
        self._pending[(topic, partition)].extend(records)

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())

    async def _partition_list(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            found = await self._producer.partitions_for(topic)
            parts = sorted(found)
            self._partitions[topic] = parts
        return parts

    def detach(self) -> Pending:
        """Take what is queued now; later ``add`` calls start a new batch."""
        pending, self._pending = self._pending, defaultdict(list)
        return pending

    async def flush(self, pending: Pending | None = None) -> dict[tuple[str, int], int]:
        """Send ``pending`` (default: everything queued); return the last offset per partition."""
        if pending is None:
            pending = self.detach()
        await self.start()
        routed: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
        for (topic, partition), records in pending.items():
            parts = await self._partition_list(topic)
            if partition is not None:
                if partition not in parts:
                    raise UnknownPartition(
                        f"{topic} has partitions {parts}, not {partition}: create it with "
                        "RETAIL_TOPIC_PARTITIONS partitions like retail.events"
                    )
                routed[(topic, partition)].extend(records)
                continue
            for key, value in records:
                p = _partitioner(key, parts, parts) if key is not None else parts[0]
                routed[(topic, p)].append((key, value))
        groups = list(routed.items())
        if faults.ARMED and self.freeze_points and faults.due("changelog_partial"):
            # TEST ONLY: every other (topic, partition) acknowledged, the rest never sent
            await self._send_and_wait(groups[::2])
            faults.freeze("changelog_partial")
        return await self._send_and_wait(groups)

    async def _send_and_wait(
        self, groups: list[tuple[tuple[str, int], list[tuple[bytes | None, bytes | None]]]]
    ) -> dict[tuple[str, int], int]:
        """Send each partition's records; return its last offset once all are acknowledged."""
        sends: list[tuple[tuple[str, int], int, asyncio.Future[Any]]] = []
        for (topic, partition), all_records in groups:
            if topic in self._exact_ends:
                # everything but the last record, then the last one alone (see above)
                parts = [all_records[:-1], all_records[-1:]]
            else:
                parts = [all_records]
            for records in parts:
                if records:
                    sends += await self._send(topic, partition, records)
        last: dict[tuple[str, int], int] = {}
        results = await asyncio.gather(*(fut for _, _, fut in sends))
        for (tp, count, _), metadata in zip(sends, results, strict=True):
            last[tp] = max(last.get(tp, -1), metadata.offset + count - 1)
        return last

    async def _send(
        self, topic: str, partition: int, records: list[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[tuple[str, int], int, asyncio.Future[Any]]]:
        sends: list[tuple[tuple[str, int], int, asyncio.Future[Any]]] = []
        if records:
            batch = self._producer.create_batch()
            count = 0
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    fut = await self._producer.send_batch(batch, topic, partition=partition)
                    sends.append(((topic, partition), count, fut))
                    batch = self._producer.create_batch()
                    count = 0
                    batch.append(key=key, value=value, timestamp=None)
                count += 1
            if count:
                fut = await self._producer.send_batch(batch, topic, partition=partition)
                sends.append(((topic, partition), count, fut))
        return sends
