"""Alert records (SPEC rule 5): written when the alert changes, and again on a replay."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agents.apply import Applier
from domain.apply import BatchOutcome, stock_key
from domain.reservations import alert_note
from domain.stock import StockState


@pytest.mark.parametrize(
    ("before", "kind", "after"),
    [
        (None, None, None),  # never alerted: nothing to write
        (None, "negative", "negative"),
        ("negative", "negative", "negative"),
        ("negative", "low", "low"),
        ("negative", None, "cleared:negative"),
        ("cleared:negative", None, "cleared:negative"),
        ("cleared:negative", "low", "low"),
    ],
)
def test_alert_note(before: str | None, kind: str | None, after: str | None) -> None:
    assert alert_note(before, kind) == after


class Writes:
    """Stands in for the BatchWriter: records what would be written to the alerts table."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}

    def set(self, table: Any, record: Any, items: dict[str, Any]) -> None:
        self.items.update(items)


def applier_with(stock: dict[str, StockState], writes: Writes) -> Applier:
    return Applier(
        settings=SimpleNamespace(low_stock_threshold=0),  # type: ignore[arg-type]
        topics=None,  # type: ignore[arg-type]
        tables=SimpleNamespace(alerts="alerts"),  # type: ignore[arg-type]
        cache=SimpleNamespace(stock=stock.__getitem__),  # type: ignore[arg-type]
        reservations=None,  # type: ignore[arg-type]
        writer=writes,  # type: ignore[arg-type]
    )


def test_written_on_change_and_on_replay_only() -> None:
    key = stock_key("S1", "SKU-1")
    state = StockState(on_hand=-1)
    writes = Writes()
    applier = applier_with({key: state}, writes)
    outcome = BatchOutcome(touched_stock={key})

    applier._write_alerts(outcome, {"S1": object()})
    assert writes.items[key]["kind"] == "negative" and writes.items[key]["active"]
    assert state.alert == "negative"

    writes.items.clear()
    state.on_hand = -2  # still negative: the record stands, the view reads on_hand
    applier._write_alerts(outcome, {"S1": object()})
    assert writes.items == {}

    outcome.replayed_stock.add(key)  # a replay: the crash may have lost the record
    applier._write_alerts(outcome, {"S1": object()})
    assert writes.items[key]["kind"] == "negative"

    writes.items.clear()
    state.on_hand = 3
    applier._write_alerts(BatchOutcome(touched_stock={key}), {"S1": object()})
    assert writes.items[key] | {"at": 0} == {
        "store_id": "S1", "sku": "SKU-1", "kind": "negative", "on_hand": 3,
        "threshold": 0, "active": False, "at": 0,
    }  # fmt: skip
    assert state.alert == "cleared:negative"
