"""Stock of one SKU at one store, and the rules that change it (SPEC "Events").

The value carries, in the same record, which of the store's seqs it already
reflects (``wm`` and ``applied``), so re-applying any event is a no-op even if
another table's changelog record was lost in a crash (SPEC design note).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Effect = Literal["applied", "count", "superseded", "duplicate"]


@dataclass(slots=True)
class StockState:
    on_hand: int = 0
    #: seq of the count the on_hand is based on (0: no count yet)
    count_seq: int = 0
    #: every seq of the store up to ``wm`` is reflected here
    wm: int = 0
    #: seqs above ``wm`` applied to this key: their delta, or None for a count.
    #: A count that arrives late needs the deltas after it (SPEC rule 4).
    applied: dict[int, int | None] = field(default_factory=dict)
    #: the highest seq reflected, and a write counter: the Postgres upsert guard
    applied_seq: int = 0
    ver: int = 0
    #: order_id -> [qty, expires_at_ms] (SPEC "Reservations")
    reservations: dict[str, list[int]] = field(default_factory=dict)
    #: the last alert record written for this key (SPEC rule 5): "negative",
    #: "low", "cleared:<kind>" once it cleared, None if it never had one
    alert: str | None = None

    # ------------------------------------------------------------- events

    def has(self, seq: int) -> bool:
        return seq <= self.wm or seq in self.applied

    def apply_delta(self, seq: int, delta: int) -> Effect:
        """A sale, return, receipt, adjustment, void or transfer leg (signed delta)."""
        if self.has(seq):
            return "duplicate"
        self.applied[seq] = delta
        self.applied_seq = max(self.applied_seq, seq)
        if seq < self.count_seq:
            return "superseded"  # SPEC rule 4: recorded, on_hand unchanged
        self.on_hand += delta
        return "applied"

    def apply_count(self, seq: int, counted: int) -> Effect:
        """A physical count: on_hand = counted + every delta after it (SPEC rule 4)."""
        if self.has(seq):
            return "duplicate"
        self.applied[seq] = None
        self.applied_seq = max(self.applied_seq, seq)
        if seq < self.count_seq:
            return "superseded"
        later = sum(d for s, d in self.applied.items() if s > seq and d is not None)
        self.on_hand = counted + later
        self.count_seq = seq
        return "count"

    def withdraw(self, seq: int) -> bool:
        """Take back the delta of ``seq``, which stays recorded as applied (with 0).

        A void replaced by another void of the same sale with a smaller seq
        (SPEC rule 1: a sale is voided once, by its first void in seq order).
        ``on_hand`` holds a delta exactly when its seq is above ``count_seq``.
        """
        delta = self.applied.get(seq)
        if not delta:
            return False
        self.applied[seq] = 0
        if seq > self.count_seq:
            self.on_hand -= delta
        return True

    def advance(self, store_watermark: int) -> None:
        """Forget per-seq detail below the store's watermark (bounds the value)."""
        if store_watermark > self.wm:
            self.wm = store_watermark
            self.applied = {s: d for s, d in self.applied.items() if s > store_watermark}
        self.applied_seq = max(self.applied_seq, self.wm)

    # ------------------------------------------------------- reservations

    def reserved(self, now_ms: int) -> int:
        if not self.reservations:  # nearly every key: skip building the generator
            return 0
        return sum(qty for qty, expires in self.reservations.values() if expires > now_ms)

    def available(self, now_ms: int) -> int:
        return self.on_hand - self.reserved(now_ms)

    def reserve(self, order_id: str, qty: int, now_ms: int, ttl_ms: int) -> tuple[bool, int]:
        """Grant ``qty`` if available; the same order again gets the same answer."""
        self.reservations = {o: r for o, r in self.reservations.items() if r[1] > now_ms}
        if order_id in self.reservations:
            return True, self.available(now_ms)
        available = self.available(now_ms)
        if qty > available:
            return False, available
        self.reservations[order_id] = [qty, now_ms + ttl_ms]
        return True, available - qty

    def release(self, order_id: str) -> bool:
        return self.reservations.pop(order_id, None) is not None

    # ------------------------------------------------------- wire format

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"on_hand": self.on_hand, "wm": self.wm, "seq": self.applied_seq}
        if self.count_seq:
            out["count_seq"] = self.count_seq
        if self.applied:
            # a copied dict, serialized in C (its int keys become strings): a hot
            # key holds hundreds of seqs while a backlog drains
            out["applied"] = dict(self.applied)
        if self.ver:
            out["ver"] = self.ver
        if self.reservations:
            out["res"] = self.reservations
        if self.alert:
            out["alert"] = self.alert
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StockState:
        if not data:
            return cls()
        return cls(
            on_hand=int(data.get("on_hand", 0)),
            count_seq=int(data.get("count_seq", 0)),
            wm=int(data.get("wm", 0)),
            applied=_applied(data.get("applied")),
            applied_seq=int(data.get("seq", 0)),
            ver=int(data.get("ver", 0)),
            reservations={str(k): list(v) for k, v in data.get("res", {}).items()},
            alert=data.get("alert"),
        )


def _applied(stored: Any) -> dict[int, int | None]:
    """``{"seq": delta}`` as written now, or ``[[seq, delta], ...]`` as before."""
    if not stored:
        return {}
    pairs = stored.items() if isinstance(stored, dict) else stored
    return {int(s): d for s, d in pairs}
