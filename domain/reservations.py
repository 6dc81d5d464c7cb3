"""Reservation commands (SPEC "Reservations"), decided in order with stock events.

A command travels on a topic co-partitioned with ``retail.events``, so the
apply agent sees it in the store's own order. ``at_ms`` is the time the
command was made: expiry is judged against it, so a replay decides the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["reserve", "release", "expire"]


class InvalidCommand(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ReservationCommand:
    op: Op
    request_id: str
    store_id: str
    order_id: str
    at_ms: int
    sku: str | None = None
    qty: int = 0
    ttl_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "request_id": self.request_id,
            "store_id": self.store_id,
            "order_id": self.order_id,
            "at_ms": self.at_ms,
            "sku": self.sku,
            "qty": self.qty,
            "ttl_ms": self.ttl_ms,
        }

    @classmethod
    def from_json(cls, data: Any) -> ReservationCommand:
        if not isinstance(data, dict):
            raise InvalidCommand("reservation command: must be an object")
        op = data.get("op")
        if op not in ("reserve", "release", "expire"):
            raise InvalidCommand(f"reservation command: unknown op {op!r}")
        try:
            cmd = cls(
                op=op,
                request_id=str(data["request_id"]),
                store_id=str(data["store_id"]),
                order_id=str(data["order_id"]),
                at_ms=int(data["at_ms"]),
                sku=None if data.get("sku") is None else str(data["sku"]),
                qty=int(data.get("qty") or 0),
                ttl_ms=int(data.get("ttl_ms") or 0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidCommand(f"reservation command: {exc!r}") from exc
        if cmd.op == "reserve" and (not cmd.sku or cmd.qty <= 0 or cmd.ttl_ms <= 0):
            raise InvalidCommand("reserve: needs sku, qty > 0 and ttl > 0")
        return cmd


#: the stock value's note of an alert that was cleared, before the kind it was
CLEARED = "cleared:"


def alert_for(on_hand: int, threshold: int) -> str | None:
    """SPEC rule 5: negative stock is an alert (the count is wrong somewhere)."""
    if on_hand < 0:
        return "negative"
    if threshold > 0 and on_hand <= threshold:
        return "low"
    return None


def alert_note(before: str | None, kind: str | None) -> str | None:
    """What a stock value notes of its alert once ``kind`` is the current one.

    ``before`` is the note so far: None (never alerted), a kind, or
    ``"cleared:<kind>"``. The alert record is written when the note changes.
    """
    if kind is not None:
        return kind
    if before is None or before.startswith(CLEARED):
        return before
    return CLEARED + before
