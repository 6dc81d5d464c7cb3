"""Per-store signatures (issue 10): the outlet signs, the centre verifies before applying.

Centre verification is checked through ``agents.ingest.validate_record``, the
function the apply agent calls for every record: a rejected event comes back as
a dead letter with its reason and never in the list of events to apply.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from agents.ingest import Source, validate_record
from app.schema import TerminalEvent, encode_event, encode_packed, parse_event
from app.settings import Settings
from app.signing import (
    KeyRing,
    Signer,
    SigningConfigError,
    load_key_ring,
    load_signer,
    new_key,
)
from outlet_agent.log import _encode
from tests.security.keys import RING, centre_settings, key


def signed_body(
    signer: Signer | None, *, store: str = "S1", seq: int = 1, qty: int = 2, sku: str = "A"
) -> bytes:
    """What the outlet's log stores and forwards for one sale (its real encoder)."""
    ev = TerminalEvent(
        type="sale",
        client_txn_id=f"txn-{seq}",
        occurred_at=datetime(2025, 1, 2, 10, 0, 0, 123456, tzinfo=UTC),
        lines=(),
        ref=None,
        reason=None,
    )
    from app.schema import Line

    lines = (Line(sku, qty, 199),)
    return _encode(
        ev,
        f"00000000-0000-4000-8000-{seq:012d}",
        store,
        "T1",
        seq,
        "2025-01-02T10:00:01.000001Z",
        lines,
        signer,
    )


def check(raw: bytes, settings: Settings, key_: str = "S1") -> tuple[list[Any], list[Any]]:
    return validate_record(raw, Source("retail.events", 0, 7, key_), settings)


S1_NEW = Signer("s1-2026", base64.urlsafe_b64decode(key(2) + "="))
S1_OLD = Signer("s1-2025", base64.urlsafe_b64decode(key(1) + "="))
S2 = Signer("s2-2025", base64.urlsafe_b64decode(key(3) + "="))


def only_reason(dead: list[Any]) -> str:
    assert len(dead) == 1, dead
    letter = dead[0][1]
    assert letter.kind == "signature"
    assert len(letter.reasons) == 1, letter.reasons
    return str(letter.reasons[0])


def test_signed_event_verifies_and_is_encode_event_of_itself() -> None:
    raw = signed_body(S1_NEW)
    obj = orjson.loads(raw)
    assert obj["key_id"] == "s1-2026" and isinstance(obj["sig"], str)
    assert list(obj)[-2:] == ["key_id", "sig"]
    # the log stores exactly what the centre would re-encode: replays are byte-identical
    assert encode_event(parse_event(obj)) == raw
    valid, dead = check(raw, centre_settings())
    assert [e.outlet_seq for e in valid] == [1] and dead == []


def test_packed_records_verify_event_by_event() -> None:
    bodies = [signed_body(S1_NEW, seq=s) for s in (1, 2, 3)]
    packed = b"[" + b",".join(bodies) + b"]"
    assert packed == encode_packed(parse_event(orjson.loads(b)) for b in bodies)
    valid, dead = check(packed, centre_settings())
    assert len(valid) == 3 and dead == []


def test_forged_signature_is_dead_lettered() -> None:
    forger = Signer("s1-2026", b"not the real key, 32 bytes long!")
    valid, dead = check(signed_body(forger), centre_settings())
    assert valid == []
    assert "does not match" in only_reason(dead)


def test_replayed_event_with_altered_lines_is_dead_lettered() -> None:
    obj = orjson.loads(signed_body(S1_NEW, qty=2))
    obj["lines"][0]["qty"] = 200  # a man in the middle "replays" it with other lines
    valid, dead = check(orjson.dumps(obj), centre_settings())
    assert valid == []
    assert "does not match" in only_reason(dead)
    assert dead[0][1].event["lines"][0]["qty"] == 200  # the dead letter shows what came


@pytest.mark.parametrize("field", ["store_id", "outlet_seq", "key_id", "type", "ref"])
def test_any_altered_field_breaks_the_signature(field: str) -> None:
    obj = orjson.loads(signed_body(S1_NEW))
    obj[field] = {"store_id": "S2", "outlet_seq": 99, "key_id": "s1-2025", "type": "receipt",
                  "ref": "x"}[field]  # fmt: skip
    valid, dead = check(orjson.dumps(obj), centre_settings(), obj["store_id"])
    assert valid == []
    assert "sig: signature does not match" in only_reason(dead) or "belongs to" in only_reason(dead)


def test_unknown_key_id_is_dead_lettered() -> None:
    stranger = Signer("s9-1999", base64.urlsafe_b64decode(key(9) + "="))
    valid, dead = check(signed_body(stranger), centre_settings())
    assert valid == []
    assert "unknown key id" in only_reason(dead)


def test_key_of_another_store_is_dead_lettered() -> None:
    # a compromised outlet S2 signs an event for store S1 with its own (valid) key
    valid, dead = check(signed_body(S2, store="S1"), centre_settings())
    assert valid == []
    assert "belongs to store 'S2'" in only_reason(dead)


def test_unsigned_event_is_dead_lettered_when_signatures_are_required() -> None:
    raw = signed_body(None)
    valid, dead = check(raw, centre_settings())
    assert valid == [] and "unsigned" in only_reason(dead)
    # the default (issue 10): not required, so the demo and older outlets keep working
    valid, dead = check(raw, centre_settings(require_signatures=False))
    assert len(valid) == 1 and dead == []


def test_signed_events_are_verified_even_when_not_required() -> None:
    forger = Signer("s1-2026", b"not the real key, 32 bytes long!")
    valid, dead = check(signed_body(forger), centre_settings(require_signatures=False))
    assert valid == [] and len(dead) == 1


def test_stripped_signature_is_unsigned() -> None:
    obj = orjson.loads(signed_body(S1_NEW))
    del obj["sig"]
    valid, dead = check(orjson.dumps(obj), centre_settings())
    assert valid == [] and "sig: missing" in only_reason(dead)


def test_key_rotation_two_keys_valid_then_old_one_dropped() -> None:
    old, new = signed_body(S1_OLD, seq=1), signed_body(S1_NEW, seq=2)
    during = centre_settings()  # both ids of S1 in the ring
    assert len(check(old, during)[0]) == 1
    assert len(check(new, during)[0]) == 1
    after = centre_settings(signing_keys=SecretStr(f"s1-2026=S1:{key(2)},s2-2025=S2:{key(3)}"))
    assert len(check(new, after)[0]) == 1
    valid, dead = check(old, after)
    assert valid == [] and "unknown key id 's1-2025'" in only_reason(dead)


def test_key_ring_from_a_file_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# store S1, rotated 2026\ns1-2026=S1:{key(2)}\n\n")
    ring = load_key_ring(SecretStr(""), path)
    assert ring.key_ids("S1") == ["s1-2026"]
    settings = centre_settings(signing_keys=SecretStr(""), signing_keys_file=path)
    assert len(check(signed_body(S1_NEW), settings)[0]) == 1


@pytest.mark.parametrize(
    "text",
    [
        "s1=S1",  # no key
        f"s1:{key(1)}",  # no store
        "s1=S1:c2hvcnQ",  # too short
        "s1=S1:!!!notbase64!!!",
        f"bad id=S1:{key(1)}",
        f"a=S1:{key(1)},a=S1:{key(2)}",  # an id twice
    ],
)
def test_malformed_key_ring_is_refused(text: str) -> None:
    with pytest.raises(SigningConfigError):
        KeyRing.parse(text)


def test_outlet_signer_needs_both_id_and_key(tmp_path: Path) -> None:
    assert load_signer("", SecretStr(""), None) is None
    with pytest.raises(SigningConfigError):
        load_signer("s1", SecretStr(""), None)
    path = tmp_path / "key"
    path.write_text(new_key() + "\n")
    signer = load_signer("s1-2026", SecretStr(""), path)
    assert signer is not None and signer.key_id == "s1-2026"


def test_keys_never_show_in_reprs_or_settings_dumps() -> None:
    secret = key(2)
    settings = centre_settings(signing_key_id="s1-2026", signing_key=SecretStr(secret))
    signer = load_signer(settings.signing_key_id, settings.signing_key, None)
    ring = KeyRing.parse(RING)
    raw_key = base64.urlsafe_b64decode(secret + "=")
    for text in (repr(settings), str(settings), repr(signer), repr(ring),
                 str(settings.model_dump()), repr(ring.get("s1-2026"))):  # fmt: skip
        assert secret not in text
        assert repr(raw_key) not in text
