"""app/changelog_guard.py: a live key is never rolled back by the worker's own changelog.

A real Faust table on a real RocksDB store; the changelog records are handed to
``apply_changelog_batch`` as Faust's recovery loop hands them, with the
recovery's bookkeeping (``active_tps``, ``active_highwaters``) set as after a
recovery that read partition 0 up to offset 9.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faust
import pytest
from faust.tables.base import Collection
from faust.types import TP

from app import changelog_guard, metrics
from tables.codec import encode

KEY = "S1\x1fSKU-1"


@dataclass
class Message:
    tp: TP
    offset: int
    key: bytes
    value: bytes

    @property
    def partition(self) -> int:
        return self.tp.partition


@dataclass
class Event:
    message: Message


@pytest.fixture
def table(tmp_path: Any) -> Any:
    app = faust.App(
        "guard-test", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path)
    )
    table = app.Table("stock", default=None, partitions=2)
    return table


def changelog(table: Any, partition: int = 0) -> TP:
    return TP(table.changelog_topic.get_topic_name(), partition)


def record(tp: TP, offset: int, on_hand: int) -> Event:
    return Event(Message(tp, offset, encode(KEY), encode({"on_hand": on_hand})))


def stored(table: Any, partition: int = 0) -> Any:
    raw = table.data._db_for_partition(partition).get(encode(KEY))
    return None if raw is None else table.data._decode_value(raw)


def recovered_to(table: Any, tp: TP, end: int, *, active: bool = True) -> Any:
    recovery = table.app.tables.recovery
    (recovery.active_tps if active else recovery.standby_tps).add(tp)
    (recovery.active_highwaters if active else recovery.standby_highwaters)[tp] = end
    return recovery


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    original = Collection.apply_changelog_batch
    changelog_guard.install()
    yield
    Collection.apply_changelog_batch = original  # type: ignore[method-assign]


def test_own_records_past_the_recovered_end_do_not_roll_a_live_key_back(table: Any) -> None:
    tp = changelog(table)
    recovered_to(table, tp, end=9)
    table.apply_changelog_batch([record(tp, 8, 1), record(tp, 9, 2)])  # recovery's own work
    assert stored(table) == {"on_hand": 2}
    # the apply agent then writes on: RocksDB first, the changelog after
    table.data._db_for_partition(0).put(encode(KEY), encode({"on_hand": 7}))
    before = metrics.CHANGELOG_SELF_READS._value.get()
    # ...and its record of on_hand 5 (offset 10) reaches the recovery loop late
    table.apply_changelog_batch([record(tp, 10, 5)])
    assert stored(table) == {"on_hand": 7}
    assert metrics.CHANGELOG_SELF_READS._value.get() == before + 1


def test_faust_alone_rolls_the_key_back(table: Any) -> None:
    """Why the guard exists: Faust's own method applies the late record."""
    tp = changelog(table)
    recovered_to(table, tp, end=9)
    table.data._db_for_partition(0).put(encode(KEY), encode({"on_hand": 7}))
    changelog_guard.ORIGINAL(table, [record(tp, 10, 5)])  # type: ignore[list-item]
    assert stored(table) == {"on_hand": 5}


def test_a_mixed_batch_keeps_what_recovery_reads(table: Any) -> None:
    tp0, tp1 = changelog(table, 0), changelog(table, 1)
    recovered_to(table, tp0, end=3)
    table.apply_changelog_batch([record(tp0, 3, 4), record(tp1, 50, 9), record(tp0, 4, 1)])
    assert stored(table, 0) == {"on_hand": 4}
    assert stored(table, 1) == {"on_hand": 9}  # not active here: not judged


def test_standby_partitions_follow_every_record(table: Any) -> None:
    """A standby copies another worker's writes: nothing past any end is its own."""
    tp = changelog(table)
    recovered_to(table, tp, end=2, active=False)
    table.apply_changelog_batch([record(tp, 2, 1), record(tp, 3, 6)])
    assert stored(table) == {"on_hand": 6}


def test_a_partition_not_yet_measured_is_recovered_as_before(table: Any) -> None:
    """Assigned but its end not read yet (a rebalance under way): applied."""
    tp = changelog(table)
    table.app.tables.recovery.active_tps.add(tp)
    table.apply_changelog_batch([record(tp, 0, 3)])
    assert stored(table) == {"on_hand": 3}


def test_install_is_idempotent() -> None:
    patched = Collection.apply_changelog_batch
    changelog_guard.install()
    assert Collection.apply_changelog_batch is patched
