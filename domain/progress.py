"""What the centre has applied of one store's stream (SPEC rules 1-3, "Sync lag")."""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Any

from domain.seqs import SeqSet

#: How many recent event fingerprints a store keeps to tell duplicates from
#: conflicts (more while seqs above ``durable_wm`` need them). The progress
#: value is written for every store in every batch, so its size is paid per
#: batch and store: 512 fingerprints of 53 characters were 28 KB, 2.8 MB a
#: batch for 100 stores, most of a worker's changelog traffic.
FINGERPRINTS_KEPT = 128


def id_hash(event_id: str) -> str:
    """The first part of a fingerprint: 8 hex digits of the event_id, to tell
    "same event_id, other content" from "same seq, another event" (SPEC rule 2)."""
    return hashlib.blake2b(event_id.encode(), digest_size=4).hexdigest()


@dataclass(slots=True)
class ProgressState:
    seqs: SeqSet = field(default_factory=SeqSet)
    #: The watermark as of the last *completed* flush of every table: every seq
    #: up to it is durably reflected in every key it touches. Keys may forget
    #: per-seq detail below it; anything above it is re-checked per key.
    durable_wm: int = 0
    duplicates: int = 0
    conflicts: int = 0
    events: int = 0
    fingerprints: dict[int, str] = field(default_factory=dict)
    #: sale ref -> the seq of the void that reversed it, as this value held
    #: it before voids had their own table (``tables.state``): read, never
    #: added to. Every batch rewrites this value, so a map of every void a
    #: store ever made grew the record, and its cost, without bound.
    voided: dict[str, int] = field(default_factory=dict)
    void_rejected: int = 0
    last_recorded_at: float = 0.0
    last_applied_at: float = 0.0
    #: Seqs this process has applied *and* seen acknowledged (not persisted):
    #: starts at ``durable_wm``. The ``seqs`` read back after a crash may claim
    #: seqs whose key writes were lost; only a confirmed flush of their replay
    #: may move ``durable_wm`` past them.
    flushed: SeqSet = field(default_factory=SeqSet, compare=False)
    #: The fingerprints' seqs as a min-heap (may hold seqs already forgotten):
    #: finding the oldest must not cost a scan per event, as the dict grows
    #: to thousands of seqs above ``durable_wm`` while a backlog drains.
    _by_seq: list[int] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_seq = sorted(self.fingerprints)  # a sorted list is a heap

    def confirm(self, seqs: list[int]) -> bool:
        """A flush carrying ``seqs`` was acknowledged; True if ``durable_wm`` moved."""
        for seq in seqs:
            self.flushed.add(seq)
        if self.flushed.watermark > self.durable_wm:
            self.durable_wm = self.flushed.watermark
            self._forget_fingerprints()
            return True
        return False

    def remember(self, seq: int, fingerprint: str) -> None:
        """Keep the fingerprints of the newest ``FINGERPRINTS_KEPT`` seqs, and of
        every seq above ``durable_wm``.

        A duplicate above ``durable_wm`` is applied again to keys that lack it
        (crash repair, ``domain.apply``), so its fingerprint must still be here
        to tell it from a conflicting event, whose lines must never be applied.
        """
        if seq not in self.fingerprints:
            heapq.heappush(self._by_seq, seq)
        self.fingerprints[seq] = fingerprint
        self._forget_fingerprints()

    def _forget_fingerprints(self) -> None:
        fingerprints, by_seq = self.fingerprints, self._by_seq
        while len(fingerprints) > FINGERPRINTS_KEPT:
            oldest = by_seq[0]
            if oldest not in fingerprints:  # forgotten already
                heapq.heappop(by_seq)
            elif oldest > self.durable_wm:
                return
            else:
                heapq.heappop(by_seq)
                del fingerprints[oldest]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seqs": self.seqs.to_json(),
            "durable_wm": self.durable_wm,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "events": self.events,
            # a dict, not pairs: serialized in C (ints become string keys), no
            # list per entry; written for every store in every batch
            "fp": self.fingerprints,
            "void_rejected": self.void_rejected,
            "last_recorded_at": self.last_recorded_at,
            "last_applied_at": self.last_applied_at,
        }
        if self.voided:
            out["voided"] = self.voided
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ProgressState:
        return cls._decode(data, with_memory=True)

    @classmethod
    def figures_from_json(cls, data: dict[str, Any] | None) -> ProgressState:
        """The figures only (seqs, counts, times): no fingerprints and no voids.

        For the views, which never write a progress back: rebuilding a store's
        fingerprints (128 or more) in Python for each row was half of what
        ``/api/sync``, polled while a backlog drains, cost the worker (3 % of
        its CPU of 6 %).
        """
        return cls._decode(data, with_memory=False)

    @classmethod
    def _decode(cls, data: dict[str, Any] | None, *, with_memory: bool) -> ProgressState:
        if not data:
            return cls()
        durable_wm = int(data.get("durable_wm", 0))
        return cls(
            flushed=SeqSet(watermark=durable_wm),
            seqs=SeqSet.from_json(data.get("seqs")),
            durable_wm=durable_wm,
            duplicates=int(data.get("duplicates", 0)),
            conflicts=int(data.get("conflicts", 0)),
            events=int(data.get("events", 0)),
            fingerprints=_fingerprints(data.get("fp")) if with_memory else {},
            voided=(
                {str(k): int(v) for k, v in data.get("voided", {}).items()} if with_memory else {}
            ),
            void_rejected=int(data.get("void_rejected", 0)),
            last_recorded_at=float(data.get("last_recorded_at", 0.0)),
            last_applied_at=float(data.get("last_applied_at", 0.0)),
        )


def _fingerprints(stored: Any) -> dict[int, str]:
    """``{"seq": fp}`` as written now, or ``[[seq, "event_id:digest"], ...]`` as before."""
    if not stored:
        return {}
    pairs = stored.items() if isinstance(stored, dict) else stored
    return {int(s): _current(str(f)) for s, f in pairs}


def _current(fingerprint: str) -> str:
    event_id, sep, digest = fingerprint.partition(":")
    return id_hash(event_id) + digest if sep else fingerprint
