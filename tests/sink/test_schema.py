"""Migrations, roles and the batch writer against the real PostgreSQL (no worker)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from devstack import DevStack
from devstack.postgres import postgres_bin
from sink.migrate import migrate, migrations
from sink.reconcile import compare
from sink.writer import SinkRecord, ensure_temp_tables, write_batch
from tests.helpers import ROOT


@pytest.fixture
def dsn(stack: DevStack) -> Iterator[str]:
    database = f"s_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [str(postgres_bin() / "psql"), stack.postgres.url(), "-qc", f"CREATE DATABASE {database}"],
        check=True,
    )
    yield stack.postgres.url(database)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_migrate_cli_is_idempotent(dsn: str) -> None:
    env = {"RETAIL_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin", "COLUMNS": "120"}
    first = subprocess.run(
        [sys.executable, "-m", "sink", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert f"{len(migrations())} migration(s) applied" in first.stdout
    second = subprocess.run(
        [sys.executable, "-m", "sink", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr
    assert "0 migration(s) applied" in second.stdout

    async def versions() -> list[int]:
        conn = await asyncpg.connect(dsn)
        try:
            return [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY 1")]
        finally:
            await conn.close()

    assert run(versions()) == [v for v, _, _ in migrations()]


def test_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sink", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0
    for command in ("migrate", "reconcile", "status"):
        assert command in out.stdout


async def _as_role(dsn: str, role: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"SET ROLE {role}")
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO stock_levels VALUES ('S', 'A', 1, 0, 1, 1, now())",
        "UPDATE stock_levels SET on_hand = 0",
        "DELETE FROM ledger",
        "INSERT INTO sink_offsets VALUES ('t', 0, 1)",
        "CREATE TABLE public.mine (x int)",
    ],
)
def test_analyst_cannot_write(dsn: str, sql: str) -> None:
    run(migrate(dsn))
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as info:
        run(_as_role(dsn, "retail_analyst", sql))
    assert info.value.sqlstate == "42501"


def test_analyst_reads_and_sink_has_no_ddl(dsn: str) -> None:
    run(migrate(dsn))
    run(_as_role(dsn, "retail_analyst", "SELECT count(*) FROM ledger, stock_levels"))
    for sql in (
        "DROP TABLE ledger",
        "CREATE TABLE public.mine (x int)",
        "DELETE FROM ledger",
        "UPDATE ledger SET qty = 0",
        "UPDATE ledger SET outlet_seq = outlet_seq + 1",
        "TRUNCATE stock_levels",
    ):
        with pytest.raises(asyncpg.PostgresError) as info:
            run(_as_role(dsn, "retail_sink", sql))
        assert info.value.sqlstate == "42501", sql


def _record(
    offset: int, *, ver: int, on_hand: int, seqs: list[int], store: str = "S1"
) -> SinkRecord:
    now = time.time()
    iso = datetime.now(UTC).isoformat()
    ledger = [
        {
            "store_id": store, "outlet_seq": s, "line_no": 0, "event_id": str(uuid.uuid4()),
            "type": "sale", "sku": "A", "qty": -1, "effect": "delta", "unit_price_cents": 100,
            "occurred_at": iso, "recorded_at": iso, "applied_at": now, "reason": None, "ref": None,
        }
        for s in seqs
    ]  # fmt: skip
    return SinkRecord(
        "applied",
        0,
        offset,
        {
            "store_id": store,
            "ledger": ledger,
            "stock": [
                {
                    "store_id": store,
                    "sku": "A",
                    "on_hand": on_hand,
                    "reserved": 0,
                    "applied_seq": max(seqs),
                    "ver": ver,
                    "updated_at": now,
                }
            ],
            "sales": [],
            "progress": {
                "store_id": store,
                "applied_seq": max(seqs),
                "highest_seq": max(seqs),
                "gaps": [],
                "missing": 0,
                "duplicates": 0,
                "conflicts": 0,
                "events": max(seqs),
                "last_recorded_at": now,
                "lag_p50_ms": 1.0,
                "lag_p99_ms": 2.0,
            },
            "sent_at": now,
        },
    )


async def _snapshot(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    return {
        t: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")]
        for t in ("ledger", "stock_levels", "outlet_sync", "sink_offsets")
    }


def test_writer_replay_and_stale_snapshots_change_nothing(dsn: str) -> None:
    async def scenario() -> None:
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            await ensure_temp_tables(conn)
            batch = [
                _record(0, ver=1, on_hand=-1, seqs=[1]),
                _record(1, ver=2, on_hand=-2, seqs=[2]),
            ]
            result = await write_batch(conn, batch)
            assert result.ledger_rows == 2
            before = await _snapshot(conn)
            # the same batch again: skipped by its offsets
            again = await write_batch(conn, batch)
            assert again.skipped_records == 2 and again.ledger_rows == 0
            assert await _snapshot(conn) == before
            # the same content at new offsets (a replay through a fresh topic):
            # ledger rows conflict, the snapshot's ver is not higher
            moved = [SinkRecord("applied2", 0, r.offset, r.value) for r in batch]
            assert (await write_batch(conn, moved)).ledger_rows == 0
            after = await _snapshot(conn)
            assert {k: v for k, v in after.items() if k != "sink_offsets"} == {
                k: v for k, v in before.items() if k != "sink_offsets"
            }
            # a snapshot with a lower applied_seq but a higher ver is newer (the
            # store watermark inflates applied_seq; ver is the key's version)
            newer = _record(2, ver=3, on_hand=5, seqs=[2])
            newer.value["stock"][0]["applied_seq"] = 1
            newer.value["ledger"] = []
            await write_batch(conn, [newer])
            row = await conn.fetchrow("SELECT on_hand, ver FROM stock_levels")
            assert (row["on_hand"], row["ver"]) == (5, 3)
            # an older one never wins
            await write_batch(conn, [_record(3, ver=2, on_hand=-2, seqs=[9])])
            assert (await conn.fetchval("SELECT on_hand FROM stock_levels")) == 5
        finally:
            await conn.close()

    run(scenario())


def test_compare_ledger_rule() -> None:
    table = {("S1", "A"): 3, ("S1", "B"): 1}
    assert compare(table, dict(table), dict(table)) == []
    diffs = compare(table, {("S1", "A"): 3}, {("S1", "A"): 4, ("S1", "B"): 1, ("S1", "C"): 0})
    assert [(d.sku, d.reason) for d in diffs] == [
        ("A", "ledger ≠ table"),
        ("B", "missing from stock_levels"),
    ]


def test_ledger_sum_follows_count_rule(dsn: str) -> None:
    """SPEC rule 4 in SQL: the latest count plus the deltas after it; ignored rows count 0."""
    from sink.reconcile import read_postgres

    async def scenario() -> dict[tuple[str, str], int]:
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            rows = [  # (seq, type, qty, effect)
                (1, "receipt", 10, "delta"), (2, "sale", -3, "delta"), (3, "count", 20, "count"),
                (4, "sale", -2, "delta"), (5, "count", 7, "count"), (6, "void", 2, "ignored"),
                (7, "sale", -1, "delta"),
            ]  # fmt: skip
            now = datetime.now(UTC)
            for seq, typ, qty, effect in rows:
                await conn.execute(
                    "INSERT INTO ledger (store_id, outlet_seq, line_no, event_id, type, sku, qty,"
                    " effect, occurred_at, recorded_at, applied_at)"
                    " VALUES ('S1', $1, 0, gen_random_uuid(), $2, 'A', $3, $4, $5, $5, $5)",
                    seq, typ, qty, effect, now,
                )  # fmt: skip
        finally:
            await conn.close()
        return (await read_postgres(dsn))[1]

    assert run(scenario()) == {("S1", "A"): 6}


def test_a_withdrawn_void_leaves_the_ledger_sum(dsn: str) -> None:
    """A void another void of its sale replaced (a smaller seq, arriving later):
    its rows become ``ignored``, in the batch that brings them or a later one,
    and the ledger's sum is the table's again. Sent again, it changes nothing."""
    from sink.reconcile import read_postgres

    def void_record(offset: int, seq: int, withdrawn: list[int]) -> SinkRecord:
        record = _record(offset, ver=offset + 1, on_hand=0, seqs=[seq])
        (row,) = record.value["ledger"]
        row.update(type="void", qty=2, ref="sale-1")
        if withdrawn:
            record.value["withdrawn"] = withdrawn
        return record

    async def scenario() -> list[dict[tuple[str, str], int]]:
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        sums = []
        try:
            await ensure_temp_tables(conn)
            sale = _record(0, ver=1, on_hand=-2, seqs=[1])
            sale.value["ledger"][0]["qty"] = -2
            await write_batch(conn, [sale, void_record(1, 4, [])])
            sums.append((await read_postgres(dsn))[1])
            await write_batch(conn, [void_record(2, 2, [4])])  # seq 2 takes seq 4's place
            sums.append((await read_postgres(dsn))[1])
            # the same correction again, with its own rows in the same batch (a replay)
            await write_batch(conn, [SinkRecord("applied2", 0, 0, void_record(3, 2, [4]).value)])
            sums.append((await read_postgres(dsn))[1])
            effects = await conn.fetch("SELECT outlet_seq, effect FROM ledger ORDER BY 1")
            assert [tuple(r) for r in effects] == [(1, "delta"), (2, "delta"), (4, "ignored")]
        finally:
            await conn.close()
        return sums

    assert run(scenario()) == [{("S1", "A"): 0}] * 3
