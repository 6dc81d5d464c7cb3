"""app/fetch_holes.py: a fetch whose batches skip offsets is read only up to the hole.

The fetch responses are real record batches (aiokafka's builder, with the base
offsets a broker writes), read by aiokafka 0.14's ``PartitionRecords`` as its
fetcher does. ``test_aiokafka_alone_reads_past_a_hole`` shows the loss the
guard prevents.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import aiokafka.consumer.fetcher as aiokafka_fetcher
import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from app import fetch_holes, metrics
from app.fetch_holes import AIOKAFKA_PARTITION_RECORDS, HoleWatch, guarded_partition_records

EVENTS = TopicPartition("retail.events", 3)
CHANGELOG = TopicPartition("retail-stock-changelog", 3)


def batch(base: int, count: int) -> bytes:
    """One record batch holding offsets ``base .. base+count-1``, as a broker stores it."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for delta in range(count):
        builder.append(delta, timestamp=None, key=b"S1", value=b"{}", headers=[])
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, base)  # the broker assigns the base offset
    return bytes(raw)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def read(
    cls: type, tp: TopicPartition, fetch_offset: int, *batches: bytes
) -> tuple[list[int], int]:
    """The offsets a fetch response yields, and where the next fetch starts."""
    records = cls(tp, MemoryRecords(b"".join(batches)), [], fetch_offset, None, None, True, 0)
    offsets = [r.offset for r in records]
    return offsets, records.next_fetch_offset


def holes(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("retail_fetch_holes_total", {"outcome": outcome}) or 0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guarded(clock: Clock) -> type:
    return guarded_partition_records(HoleWatch(5.0, fetch_holes.not_compacted, clock))


def test_aiokafka_alone_reads_past_a_hole() -> None:
    offsets, next_fetch = read(AIOKAFKA_PARTITION_RECORDS, EVENTS, 0, batch(0, 5), batch(10, 3))
    assert offsets == [0, 1, 2, 3, 4, 10, 11, 12] and next_fetch == 13  # 5..9 never read


def test_a_hole_stops_the_read_and_the_refetch_fills_it(guarded: type) -> None:
    seen, filled = holes("seen"), holes("filled")
    offsets, next_fetch = read(guarded, EVENTS, 0, batch(0, 5), batch(10, 3))
    assert offsets == [0, 1, 2, 3, 4] and next_fetch == 5
    assert holes("seen") == seen + 1
    # the batch that was still being stored is there on the next fetch
    offsets, next_fetch = read(guarded, EVENTS, 5, batch(5, 5), batch(10, 3))
    assert offsets == [5, 6, 7, 8, 9, 10, 11, 12] and next_fetch == 13
    assert holes("filled") == filled + 1


def test_a_hole_at_the_fetch_offset_yields_nothing_and_keeps_the_position(guarded: type) -> None:
    offsets, next_fetch = read(guarded, EVENTS, 5, batch(10, 3))
    assert offsets == [] and next_fetch == 5
    offsets, next_fetch = read(guarded, EVENTS, 5, batch(10, 3))  # still missing
    assert offsets == [] and next_fetch == 5


def test_a_batch_that_starts_before_the_fetch_offset_is_no_hole(guarded: type) -> None:
    offsets, next_fetch = read(guarded, EVENTS, 2, batch(0, 5), batch(5, 2))
    assert offsets == [2, 3, 4, 5, 6] and next_fetch == 7


def test_a_hole_older_than_the_wait_is_read_past_and_counted(
    guarded: type, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    read_past = holes("read_past")
    assert read(guarded, EVENTS, 0, batch(0, 5), batch(10, 3))[0] == [0, 1, 2, 3, 4]
    clock.now += 4.9
    assert read(guarded, EVENTS, 5, batch(10, 3)) == ([], 5)
    clock.now += 0.2  # the broker lost 5..9: nothing will bring them
    assert read(guarded, EVENTS, 5, batch(10, 3)) == ([10, 11, 12], 13)
    assert holes("read_past") == read_past + 1
    assert "offsets 5..9 still unreadable after 5.0s" in caplog.text


def test_compacted_changelogs_are_read_as_aiokafka_reads_them(guarded: type) -> None:
    offsets, _ = read(guarded, CHANGELOG, 0, batch(0, 5), batch(10, 3))
    assert offsets == [0, 1, 2, 3, 4, 10, 11, 12]


@pytest.fixture
def restore_aiokafka() -> Iterator[None]:
    yield
    aiokafka_fetcher.PartitionRecords = AIOKAFKA_PARTITION_RECORDS


def test_install_replaces_what_the_fetcher_builds_and_zero_undoes_it(
    restore_aiokafka: None,
) -> None:
    fetch_holes.install(5.0)
    assert aiokafka_fetcher.PartitionRecords is not AIOKAFKA_PARTITION_RECORDS
    assert read(aiokafka_fetcher.PartitionRecords, EVENTS, 0, batch(0, 5), batch(10, 3))[0] == [
        0, 1, 2, 3, 4,
    ]  # fmt: skip
    fetch_holes.install(0)
    assert aiokafka_fetcher.PartitionRecords is AIOKAFKA_PARTITION_RECORDS
