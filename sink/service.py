"""The Postgres sink's consumer: in a worker, or a process of its own (``python -m sink run``).

It is a plain aiokafka consumer (no Faust delivery cost per record) writing
through :class:`agents.sink.PostgresSink`. A worker with
``RETAIL_SINK_ENABLED=true`` (the default) runs it on its own event loop
(:class:`SinkInWorker`), where it shares one CPU with the apply agent; run
apart (workers with ``RETAIL_SINK_ENABLED=false``), the operating system can
give it the other core. Either way the same promises hold:

- a batch is one transaction, retried until PostgreSQL takes it;
- ``sink_offsets``, written in that transaction, say what PostgreSQL already
  has: records at or below them are skipped, so any redelivery is a no-op;
- on assignment each partition starts just after its ``sink_offsets`` row, so
  moving the sink into or out of the workers rereads nothing, and a database
  restored empty (or from an older backup) is filled again;
- Kafka offsets are committed after PostgreSQL's COMMIT (at most once a
  second, and on stop), for the usual consumer-lag tools; they are a hint,
  PostgreSQL's are the truth.

Several sinks (processes, or workers) share the partitions (consumer group
``{app_id}-sink``); a revoked partition's late batch waits on the offset row
lock and then skips what the new owner wrote (``sink.writer``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

import asyncpg
import mode
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import start_http_server

from agents.sink import CONNECT_TIMEOUT_S, PostgresSink
from app import metrics
from app.fatal import exit_for_replay
from app.fetch_holes import install as read_no_hole
from app.rejoin import dead_member, leave_group, save_member, sink_member_file
from app.security import aiokafka_security
from app.settings import Settings

log = logging.getLogger("sink.service")

#: How often progress is logged (records committed, lag).
PROGRESS_EVERY_S = 10.0

#: How often the Kafka offsets (a hint: ``sink_offsets`` hold the truth) are
#: committed. Once per batch cost a broker round trip on the path to PostgreSQL
#: and, on Tansu, a request that competes with the fetches for the broker's CPU.
KAFKA_COMMIT_EVERY_S = 1.0

#: The most one fetch brings of one partition (see :func:`make_consumer`).
SINK_PARTITION_FETCH_BYTES = 16 << 20

#: How long a stopping worker waits for its sink's batch in hand. PostgreSQL
#: down holds that batch in its retry loop for as long as the outage lasts; the
#: worker then stops anyway, and the batch comes again (``sink_offsets``).
STOP_WAIT_S = 10.0


def sink_topics(settings: Settings) -> list[str]:
    """What the sink reads: the apply agent's output and the dead letters."""
    return [f"{settings.app_id}.applied", settings.dead_letters_topic]


def group_id(settings: Settings) -> str:
    return f"{settings.app_id}-sink"


async def committed_offsets(
    settings: Settings, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The last offset PostgreSQL holds for each partition (absent: none yet)."""
    tps = list(partitions)
    conn = await asyncpg.connect(
        settings.database_url.get_secret_value(), timeout=CONNECT_TIMEOUT_S
    )
    try:
        rows = await conn.fetch(
            'SELECT topic, partition, "offset" FROM sink_offsets'
            " WHERE (topic, partition) IN (SELECT * FROM unnest($1::text[], $2::int[]))",
            [tp.topic for tp in tps],
            [tp.partition for tp in tps],
        )
    finally:
        await conn.close()
    return {TopicPartition(r["topic"], r["partition"]): int(r["offset"]) for r in rows}


Fetched = dict[TopicPartition, list[ConsumerRecord[Any, Any]]]


class StartAfterPostgres(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seek each newly assigned partition to just after what PostgreSQL has.

    PostgreSQL is the record of what was written (``sink_offsets`` commits in
    the same transaction as the rows), so a partition it holds nothing of starts
    from its beginning, not from the group's committed offset: a database
    restored empty, or replaced, is filled again rather than left short.

    If PostgreSQL cannot be asked now, the partition starts at the group's
    committed offset (or the beginning), and the writer skips the records
    PostgreSQL already has.

    aiokafka hands out records as soon as partitions are assigned, while this
    listener still waits for PostgreSQL: records read from the group's
    committed offset, *above* what PostgreSQL has. Written, they would move
    ``sink_offsets`` over the records between, which would then be skipped
    for good. So a fetch that spans a placement goes through :meth:`placed_records`.
    """

    def __init__(
        self, settings: Settings, consumer: AIOKafkaConsumer, member_file: Path | None = None
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        #: where this sink's member id is kept for its next start (app/rejoin.py)
        self.member_file = member_file
        #: set while no rebalance is placing partitions
        self.placed = asyncio.Event()
        #: how many placements have finished
        self.placements = 0
        #: where the last placement started each partition it sought
        self.starts: dict[TopicPartition, int] = {}

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.placed.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.placed.clear()
        if self.member_file is not None:
            save_member(self.consumer, self.member_file)
        try:
            self.starts = await self._place(assigned) if assigned else {}
        finally:
            self.placements += 1
            self.placed.set()

    async def _place(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
        try:
            offsets = await asyncio.wait_for(
                committed_offsets(self.settings, assigned), CONNECT_TIMEOUT_S
            )
        except asyncpg.UndefinedTableError:
            offsets = {}  # a database the sink has not migrated yet holds nothing
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            log.warning(
                "assigned %d partitions; sink_offsets unreadable (%r): starting from the group's"
                " offsets",
                len(assigned),
                exc,
            )
            return {}
        starts = {tp: offset + 1 for tp, offset in offsets.items()}
        unwritten = [tp for tp in assigned if tp not in offsets]
        if unwritten:
            try:
                starts.update(await self.consumer.beginning_offsets(unwritten))
            except KafkaError as exc:
                log.warning("beginning offsets unreadable (%r): the group's offsets", exc)
        for tp, start in starts.items():
            self.consumer.seek(tp, start)
        log.info(
            "assigned %d partitions; %d start after sink_offsets, %d from their beginning"
            " (nothing of them in PostgreSQL)",
            len(assigned), len(offsets), len(unwritten),
        )  # fmt: skip
        return starts

    def placed_records(self, fetched: Fetched, placements_before: int) -> Fetched:
        """The records of a fetch begun after ``placements_before`` placements that may be written.

        If a placement finished since, a partition it sought may have handed
        out records from before its seek; they are dropped, and the partition
        is read again from the lower of its start and their first offset
        (their first offset: they were read after the seek, so nothing is lost).
        """
        if placements_before == self.placements:
            return fetched
        kept: Fetched = {}
        for tp, records in fetched.items():
            start = self.starts.get(tp)
            if start is None or not records:
                kept[tp] = records  # not sought: read from the group's offset, as it should be
                continue
            with suppress(IllegalStateError):  # revoked since: its next owner places it
                self.consumer.seek(tp, min(start, records[0].offset))
        return kept


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id(settings),
        client_id=group_id(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.sink_fetch_max_wait_ms,
        # a fetch that waits its 250 ms (the default) and brings 1 MB
        # (aiokafka's default per partition) caps a one-partition
        # ``applied`` at 4 MB/s; a draining
        # backlog's ledger rows and snapshots come faster than that
        max_partition_fetch_bytes=SINK_PARTITION_FETCH_BYTES,
        session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
        rebalance_timeout_ms=int(settings.broker_rebalance_timeout_s * 1000),
        # a Postgres outage holds one batch for as long as it lasts: staying in
        # the group meanwhile keeps the partitions (and their order) here
        max_poll_interval_ms=24 * 3600 * 1000,
        **aiokafka_security(settings),
    )


async def run(
    settings: Settings, stop: asyncio.Event, sink: PostgresSink, member_file: Path | None = None
) -> None:
    """Consume, write, commit, until ``stop`` is set; the batch in hand is finished first.

    ``member_file``: where the sink keeps its member id for its next start,
    when nothing else uses the data directory (inside a worker). After a kill
    -9 the dead member then leaves the group before the new one joins, rather
    than holding the join for a session (``app/rejoin.py``).
    """
    consumer = make_consumer(settings)
    await consumer.start()
    dead = dead_member(member_file) if member_file is not None else None
    if dead is not None:
        await leave_group(consumer, dead)
    if not await _wait_for_applied_topic(consumer, settings, stop):
        await consumer.stop()
        return
    placing = StartAfterPostgres(settings, consumer, member_file)
    consumer.subscribe(sink_topics(settings), listener=placing)
    log.info("sink running: %s -> PostgreSQL (group %s)", sink_topics(settings), group_id(settings))
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    next_kafka_commit = time.monotonic() + KAFKA_COMMIT_EVERY_S
    written: dict[TopicPartition, int] = {}  # offsets PostgreSQL has, not yet committed
    stopping = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            placements_before = placing.placements
            fetch = asyncio.create_task(
                consumer.getmany(
                    timeout_ms=int(settings.sink_batch_within_s * 1000),
                    max_records=settings.sink_batch_max,
                )
            )
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()
                with suppress(asyncio.CancelledError):
                    await fetch
                break
            if not placing.placed.is_set():  # partitions are being placed: wait for the seeks
                placed = asyncio.create_task(placing.placed.wait())
                await asyncio.wait({placed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                placed.cancel()
                if stop.is_set():
                    break
            batch = placing.placed_records(fetch.result(), placements_before)
            records = [r for part in batch.values() for r in part]
            if records:
                await sink.write_records(records)
                written.update({tp: part[-1].offset + 1 for tp, part in batch.items()})
            if written and time.monotonic() >= next_kafka_commit:
                next_kafka_commit = time.monotonic() + KAFKA_COMMIT_EVERY_S
                await _commit(consumer, written)
                written = {}
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + PROGRESS_EVERY_S
                log.info(
                    "sink: %d records committed, %.1fs behind, %d retries",
                    sink.committed_records, sink.lag_seconds, sink.retries,
                )  # fmt: skip
    finally:
        stopping.cancel()
        if written:
            await _commit(consumer, written)
        await consumer.stop()
        log.info("sink stopped: %d records committed", sink.committed_records)


class SinkInWorker(mode.Service):
    """The sink inside a worker: :func:`run` on the worker's event loop.

    A dependency of the Faust app (``app.add_dependency``), so it starts with
    the app's consumer and joins its own group while the worker joins its
    own: Faust's ``@app.task`` would start it only once the tables are
    recovered, one group join later.

    It reads with its own consumer group, not through a Faust agent, so it
    starts where PostgreSQL's ``sink_offsets`` say, like ``python -m sink
    run``: a database restored empty is filled again, which a Faust agent
    (starting from the worker group's committed offsets) could not do. A
    batch PostgreSQL refuses for good (not an outage) exits the worker, as a
    failed apply batch does (``app/fatal.py``).
    """

    def __init__(self, settings: Settings, sink: PostgresSink) -> None:
        super().__init__()
        self.settings = settings
        self.sink = sink
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postgres-sink")

    async def on_stop(self) -> None:
        await self.finish()

    async def _run(self) -> None:
        try:
            await run(
                self.settings, self._stop, self.sink, sink_member_file(self.settings.data_dir)
            )
        except Exception as exc:  # noqa: BLE001 - anything but an outage: restart and replay
            exit_for_replay("writing a batch to PostgreSQL", exc)

    async def finish(self, wait_s: float = STOP_WAIT_S) -> None:
        """Finish the batch in hand (at most ``wait_s``), leave the group, close (idempotent)."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), wait_s)
            except TimeoutError:
                log.warning("sink: batch in hand not committed in %.0fs; it comes again", wait_s)
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        await self.sink.close()


async def _wait_for_applied_topic(
    consumer: AIOKafkaConsumer, settings: Settings, stop: asyncio.Event
) -> bool:
    """Wait until a worker has created ``{app_id}.applied`` (False: stopped first).

    Subscribing earlier would have the broker auto-create it with its default
    partition count; the worker creates it with ``RETAIL_TOPIC_PARTITIONS``.
    """
    topic = sink_topics(settings)[0]
    said = False
    while not stop.is_set():
        try:
            if topic in await consumer.topics():
                return True
        except KafkaError as exc:  # the broker is not up yet
            log.debug("no metadata yet: %r", exc)
        if not said:
            log.info("waiting for a worker to create %s", topic)
            said = True
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return False


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    """Commit Kafka offsets after PostgreSQL's COMMIT; a rebalance may refuse, harmlessly."""
    # offsets held over a rebalance may name partitions we no longer own:
    # aiokafka refuses the whole commit for one of those
    assigned = consumer.assignment()
    offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError, KafkaError) as exc:
        log.debug("offset commit skipped (%r); sink_offsets hold the truth", exc)


def main(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT."""

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sink = PostgresSink(settings)
        if settings.sink_metrics_port:
            # the retail_sink_* metrics a worker's /metrics shows when the sink runs inside it
            start_http_server(
                settings.sink_metrics_port, settings.web_host, registry=metrics.REGISTRY
            )
        read_no_hole(settings.fetch_hole_wait_s)  # Tansu can show a batch before an earlier one
        try:
            await run(settings, stop, sink)
        finally:
            await sink.close()

    asyncio.run(serve())
    return 0
