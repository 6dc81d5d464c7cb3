"""sink/service.py: records handed out while partitions were being placed are not written.

aiokafka hands out records from the group's committed offset as soon as a
partition is assigned, while the listener still asks PostgreSQL where to
start. Written, a record above what PostgreSQL has would move
``sink_offsets`` over the records between, and those would be skipped for
good (seen with a database restored empty under a restarted worker).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import ConsumerRecord, TopicPartition

from app.settings import Settings
from sink.service import StartAfterPostgres

APPLIED = TopicPartition("retail.applied", 0)
DEAD = TopicPartition("dead-letters", 0)


@dataclass
class Consumer:
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def _listener(starts: dict[TopicPartition, int]) -> tuple[StartAfterPostgres, Consumer]:
    consumer = Consumer()
    listener = StartAfterPostgres(Settings(), consumer)
    listener.starts = dict(starts)
    listener.placements = 1
    return listener, consumer


def _fetched(**by_tp: list[int]) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """What ``getmany`` returns: aiokafka's own records, by partition."""
    tps = {"applied": APPLIED, "dead": DEAD}
    return {
        tps[name]: [
            ConsumerRecord(
                tps[name].topic, tps[name].partition, o, 0, 0, b"S1", b"{}", None, 2, 2, ()
            )
            for o in offsets
        ]
        for name, offsets in by_tp.items()
    }


def test_a_fetch_within_one_placement_is_written_whole() -> None:
    listener, consumer = _listener({APPLIED: 0})
    fetched = _fetched(applied=[3, 4])
    assert listener.placed_records(fetched, placements_before=1) == fetched
    assert consumer.seeks == []


def test_records_from_before_the_seek_are_dropped_and_read_again_from_the_start() -> None:
    # PostgreSQL holds nothing (start 0); the group had committed up to 3
    listener, consumer = _listener({APPLIED: 0})
    kept = listener.placed_records(_fetched(applied=[3, 4]), placements_before=0)
    assert kept == {}
    assert consumer.seeks == [(APPLIED, 0)]


def test_records_read_after_the_seek_are_read_again_not_lost() -> None:
    # the fetch began before the placement but drained after its seek to 5
    listener, consumer = _listener({APPLIED: 5})
    assert listener.placed_records(_fetched(applied=[5, 6]), placements_before=0) == {}
    assert consumer.seeks == [(APPLIED, 5)]


def test_a_partition_the_placement_did_not_seek_keeps_its_records() -> None:
    # PostgreSQL was unreadable for it: it reads on from the group's offset
    listener, consumer = _listener({APPLIED: 0})
    kept = listener.placed_records(_fetched(applied=[3], dead=[7, 8]), placements_before=0)
    assert kept == _fetched(dead=[7, 8])
    assert consumer.seeks == [(APPLIED, 0)]
