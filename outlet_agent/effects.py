"""What each event does to the outlet's own view of ``on_hand`` (SPEC "Events"); pure.

The log stores, for every line, a signed delta or a counted value, so the view
can fold any run of events without knowing their types again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

Kind = Literal["delta", "count"]

#: the sign of a line's qty in ``on_hand`` per event type (adjustments carry their own)
_SIGN: Final = {
    "sale": -1,
    "return": 1,
    "receipt": 1,
    "void": 1,  # the void's lines are the voided sale's lines: reverse them
    "adjustment": 1,  # signed by the terminal (SPEC: adjustment ±qty)
    "transfer_out": -1,
    "transfer_in": 1,
}


def line_effect(event_type: str, qty: int) -> tuple[Kind, int]:
    """``("count", n)`` sets on_hand to n; ``("delta", d)`` adds d."""
    if event_type == "count":
        return "count", qty
    return "delta", _SIGN[event_type] * qty


def fold(on_hand: int, effects: Iterable[tuple[str, int]]) -> int:
    """Apply effects in seq order: a count sets the value, later deltas apply (rule 4)."""
    for kind, value in effects:
        on_hand = value if kind == "count" else on_hand + value
    return on_hand
