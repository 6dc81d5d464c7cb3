"""Two ways faust-streaming 0.15.3 loses records around a rebalance, and their fixes.

``python -m sim chaos --memory`` lost 20-150 events in four runs of five: the
stores whose partitions came back to a worker after the rebalance fault (a
second worker joins, then is killed) showed a gap the centre never filled,
while the events were on ``retail.events``. The apply agent saw the offsets of
those partitions jump (committed 200, first record 210). Nothing was wrong in
our agents: the records never reached them.

1. **Records of paused partitions consumed and thrown away.** Faust hands its
   live ``_active_partitions`` set to aiokafka's ``Fetcher.fetched_records``,
   which runs in the consumer thread and drains every partition in it, or
   *every* partition when it is empty (``if partitions and tp not in
   partitions``) -- and it is empty while a rebalance has paused them all.
   aiokafka keeps fetching paused partitions in the background, so the drained
   records include them, and their positions move past them; Faust's
   ``getmany`` then drops the records of partitions that are not active. If
   that happens after the rebalance's seek to the committed offsets, nothing
   rewinds them: a hole. Fixed in ``_fetch_records``: aiokafka gets a copy of
   the set (nothing when it is empty), and records of a partition paused while
   it waited are handed back (the fetcher seeks the partition to the first of
   them) instead of being dropped.

2. **Records fetched before the seek cleared from the queues.**
   ``Recovery.on_recovery_completed`` resumes the stream partitions, then
   seeks them to the committed offsets, then resumes ``app.flow_control``,
   which clears every agent queue (``FlowControlEvent.resume``). Records
   fetched in between move the consumer's ``_read_offset`` forward (again,
   after the seek, for those still in hand) and are cleared from the queues;
   when the rewound fetch brings them again the consumer drops them as already
   read (``offset < _read_offset``). Fixed as faust-streaming fixed
   ``Recovery._resume_streams`` (PR 217): seek while the partitions are still
   paused, resume the flow (clearing queues that hold nothing of them), and
   only then resume the partitions. The rest of the method is Faust's.

3. **A paused partition fetched again when a queue drains.** When a queue
   fills, Faust takes its partition out of the fetch (``on_buffer_full``) and
   notes it as *buffered*; when the queue drains to 40 %, the queue's pending
   callback (``on_buffer_drop``) puts it back. Neither looks at pauses: a
   partition paused in between (every partition at a rebalance; a changelog
   partition once its recovery is done) is fetched again, and Faust delivers
   the records of a buffered partition even while it is paused. Clearing a
   queue (each rebalance does) leaves its callback pending, so the next read
   of the empty queue fires it. For an active changelog partition the records
   fetched are the worker's own writes, applied back over its live keys
   (finding 11, ``app/changelog_guard.py``). Fixed: pausing a partition ends
   its buffered state and a paused partition does not become buffered, so no
   paused partition is ever buffered and Faust's own ``on_buffer_drop``
   (which resumes only buffered ones) cannot resume it.

:func:`install` replaces the four methods; ``tests/unit/test_rebalance_fixes.py``
fails if a fix is undone or the pinned Faust moves the methods.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import ConsumerStoppedError
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread


async def fetch_records(
    self: Any,
    consumer: Any,
    active_partitions: set[Any],
    timeout: float | None = None,  # noqa: ASYNC109 - Faust's signature
    max_records: int | None = None,
) -> dict[Any, list[Any]]:
    """Faust's ``AIOKafkaConsumerThread._fetch_records``, never consuming a paused partition."""
    if not self.consumer.flow_active:
        return {}
    fetcher = consumer._fetcher
    if consumer._closed or fetcher._closed:
        raise ConsumerStoppedError()
    wanted = set(active_partitions)  # the live set changes under us (other thread)
    if not wanted:
        return {}  # aiokafka would read an empty set as "every partition"
    with fetcher._subscriptions.fetch_context():
        records: dict[Any, list[Any]] = await fetcher.fetched_records(
            wanted, timeout=timeout, max_records=max_records
        )
    for tp in [tp for tp in records if tp not in active_partitions]:
        # paused while we waited: Faust would drop these; fetch them again later
        # (a partition no longer assigned is read by its new owner from its
        # committed offset)
        first = records.pop(tp)[0].offset
        if fetcher._subscriptions.is_assigned(tp):
            fetcher.seek_to(tp, first)
    return records


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery.on_recovery_completed`` with the seek before the resume."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table],
                self.standbys_for_table[table],
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        # the stream partitions are still paused: nothing of them is fetched
        # (or queued) from where the consumer stood before the seek
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    self.completed.set()
    self.app.flow_control.resume()  # clears the agents' queues: none of these records yet
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    consumer.resume_flow()
    # finally make sure the fetcher is running.
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


def pause_partitions(self: Any, tps: Any) -> None:
    """Faust's ``Consumer.pause_partitions``; a paused partition is no longer buffered."""
    FAUST_PAUSE_PARTITIONS(self, tps)
    self._buffered_partitions.difference_update(self._paused_partitions)


def on_buffer_full(self: Any, tp: Any) -> None:
    """Faust's ``Consumer.on_buffer_full``; a paused partition is not fetched anyway."""
    if tp not in self._paused_partitions:
        FAUST_ON_BUFFER_FULL(self, tp)


#: Faust's own methods, as imported (for the tests that show the losses)
FAUST_FETCH_RECORDS = AIOKafkaConsumerThread._fetch_records
FAUST_ON_RECOVERY_COMPLETED = Recovery.on_recovery_completed
FAUST_PAUSE_PARTITIONS = Consumer.pause_partitions
FAUST_ON_BUFFER_FULL = Consumer.on_buffer_full
FAUST_ON_BUFFER_DROP = Consumer.on_buffer_drop


def install() -> None:
    """No record is dropped between a rebalance and the agents, and no paused
    partition is fetched (idempotent)."""
    AIOKafkaConsumerThread._fetch_records = fetch_records  # type: ignore[method-assign]
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
    Consumer.pause_partitions = pause_partitions  # type: ignore[method-assign]
    Consumer.on_buffer_full = on_buffer_full  # type: ignore[method-assign]
