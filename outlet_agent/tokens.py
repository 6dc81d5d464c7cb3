"""Per-terminal bearer tokens, stored only as their sha256 (SPEC "Public interfaces").

A token names its terminal: the agent stamps that ``terminal_id`` (and its own
``store_id``) on every event the terminal sends.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass

from app.schema import utc_now
from outlet_agent.log import EventLog


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "rt_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_hash: str
    terminal_id: str
    created_at: str
    revoked_at: str | None


def add_token(db: sqlite3.Connection, terminal_id: str) -> str:
    """Make a token for ``terminal_id``; the clear token is returned once, never stored."""
    token = new_token()
    db.execute(
        "INSERT INTO tokens (token_hash, terminal_id, created_at) VALUES (?,?,?)",
        (hash_token(token), terminal_id, utc_now().isoformat()),
    )
    return token


def list_tokens(db: sqlite3.Connection) -> list[TokenInfo]:
    rows = db.execute(
        "SELECT token_hash, terminal_id, created_at, revoked_at FROM tokens "
        "ORDER BY terminal_id, created_at"
    ).fetchall()
    return [TokenInfo(*row) for row in rows]


def revoke_tokens(
    db: sqlite3.Connection, *, terminal_id: str | None = None, token: str | None = None
) -> int:
    """Revoke a terminal's tokens, or one token (clear text or a hash prefix of 8+)."""
    now = utc_now().isoformat()
    if terminal_id is not None:
        cur = db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE terminal_id = ? AND revoked_at IS NULL",
            (now, terminal_id),
        )
        return cur.rowcount
    if token is None:
        return 0
    if token.startswith("rt_"):
        cur = db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
            (now, hash_token(token)),
        )
        return cur.rowcount
    if len(token) < 8:
        return 0
    cur = db.execute(
        "UPDATE tokens SET revoked_at = ? WHERE token_hash LIKE ? AND revoked_at IS NULL",
        (now, token.lower() + "%"),
    )
    return cur.rowcount


class TokenCache:
    """Token hash -> terminal, cached for ``ttl_s`` so the hot path skips SQLite."""

    def __init__(self, event_log: EventLog, ttl_s: float) -> None:
        self._log = event_log
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def terminal(self, token: str) -> str | None:
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        terminal = await self._log.token_terminal(digest)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (terminal, now + self._ttl_s)
        return terminal
