"""SIGKILL inside the apply flush, at three moments; after a restart all equals the model (#6).

``RETAIL_TEST_FREEZE_AT`` (``app/faults.py``) freezes the real worker process
at one point of a flush well inside the stream and drops a marker file; the
test then kills it with SIGKILL and restarts it without the freeze, on the
same data directory or (a takeover by another host) on an empty one, and lets
it drain. Every event must be applied once, none lost or doubled: the
worker's stock views and per-store counts, the stock changelog read back from
the broker (what a worker without this RocksDB would recover), and
PostgreSQL's ledger, ``stock_levels`` and ``sales_minute`` all equal the
reference model.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app import faults
from app.settings import Settings
from devstack import DevStack
from sink.reconcile import read_table
from tests.conftest import produce
from tests.helpers import WorkerProcess, wait_for
from tests.model import random_history, reference_stock

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STORES = [f"S{i:02d}" for i in range(1, 9)]
#: many SKUs, so that most keys a frozen group wrote are never written again by a
#: later event: only the replay of the group itself can repair what it lost
SKUS = [f"K{i:03d}" for i in range(200)]
PER_STORE = 150
#: records per take: one take is one group, so one flush
TAKE = 40
#: freeze at this flush: earlier flushes were acknowledged and confirmed
FREEZE_PASS = 4

Stock = dict[tuple[str, str], int]
Sales = dict[tuple[str, datetime], tuple[int, int]]


def spread_over_minutes(events: list[dict[str, Any]]) -> None:
    """A few sales per store and minute, so a frozen group holds whole minute buckets."""
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    for event in events:
        event["occurred_at"] = (t0 + timedelta(seconds=15 * event["outlet_seq"])).isoformat()


def reference_sales(events: list[dict[str, Any]]) -> Sales:
    """Units and events per (store, minute): every sale once, voided or not."""
    out: Sales = {}
    for event in events:
        if event["type"] == "sale":
            minute = datetime.fromisoformat(event["occurred_at"]).replace(second=0, microsecond=0)
            key = (event["store_id"], minute)
            units, count = out.get(key, (0, 0))
            out[key] = (units + sum(line["qty"] for line in event["lines"]), count + 1)
    return out


def deliveries(events: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Stores interleaved, each in seq order, a few records sent twice (a forwarder retrying)."""
    out = []
    for event in sorted(events, key=lambda e: (e["outlet_seq"], e["store_id"])):
        out.append(event)
        if rng.random() < 0.05:
            out.append(event)
    return out


def differences(got: Stock, want: Stock) -> dict[tuple[str, str], tuple[int, int]]:
    return {
        key: (got.get(key, 0), want.get(key, 0))
        for key in got.keys() | want.keys()
        if got.get(key, 0) != want.get(key, 0)
    }


def settles(diff: Callable[[], dict[Any, Any]], *, timeout: float, what: str) -> None:
    """Wait until ``diff()`` is empty; fail with the last differences."""
    last: dict[Any, Any] = {}

    def probe() -> bool:
        nonlocal last
        last = diff()
        return not last

    try:
        wait_for(probe, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; differences (got, want): {last}") from None


def view_stock(url: str) -> Stock:
    """Every store's SKUs from the worker's paged stock view."""
    out: Stock = {}
    with httpx.Client(timeout=5) as client:
        for store in STORES:
            body = client.get(f"{url}/api/stores/{store}/stock", params={"limit": 1000}).json()
            assert body["next_cursor"] is None
            out.update({(store, item["sku"]): item["on_hand"] for item in body["items"]})
    return out


def sync_rows(url: str) -> dict[str, dict[str, Any]]:
    with httpx.Client(timeout=5) as client:
        return {s: client.get(f"{url}/api/stores/{s}/sync").json() for s in STORES}


def behind(url: str) -> dict[str, tuple[Any, int]]:
    """Stores whose applied seq is not the last one yet: (their sync row, the last seq)."""
    rows = sync_rows(url)
    return {s: (r, PER_STORE) for s, r in rows.items() if r.get("applied_seq") != PER_STORE}


def postgres_state(dsn: str) -> tuple[Stock, int, int, Sales]:
    """``stock_levels``, ledger rows, distinct events in the ledger, ``sales_minute``."""

    async def run() -> tuple[Stock, int, int, Sales]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT store_id, sku, on_hand FROM stock_levels")
            lines = await conn.fetchval("SELECT count(*) FROM ledger")
            events = await conn.fetchval(
                "SELECT count(*) FROM (SELECT DISTINCT store_id, outlet_seq FROM ledger) e"
            )
            sales = await conn.fetch("SELECT store_id, minute, units, events FROM sales_minute")
            return (
                {(r["store_id"], r["sku"]): int(r["on_hand"]) for r in rows},
                lines,
                events,
                {(r["store_id"], r["minute"]): (int(r["units"]), int(r["events"])) for r in sales},
            )
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except asyncpg.UndefinedTableError:
        return {}, 0, 0, {}


@pytest.mark.parametrize(
    ("point", "disk"),
    [
        # RocksDB holds the group, the changelog and outputs nothing of it:
        # the replay must write its keys again (changelog read back below)
        ("before_changelog", "kept"),
        # the tables' changelogs disagree with each other: the restarted worker
        # has a new disk, so it starts from what the changelogs hold
        ("changelog_partial", "new"),
        # everything written, nothing confirmed or committed: the replay is a no-op
        ("before_commit", "kept"),
    ],
)
def test_kill_inside_the_flush(
    stack: DevStack, app_env: dict[str, str], tmp_path: Path, point: str, disk: str
) -> None:
    rng = random.Random(f"kill-in-flush-{point}")
    events = random_history(rng, STORES, SKUS, PER_STORE)
    spread_over_minutes(events)
    want = reference_stock(events)
    sent = deliveries(events, rng)
    asyncio.run(produce(stack.broker.bootstrap, app_env["RETAIL_EVENTS_TOPIC"], sent))

    worker = WorkerProcess(
        env={**app_env, "RETAIL_APPLY_BATCH_MAX": str(TAKE)},
        data_dir=tmp_path / "w",
        extra_env={"RETAIL_TEST_FREEZE_AT": f"{point}@{FREEZE_PASS}"},
    )
    assert len(sent) > TAKE * (FREEZE_PASS + 5), "the freeze must fall well inside the stream"
    marker = faults.marker_path(worker.data_dir, point)
    worker.start()
    try:
        frozen_pid: str = wait_for(
            lambda: marker.read_text().strip() if marker.exists() else None,
            timeout=60,
            what=f"the worker frozen at {point}",
        )
        assert worker.proc is not None and int(frozen_pid) == worker.proc.pid, worker.log_tail()
        worker.kill()

        if disk == "new":  # another host takes over: only the changelogs are left
            worker = WorkerProcess(env=worker.env, data_dir=tmp_path / "new-disk")
        worker.extra_env = {}  # the restarted worker runs as in production
        worker.start()
        check_recovery(worker, want, events, sent, stack, app_env)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- {worker.log_path.name}:\n{worker.log_tail()}") from None
    finally:
        worker.stop()


def check_recovery(
    worker: WorkerProcess,
    want: Stock,
    events: list[dict[str, Any]],
    sent: list[dict[str, Any]],
    stack: DevStack,
    app_env: dict[str, str],
) -> None:
    """After the restart: the views, counts, changelog and PostgreSQL equal the model."""
    worker.wait_ready()
    settles(lambda: behind(worker.url), timeout=60, what="every seq of every store applied")

    wrong = differences(view_stock(worker.url), want)
    assert not wrong, f"stock view differs from the model (got, want): {wrong}"
    rows = sync_rows(worker.url)
    counts = {s: (r["events"], r["missing"], r["conflicts"]) for s, r in rows.items()}
    assert counts == {s: (PER_STORE, 0, 0) for s in STORES}, counts
    assert sum(r["duplicates"] for r in rows.values()) >= len(sent) - len(events)

    # what a worker without this RocksDB (another host) would recover
    settings = Settings(kafka_brokers=stack.kafka_brokers, app_id=app_env["RETAIL_APP_ID"])
    settles(
        lambda: differences(asyncio.run(read_table(settings)), want),
        timeout=30,
        what="the stock changelog to equal the model",
    )

    lines = sum(len(e["lines"]) for e in events)
    want_sales = reference_sales(events)
    dsn = app_env["RETAIL_DATABASE_URL"]

    def postgres_differences() -> dict[Any, Any]:
        stock, ledger_lines, ledger_events, sales = postgres_state(dsn)
        wrong: dict[Any, Any] = dict(differences(stock, want))
        wrong.update(
            {
                ("sales", *key): (sales.get(key), want_sales.get(key))
                for key in sales.keys() | want_sales.keys()
                if sales.get(key) != want_sales.get(key)
            }
        )
        if (ledger_lines, ledger_events) != (lines, len(events)):
            wrong["ledger (lines, events)"] = (
                (ledger_lines, ledger_events),
                (lines, len(events)),
            )
        return wrong

    settles(
        postgres_differences,
        timeout=30,
        what="PostgreSQL to hold every event once, the model's stock and sales",
    )
