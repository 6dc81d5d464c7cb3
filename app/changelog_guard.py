"""A worker never applies its own changelog records back over its live tables.

Faust applies every changelog record that reaches its recovery loop
(``Recovery._slurp_changelogs``) to the table's RocksDB whenever its offset is
past the last one seen, not only while the partition is being recovered. The
active changelog partitions are paused once recovery is done, so normally
nothing arrives; but a record fetched around a rebalance that the worker
does not finish (a second rebalance, a broker restarting under it) can still
be delivered after the apply agent has resumed. Such a record is one the
worker itself wrote after the recovery's end, and it holds an *older* value
than RocksDB: applied, it rolls the key back while the store's ``progress``
keeps the newer seqs, and a view answers a stock behind its ``applied_seq``
(finding 11 in bench/HISTORY.md) until the key is written again. The changelog
itself stays right, so only reads show it.

The rule: for a partition this worker owns (an *active* changelog partition),
every record past the end its recovery read to (Faust's ``active_highwaters``)
was written after that recovery started, by the only writer of the partition,
this worker, which wrote RocksDB first. It is dropped (and counted). Records
at or below that end are recovery's own work and are applied as before, and
standby partitions are untouched: a standby follows another worker's writes.
A dropped record is never needed: if it were not in RocksDB, the partition
could only be recovering, and then its records are at or below the end.

faust-streaming 0.15.3 is pinned; ``tests/unit/test_changelog_guard.py``
fails if the patched method moves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from faust.tables.base import Collection

from app import metrics

log = logging.getLogger(__name__)

#: Faust's own method, as imported (for the test that shows the roll-back)
ORIGINAL = Collection.apply_changelog_batch


def written_after_recovery(recovery: Any, tp: Any, offset: int) -> bool:
    """Whether ``offset`` of changelog partition ``tp`` is past the end this worker
    recovered it to, while the worker owns it (its own later write)."""
    if tp not in recovery.active_tps:
        return False
    end = recovery.active_highwaters.get(tp)
    return end is not None and offset > end


def keep_recovered(recovery: Any, batch: Iterable[Any]) -> list[Any]:
    """The records of ``batch`` to apply: all but this worker's own later writes."""
    kept: list[Any] = []
    dropped: dict[Any, list[int]] = {}
    for event in batch:
        message = event.message
        if written_after_recovery(recovery, message.tp, message.offset):
            dropped.setdefault(message.tp, []).append(message.offset)
        else:
            kept.append(event)
    for tp, offsets in dropped.items():
        metrics.CHANGELOG_SELF_READS.inc(len(offsets))
        log.warning(
            "%s: %d changelog record(s) at offsets %d-%d, past the end %s this worker "
            "recovered to, not applied: they are its own writes, already in RocksDB",
            tp, len(offsets), min(offsets), max(offsets), recovery.active_highwaters.get(tp),
        )  # fmt: skip
    return kept


def install() -> None:
    """Tables skip their own changelog records past the recovered end (idempotent)."""
    original = Collection.apply_changelog_batch
    if getattr(original, "guarded", False):
        return

    def apply_changelog_batch(self: Any, batch: Iterable[Any]) -> None:
        original(self, keep_recovered(self.app.tables.recovery, batch))

    apply_changelog_batch.guarded = True  # type: ignore[attr-defined]
    Collection.apply_changelog_batch = apply_changelog_batch  # type: ignore[method-assign]
