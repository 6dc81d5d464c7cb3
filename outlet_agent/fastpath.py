"""The batch hot path's validation: a fast yes for well-formed terminal events.

:func:`fast_submission` accepts exactly the events
:func:`app.schema.parse_terminal_event` accepts, and makes the same
:class:`~outlet_agent.log.Submission` as ``Submission.of(parse_terminal_event(obj),
...)``; or it gives up (``None``) without saying why. The API then runs the full
parser, which answers 422 with every reason, so what is rejected, and how, does
not change (``tests/outlet/test_outlet_fastpath.py`` checks both against each
other with hypothesis). It is the same rules written flat (the ``fast_*``
checks of :mod:`app.schema`, which the centre's ``parse_event`` uses too): no
reason collecting, no :class:`~app.schema.TerminalEvent` (a frozen dataclass
costs as much to make as the checks), exact
``str``/``int``/``list``/``dict`` types only (what ``orjson.loads`` makes;
anything else goes the slow way).

The content hash is ``sha256(TerminalEvent.content_key())``: the same bytes,
built with the keys already in sorted order and the ``occurred_at`` text made once.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from app.schema import FAST_RULES, fast_id, fast_lines, fast_reason, fast_timestamp
from outlet_agent.log import Submission


def fast_submission(obj: dict[str, Any], terminal_id: str, max_lines: int) -> Submission | None:
    """``Submission.of(parse_terminal_event(obj), terminal_id)`` for a well-formed event;
    ``None`` when the full parser has to look (the event may be invalid, or a void)."""
    event_type = obj.get("type")
    if type(event_type) is not str or event_type == "void":  # the agent fills a void's lines
        return None
    rules = FAST_RULES.get(event_type)
    if rules is None:
        return None
    _, _, ref_required, reason_required = rules
    client_txn_id = obj.get("client_txn_id")
    if not fast_id(client_txn_id):
        return None
    ts = fast_timestamp(obj.get("occurred_at"))
    if ts is None:
        return None
    lines = fast_lines(obj.get("lines"), event_type, max_lines)
    if lines is None:
        return None
    ref = obj.get("ref")
    if ref is None:
        if ref_required:
            return None
    elif not fast_id(ref):
        return None
    reason = obj.get("reason")
    if not fast_reason(reason, reason_required):
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
