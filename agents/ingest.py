"""Where an event enters the centre: decode, unpack, validate (SPEC rule 6).

Nothing is dropped silently: what fails becomes a dead letter with its reasons,
and the batch goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.verify import DEAD_LETTER_KIND as SIGNATURE_KIND
from agents.verify import verify_event
from app.schema import Event, InvalidEvent, decode_record
from app.settings import Settings
from domain.apply import DeadLetter


@dataclass(slots=True)
class Source:
    """Where a record came from: dead letters are keyed by it, so a replay rewrites one key."""

    topic: str
    partition: int
    offset: int
    key: str | None

    def dead_letter_key(self, index: int) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}:{index}"


def validate_record(
    raw: bytes | None, source: Source, settings: Settings
) -> tuple[list[Event], list[tuple[str, DeadLetter]]]:
    """Split one record into valid events and keyed dead letters."""
    valid: list[Event] = []
    dead: list[tuple[str, DeadLetter]] = []
    known = settings.known_stores
    for i, item in enumerate(decode_record(raw, max_bytes=settings.max_event_bytes * 64)):
        if isinstance(item, InvalidEvent):
            raw_obj = item.raw if isinstance(item.raw, (dict, list, str)) else None
            store = raw_obj.get("store_id") if isinstance(raw_obj, dict) else None
            dead.append(
                (
                    source.dead_letter_key(i),
                    DeadLetter(item.reasons, _as_dict(raw_obj), _str_or_none(store)),
                )
            )
            continue
        reasons = []
        if known and item.store_id not in known:
            reasons.append(f"store_id: unknown store {item.store_id!r}")
        if source.key != item.store_id:
            # the topic is keyed by store_id (SPEC): a store's events, its
            # table keys and its order all live in that key's partition
            reasons.append(f"store_id: {item.store_id!r} sent under the record key {source.key!r}")
        kind = "invalid"
        if not reasons:
            # only an event that is otherwise valid is checked: what is verified
            # is exactly what would be applied (issue 10, agents/verify.py)
            reasons = verify_event(item, settings)
            kind = SIGNATURE_KIND
        if reasons:
            dead.append(
                (
                    source.dead_letter_key(i),
                    DeadLetter(reasons, item.to_dict(), item.store_id, kind=kind),
                )
            )
        else:
            valid.append(item)
    return valid, dead


def _as_dict(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, dict):
        return obj
    if obj is None:
        return None
    return {"raw": obj if isinstance(obj, str) else repr(obj)[:2000]}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
