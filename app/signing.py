"""Per-store event signatures: HMAC-SHA256 over the canonical envelope (issue 10).

The outlet agent signs each event when it becomes durable (``outlet_agent/log.py``)
and stores the signed envelope, so a replay re-sends byte-identical signed events.
The centre (``agents/verify.py``) checks the signature before anything is applied.

Envelope fields:

- ``key_id``: which key signed it; covered by the signature.
- ``sig``: ``base64url(HMAC-SHA256(key, canonical))``, without padding.

``canonical`` is the envelope without ``sig``, as :meth:`Event.to_dict` gives it
after parsing, encoded by orjson with sorted keys. The centre verifies the event
it is about to apply, so what is signed is what changes stock.

Keys are per store. The centre's key ring maps each key id to the ONE store it
may sign for, so the key of a compromised outlet cannot sign for another store.
Rotation: give the store a second key id at the centre, switch the outlet to it,
and drop the old id only once nothing signed with it can still arrive (see
SECURITY.md "Key rotation").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import SecretStr

SIG: Final = "sig"
KEY_ID: Final = "key_id"
#: Shortest key accepted (bytes): HMAC-SHA256 keys shorter than the hash weaken it.
MIN_KEY_BYTES: Final = 16
_KEY_ID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SigningConfigError(ValueError):
    """A signing key setting is malformed: fix ``RETAIL_SIGNING_KEY*`` and restart."""


def canonical(envelope: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the envelope without ``sig``, keys sorted."""
    return orjson.dumps(
        {k: v for k, v in envelope.items() if k != SIG}, option=orjson.OPT_SORT_KEYS
    )


def mac(key: bytes, envelope: Mapping[str, Any]) -> str:
    digest = hmac.new(key, canonical(envelope), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def decode_key(text: str) -> bytes:
    """A key given as base64 (standard or url-safe, padding optional)."""
    cleaned = text.strip()
    try:
        raw = base64.urlsafe_b64decode(
            cleaned.replace("+", "-").replace("/", "_") + "=" * (-len(cleaned) % 4)
        )
    except (binascii.Error, ValueError) as exc:
        raise SigningConfigError("signing key: not base64") from exc
    if len(raw) < MIN_KEY_BYTES:
        raise SigningConfigError(f"signing key: {len(raw)} bytes, at least {MIN_KEY_BYTES} needed")
    return raw


def new_key() -> str:
    """A fresh 32-byte key, base64url (what ``python -m outlet_agent keys --key-id ID`` prints)."""
    import secrets

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def check_key_id(key_id: str) -> str:
    if not _KEY_ID_RE.match(key_id):
        raise SigningConfigError(
            f"signing key id {key_id[:70]!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return key_id


@dataclass(frozen=True, slots=True)
class Signer:
    """The outlet's signing key. ``repr`` never shows the key."""

    key_id: str
    key: bytes = field(repr=False)

    def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Add ``key_id`` and ``sig`` to ``envelope`` (in place, last, in that order)."""
        envelope.pop(SIG, None)
        envelope[KEY_ID] = self.key_id
        envelope[SIG] = mac(self.key, envelope)
        return envelope


def load_signer(key_id: str, key: SecretStr, key_file: Path | None) -> Signer | None:
    """The outlet's signer from its settings; ``None`` when signing is not configured."""
    secret = key.get_secret_value().strip()
    if key_file is not None:
        secret = key_file.read_text().strip()
    if not key_id and not secret:
        return None
    if not key_id or not secret:
        raise SigningConfigError(
            "set both RETAIL_SIGNING_KEY_ID and RETAIL_SIGNING_KEY (or _FILE), or neither"
        )
    return Signer(check_key_id(key_id), decode_key(secret))


@dataclass(frozen=True, slots=True)
class StoreKey:
    store_id: str
    key: bytes = field(repr=False)


class KeyRing:
    """The centre's keys: key id -> (the one store it signs for, key)."""

    def __init__(self, keys: Mapping[str, StoreKey]) -> None:
        self._keys = dict(keys)

    def __repr__(self) -> str:  # the ids only, never a key
        return f"KeyRing({sorted(self._keys)})"

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key_id: str) -> StoreKey | None:
        return self._keys.get(key_id)

    def key_ids(self, store_id: str) -> list[str]:
        return sorted(k for k, v in self._keys.items() if v.store_id == store_id)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """``kid=store:base64key`` entries separated by commas or new lines.

        Blank lines and lines starting with ``#`` are ignored (for key files).
        """
        keys: dict[str, StoreKey] = {}
        entries = [
            entry.strip()
            for line in text.splitlines()
            if not line.strip().startswith("#")
            for entry in line.split(",")
        ]
        for n, entry in enumerate(entries, 1):
            if not entry:
                continue
            kid, eq, rest = entry.partition("=")
            store, colon, key = rest.partition(":")
            if not eq or not colon or not store.strip():
                raise SigningConfigError(
                    f"signing keys entry {n}: expected 'key_id=store_id:base64key'"
                )
            kid = check_key_id(kid.strip())
            if kid in keys:
                raise SigningConfigError(f"signing keys: key id {kid!r} given twice")
            keys[kid] = StoreKey(store.strip(), decode_key(key))
        return cls(keys)


def load_key_ring(keys: SecretStr, keys_file: Path | None) -> KeyRing:
    """The centre's key ring from ``RETAIL_SIGNING_KEYS`` and ``RETAIL_SIGNING_KEYS_FILE``."""
    text = keys.get_secret_value()
    if keys_file is not None:
        text = text + "\n" + keys_file.read_text()
    return KeyRing.parse(text)


def verify_envelope(
    envelope: Mapping[str, Any], store_id: str, ring: KeyRing, *, required: bool
) -> list[str]:
    """Every reason the envelope's signature is not acceptable; empty if it is.

    - unsigned: a reason only when signatures are ``required``;
    - signed, but the centre has no keys: accepted only when not required;
    - unknown key id, a key of another store, a bad or forged ``sig``: always a reason.
    """
    kid = envelope.get(KEY_ID)
    sig = envelope.get(SIG)
    if kid is None and sig is None:
        return ["sig: unsigned event; this centre requires signatures"] if required else []
    reasons: list[str] = []
    if not isinstance(kid, str) or not kid:
        reasons.append("key_id: missing or not a string on a signed event")
    if not isinstance(sig, str) or not sig:
        reasons.append("sig: missing or not a string on a signed event")
    if reasons:
        return reasons
    assert isinstance(kid, str) and isinstance(sig, str)
    if not len(ring):
        return ["sig: this centre has no signing keys to verify with"] if required else []
    entry = ring.get(kid)
    if entry is None:
        return [f"key_id: unknown key id {kid[:70]!r} (revoked, or never issued)"]
    if entry.store_id != store_id:
        return [
            f"key_id: key {kid!r} belongs to store {entry.store_id!r}, "
            f"not {store_id[:70]!r} (an outlet may only sign its own events)"
        ]
    if not hmac.compare_digest(sig.encode("ascii", "replace"), mac(entry.key, envelope).encode()):
        return ["sig: signature does not match the event (forged or altered in transit)"]
    return []
