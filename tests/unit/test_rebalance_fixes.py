"""app/rebalance_fixes.py: no record is consumed and dropped around a rebalance.

The fakes follow aiokafka 0.14 and faust-streaming 0.15.3 where it matters:
``Fetcher.fetched_records`` drains the partitions it is given, or every
partition when given an empty set, and moves their positions past what it
returns; Faust drops what ``_fetch_records`` returns for partitions it has
paused. Each test runs against the methods as installed, so it fails on
Faust's originals (``test_faust_originals_lose_records`` shows how).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from app import rebalance_fixes

P0 = TopicPartition("retail.events", 0)
P1 = TopicPartition("retail.events", 1)


@dataclass
class Record:
    offset: int


@dataclass
class Subscriptions:
    assigned: set[TopicPartition]

    @contextlib.contextmanager
    def fetch_context(self) -> Iterator[None]:
        yield

    def is_assigned(self, tp: TopicPartition) -> bool:
        return tp in self.assigned


@dataclass
class Fetcher:
    """A partition log per tp, fetched in the background whatever Faust paused."""

    ends: dict[TopicPartition, int]
    position: dict[TopicPartition, int] = field(default_factory=dict)
    #: runs while fetched_records waits (Faust's thread pausing partitions)
    during_wait: Callable[[], None] | None = None
    _closed: bool = False

    def __post_init__(self) -> None:
        self._subscriptions = Subscriptions(set(self.ends))
        for tp in self.ends:
            self.position.setdefault(tp, 0)

    async def fetched_records(
        self, partitions: set[TopicPartition], timeout: float = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        if self.during_wait is not None:
            self.during_wait()
        out = {}
        for tp, end in self.ends.items():
            if partitions and tp not in partitions:  # aiokafka: empty means every partition
                continue
            if self.position[tp] < end:
                out[tp] = [Record(o) for o in range(self.position[tp], end)]
                self.position[tp] = end
        return out

    def seek_to(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset


@dataclass
class Consumer:
    _fetcher: Fetcher
    _closed: bool = False


class FaustThread:
    def __init__(self) -> None:
        self.consumer = type("FaustConsumer", (), {"flow_active": True})()


def fetch(
    fetcher: Fetcher, active: set[TopicPartition], method: Any = rebalance_fixes.fetch_records
) -> dict[TopicPartition, list[Record]]:
    got: dict[TopicPartition, list[Record]] = asyncio.run(
        method(FaustThread(), Consumer(fetcher), active, timeout=0.0)
    )
    return got


def delivered(
    fetcher: Fetcher, active: set[TopicPartition], got: dict[TopicPartition, list[Record]]
) -> dict[TopicPartition, list[int]]:
    """What reaches the agents: Faust's getmany drops partitions not active (any more)."""
    return {tp: [r.offset for r in recs] for tp, recs in got.items() if tp in active}


def test_nothing_is_consumed_while_every_partition_is_paused() -> None:
    fetcher = Fetcher({P0: 5, P1: 3})
    assert fetch(fetcher, set()) == {}
    assert fetcher.position == {P0: 0, P1: 0}
    active = {P0, P1}  # resumed after the rebalance's seek: every record arrives
    assert delivered(fetcher, active, fetch(fetcher, active)) == {
        P0: [0, 1, 2, 3, 4],
        P1: [0, 1, 2],
    }


def test_a_partition_paused_during_the_wait_is_fetched_again_later() -> None:
    active = {P0, P1}
    fetcher = Fetcher({P0: 4, P1: 3}, position={P0: 1, P1: 1})
    fetcher.during_wait = lambda: active.discard(P1)  # a rebalance starts meanwhile
    got = delivered(fetcher, active, fetch(fetcher, active))
    assert got == {P0: [1, 2, 3]}
    assert fetcher.position[P1] == 1  # handed back, not dropped
    fetcher.during_wait = None
    active.add(P1)
    assert delivered(fetcher, active, fetch(fetcher, active)) == {P1: [1, 2]}


def test_a_partition_revoked_during_the_wait_is_left_to_its_new_owner() -> None:
    active = {P0, P1}
    fetcher = Fetcher({P0: 2, P1: 2})

    def revoke() -> None:
        active.discard(P1)
        fetcher._subscriptions.assigned.discard(P1)

    fetcher.during_wait = revoke
    assert delivered(fetcher, active, fetch(fetcher, active)) == {P0: [0, 1]}


class Calls(list[str]):
    def note(self, name: str) -> Callable[..., None]:
        def record(*args: Any, **kwargs: Any) -> None:
            self.append(name)

        return record


def fake_recovery(calls: Calls) -> Any:
    """Just enough of a Recovery for on_recovery_completed, recording the order."""

    async def perform_seek() -> None:
        calls.append("seek")

    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    async def wait(coro: Awaitable[None], timeout: float | None = None) -> None:
        await coro

    consumer = type("C", (), {})()
    consumer.assignment = lambda: {P0}
    consumer.perform_seek = perform_seek
    consumer.resume_partitions = calls.note("resume_partitions")
    consumer.resume_flow = calls.note("resume_flow")
    app = type("App", (), {})()
    app.consumer = consumer
    app.consumer_generation_id = 3
    app.on_rebalance_complete = type("S", (), {"send": staticmethod(nothing)})()
    app.flow_control = type("F", (), {"resume": staticmethod(calls.note("flow_resume"))})()
    app._fetcher = type("Fe", (), {"maybe_start": staticmethod(nothing)})()
    app.assignor = type("A", (), {"assigned_standbys": staticmethod(lambda: set())})()
    app.conf = type("Conf", (), {"broker_request_timeout": 1.0})()
    app.on_rebalance_end = calls.note("rebalance_end")
    rec = type("R", (), {})()
    rec.app = app
    rec.log = type("L", (), {"info": staticmethod(print), "warning": staticmethod(print),
                             "dev": staticmethod(print)})()  # fmt: skip
    rec._set_recovery_ended = lambda: None
    rec.tables = {}
    rec._wait = wait
    rec.completed = asyncio.Event()
    rec._is_changelog_tp = lambda tp: False
    rec.tables = type("T", (), {"values": staticmethod(lambda: []),
                                "on_actives_ready": staticmethod(lambda: None),
                                "on_standbys_ready": staticmethod(lambda: None)})()  # fmt: skip
    return rec


def test_recovery_seeks_before_it_resumes_the_stream_partitions() -> None:
    calls = Calls()
    asyncio.run(rebalance_fixes.on_recovery_completed(fake_recovery(calls), 3))
    assert calls == ["seek", "flow_resume", "resume_partitions", "resume_flow", "rebalance_end"]


def test_faust_originals_lose_records() -> None:
    """Why the fixes exist: through Faust's own methods the fakes lose records."""
    fetcher = Fetcher({P0: 5})
    lost = delivered(fetcher, set(), fetch(fetcher, set(), rebalance_fixes.FAUST_FETCH_RECORDS))
    assert lost == {} and fetcher.position[P0] == 5  # consumed, and nobody got them
    calls = Calls()
    asyncio.run(rebalance_fixes.FAUST_ON_RECOVERY_COMPLETED(fake_recovery(calls), 3))
    assert calls.index("resume_partitions") < calls.index("seek")


STREAM = TP("retail.events", 0)
CHANGELOG = TP("stock-changelog", 0)


class PartitionSets:
    """The partition bookkeeping of Faust's ``Consumer``, run by its own methods
    (``pause``/``full``/``drop``: Faust's or the fixes')."""

    _get_active_partitions = FaustConsumer._get_active_partitions
    _set_active_tps = FaustConsumer._set_active_tps
    resume_partitions = FaustConsumer.resume_partitions

    def __init__(self, pause: Any, full: Any, drop: Any) -> None:
        self._pause, self._full, self._drop = pause, full, drop
        self._active_partitions: set[TP] | None = None
        self._paused_partitions: set[TP] = set()
        self._buffered_partitions: set[TP] = set()
        self.app = type("App", (), {"in_recovery": False})()

    def assignment(self) -> set[TP]:
        return {STREAM, CHANGELOG}

    def pause_partitions(self, tps: Any) -> None:
        self._pause(self, tps)

    def on_buffer_full(self, tp: TP) -> None:
        self._full(self, tp)

    def on_buffer_drop(self, tp: TP) -> None:
        self._drop(self, tp)

    def fetched(self) -> set[TP]:
        """The partitions Faust's fetcher asks the broker for."""
        return set(self._get_active_partitions())

    def delivered(self) -> set[TP]:
        """The partitions whose fetched records Faust's getmany hands on."""
        return self.fetched() | self._buffered_partitions


def drain_after_pause(sets: PartitionSets, tp: TP) -> None:
    """A queue fills (tp buffered), a rebalance pauses tp and clears the queue,
    and the next read of the empty queue fires its pending pressure-drop callback."""
    queue: FlowControlQueue[int] = FlowControlQueue(10, flow_control=FlowControlEvent())
    for i in range(10):
        queue.put_nowait_enhanced(
            i,
            on_pressure_high=lambda: sets.on_buffer_full(tp),
            on_pressure_drop=lambda: sets.on_buffer_drop(tp),
        )
    assert tp in sets._buffered_partitions
    sets.pause_partitions({tp})
    queue.clear()
    with contextlib.suppress(asyncio.QueueEmpty):
        queue.get_nowait()


def fixed_sets() -> PartitionSets:
    fixes = rebalance_fixes
    return PartitionSets(fixes.pause_partitions, fixes.on_buffer_full, fixes.FAUST_ON_BUFFER_DROP)


def test_a_drained_queue_leaves_a_paused_partition_paused() -> None:
    sets = fixed_sets()
    drain_after_pause(sets, CHANGELOG)
    assert CHANGELOG not in sets.delivered()
    assert STREAM in sets.fetched()
    sets.resume_partitions({CHANGELOG})  # recovery resumes it on purpose
    assert CHANGELOG in sets.fetched()


def test_a_paused_partition_does_not_become_buffered() -> None:
    sets = fixed_sets()
    sets.pause_partitions({CHANGELOG})
    sets.on_buffer_full(CHANGELOG)  # a late record put while it is paused
    assert CHANGELOG not in sets.delivered()


def test_a_drained_queue_still_resumes_a_partition_it_held_back() -> None:
    sets = fixed_sets()
    sets.on_buffer_full(STREAM)
    assert STREAM not in sets.fetched()
    sets.on_buffer_drop(STREAM)
    assert STREAM in sets.fetched()


def test_faust_resumes_the_paused_changelog_partition() -> None:
    """Why fix 3 exists: Faust's own methods fetch the paused partition again."""
    fixes = rebalance_fixes
    sets = PartitionSets(fixes.FAUST_PAUSE_PARTITIONS, fixes.FAUST_ON_BUFFER_FULL,
                         fixes.FAUST_ON_BUFFER_DROP)  # fmt: skip
    drain_after_pause(sets, CHANGELOG)
    assert CHANGELOG in sets._paused_partitions
    assert CHANGELOG in sets.fetched()  # paused, and fetched


def test_install_puts_the_fixes_on_faust() -> None:
    originals = (
        AIOKafkaConsumerThread._fetch_records,
        Recovery.on_recovery_completed,
        FaustConsumer.pause_partitions,
        FaustConsumer.on_buffer_full,
        FaustConsumer.on_buffer_drop,
    )
    try:
        rebalance_fixes.install()
        rebalance_fixes.install()
        assert AIOKafkaConsumerThread._fetch_records is rebalance_fixes.fetch_records
        assert Recovery.on_recovery_completed is rebalance_fixes.on_recovery_completed
        assert FaustConsumer.pause_partitions is rebalance_fixes.pause_partitions
        assert FaustConsumer.on_buffer_full is rebalance_fixes.on_buffer_full
        # Faust's own: with no paused partition ever buffered, it cannot resume one
        assert FaustConsumer.on_buffer_drop is rebalance_fixes.FAUST_ON_BUFFER_DROP
    finally:
        AIOKafkaConsumerThread._fetch_records = originals[0]  # type: ignore[method-assign]
        Recovery.on_recovery_completed = originals[1]  # type: ignore[method-assign]
        FaustConsumer.pause_partitions = originals[2]  # type: ignore[method-assign]
        FaustConsumer.on_buffer_full = originals[3]  # type: ignore[method-assign]
        FaustConsumer.on_buffer_drop = originals[4]  # type: ignore[method-assign]
