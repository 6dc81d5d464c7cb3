"""exact_end_offsets against a fake broker that answers like Tansu (and like Kafka).

The e2e counterpart with a real Tansu on S3 is tests/central/test_broker_restart.py.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from app import changelog_ends
from app.changelog_ends import EndNotFound, exact_end_offsets

TOPIC = "t-changelog"


def batch_bytes(base: int, count: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i in range(count):
        builder.append(i, timestamp=None, key=b"k", value=b"v", headers=[])
    buf = builder.build()
    struct.pack_into(">q", buf, 0, base)  # the base offset leads the batch header
    return bytes(buf)


@dataclass
class Log:
    """A partition: batches (base, count), a high watermark, a ListOffsets answer."""

    batches: list[tuple[int, int]]
    highwater: int
    listed: int


@dataclass
class FakeBroker:
    logs: dict[int, Log]
    #: error codes answered to the next fetches, one each
    errors: list[int] = field(default_factory=list)
    fetches: list[tuple[int, int]] = field(default_factory=list)
    #: like Tansu when a fetch's listing runs out of time: a fetch made while
    #: others are in flight answers no records
    empty_when_busy: bool = False
    in_flight: int = 0
    most_in_flight: int = 0
    #: (partition, offset) of the fetches made while no other was in flight
    alone: list[tuple[int, int]] = field(default_factory=list)

    # the consumer's part
    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.logs[tp.partition].listed for tp in tps}

    @property
    def _client(self) -> FakeBroker:
        return self

    # the client's part
    @property
    def cluster(self) -> FakeBroker:
        return self

    def leader_for_partition(self, tp: TopicPartition) -> int:
        return 1

    async def force_metadata_update(self) -> bool:
        return True

    async def send(self, node: int, request: Any) -> Any:
        ((topic, ((partition, offset, max_bytes),)),) = request.topics
        self.fetches.append((partition, offset))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # the round trip: other fetches may start meanwhile
            busy = self.in_flight > 1
        finally:
            self.in_flight -= 1
        if not busy:
            self.alone.append((partition, offset))
        log = self.logs[partition]
        # the batch holding ``offset`` and the ones after it, below the watermark
        data = b"".join(
            batch_bytes(base, count)
            for base, count in log.batches
            if base + count > offset and base < log.highwater
        )[:max_bytes]
        if busy and self.empty_when_busy:
            data = b""

        error = self.errors.pop(0) if self.errors else 0

        class Response:
            topics = [(topic, [(partition, error, log.highwater, 0, 0, [], -1, data)])]

        return Response()


def ends(broker: FakeBroker, **options: int) -> dict[int, int]:
    tps = [TopicPartition(TOPIC, p) for p in sorted(broker.logs)]
    got = asyncio.run(exact_end_offsets(broker, tps, **options))
    return {tp.partition: got[tp] for tp in tps}


def test_reads_past_an_under_reported_end() -> None:
    batches = [(0, 1), (1, 5), (6, 3), (9, 10), (19, 1)]
    broker = FakeBroker({0: Log(batches, highwater=20, listed=1)})
    assert ends(broker) == {0: 20}


def test_kafka_like_answer_costs_one_fetch() -> None:
    broker = FakeBroker({0: Log([(0, 4), (4, 6)], highwater=10, listed=10)})
    assert ends(broker) == {0: 10}
    assert broker.fetches == [(0, 9)]


def test_a_hole_at_the_end_is_not_waited_for() -> None:
    # offsets 12-14 were taken (the watermark) but their batch never written
    broker = FakeBroker({0: Log([(0, 5), (5, 7)], highwater=15, listed=6)})
    assert ends(broker) == {0: 12}


def test_a_hole_is_only_believed_from_a_fetch_made_alone() -> None:
    # partition 0 has a real hole at its end (12-14); the others are whole,
    # and every fetch made beside another answers nothing
    logs = {0: Log([(0, 5), (5, 7)], highwater=15, listed=6)}
    logs |= {p: Log([(0, 5), (5, 7), (12, 3)], highwater=15, listed=6) for p in range(1, 6)}
    broker = FakeBroker(logs, empty_when_busy=True)
    assert ends(broker) == {0: 12, **{p: 15 for p in range(1, 6)}}
    assert broker.most_in_flight > 1
    # what ended each partition's read was a fetch answered alone
    assert {p for p, _ in broker.alone} == set(range(6))


def test_partitions_are_read_concurrently_up_to_the_limit() -> None:
    n = changelog_ends.CONCURRENT_PARTITIONS * 3
    logs = {p: Log([(0, 1), (1, 4), (5, 2)], highwater=7, listed=1) for p in range(n)}
    broker = FakeBroker(logs)
    assert ends(broker) == dict.fromkeys(range(n), 7)
    assert broker.most_in_flight == changelog_ends.CONCURRENT_PARTITIONS
    one_by_one = FakeBroker(logs)
    assert ends(one_by_one, concurrency=1) == dict.fromkeys(range(n), 7)
    assert one_by_one.most_in_flight == 1


def test_holes_inside_are_skipped() -> None:
    broker = FakeBroker({0: Log([(0, 2), (5, 3), (8, 1)], highwater=9, listed=1)})
    assert ends(broker) == {0: 9}


def test_empty_partitions_are_not_fetched() -> None:
    broker = FakeBroker({0: Log([], highwater=0, listed=0), 1: Log([(0, 2)], 2, 2)})
    assert ends(broker) == {0: 0, 1: 2}
    assert [p for p, _ in broker.fetches] == [1]


def test_a_broker_restarting_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog_ends, "RETRY_BACKOFF_S", 0.0)
    broker = FakeBroker({0: Log([(0, 2), (2, 2)], highwater=4, listed=1)}, errors=[6, 6])
    assert ends(broker) == {0: 4}  # NOT_LEADER twice (retriable), then the answer


def test_errors_fail_rather_than_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = FakeBroker({0: Log([(0, 2)], highwater=2, listed=1)}, errors=[29])
    with pytest.raises(TopicAuthorizationFailedError):
        ends(broker)  # not retriable
    monkeypatch.setattr(changelog_ends, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.setattr(changelog_ends, "RETRY_S", 0.0)
    broker = FakeBroker({0: Log([(0, 2)], highwater=2, listed=1)}, errors=[6] * 3)
    with pytest.raises(EndNotFound):
        ends(broker)  # retriable, but for too long


def test_install_replaces_faust_highwaters_once() -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._highwaters
    try:
        changelog_ends.install()
        patched = AIOKafkaConsumerThread._highwaters
        assert getattr(patched, "exact_ends", False)
        changelog_ends.install()
        assert AIOKafkaConsumerThread._highwaters is patched

        broker = FakeBroker({0: Log([(0, 3), (3, 3)], highwater=6, listed=4)})
        tp = TopicPartition(TOPIC, 0)

        class Thread:
            consumer = type("C", (), {"in_transaction": False})()

            def _ensure_consumer(self) -> FakeBroker:
                return broker

        assert asyncio.run(patched(Thread(), [tp])) == {tp: 6}
    finally:
        AIOKafkaConsumerThread._highwaters = original  # type: ignore[method-assign]
