"""The batch hot path's validation accepts exactly what the full parser accepts.

``outlet_agent.fastpath.fast_submission`` either returns what the full path
makes of the event (``Submission.of(parse_terminal_event(obj), ...)``: the same
fields, ``occurred_at`` text and content hash), or gives up and lets the full
parser answer. So an event the old path rejected is still rejected, with the
same reasons.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.schema import EVENT_TYPES, InvalidEvent, parse_terminal_event
from outlet_agent.fastpath import fast_submission
from outlet_agent.log import Submission

MAX_LINES = 3

_texts = st.one_of(
    st.sampled_from(["", " ", "  x ", "SKU-1", "t\tab", "a\nb", "\u3000", "é", "x" * 128]),
    st.just("x" * 129),
    st.just("r" * 1000),
    st.just("r" * 1001),
    st.text(max_size=12),
)
_ints = st.one_of(
    st.sampled_from([0, 1, -1, 2, 10**12, 10**12 + 1, -(10**12), -(10**12) - 1]),
    st.integers(-(2**63), 2**63 - 1),
)
_scalars = st.one_of(
    st.none(), st.booleans(), _ints, st.floats(allow_nan=False), _texts, st.just([]), st.just({})
)
_timestamps = st.one_of(
    st.sampled_from(
        [
            "2025-01-02T10:00:00Z",
            "2025-01-02T10:00:00.5+02:00",
            "2025-01-02T10:00:00",
            "2025-01-02 10:00:00-05:30",
            "20250102T100000Z",
            "2025-01-02",
            "0001-01-01T00:30:00+01:00",  # out of range once in UTC: both raise alike
            "not a time",
            "",
        ]
    ),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3)), None])).map(
        datetime.isoformat
    ),
)


_VALID_SKUS = st.sampled_from(["SKU-1", "SKU-2", "b", "é-1", "x" * 128])
#: odd values per field, weighted to the edges of each rule
_EDGE_QTY = st.sampled_from([0, -1, 1, 10**12, 10**12 + 1, -(10**12), -(10**12) - 1, True, 1.0])
_ODD: dict[str, st.SearchStrategy[Any]] = {
    "qty": st.one_of(_EDGE_QTY, _EDGE_QTY, _EDGE_QTY, _scalars),
    "unit_price_cents": st.one_of(
        st.sampled_from([0, -1, -1, 5, None, True, 1.5, "1"]), st.integers(-3, 3), _scalars
    ),
    "sku": st.one_of(_texts, _scalars),
    "reason": st.one_of(st.sampled_from(["", " ", "\t", "r" * 1000, "r" * 1001]), _scalars),
    "type": st.one_of(st.sampled_from(sorted(EVENT_TYPES)), _scalars),
    "occurred_at": st.one_of(_timestamps, _scalars),
}
_TARGETS = [
    "type", "client_txn_id", "occurred_at", "lines", "ref", "reason", "store_id",
    "terminal_id", "drop", "sku", "qty", "qty", "unit_price_cents", "line",
]  # fmt: skip


@st.composite
def _events(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed event, then a few fields or line fields replaced by odd values."""
    type_ = draw(st.sampled_from(sorted(EVENT_TYPES)))
    lines = [
        {
            "sku": draw(_VALID_SKUS),
            "qty": draw(st.integers(1, 10**12)),
            **({"unit_price_cents": draw(st.integers(0, 10**6))} if draw(st.booleans()) else {}),
        }
        for _ in range(draw(st.integers(1, MAX_LINES)))
    ]
    obj: dict[str, Any] = {
        "type": type_,
        "client_txn_id": draw(st.sampled_from(["txn-1", "a b", "x" * 128])),
        "occurred_at": draw(st.sampled_from(["2025-01-02T10:00:00Z", "2025-01-02T10:00:00+02:00"])),
        "lines": lines,
    }
    if type_ in ("void", "transfer_out", "transfer_in") or draw(st.booleans()):
        obj["ref"] = draw(st.sampled_from(["TR-1", "sale-7"]))
    if type_ == "adjustment" or draw(st.booleans()):
        obj["reason"] = draw(st.sampled_from(["damage", "r" * 1000]))
    for key in ("store_id", "terminal_id", "note"):
        if draw(st.booleans()):
            obj[key] = draw(_texts)
    for _ in range(draw(st.integers(0, 2))):  # mutations
        target = draw(st.sampled_from(_TARGETS))
        one = draw(st.integers(0, len(lines) - 1))
        if target == "drop":
            obj.pop(draw(st.sampled_from(sorted(obj))), None)
        elif target == "line":
            lines[one] = draw(_scalars)
        elif target in ("sku", "qty", "unit_price_cents"):
            if isinstance(lines[one], dict):
                if draw(st.integers(0, 4)) == 0:
                    lines[one].pop(target, None)
                else:
                    lines[one][target] = draw(_ODD[target])
        elif target == "lines":
            obj["lines"] = draw(
                st.one_of(_scalars, st.just(lines * (MAX_LINES + 1)), st.just(lines[:1] * 2))
            )
        else:
            obj[target] = draw(_ODD.get(target, _scalars))
    return obj


def _old(obj: dict[str, Any]) -> Any:
    try:
        return parse_terminal_event(obj, max_lines=MAX_LINES)
    except (InvalidEvent, OverflowError) as exc:  # OverflowError: year 1 at +01:00 escapes
        return exc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events())
@example({"type": "sale", "client_txn_id": "c", "occurred_at": "2025-01-02T10:00:00Z",
          "lines": [{"sku": "A", "qty": True}]})  # fmt: skip
@example({"type": "sale", "client_txn_id": "c", "occurred_at": "2025-01-02T10:00:00Z",
          "lines": [{"sku": "A", "qty": 0}]})  # fmt: skip
@example({"type": "receipt", "client_txn_id": "c", "occurred_at": "2025-01-02T10:00:00Z",
          "lines": [{"sku": "A", "qty": 1, "unit_price_cents": -1}]})  # fmt: skip
@example({"type": "adjustment", "client_txn_id": "c", "occurred_at": "2025-01-02T10:00:00Z",
          "lines": [{"sku": "A", "qty": 0}], "reason": "r"})  # fmt: skip
@example({"type": "adjustment", "client_txn_id": "c", "occurred_at": "2025-01-02T10:00:00Z",
          "lines": [{"sku": "A", "qty": -(10**12) - 1}], "reason": "r"})  # fmt: skip
@example({"type": "return", "client_txn_id": "c", "occurred_at": "2025-01-02T10:00:00Z",
          "lines": [{"sku": "A", "qty": 10**12 + 1}]})  # fmt: skip
@example({"type": "count", "client_txn_id": "c", "occurred_at": "2025-01-02T10:00:00Z",
          "lines": [{"sku": "A", "qty": 0}, {"sku": "A", "qty": 1}]})  # fmt: skip
@example({"type": "adjustment", "client_txn_id": "c", "occurred_at": "2025-01-02T10:00:00Z",
          "lines": [{"sku": "A", "qty": -(10**12)}], "reason": " "})  # fmt: skip
def test_fast_path_accepts_exactly_what_the_parser_accepts(obj: dict[str, Any]) -> None:
    old = _old(obj)
    try:
        fast = fast_submission(obj, "T1", MAX_LINES)
    except OverflowError as exc:
        assert type(old) is type(exc), (obj, old, exc)  # the same error escapes either way
        return
    if fast is None:
        return  # the API asks the full parser, whose answer stands
    assert not isinstance(old, Exception), (obj, old)
    full = Submission.of(old, "T1")
    assert fast == full
    assert repr(fast) == repr(full)  # the same types too (True == 1, but not here)


@settings(max_examples=500, deadline=None)
@given(
    type_=st.sampled_from(sorted(EVENT_TYPES - {"void"})),
    qty=st.integers(1, 10**12),
    price=st.one_of(st.none(), st.integers(0, 10**9)),
    skus=st.lists(st.text(min_size=1, max_size=128).filter(lambda s: s.strip() and s.isprintable()),
                  min_size=1, max_size=MAX_LINES, unique=True),
    when=st.datetimes(min_value=datetime(1900, 1, 1), timezones=st.just(UTC)),
)  # fmt: skip
def test_fast_path_takes_every_well_formed_event(
    type_: str, qty: int, price: int | None, skus: list[str], when: datetime
) -> None:
    obj: dict[str, Any] = {
        "type": type_,
        "client_txn_id": "txn-1",
        "occurred_at": when.isoformat(),
        "lines": [{"sku": s, "qty": qty, "unit_price_cents": price} for s in skus],
    }
    if type_ in ("transfer_out", "transfer_in"):
        obj["ref"] = "TR-1"
    if type_ == "adjustment":
        obj["reason"] = "damage"
    obj = orjson.loads(orjson.dumps(obj))  # what the API hands it
    fast = fast_submission(obj, "T1", MAX_LINES)
    assert fast is not None
    assert fast == Submission.of(parse_terminal_event(obj, max_lines=MAX_LINES), "T1")


def test_invalid_events_still_get_every_reason() -> None:
    obj = {"type": "sale", "client_txn_id": " ", "occurred_at": "2025-01-02T10:00:00",
           "lines": [{"sku": "A", "qty": 0}]}  # fmt: skip
    assert fast_submission(obj, "T1", MAX_LINES) is None
    try:
        parse_terminal_event(obj, max_lines=MAX_LINES)
    except InvalidEvent as exc:
        assert len(exc.reasons) == 3
    else:
        raise AssertionError("accepted an invalid event")
