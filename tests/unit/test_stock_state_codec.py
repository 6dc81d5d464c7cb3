"""The stock value on the wire: its applied seqs survive the table codec, old format too."""

from __future__ import annotations

import orjson

from domain.stock import StockState
from tables.codec import decode, encode


def test_applied_seqs_round_trip_through_the_table_codec() -> None:
    state = StockState(wm=4)
    assert state.apply_delta(7, -2) == "applied"
    assert state.apply_count(9, 10) == "count"
    assert state.apply_delta(6, 5) == "superseded"  # before the count (SPEC rule 4)
    again = StockState.from_json(decode(encode(state.to_json())))
    assert again.applied == {7: -2, 9: None, 6: 5}
    assert again == state
    # and a repeat of any of them is still a duplicate after the round trip
    assert again.apply_delta(6, 5) == "duplicate"


def test_reads_applied_seqs_written_by_earlier_versions() -> None:
    value = orjson.loads(b'{"on_hand": 3, "wm": 2, "seq": 5, "applied": [[4, 1], [5, null]]}')
    assert StockState.from_json(value).applied == {4: 1, 5: None}
