"""What the run must prove (SPEC "What is promised"), checked against the ground truth.

- ``seqs``: each store's answered seqs are exactly 1..max (the agent never skips
  or reuses one).
- ``lost``: every answered (store, seq) is applied centrally and in the ledger.
- ``doubled``: no (store, seq) has more ledger lines than the event, or another
  event_id; no stock value is off (a doubled delta shows there first).
- ``stock``: the live ``stock`` table (its changelog) = truth = ``stock_levels``
  = the ledger's sum, for every (store, SKU) (``sink.reconcile`` reads them).
- ``accuracy_in_run``: sampled central reads equal the truth at the read's
  ``applied_seq`` + ``applied_above``.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from app.settings import Settings
from sim.truth import Truth
from sink.reconcile import read_postgres, read_table


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    figure: float | int | None = None


@dataclass
class Sample:
    store_id: str
    sku: str
    on_hand: int
    applied_seq: int
    applied_above: frozenset[int]
    at: float  # epoch seconds


@dataclass
class Sampler:
    """Reads the central stock of random known keys while the run goes on."""

    central_url: str
    truth: Truth
    interval_s: float = 0.05
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    sync_series: list[tuple[float, float | None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        rng = random.Random(7)
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                await asyncio.sleep(self.interval_s)
                keys = list(self.truth.history)
                if not keys:
                    continue
                store, sku = keys[rng.randrange(len(keys))]
                url = f"{self.central_url}/api/stores/{store}/stock/{sku}"
                try:
                    async with session.get(url) as resp:
                        if resp.status != 200:
                            self.errors += 1
                            continue
                        data = await resp.json()
                except (aiohttp.ClientError, TimeoutError, OSError):
                    self.errors += 1
                    continue
                self.samples.append(
                    Sample(
                        store,
                        sku,
                        int(data["on_hand"]),
                        int(data["applied_seq"]),
                        frozenset(int(s) for s in data.get("applied_above", [])),
                        time.time(),
                    )
                )

    def stop(self) -> None:
        self._stop.set()

    def accuracy(self, t0: float = 0.0) -> tuple[float, list[str]]:
        """Share of samples equal to the truth at what the read says it had applied."""
        if not self.samples:
            return 1.0, []
        wrong = []
        for s in self.samples:
            expect = self.truth.stock(s.store_id, s.sku, s.applied_seq, s.applied_above)
            if expect != s.on_hand:
                wrong.append(
                    f"t={s.at - t0:.1f}s {s.store_id}/{s.sku} at seq {s.applied_seq}"
                    f"+{sorted(s.applied_above)[:5]}: "
                    f"read {s.on_hand}, truth {expect}"
                )
        return 1 - len(wrong) / len(self.samples), wrong


async def central_sync(central_url: str) -> dict[str, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{central_url}/api/sync") as resp,
    ):
        data = await resp.json()
    return {row["store_id"]: row for row in data.get("stores", [])}


async def postgres_sync(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT store_id, applied_seq FROM outlet_sync")
    finally:
        await conn.close()
    return {r["store_id"]: int(r["applied_seq"]) for r in rows}


async def wait_drained(
    truth: Truth, central_urls: list[str], dsn: str, *, deadline_s: float
) -> tuple[bool, float, str]:
    """Wait until the centre and Postgres have applied every answered seq of every store;
    the third value names the stores still behind when it gives up."""
    start = time.monotonic()
    want = {s: truth.max_seq(s) for s in truth.events}
    behind = "no answer yet"
    while time.monotonic() - start < deadline_s:
        try:
            central: dict[str, dict[str, Any]] = {}
            for url in central_urls:
                try:
                    central = await central_sync(url)
                    break
                except (aiohttp.ClientError, TimeoutError, OSError):
                    continue
            pg = await postgres_sync(dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            behind = f"Postgres: {exc!r}"
            await asyncio.sleep(1)
            continue
        lagging = {
            s: (m, central.get(s, {}).get("applied_seq", 0), pg.get(s, 0))
            for s, m in want.items()
            if central.get(s, {}).get("applied_seq", 0) < m or pg.get(s, 0) < m
        }
        if not lagging:
            return True, time.monotonic() - start, ""
        behind = "store: (answered, centre, Postgres) " + str(dict(list(lagging.items())[:5]))
        await asyncio.sleep(0.5)
    return False, time.monotonic() - start, behind


async def ledger_index(dsn: str) -> dict[tuple[str, int], tuple[int, set[str]]]:
    """(store, seq) -> (ledger lines, event_ids)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT store_id, outlet_seq, count(*) AS n, array_agg(DISTINCT event_id::text) AS ids"
            " FROM ledger GROUP BY store_id, outlet_seq"
        )
    finally:
        await conn.close()
    return {(r["store_id"], int(r["outlet_seq"])): (int(r["n"]), set(r["ids"])) for r in rows}


async def reserved_left(central_url: str, keys: list[tuple[str, str]]) -> int:
    total = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for store, sku in keys:
            async with session.get(f"{central_url}/api/stores/{store}/stock/{sku}") as resp:
                if resp.status == 200:
                    total += int((await resp.json()).get("reserved", 0))
    return total


async def final_checks(
    truth: Truth,
    settings: Settings,
    central_url: str,
    sampler: Sampler | None,
    *,
    t0: float = 0.0,
    in_run_target: float = 0.999,
) -> tuple[list[Check], dict[str, Any]]:
    """Every end check, and the figures behind them."""
    dsn = settings.database_url.get_secret_value()
    checks: list[Check] = []
    figures: dict[str, Any] = {}

    # seqs 1..max per store, from the agents' answers
    holes = {
        s: sorted(set(range(1, max(evs) + 1)) - set(evs)) for s, evs in truth.events.items() if evs
    }
    bad = {s: h[:5] for s, h in holes.items() if h}
    checks.append(Check("seqs 1..max per store", not bad and not truth.conflicts,
                        f"holes {bad}, conflicts {truth.conflicts[:3]}" if bad or truth.conflicts
                        else f"{len(truth.events)} stores, {truth.total()} events"))  # fmt: skip

    central = await central_sync(central_url)
    ledger = await ledger_index(dsn)
    expected = truth.expected_lines()
    lost_central = [
        (s, m) for s in truth.events if (m := truth.max_seq(s)) and
        (central.get(s, {}).get("applied_seq", 0) < m or central.get(s, {}).get("gaps"))
    ]  # fmt: skip
    lost_ledger = [k for k in expected if k not in ledger]
    lost = len(lost_ledger) + len(lost_central)
    figures["lost"] = lost
    checks.append(Check("0 lost (centre and ledger)", lost == 0,
                        f"ledger misses {len(lost_ledger)} {lost_ledger[:5]}, "
                        f"centre behind {lost_central[:5]}", lost))  # fmt: skip

    doubled_rows = [k for k, n in expected.items() if k in ledger and ledger[k][0] > n]
    wrong_id = [
        k for k in expected if k in ledger and ledger[k][1] != {truth.events[k[0]][k[1]].event_id}
    ]
    extra = [k for k in ledger if k not in expected]
    doubled = len(doubled_rows) + len(wrong_id) + len(extra)
    checks.append(Check("0 doubled (ledger)", doubled == 0,
                        f"extra lines {doubled_rows[:5]}, other event_id {wrong_id[:5]}, "
                        f"unknown seqs {extra[:5]}", doubled))  # fmt: skip

    # the stock, four ways
    want = truth.final()
    table = await read_table(settings)
    levels, sums = await read_postgres(dsn)

    def diff(name: str, got: dict[tuple[str, str], int]) -> list[str]:
        out = []
        for key in want.keys() | got.keys():
            if want.get(key, 0) != got.get(key, 0):
                out.append(f"{key[0]}/{key[1]}: {name} {got.get(key)} truth {want.get(key)}")
        return sorted(out)

    d_table, d_levels, d_ledger = (
        diff("table", table),
        diff("stock_levels", levels),
        diff("ledger", sums),
    )
    over = sum(1 for k, v in table.items() if v != want.get(k, 0))
    figures["doubled"] = doubled
    figures["stock_mismatches"] = len(d_table) + len(d_levels) + len(d_ledger)
    figures["keys"] = len(want)
    figures["accuracy_final"] = round(1 - over / max(1, len(want)), 6)
    checks.append(Check("stock table = truth", not d_table, "; ".join(d_table[:5]) or
                        f"{len(want)} keys", len(d_table)))  # fmt: skip
    checks.append(Check("stock_levels = truth", not d_levels, "; ".join(d_levels[:5]) or
                        f"{len(levels)} rows", len(d_levels)))  # fmt: skip
    checks.append(Check("Σ ledger = truth", not d_ledger, "; ".join(d_ledger[:5]) or
                        "ok", len(d_ledger)))  # fmt: skip

    if sampler is not None:
        acc, wrong = sampler.accuracy(t0)
        figures["accuracy_in_run"] = round(acc, 6)
        figures["in_run_samples"] = len(sampler.samples)
        figures["in_run_read_errors"] = sampler.errors
        checks.append(Check(f"in-run accuracy ≥ {in_run_target:.1%}", acc >= in_run_target,
                            f"{len(sampler.samples)} reads, {len(wrong)} wrong: {wrong[:3]}",
                            round(acc, 6)))  # fmt: skip
    return checks, figures
