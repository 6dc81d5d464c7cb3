"""Signature check at the centre, before anything is applied (issue 10, SPEC rule 6).

A forged, altered, unsigned (when required), unknown-key or other-store-key event
becomes a dead letter of kind ``signature`` with the reason, and changes no stock.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr

from app.schema import Event
from app.settings import Settings
from app.signing import KeyRing, load_key_ring, verify_envelope

DEAD_LETTER_KIND = "signature"


@lru_cache(maxsize=4)
def _ring(keys: str, keys_file: Path | None) -> KeyRing:
    return load_key_ring(SecretStr(keys), keys_file)


def key_ring(settings: Settings) -> KeyRing:
    """The settings' key ring, parsed once (a bad entry fails the first batch loudly)."""
    return _ring(settings.signing_keys.get_secret_value(), settings.signing_keys_file)


def verify_event(event: Event, settings: Settings) -> list[str]:
    """Every reason ``event``'s signature is not acceptable; empty if it is."""
    ring = key_ring(settings)
    if not settings.require_signatures and not len(ring) and not event.extra:
        return []  # signing is off here: the common fast path
    return verify_envelope(
        event.to_dict(), event.store_id, ring, required=settings.require_signatures
    )
