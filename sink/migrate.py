"""Versioned SQL migrations, applied in order, each once (``python -m sink migrate``)."""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

LOCK_ID = 0x7265_7461  # pg_advisory_lock: one migrator at a time


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in sink/migrations, in order."""
    out = []
    for entry in resources.files("sink.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name, entry.read_text()))
    return sorted(out)


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations not applied yet; return their names."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_version")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
            log.info("applied migration %s", name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
        await conn.close()
    return applied
