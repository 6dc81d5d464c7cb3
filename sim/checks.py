"""What the run must prove (SPEC "What is promised"), checked against the ground truth.

- ``seqs``: each store's answered seqs are exactly 1..max (the agent never skips
  or reuses one).
- ``lost``: every answered (store, seq) is applied centrally and in the ledger.
- ``doubled``: no (store, seq) has more ledger lines than the event, or another
  event_id; no stock value is off (a doubled delta shows there first).
- ``stock``: the live ``stock`` table (its changelog) = truth = the stock views
  (the workers' RocksDB, through the public API) = ``stock_levels`` = the
  ledger's sum, for every (store, SKU) (``sink.reconcile`` reads them).
- ``accuracy_in_run``: sampled central reads equal the truth at the read's
  ``applied_seq`` + ``applied_above``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg

from app.settings import Settings
from sim.truth import Truth
from sink.reconcile import read_postgres, read_table

if TYPE_CHECKING:
    from sim.faults import Mark


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
    at: float  # epoch seconds when the answer arrived
    sent: float = 0.0  # epoch seconds when the request went out


@dataclass
class ReadError:
    """A sampled read that got no ``200``: a legitimate answer (``503`` while a
    store's progress is recovering, no answer while the worker restarts), kept
    out of the accuracy but reported."""

    store_id: str
    sku: str
    status: str  # the HTTP status, or the exception's name
    at: float


@dataclass
class Miss:
    """A ``200`` whose ``on_hand`` is not the truth at the seqs it says it reflects."""

    sample: Sample
    truth: int
    #: seqs W (nearest first) whose plain watermark truth equals the answer: W >
    #: applied_seq means the stock value is ahead of the progress it was served
    #: with, W < applied_seq behind it; empty: no prefix of the store gives it
    matches: list[int]
    near: str  # the fault the read fell in, or the nearest one
    kind: str

    def describe(self, t0: float) -> str:
        s = self.sample
        above = f"+{sorted(s.applied_above)[:5]}" if s.applied_above else ""
        return (
            f"t={s.at - t0:.1f}s {s.store_id}/{s.sku} at seq {s.applied_seq}{above}: "
            f"read {s.on_hand}, truth {self.truth}, {self.kind}"
            f"{f' (= truth at seq {self.matches[0]})' if self.matches else ''}; {self.near}"
        )


def fault_near(at: float, marks: list[Mark], t0: float) -> str:
    """Which fault window ``at`` fell in, else the fault that ended last before it."""
    inside = [m for m in marks if m.start <= at <= m.end]
    if inside:
        return "during " + ", ".join(f"{m.kind} (+{at - m.start:.1f}s)" for m in inside)
    before = [m for m in marks if m.end < at]
    if before:
        last = max(before, key=lambda m: m.end)
        return f"{at - last.end:.1f}s after {last.kind} ended"
    return "before any fault"


def fault_phase(at: float, marks: list[Mark], settle_s: float = 10.0) -> str:
    """A coarse label for grouping: ``during K``, ``after K`` (within ``settle_s``) or ``quiet``."""
    inside = [m.kind for m in marks if m.start <= at <= m.end]
    if inside:
        return "during " + "+".join(sorted(inside))
    after = [m for m in marks if m.end < at <= m.end + settle_s]
    if after:
        return "after " + max(after, key=lambda m: m.end).kind
    return "quiet"


def explain_miss(truth: Truth, s: Sample, expect: int, marks: list[Mark], t0: float) -> Miss:
    """Name what the wrong answer matches (SPEC read views: ``on_hand`` with the
    ``applied_seq`` it reflects) and when it came, relative to the faults."""
    top = truth.max_seq(s.store_id)
    matches = [
        w for w in range(top + 1) if w != s.applied_seq and truth.stock(s.store_id, s.sku, w) ==
        s.on_hand
    ]  # fmt: skip
    matches.sort(key=lambda w: abs(w - s.applied_seq))
    if s.applied_seq > top:
        kind = "applied_seq beyond every answered seq"
    elif not matches:
        kind = "no seq prefix gives it"
    elif matches[0] > s.applied_seq:
        kind = "stock ahead of applied_seq"
    else:
        kind = "stock behind applied_seq"
    return Miss(s, expect, matches[:3], fault_near(s.at, marks, t0), kind)


@dataclass
class Sampler:
    """Reads the central stock of random known keys while the run goes on."""

    central_url: str
    truth: Truth
    interval_s: float = 0.05
    samples: list[Sample] = field(default_factory=list)
    read_errors: list[ReadError] = field(default_factory=list)
    sync_series: list[tuple[float, float | None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def errors(self) -> int:
        return len(self.read_errors)

    async def run(self) -> None:
        rng = random.Random(7)
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                await asyncio.sleep(self.interval_s)
                keys = self.truth.keys
                if not keys:
                    continue
                store, sku = keys[rng.randrange(len(keys))]
                url = f"{self.central_url}/api/stores/{store}/stock/{sku}"
                sent = time.time()
                try:
                    async with session.get(url) as resp:
                        if resp.status != 200:
                            self.read_errors.append(
                                ReadError(store, sku, str(resp.status), time.time())
                            )
                            continue
                        data = await resp.json()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    self.read_errors.append(ReadError(store, sku, type(exc).__name__, time.time()))
                    continue
                self.samples.append(
                    Sample(
                        store,
                        sku,
                        int(data["on_hand"]),
                        int(data["applied_seq"]),
                        frozenset(int(s) for s in data.get("applied_above", [])),
                        time.time(),
                        sent,
                    )
                )

    def stop(self) -> None:
        self._stop.set()

    def misses(self, t0: float = 0.0, marks: list[Mark] | None = None) -> list[Miss]:
        """Every sample not equal to the truth at what the read says it had applied.

        Called once the run is over, so the truth knows every answered event,
        including those whose 201 arrived after the read.
        """
        out = []
        for s in self.samples:
            expect = self.truth.stock(s.store_id, s.sku, s.applied_seq, s.applied_above)
            if expect != s.on_hand:
                out.append(explain_miss(self.truth, s, expect, marks or [], t0))
        return out

    def accuracy(
        self, t0: float = 0.0, marks: list[Mark] | None = None
    ) -> tuple[float, list[Miss]]:
        """Share of ``200`` samples equal to the truth at what the read says it had applied."""
        if not self.samples:
            return 1.0, []
        wrong = self.misses(t0, marks)
        return 1 - len(wrong) / len(self.samples), wrong

    def error_summary(self, marks: list[Mark]) -> dict[str, int]:
        """Read errors by status and the fault window they fell in."""
        out: Counter[str] = Counter(
            f"{e.status} {fault_phase(e.at, marks)}" for e in self.read_errors
        )
        return dict(out.most_common())


async def central_sync(central_url: str) -> dict[str, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{central_url}/api/sync") as resp,
    ):
        data = await resp.json()
    return {row["store_id"]: row for row in data.get("stores", [])}


async def read_views(
    central_url: str, stores: list[str], *, deadline_s: float = 60.0
) -> dict[tuple[str, str], int]:
    """Every key's ``on_hand`` as the public API answers it (a store's stock, paged).

    The views read the worker's RocksDB, not the changelog ``read_table`` reads:
    a key rolled back there (finding 11) shows only here. A ``503`` (a worker
    recovering) is asked again until ``deadline_s``.
    """
    got: dict[tuple[str, str], int] = {}
    deadline = time.monotonic() + deadline_s
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for store in stores:
            cursor: str | None = None
            while True:
                params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
                async with session.get(
                    f"{central_url}/api/stores/{store}/stock", params=params
                ) as resp:
                    if resp.status == 503 and time.monotonic() < deadline:
                        await asyncio.sleep(0.5)  # a retry, not a synchronisation
                        continue
                    if resp.status == 404:
                        break  # the centre never saw the store: no key either
                    resp.raise_for_status()
                    page = await resp.json()
                for item in page["items"]:
                    got[(store, item["sku"])] = int(item["on_hand"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
    return got


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
    marks: list[Mark] | None = None,
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
    views = await read_views(central_url, sorted(truth.events))
    levels, sums = await read_postgres(dsn)

    def diff(name: str, got: dict[tuple[str, str], int]) -> list[str]:
        out = []
        for key in want.keys() | got.keys():
            if want.get(key, 0) != got.get(key, 0):
                out.append(f"{key[0]}/{key[1]}: {name} {got.get(key)} truth {want.get(key)}")
        return sorted(out)

    d_table, d_views, d_levels, d_ledger = (
        diff("table", table),
        diff("views", views),
        diff("stock_levels", levels),
        diff("ledger", sums),
    )
    over = sum(1 for k, v in table.items() if v != want.get(k, 0))
    figures["doubled"] = doubled
    figures["stock_mismatches"] = len(d_table) + len(d_views) + len(d_levels) + len(d_ledger)
    figures["keys"] = len(want)
    figures["accuracy_final"] = round(1 - over / max(1, len(want)), 6)
    checks.append(Check("stock table = truth", not d_table, "; ".join(d_table[:5]) or
                        f"{len(want)} keys", len(d_table)))  # fmt: skip
    checks.append(Check("stock views = truth", not d_views, "; ".join(d_views[:5]) or
                        f"{len(views)} keys read through the API", len(d_views)))  # fmt: skip
    checks.append(Check("stock_levels = truth", not d_levels, "; ".join(d_levels[:5]) or
                        f"{len(levels)} rows", len(d_levels)))  # fmt: skip
    checks.append(Check("Σ ledger = truth", not d_ledger, "; ".join(d_ledger[:5]) or
                        "ok", len(d_ledger)))  # fmt: skip

    if sampler is not None:
        marks = list(marks or [])
        acc, wrong = sampler.accuracy(t0, marks)
        figures["accuracy_in_run"] = round(acc, 6)
        figures["in_run_samples"] = len(sampler.samples)
        figures["in_run_read_errors"] = sampler.errors
        figures["in_run_read_errors_by"] = sampler.error_summary(marks)
        figures["in_run_misses_by"] = dict(
            Counter(f"{m.kind}, {fault_phase(m.sample.at, marks)}" for m in wrong).most_common()
        )
        figures["in_run_misses"] = [m.describe(t0) for m in wrong[:40]]
        checks.append(Check(f"in-run accuracy ≥ {in_run_target:.1%}", acc >= in_run_target,
                            f"{len(sampler.samples)} reads answered 200, {len(wrong)} wrong, "
                            f"{sampler.errors} read errors: "
                            f"{[m.describe(t0) for m in wrong[:3]]}",
                            round(acc, 6)))  # fmt: skip
    return checks, figures
