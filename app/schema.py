"""The ``retail.v1`` event envelope (SPEC "Events"), shared by outlet and centre.

Parsing never raises anything but :class:`InvalidEvent`, which lists every
reason at once, so a terminal or an operator sees all that is wrong in one go.
A Kafka record holds one event (a JSON object) or, while an outlet drains a
backlog, several consecutive events of one store packed in a JSON array.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TypeGuard

import orjson

SCHEMA: Final = "retail.v1"

#: Event types and what the sign of a line's qty may be.
DELTA_TYPES: Final = frozenset({"sale", "return", "receipt", "adjustment", "void"})
TRANSFER_TYPES: Final = frozenset({"transfer_out", "transfer_in"})
EVENT_TYPES: Final = DELTA_TYPES | TRANSFER_TYPES | {"count"}
#: Types whose ``ref`` is required.
REF_REQUIRED: Final = frozenset({"void", "transfer_out", "transfer_in"})

MAX_ID_LEN: Final = 128
DEFAULT_MAX_LINES: Final = 500


class InvalidEvent(ValueError):
    """An event that breaks the envelope rules; ``reasons`` lists each break."""

    def __init__(self, reasons: list[str], raw: Any = None) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
        self.raw = raw


class Line(NamedTuple):
    """One line of an event. A tuple: made for every line of every event, and a
    frozen dataclass cost four times as much to make."""

    sku: str
    qty: int
    unit_price_cents: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted event, as the outlet agent made it durable."""

    event_id: str
    type: str
    store_id: str
    terminal_id: str
    outlet_seq: int
    client_txn_id: str
    occurred_at: datetime
    recorded_at: datetime
    lines: tuple[Line, ...]
    ref: str | None = None
    reason: str | None = None
    schema: str = SCHEMA
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "schema": self.schema,
            "type": self.type,
            "store_id": self.store_id,
            "terminal_id": self.terminal_id,
            "outlet_seq": self.outlet_seq,
            "client_txn_id": self.client_txn_id,
            "occurred_at": _iso(self.occurred_at),
            "recorded_at": _iso(self.recorded_at),
            "lines": [_line_dict(line) for line in self.lines],
            "ref": self.ref,
            "reason": self.reason,
        }
        out.update(self.extra)
        return out

    def content_key(self) -> bytes:
        """What must be equal for two copies to be the same event (SPEC rule 2)."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class TerminalEvent:
    """What a terminal sends; the outlet agent fills in the rest."""

    type: str
    client_txn_id: str
    occurred_at: datetime
    lines: tuple[Line, ...]
    ref: str | None = None
    reason: str | None = None
    store_id: str | None = None
    terminal_id: str | None = None

    def content_key(self) -> bytes:
        """The content a repeated ``client_txn_id`` is compared on (409 vs 200)."""
        return orjson.dumps(
            {
                "type": self.type,
                "occurred_at": _iso(self.occurred_at),
                "lines": [_line_dict(line) for line in self.lines],
                "ref": self.ref,
                "reason": self.reason,
            },
            option=orjson.OPT_SORT_KEYS,
        )


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _line_dict(line: Line) -> dict[str, Any]:
    out: dict[str, Any] = {"sku": line.sku, "qty": line.qty}
    if line.unit_price_cents is not None:
        out["unit_price_cents"] = line.unit_price_cents
    return out


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- parsing


class _Reasons:
    """Collects every reason an object is invalid, instead of stopping at the first."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, reason: str) -> None:
        self.items.append(reason)

    def string(self, obj: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
        value = obj.get(name)
        if value is None:
            if required:
                self.add(f"{name}: required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(f"{name}: must be a non-empty string")
            return None
        if name != "reason":
            if len(value) > MAX_ID_LEN:
                self.add(f"{name}: longer than {MAX_ID_LEN} characters")
                return None
            if not value.isprintable():
                self.add(f"{name}: must not contain control characters")
                return None
        elif len(value) > 1000:
            self.add("reason: longer than 1000 characters")
            return None
        return value

    def timestamp(self, obj: Mapping[str, Any], name: str) -> datetime | None:
        value = obj.get(name)
        if value is None:
            self.add(f"{name}: required")
            return None
        if not isinstance(value, str):
            self.add(f"{name}: must be an ISO-8601 string with a timezone")
            return None
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            self.add(f"{name}: not an ISO-8601 timestamp: {value[:40]!r}")
            return None
        if ts.tzinfo is None:
            self.add(f"{name}: needs a timezone (for example 'Z' or '+02:00')")
            return None
        try:
            return ts.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:30:00+01:00: before year 1 in UTC
            self.add(f"{name}: out of range: {value[:40]!r}")
            return None

    def lines(self, obj: Mapping[str, Any], event_type: str | None, max_lines: int) -> list[Line]:
        raw = obj.get("lines")
        if not isinstance(raw, list) or not raw:
            self.add("lines: must be a non-empty list of {sku, qty}")
            return []
        if len(raw) > max_lines:
            self.add(f"lines: more than {max_lines} lines")
            return []
        out: list[Line] = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                self.add(f"lines[{i}]: must be an object with sku and qty")
                continue
            sku = item.get("sku")
            qty = item.get("qty")
            price = item.get("unit_price_cents")
            ok = True
            if (
                not isinstance(sku, str)
                or not sku.strip()
                or len(sku) > MAX_ID_LEN
                or not sku.isprintable()
            ):
                self.add(f"lines[{i}].sku: must be a non-empty string of at most {MAX_ID_LEN}")
                ok = False
            if not _is_int(qty):
                self.add(f"lines[{i}].qty: must be an integer")
                ok = False
            elif event_type == "adjustment":
                if qty == 0:
                    self.add(f"lines[{i}].qty: an adjustment must be non-zero (signed)")
                    ok = False
            elif event_type == "count":
                if qty < 0:
                    self.add(f"lines[{i}].qty: a count must be zero or more")
                    ok = False
            elif qty <= 0:
                self.add(f"lines[{i}].qty: must be a positive integer")
                ok = False
            if _is_int(qty) and abs(qty) > 10**12:
                self.add(f"lines[{i}].qty: out of range")
                ok = False
            if price is not None and (not _is_int(price) or price < 0):
                self.add(f"lines[{i}].unit_price_cents: must be a non-negative integer")
                ok = False
            if ok:
                out.append(Line(sku=sku, qty=qty, unit_price_cents=price))  # type: ignore[arg-type]
        if event_type == "count" and len({line.sku for line in out}) != len(out):
            self.add("lines: a count names each sku once")
        return out


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _common(
    obj: Mapping[str, Any], reasons: _Reasons, max_lines: int
) -> tuple[str | None, str | None, datetime | None, list[Line], str | None, str | None]:
    event_type = obj.get("type")
    if event_type is None:
        reasons.add("type: required")
    elif not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        # a list or an object is unhashable: ``in`` would raise TypeError (issue 10's fuzzer)
        reasons.add(f"type: unknown type {str(event_type)[:40]!r}; one of {sorted(EVENT_TYPES)}")
        event_type = None
    client_txn_id = reasons.string(obj, "client_txn_id")
    occurred_at = reasons.timestamp(obj, "occurred_at")
    lines = reasons.lines(obj, event_type, max_lines)
    ref = reasons.string(obj, "ref", required=event_type in REF_REQUIRED)
    reason = reasons.string(obj, "reason", required=event_type == "adjustment")
    return event_type, client_txn_id, occurred_at, lines, ref, reason


def parse_terminal_event(obj: Any, *, max_lines: int = DEFAULT_MAX_LINES) -> TerminalEvent:
    """Validate what a terminal posted (SPEC "Public interfaces", outlet agent)."""
    if not isinstance(obj, dict):
        raise InvalidEvent(["body: must be a JSON object"], obj)
    reasons = _Reasons()
    event_type, client_txn_id, occurred_at, lines, ref, reason = _common(obj, reasons, max_lines)
    store_id = obj.get("store_id")
    if store_id is not None and not isinstance(store_id, str):
        reasons.add("store_id: must be a string")
    terminal_id = obj.get("terminal_id")
    if terminal_id is not None and not isinstance(terminal_id, str):
        reasons.add("terminal_id: must be a string")
    if reasons.items:
        raise InvalidEvent(reasons.items, obj)
    assert event_type and client_txn_id and occurred_at
    return TerminalEvent(
        type=event_type,
        client_txn_id=client_txn_id,
        occurred_at=occurred_at,
        lines=tuple(lines),
        ref=ref,
        reason=reason,
        store_id=store_id,
        terminal_id=terminal_id,
    )


# ------------------------------------------------------------------ fast paths
# The same rules written flat, for the hot paths: a fast yes for a well-formed
# event, or ``None`` (no reasons) and the full parser answers. Exact
# ``str``/``int``/``list``/``dict`` types only: what ``orjson.loads`` makes.

#: per type: (least qty allowed, whether 0 is refused, ref required, reason required)
FAST_RULES: Final[dict[str, tuple[int, bool, bool, bool]]] = {
    **{t: (1, False, t in REF_REQUIRED, False) for t in DELTA_TYPES - {"adjustment"}},
    **{t: (1, False, True, False) for t in TRANSFER_TYPES},
    "adjustment": (-(10**12), True, False, True),
    "count": (0, False, False, False),
}
_QTY_MAX: Final = 10**12
_REASON_MAX: Final = 1000
#: the canonical form, which ``uuid.UUID`` accepts; any other goes the slow way
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_KNOWN: Final = frozenset(
    {
        "event_id", "schema", "type", "store_id", "terminal_id", "outlet_seq",
        "client_txn_id", "occurred_at", "recorded_at", "lines", "ref", "reason",
    }
)  # fmt: skip


def fast_id(value: object) -> TypeGuard[str]:
    """What ``_Reasons.string`` accepts for an id (not ``reason``)."""
    return (
        type(value) is str
        and len(value) <= MAX_ID_LEN
        and value.isprintable()
        and bool(value.strip())
    )


def fast_reason(value: object, required: bool) -> bool:
    if value is None:
        return not required
    return type(value) is str and len(value) <= _REASON_MAX and bool(value.strip())


def fast_timestamp(value: object) -> datetime | None:
    """What ``_Reasons.timestamp`` makes of a valid value, or None."""
    if type(value) is not str:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # before year 1 in UTC: the full parser names it
        return None


def fast_lines(raw: object, event_type: str, max_lines: int) -> list[Line] | None:
    """What ``_Reasons.lines`` makes of valid lines for a type of ``FAST_RULES``, or None."""
    if type(raw) is not list or not raw or len(raw) > max_lines:
        return None
    least, no_zero, _, _ = FAST_RULES[event_type]
    lines: list[Line] = []
    for item in raw:
        if type(item) is not dict:
            return None
        sku = item.get("sku")
        qty = item.get("qty")
        price = item.get("unit_price_cents")
        if (
            not fast_id(sku)
            or type(qty) is not int
            or qty < least
            or qty > _QTY_MAX
            or (no_zero and qty == 0)
            or (price is not None and (type(price) is not int or price < 0))
        ):
            return None
        lines.append(Line(sku, qty, price))
    if event_type == "count" and len({line.sku for line in lines}) != len(lines):
        return None
    return lines


def fast_event(obj: dict[str, Any], max_lines: int) -> Event | None:
    """``parse_event(obj)`` for a well-formed envelope; None when the full parser must look.

    The centre parses every event of every record, a fifth of a worker's CPU
    while a backlog drains; ``tests/unit/test_schema_fastpath.py`` checks the
    two against each other with hypothesis.
    """
    event_type = obj.get("type")
    if type(event_type) is not str or obj.get("schema") != SCHEMA:
        return None
    rules = FAST_RULES.get(event_type)
    if rules is None:
        return None
    event_id = obj.get("event_id")
    if type(event_id) is not str or len(event_id) != 36 or not _UUID.fullmatch(event_id):
        return None
    client_txn_id = obj.get("client_txn_id")
    store_id = obj.get("store_id")
    terminal_id = obj.get("terminal_id")
    seq = obj.get("outlet_seq")
    ref = obj.get("ref")
    reason = obj.get("reason")
    if (
        not fast_id(client_txn_id)
        or not fast_id(store_id)
        or not fast_id(terminal_id)
        or type(seq) is not int
        or seq < 1
        or not (fast_id(ref) if ref is not None else not rules[2])
        or not fast_reason(reason, rules[3])
    ):
        return None
    occurred_at = fast_timestamp(obj.get("occurred_at"))
    recorded_at = fast_timestamp(obj.get("recorded_at"))
    if occurred_at is None or recorded_at is None:
        return None
    lines = fast_lines(obj.get("lines"), event_type, max_lines)
    if lines is None:
        return None
    extra = {} if obj.keys() <= _KNOWN else {k: v for k, v in obj.items() if k not in _KNOWN}
    return Event(
        event_id, event_type, store_id, terminal_id, seq, client_txn_id,
        occurred_at, recorded_at, tuple(lines), ref, reason, SCHEMA, extra,
    )  # fmt: skip


def parse_event(obj: Any, *, max_lines: int = DEFAULT_MAX_LINES) -> Event:
    """Validate a full envelope (what the centre consumes)."""
    if type(obj) is dict:
        fast = fast_event(obj, max_lines)
        if fast is not None:
            return fast
    return parse_event_fully(obj, max_lines=max_lines)


def parse_event_fully(obj: Any, *, max_lines: int = DEFAULT_MAX_LINES) -> Event:
    """:func:`parse_event` without the fast path: every reason of an invalid event."""
    if not isinstance(obj, dict):
        raise InvalidEvent(["event: must be a JSON object"], obj)
    reasons = _Reasons()
    schema = obj.get("schema")
    if schema != SCHEMA:
        reasons.add(f"schema: unknown schema {str(schema)[:40]!r}; expected {SCHEMA!r}")
    event_id = reasons.string(obj, "event_id")
    if event_id is not None:
        try:
            uuid.UUID(event_id)
        except ValueError:
            reasons.add("event_id: must be a UUID")
    event_type, client_txn_id, occurred_at, lines, ref, reason = _common(obj, reasons, max_lines)
    store_id = reasons.string(obj, "store_id")
    terminal_id = reasons.string(obj, "terminal_id")
    raw_seq = obj.get("outlet_seq")
    seq = raw_seq if _is_int(raw_seq) and raw_seq >= 1 else 0
    if not seq:
        reasons.add("outlet_seq: must be an integer >= 1")
    recorded_at = reasons.timestamp(obj, "recorded_at")
    if reasons.items:
        raise InvalidEvent(reasons.items, obj)
    assert event_id and event_type and client_txn_id and occurred_at and recorded_at
    assert store_id and terminal_id
    extra = {k: v for k, v in obj.items() if k not in _KNOWN}
    return Event(
        event_id=event_id,
        type=event_type,
        store_id=store_id,
        terminal_id=terminal_id,
        outlet_seq=seq,
        client_txn_id=client_txn_id,
        occurred_at=occurred_at,
        recorded_at=recorded_at,
        lines=tuple(lines),
        ref=ref,
        reason=reason,
        extra=extra,
    )


# --------------------------------------------------------------------------- wire


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event.to_dict())


def encode_packed(events: Iterable[Event]) -> bytes:
    """Several consecutive events of one store in one record (backlog drain)."""
    return orjson.dumps([e.to_dict() for e in events])


def decode_record(raw: bytes | None, *, max_bytes: int = 1 << 20) -> list[Event | InvalidEvent]:
    """Decode one Kafka record into its events; never raises.

    Anything undecodable becomes an :class:`InvalidEvent` carrying the reason,
    bound for the dead-letter topic (SPEC rule 6).
    """
    if raw is None:
        return [InvalidEvent(["record: empty value"], None)]
    if len(raw) > max_bytes:
        return [InvalidEvent([f"record: {len(raw)} bytes, over the {max_bytes} limit"], None)]
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [InvalidEvent([f"record: not JSON ({exc})"], raw[:256].decode("utf-8", "replace"))]
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        return [InvalidEvent(["record: empty packed list"], obj)]
    out: list[Event | InvalidEvent] = []
    for item in items:
        try:
            out.append(parse_event(item))
        except InvalidEvent as exc:
            out.append(exc)
    return out
