"""app/web/stock.py: the stock view's on_hand is exactly the effect of the seqs it answers.

``python -m sim chaos`` checks every sampled read against the truth at the
read's ``applied_seq`` + ``applied_above``; these are the states a worker can
hold after a crash or during a rebalance, checked the same way (``truth``: the
seqs answered applied in seq order, a count superseding the smaller ones).
"""

from __future__ import annotations

import pytest

from app.web.common import ApiError
from app.web.stock import item_answer, reflected_seqs
from domain.progress import ProgressState
from domain.seqs import SeqSet
from domain.stock import StockState

#: seq -> (is_count, qty) of one store's events on one SKU
HISTORY = {1: (False, 10), 3: (False, -2), 4: (True, 7), 6: (False, -1), 8: (False, 5)}


def truth(watermark: int, above: list[int]) -> int:
    on_hand = 0
    for seq, (is_count, qty) in sorted(HISTORY.items()):
        if seq <= watermark or seq in above:
            on_hand = qty if is_count else on_hand + qty
    return on_hand


def stock_after(seqs: list[int], durable_wm: int = 0) -> StockState:
    state = StockState()
    for seq in seqs:
        is_count, qty = HISTORY[seq]
        if is_count:
            state.apply_count(seq, qty)
        else:
            state.apply_delta(seq, qty)
    state.advance(durable_wm)
    return state


def progress_of(seqs: list[int]) -> ProgressState:
    progress = ProgressState()
    for seq in seqs:
        progress.seqs.add(seq)
    return progress


def answer(state: StockState, progress: ProgressState) -> dict[str, object]:
    return item_answer("S1", "A", state.to_json(), progress.to_json(), now_ms=0)


def check(body: dict[str, object]) -> None:
    applied_seq, above = body["applied_seq"], body["applied_above"]
    assert isinstance(applied_seq, int) and isinstance(above, list)
    assert body["on_hand"] == truth(applied_seq, above), body


def test_in_step_the_store_progress_is_the_answer() -> None:
    state = stock_after([1, 3, 4], durable_wm=2)
    body = answer(state, progress_of([1, 2, 3, 4, 5]))
    assert (body["applied_seq"], body["applied_above"]) == (5, [])
    check(body)


def test_gaps_are_listed_above_the_watermark() -> None:
    body = answer(stock_after([1, 4, 8]), progress_of([1, 2, 4, 5, 8]))
    assert (body["applied_seq"], body["applied_above"]) == (2, [4, 5, 8])
    check(body)


def test_a_key_recovered_ahead_of_its_store_progress() -> None:
    """A worker killed mid-flush: the broker got the key's record (seqs 6 and 8)
    but not the store's progress record (still at 5). Answering the progress
    alone said "seq 5" with the on_hand of seq 8: an outlet would add 6 and 8
    again (the chaos checker's "stock ahead of applied_seq")."""
    state = stock_after([1, 3, 4, 6, 8], durable_wm=5)
    body = answer(state, progress_of([1, 2, 3, 4, 5]))
    assert (body["applied_seq"], body["applied_above"]) == (6, [8])
    check(body)


def test_a_key_watermark_past_the_store_progress() -> None:
    state = stock_after([1, 3, 4, 6], durable_wm=7)
    body = answer(state, progress_of([1, 2, 3]))
    assert body["applied_seq"] == 7
    check(body)


def test_while_rebalancing_the_view_asks_to_retry() -> None:
    """Faust restores the stock and progress tables apart while it recovers a
    partition: a read in between could pair any key with any progress."""
    with pytest.raises(ApiError) as raised:
        item_answer("S1", "A", None, None, now_ms=0, rebalancing=True)
    assert raised.value.status == 503 and raised.value.headers["Retry-After"] == "1"


def test_a_key_without_its_store_progress_asks_to_retry() -> None:
    with pytest.raises(ApiError) as raised:
        item_answer("S1", "A", stock_after([1]).to_json(), None, now_ms=0)
    assert raised.value.status == 503


def test_unknown_key_and_store_is_zero_at_seq_zero() -> None:
    body = item_answer("S1", "A", None, None, now_ms=0)
    assert (body["on_hand"], body["applied_seq"], body["applied_above"]) == (0, 0, [])


def test_reflected_seqs_folds_contiguous_seqs_into_the_watermark() -> None:
    state = StockState(wm=3, applied={4: -1, 5: None, 9: 2})
    assert reflected_seqs(state, SeqSet(watermark=2, above={6})) == (6, [9])
