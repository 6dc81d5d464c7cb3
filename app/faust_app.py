"""Build the Faust application: topics, tables, agents and web views.

``faust -A app worker -l info`` finds it through ``app.app`` (see
``app/__init__.py``); everything is wired from one :class:`Settings`.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import faust
from faust.assignor import PartitionAssignor

from agents.apply import Applier
from agents.repartition import fold_transfer_legs
from agents.reservations import Reservations
from agents.sink import PostgresSink
from app import faults
from app.changelog_ends import install as read_changelogs_to_their_end
from app.changelog_guard import install as never_roll_back_live_keys
from app.consumer_tuning import set_fetch_max_wait
from app.fatal import exit_for_replay
from app.fetch_holes import install as read_no_hole
from app.gc_tuning import tune_collector
from app.logging_setup import quiet_libraries
from app.rebalance_fixes import install as keep_records_across_rebalances
from app.rejoin import dead_member, member_file, remember_member
from app.security import aiokafka_security, faust_credentials
from app.settings import Settings, get_settings
from app.topics import Topics, define_topics, raw_topic
from app.warmup import WarmupAssignor
from sink.commits import PostgresCommits
from sink.service import SinkInWorker
from tables.bulk import BulkProducer
from tables.state import StateCache, Tables, define_tables
from tables.writer import BatchWriter

log = logging.getLogger(__name__)


@dataclass
class Central:
    """Everything a view or a test needs to reach inside a worker."""

    app: faust.App
    settings: Settings
    topics: Topics
    tables: Tables
    cache: StateCache
    applier: Applier
    #: None when the sink runs apart (``RETAIL_SINK_ENABLED=false``): a worker
    #: without one must not publish the sink's metrics as zeros
    sink: PostgresSink | None
    reservations: Reservations
    #: the sync view's Postgres side: this worker's sink, or PostgreSQL itself
    #: when the sink runs apart (``python -m sink run``)
    pg_side: PostgresSink | PostgresCommits


async def handle_batches(
    stream: Any,
    max_records: int,
    within_s: float,
    handle: Callable[[list[Any]], Awaitable[Any]],
    what: str,
) -> None:
    """Take batches, handle each, and ack it only once handled (durable).

    Any failure exits the worker so it replays from the committed offsets
    (``app/fatal.py``); Faust would restart the agent without redelivering.
    """
    async for batch in stream.noack_take(max_records, within_s):
        try:
            await handle(batch)
        except Exception as exc:  # noqa: BLE001 - any failure: restart and replay
            exit_for_replay(what, exc)
        for event in batch:
            await stream.ack(event)


def make_faust_app(settings: Settings) -> faust.App:
    # fast rejoin after kill -9: the dead member leaves first (app/rejoin.py)
    set_fetch_max_wait(
        settings.consumer_fetch_max_wait_ms, dead_member(member_file(settings.data_dir))
    )
    read_changelogs_to_their_end()  # recovery's high watermarks: the last record (Tansu)
    keep_records_across_rebalances()  # Faust drops records around rebalances (issue 9)
    never_roll_back_live_keys()  # its own changelog records read back (finding 11)
    read_no_hole(settings.fetch_hole_wait_s)  # Tansu can show a batch before an earlier one
    worker_dir = settings.data_dir / "worker"
    worker_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=settings.kafka_brokers,
        store="rocksdb://",
        datadir=str(worker_dir),
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        table_standby_replicas=settings.table_standby_replicas,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        canonical_url=f"http://{settings.web_host}:{settings.web_port}",
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.005,
        producer_max_batch_size=512 * 1024,
        stream_wait_empty=False,
        web_enabled=True,
        TableManager="app.table_manager:PromptTableManager",
        # a partition moves only to a worker that holds its tables (app/warmup.py)
        PartitionAssignor=WarmupAssignor if settings.partition_warmup else PartitionAssignor,
        # issue 10: TLS / SASL-SCRAM to Kafka from RETAIL_KAFKA_* (None: plaintext)
        broker_credentials=faust_credentials(settings),
    )


def build(settings: Settings) -> Central:
    quiet_libraries(
        "warning" if settings.log_level.lower() != "debug" else "info",
        recovery=settings.recovery_log_level or None,
    )
    faults.configure(settings.test_freeze_at, settings.data_dir)  # TEST ONLY; "" disarms
    app = make_faust_app(settings)
    topics = define_topics(app, settings)
    tables = define_tables(app, settings)
    cache = StateCache(tables)
    reservations = Reservations(topics.reservations)

    def batch_writer(*, freeze_points: bool = False) -> BatchWriter:
        """One writer (and one bulk producer) per agent: their flushes never mix."""
        bulk = None
        if settings.processing_guarantee == "at_least_once":
            bulk = BulkProducer(
                settings.bootstrap_servers,
                freeze_points=freeze_points,
                **aiokafka_security(settings),
            )
            bulk_producers.append(bulk)
        return BatchWriter(vars(tables).values(), bulk)

    bulk_producers: list[BulkProducer] = []
    applier = Applier(
        settings, topics, tables, cache, reservations, batch_writer(freeze_points=True)
    )
    transfer_writer = batch_writer()
    sink = PostgresSink(settings) if settings.sink_enabled else None
    # its own consumer group, so it starts where PostgreSQL's sink_offsets say
    sink_inside = SinkInWorker(settings, sink) if sink is not None else None
    pg_side = sink or PostgresCommits(settings)
    central = Central(app, settings, topics, tables, cache, applier, sink, reservations, pg_side)

    # Outlet events and reservation commands in one stream: co-partitioned by
    # store, so a reservation is decided in order with the store's events.
    source = raw_topic(
        app,
        settings,
        topics.events.get_topic_name(),
        topics.reservations.get_topic_name(),
        internal=True,
    )

    @app.agent(source, name="apply")
    async def apply(stream: Any) -> None:
        # A take is acked after the *next* take's flush: that flush carries the
        # durable_wm its own flush earned (agents/apply.py), in one round trip.
        previous: list[Any] = []
        async for batch in stream.noack_take(
            settings.apply_batch_max, settings.apply_batch_within_s
        ):
            try:
                await applier.process(batch)
            except Exception as exc:  # noqa: BLE001 - any failure: restart and replay
                exit_for_replay("applying a batch", exc)
            for event in previous:
                await stream.ack(event)
            previous = batch

    if sink_inside is not None:
        app.add_dependency(sink_inside)  # starts with the app's consumer, not after recovery

    if isinstance(pg_side, PostgresCommits):
        commits = pg_side

        @app.timer(1.0)  # type: ignore[untyped-decorator]
        async def read_postgres_commits() -> None:
            await commits.refresh()

    @app.agent(topics.transfers, name="transfers")
    async def transfers(stream: Any) -> None:
        async def fold(batch: list[Any]) -> None:
            await fold_transfer_legs(tables.transfers, batch, transfer_writer)

        await handle_batches(stream, 500, 0.1, fold, "folding transfer legs")

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def expire_reservations() -> None:
        """SPEC "Reservations": a reservation ends when its time to live runs out."""
        now_ms = int(time.time() * 1000)
        while applier.expiries and applier.expiries[0][0] <= now_ms:
            _, store_id, order_id = heapq.heappop(applier.expiries)
            await reservations.expire(store_id, order_id)

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def hand_over_warm_partitions() -> None:
        assignor = app.assignor
        if isinstance(assignor, WarmupAssignor):
            assignor.request_handover_if_warm()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_own_clients(sender: Any, *args: Any, **kwargs: Any) -> None:
        if sink_inside is not None:
            await sink_inside.finish()  # the batch in hand first, then leave its group
        for bulk in bulk_producers:
            await bulk.stop()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def save_member_id(sender: Any, *args: Any, **kwargs: Any) -> None:
        remember_member(app, member_file(settings.data_dir))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def drop_cache(sender: Any, *args: Any, **kwargs: Any) -> None:
        # another worker may now own some of our keys: finish the group in
        # hand (no late writes to a revoked partition), then reread the tables
        await applier.reset_when_idle()

    @app.task  # type: ignore[untyped-decorator]
    async def settle_collector() -> None:
        tune_collector()  # app/gc_tuning.py: GC was 11-15 % of the worker's CPU

    @app.task  # type: ignore[untyped-decorator]
    async def prepare_producer() -> None:
        # Faust's ProducerBuffer stalls input at 100 pending sends ("producer
        # buffer full"); a batch writes far more than that before it waits.
        app.producer.buffer.max_messages = 100_000
        # Output topics are only written to: declare them so the producer
        # knows their partitions before the first batch needs them.
        for topic in (topics.dead_letters, topics.applied, topics.transfers, topics.reservations):
            await topic.maybe_declare()

    from app.web.views import register_views

    register_views(central)
    return central


@lru_cache(maxsize=1)
def get_central() -> Central:
    return build(get_settings())


def get_app() -> faust.App:
    return get_central().app
