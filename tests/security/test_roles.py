"""Least privilege in PostgreSQL, as a deployment uses it (issue 10; SECURITY.md).

tests/sink/test_schema.py already checks the group roles' table grants (analyst
writes, sink DDL: 42501). Here: LOGIN users made the way the migration's
comment says (``CREATE ROLE … LOGIN IN ROLE retail_…``), and what a compromised
worker or a curious analyst would try next: switch roles, read password
hashes, erase the dead letters that record an attack, hand out rights.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any

import asyncpg
import pytest

from devstack import DevStack
from devstack.postgres import postgres_bin
from sink.migrate import migrate

pytestmark = pytest.mark.e2e


def _psql(url: str, sql: str) -> None:
    subprocess.run([str(postgres_bin() / "psql"), url, "-qc", sql], check=True)


async def _as(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("role", "sql"),
    [
        ("retail_analyst", "SET ROLE retail_sink"),
        ("retail_analyst", "SELECT rolpassword FROM pg_authid"),
        ("retail_analyst", "DELETE FROM dead_letters"),
        ("retail_analyst", "UPDATE outlet_sync SET applied_seq = 0"),
        ("retail_sink", "DELETE FROM dead_letters"),
        ("retail_sink", "TRUNCATE ledger"),
        ("retail_sink", "CREATE ROLE intruder LOGIN SUPERUSER"),
        ("retail_sink", "SELECT rolpassword FROM pg_authid"),
        ("retail_sink", "ALTER TABLE ledger DISABLE TRIGGER ALL"),
    ],
)
def test_login_users_cannot_overstep(stack: DevStack, role: str, sql: str) -> None:
    database = f"r_{uuid.uuid4().hex[:8]}"
    _psql(stack.postgres.url(), f"CREATE DATABASE {database}")
    asyncio.run(migrate(stack.postgres.url(database)))
    user = f"u_{uuid.uuid4().hex[:8]}"
    _psql(stack.postgres.url(database), f"CREATE ROLE {user} LOGIN IN ROLE {role}")
    dsn = stack.postgres.url(database, user=user)
    if role == "retail_sink":
        sql = f"SET ROLE retail_sink; {sql}"  # what agents/sink.py does on connect
    with pytest.raises(asyncpg.PostgresError) as info:
        asyncio.run(_as(dsn, sql))
    assert info.value.sqlstate == "42501", (sql, info.value)
