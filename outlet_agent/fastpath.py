"""The batch hot path's validation: a fast yes for well-formed terminal events.

:func:`fast_submission` accepts exactly the events
:func:`app.schema.parse_terminal_event` accepts, and makes the same
:class:`~outlet_agent.log.Submission` as ``Submission.of(parse_terminal_event(obj),
...)``; or it gives up (``None``) without saying why. The API then runs the full
parser, which answers 422 with every reason, so what is rejected, and how, does
not change (``tests/outlet/test_outlet_fastpath.py`` checks both against each
other with hypothesis). It is the same rules written flat: no reason
collecting, no helper calls per field, no :class:`~app.schema.TerminalEvent`
(a frozen dataclass costs as much to make as the checks), exact
``str``/``int``/``list``/``dict`` types only (what ``orjson.loads`` makes;
anything else goes the slow way).

The content hash is ``sha256(TerminalEvent.content_key())``: the same bytes,
built with the keys already in sorted order and the ``occurred_at`` text made once.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Final, TypeGuard

import orjson

from app.schema import DELTA_TYPES, MAX_ID_LEN, TRANSFER_TYPES, Line
from outlet_agent.log import Submission

#: per type: (least qty allowed, whether 0 is refused even above the least,
#: ref required, reason required); ``void`` is left to the full parser
_RULES: Final[dict[str, tuple[int, bool, bool, bool]]] = {
    **{t: (1, False, False, False) for t in DELTA_TYPES - {"void", "adjustment"}},
    **{t: (1, False, True, False) for t in TRANSFER_TYPES},
    "adjustment": (-(10**12), True, False, True),
    "count": (0, False, False, False),
}
_QTY_MAX: Final = 10**12
_REASON_MAX: Final = 1000


def _id_ok(value: object) -> TypeGuard[str]:
    return (
        type(value) is str
        and len(value) <= MAX_ID_LEN
        and value.isprintable()
        and bool(value.strip())
    )


def fast_submission(obj: dict[str, Any], terminal_id: str, max_lines: int) -> Submission | None:
    """``Submission.of(parse_terminal_event(obj), terminal_id)`` for a well-formed event;
    ``None`` when the full parser has to look (the event may be invalid, or a void)."""
    event_type = obj.get("type")
    if type(event_type) is not str:
        return None
    rules = _RULES.get(event_type)
    if rules is None:
        return None
    least, no_zero, ref_required, reason_required = rules
    client_txn_id = obj.get("client_txn_id")
    if not _id_ok(client_txn_id):
        return None
    raw_ts = obj.get("occurred_at")
    if type(raw_ts) is not str:
        return None
    try:
        ts = datetime.fromisoformat(raw_ts)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    try:
        ts = ts.astimezone(UTC)
    except OverflowError:  # before year 1 in UTC: the full parser names it
        return None
    raw_lines = obj.get("lines")
    if type(raw_lines) is not list or not raw_lines or len(raw_lines) > max_lines:
        return None
    lines: list[Line] = []
    for item in raw_lines:
        if type(item) is not dict:
            return None
        sku = item.get("sku")
        qty = item.get("qty")
        price = item.get("unit_price_cents")
        if (
            not _id_ok(sku)
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
    ref = obj.get("ref")
    if ref is None:
        if ref_required:
            return None
    elif not _id_ok(ref):
        return None
    reason = obj.get("reason")
    if reason is None:
        if reason_required:
            return None
    elif type(reason) is not str or len(reason) > _REASON_MAX or not reason.strip():
        return None
    store_id = obj.get("store_id")
    other_terminal = obj.get("terminal_id")
    if (store_id is not None and type(store_id) is not str) or (
        other_terminal is not None and type(other_terminal) is not str
    ):
        return None
    # ``ts.isoformat().replace("+00:00", "Z")`` (``_iso``), in a third of the time
    iso = orjson.dumps(ts, option=orjson.OPT_UTC_Z)[1:-1].decode()
    key = orjson.dumps(  # TerminalEvent.content_key(): sorted keys, no sorting needed
        {
            "lines": [
                {"qty": ln.qty, "sku": ln.sku}
                if ln.unit_price_cents is None
                else {"qty": ln.qty, "sku": ln.sku, "unit_price_cents": ln.unit_price_cents}
                for ln in lines
            ],
            "occurred_at": iso,
            "reason": reason,
            "ref": ref,
            "type": event_type,
        }
    )
    return Submission(
        event_type,
        client_txn_id,
        ts,
        iso,
        tuple(lines),
        ref,
        reason,
        terminal_id,
        hashlib.sha256(key).digest(),
    )
