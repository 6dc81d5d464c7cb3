"""The centre's fast path (``app.schema.fast_event``) accepts exactly what the full parser does.

``parse_event`` tries ``fast_event`` first; it either makes the very Event the
full parser makes (fields, ``extra`` and types), or gives up and the full
parser answers, with every reason. Envelopes are the outlet test's terminal
events with the outlet's fields added, then some of those made odd.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.schema import EVENT_TYPES, SCHEMA, InvalidEvent, fast_event, parse_event_fully
from tests.outlet.test_outlet_fastpath import MAX_LINES, _events, _scalars, _texts, _timestamps

_IDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),  # uuid.UUID takes it; the fast path does not
    st.uuids().map(lambda u: u.hex),
    st.sampled_from(["", "not-a-uuid", "0" * 36, "g" * 8 + "-0000-0000-0000-" + "0" * 12]),
    _scalars,
)


@st.composite
def _envelopes(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(_events())
    obj.setdefault("store_id", "S001")
    obj.setdefault("terminal_id", "T1")
    obj.update(
        schema=SCHEMA,
        event_id=str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        outlet_seq=draw(st.integers(1, 10**6)),
        recorded_at="2025-01-02T10:00:01.25Z",
    )
    odd: dict[str, st.SearchStrategy[Any]] = {
        "schema": st.one_of(st.just("retail.v2"), _scalars),
        "event_id": _IDS,
        "outlet_seq": st.one_of(st.sampled_from([0, -1, True, 1.0, "1"]), _scalars),
        "recorded_at": st.one_of(_timestamps, _scalars),
        "store_id": st.one_of(_texts, _scalars),
        "terminal_id": st.one_of(_texts, _scalars),
        "extra_field": _scalars,
    }
    for key in draw(st.lists(st.sampled_from(sorted(odd)), max_size=2)):
        obj[key] = draw(odd[key])
    return obj


def _full(obj: dict[str, Any]) -> Any:
    try:
        return parse_event_fully(obj, max_lines=MAX_LINES)
    except (InvalidEvent, OverflowError) as exc:
        return exc


def _env(**over: Any) -> dict[str, Any]:
    """A valid sale envelope with ``over`` replacing (or adding) fields."""
    obj: dict[str, Any] = {
        "schema": SCHEMA, "event_id": "0190a4b2-7c1d-7e3f-8a9b-0c1d2e3f4a5b", "type": "sale",
        "store_id": "S001", "terminal_id": "T1", "outlet_seq": 1, "client_txn_id": "c",
        "occurred_at": "2025-01-02T10:00:00Z", "recorded_at": "2025-01-02T10:00:01Z",
        "lines": [{"sku": "A", "qty": 1}], "ref": None, "reason": None,
    }  # fmt: skip
    obj.update(over)
    return obj


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_envelopes())
@example(_env(lines=[{"sku": "A", "qty": 10**12 + 1}]))
@example(_env(lines=[{"sku": "A", "qty": 1, "unit_price_cents": -1}]))
@example(_env(type="adjustment", lines=[{"sku": "A", "qty": 0}], reason="r"))
@example(_env(type="adjustment", lines=[{"sku": "A", "qty": -5}]))  # no reason
@example(_env(type="count", lines=[{"sku": "A", "qty": 0}, {"sku": "A", "qty": 1}]))
@example(_env(type="void"))  # no ref
@example(_env(type="void", ref="sale-1"))
@example(_env(event_id="{0190a4b2-7c1d-7e3f-8a9b-0c1d2e3f4a5b}"))
@example(_env(event_id="0190A4B2-7C1D-7E3F-8A9B-0C1D2E3F4A5B"))
@example(_env(outlet_seq=True))
@example(_env(recorded_at="2025-01-02T10:00:01"))
@example(_env(note="kept in extra"))
@example(_env(reason=" "))
@example(_env(ref="a\nb"))
def test_fast_event_accepts_exactly_what_the_parser_accepts(obj: dict[str, Any]) -> None:
    full = _full(obj)
    fast = fast_event(obj, MAX_LINES)
    if fast is None:
        return  # the full parser's answer stands
    assert not isinstance(full, Exception), (obj, full)
    assert fast == full
    assert fast.extra == full.extra  # not part of ==
    assert repr(fast) == repr(full)  # the same types too (True == 1, but not here)


@settings(max_examples=500, deadline=None)
@given(
    type_=st.sampled_from(sorted(EVENT_TYPES)),
    qty=st.integers(1, 10**12),
    price=st.one_of(st.none(), st.integers(0, 10**9)),
    skus=st.lists(st.text(min_size=1, max_size=128).filter(lambda s: s.strip() and s.isprintable()),
                  min_size=1, max_size=MAX_LINES, unique=True),
    when=st.datetimes(min_value=datetime(1900, 1, 1), timezones=st.just(UTC)),
    event_id=st.uuids(),
    seq=st.integers(1, 2**62),
)  # fmt: skip
def test_fast_event_takes_every_well_formed_envelope(
    type_: str, qty: int, price: int | None, skus: list[str], when: datetime,
    event_id: uuid.UUID, seq: int,
) -> None:  # fmt: skip
    obj: dict[str, Any] = {
        "schema": SCHEMA, "event_id": str(event_id), "type": type_, "store_id": "S001",
        "terminal_id": "T1", "outlet_seq": seq, "client_txn_id": "txn-1",
        "occurred_at": when.isoformat(), "recorded_at": when.isoformat(),
        "lines": [{"sku": s, "qty": qty, "unit_price_cents": price} for s in skus],
        "ref": "TR-1" if type_ in ("void", "transfer_out", "transfer_in") else None,
        "reason": "damage" if type_ == "adjustment" else None,
    }  # fmt: skip
    obj = orjson.loads(orjson.dumps(obj))  # what the worker hands it
    fast = fast_event(obj, MAX_LINES)
    assert fast is not None
    assert fast == parse_event_fully(obj, max_lines=MAX_LINES)
