"""The retail.v1 envelope: round trips, every reason listed, no crash on any bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.schema import (
    EVENT_TYPES,
    Event,
    InvalidEvent,
    Line,
    decode_record,
    encode_event,
    encode_packed,
    parse_event,
    parse_terminal_event,
)
from tests.helpers import make_event

ids = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S"), max_codepoint=0x2FFF),
    min_size=1,
    max_size=40,
).filter(str.strip)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(sorted(EVENT_TYPES)))
    qty = st.integers(1, 10**6)
    if kind == "adjustment":
        qty = st.integers(-(10**6), 10**6).filter(bool)
    elif kind == "count":
        qty = st.integers(0, 10**6)
    skus = draw(st.lists(ids, min_size=1, max_size=5, unique=kind == "count"))
    lines = tuple(Line(sku, draw(qty), draw(st.none() | st.integers(0, 10**7))) for sku in skus)
    return Event(
        event_id=str(draw(st.uuids())),
        type=kind,
        store_id=draw(ids),
        terminal_id=draw(ids),
        outlet_seq=draw(st.integers(1, 2**53)),
        client_txn_id=draw(ids),
        occurred_at=draw(timestamps),
        recorded_at=draw(timestamps),
        lines=lines,
        ref=draw(ids) if kind in ("void", "transfer_in", "transfer_out") else draw(st.none() | ids),
        reason=draw(ids) if kind == "adjustment" else None,
    )


@given(events())
def test_round_trip(event: Event) -> None:
    assert parse_event(orjson.loads(encode_event(event))) == event


@given(st.lists(events(), min_size=1, max_size=5))
def test_packed_round_trip(batch: list[Event]) -> None:
    assert decode_record(encode_packed(batch)) == batch


@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_decoder(raw: bytes) -> None:
    for item in decode_record(raw):
        assert isinstance(item, (Event, InvalidEvent))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=30,
    )
)
def test_random_json_is_an_event_or_a_reasoned_rejection(obj: object) -> None:
    for item in decode_record(orjson.dumps(obj)):
        if isinstance(item, InvalidEvent):
            assert item.reasons


def test_every_reason_is_listed() -> None:
    bad = make_event(
        schema="retail.v9", type="teleport", outlet_seq=0, lines=[{"sku": "", "qty": -1}]
    )
    with pytest.raises(InvalidEvent) as info:
        parse_event(bad)
    text = " | ".join(info.value.reasons)
    for fragment in ("schema", "type", "outlet_seq", "lines[0].sku"):
        assert fragment in text
    assert len(info.value.reasons) >= 4


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {
                "type": "sale",
                "client_txn_id": "c",
                "occurred_at": "2026-01-01T00:00:00Z",
                "lines": [{"sku": "A", "qty": 0}],
            },
            "positive",
        ),
        (
            {
                "type": "adjustment",
                "client_txn_id": "c",
                "occurred_at": "2026-01-01T00:00:00Z",
                "lines": [{"sku": "A", "qty": 2}],
            },
            "reason",
        ),
        (
            {
                "type": "sale",
                "client_txn_id": "c",
                "occurred_at": "2026-01-01T00:00:00",
                "lines": [{"sku": "A", "qty": 1}],
            },
            "timezone",
        ),
        (
            {
                "type": "void",
                "client_txn_id": "c",
                "occurred_at": "2026-01-01T00:00:00Z",
                "lines": [{"sku": "A", "qty": 1}],
            },
            "ref",
        ),
        (
            {
                "type": "sale",
                "client_txn_id": "c",
                "occurred_at": "2026-01-01T00:00:00Z",
                "lines": [{"sku": "A", "qty": True}],
            },
            "integer",
        ),
    ],
)
def test_terminal_event_rules(body: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_terminal_event(body)
    assert fragment in " ".join(info.value.reasons)


def test_count_may_be_zero_and_adjustment_negative() -> None:
    when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    count = parse_terminal_event(
        {
            "type": "count",
            "client_txn_id": "c",
            "occurred_at": when,
            "lines": [{"sku": "A", "qty": 0}],
        }
    )
    adj = parse_terminal_event(
        {
            "type": "adjustment",
            "client_txn_id": "d",
            "occurred_at": when,
            "reason": "damage",
            "lines": [{"sku": "A", "qty": -3}],
        }
    )
    assert count.lines[0].qty == 0
    assert adj.lines[0].qty == -3


def test_a_timestamp_before_year_one_in_utc_is_a_reason_not_a_crash() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(make_event(occurred_at="0001-01-01T00:30:00+01:00"))
    assert any("occurred_at: out of range" in r for r in info.value.reasons)
