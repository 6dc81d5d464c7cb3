"""Alert records (SPEC rule 5): written when the alert changes, and again on a replay."""

from __future__ import annotations

import asyncio
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


def applier_with(stock: dict[str, StockState]) -> Applier:
    return Applier(
        settings=SimpleNamespace(low_stock_threshold=0),  # type: ignore[arg-type]
        topics=None,  # type: ignore[arg-type]
        tables=None,  # type: ignore[arg-type]
        cache=SimpleNamespace(stock=stock.__getitem__),  # type: ignore[arg-type]
        reservations=None,  # type: ignore[arg-type]
        writer=None,  # type: ignore[arg-type]
    )


def alerts_written(applier: Applier, outcome: BatchOutcome) -> dict[str, Any]:
    """The alert records a batch with this outcome writes (store S1's)."""
    return dict(asyncio.run(applier._rows(outcome, now=0.0)).alerts.get("S1", {}))


def test_written_on_change_and_on_replay_only() -> None:
    key = stock_key("S1", "SKU-1")
    state = StockState(on_hand=-1)
    applier = applier_with({key: state})
    outcome = BatchOutcome(touched_stock={key})

    written = alerts_written(applier, outcome)
    assert written[key]["kind"] == "negative" and written[key]["active"]
    assert state.alert == "negative"

    state.on_hand = -2  # still negative: the record stands, the view reads on_hand
    assert alerts_written(applier, outcome) == {}

    outcome.replayed_stock.add(key)  # a replay: the crash may have lost the record
    assert alerts_written(applier, outcome)[key]["kind"] == "negative"

    state.on_hand = 3
    assert alerts_written(applier, BatchOutcome(touched_stock={key}))[key] == {
        "store_id": "S1", "sku": "SKU-1", "kind": "negative", "on_hand": 3,
        "threshold": 0, "active": False, "at": 0.0,
    }  # fmt: skip
    assert state.alert == "cleared:negative"


def test_the_value_written_carries_the_alert_decided_in_the_same_batch() -> None:
    """A replay finds the alert in the value: it must be set before the value is serialized."""
    key = stock_key("S1", "SKU-1")
    state = StockState(on_hand=-1)
    applier = applier_with({key: state})
    rows = asyncio.run(applier._rows(BatchOutcome(touched_stock={key}), now=0.0))
    assert StockState.from_json(rows.values["S1"][key]).alert == "negative"
