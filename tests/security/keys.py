"""Test keys for the signing tests (never used outside tests)."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import SecretStr

from app.settings import Settings


def key(n: int) -> str:
    """A deterministic 32-byte test key, base64url."""
    return base64.urlsafe_b64encode(bytes([n]) * 32).decode().rstrip("=")


#: store S1 has two keys (a rotation in progress), S2 one
RING = f"s1-2025={'S1'}:{key(1)},s1-2026=S1:{key(2)},s2-2025=S2:{key(3)}"


def centre_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"signing_keys": SecretStr(RING), "require_signatures": True}
    values.update(overrides)
    return Settings(**values)
