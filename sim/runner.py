"""One simulated run: start the cluster, post traffic, inject faults, drain, check, measure."""

from __future__ import annotations

import asyncio
import logging
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from app.lagstats import nearest_rank
from app.settings import Settings
from sim.checks import Check, Sampler, central_sync, fault_phase, final_checks, wait_drained
from sim.cluster import Cluster
from sim.faults import Fault, Injector, Mark
from sim.workload import Store, Workload

log = logging.getLogger("sim")


@dataclass
class Scenario:
    stores: int = 4
    skus: int = 2000
    rate: float = 100.0  # events/s offered across the chain
    batch: int = 5  # events per POST (a store server relaying its tills)
    seconds: float = 60.0
    partitions: int = 8
    #: workers at the start (the rebalance fault adds one for a while)
    workers: int = 1
    seed: int = 1
    faults: list[Fault] = field(default_factory=list)
    #: store -> agent clock skew (seconds); store -> terminal (occurred_at) skew
    agent_skew: dict[str, float] = field(default_factory=dict)
    terminal_skew: dict[str, float] = field(default_factory=dict)
    steady_s: float = 0.0  # the first seconds without faults, for the lag figures
    data_dir: Path = Path(".data/sim")
    drain_timeout_s: float = 300.0
    web_rate: float = 2.0
    proxied: bool = True
    #: broker on S3-on-moto storage (survives kill -9) or memory (faster, no broker faults)
    persistent: bool = True
    #: the agents' niceness inside the store side's session (Cluster.outlet_nice)
    agent_nice: int = 19

    @property
    def store_ids(self) -> list[str]:
        return [f"S{i:03d}" for i in range(1, self.stores + 1)]


@dataclass
class Result:
    checks: list[Check]
    figures: dict[str, Any]
    marks: list[Mark]
    series: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


SERIES_SQL = """
WITH ev AS (
    SELECT DISTINCT ON (store_id, outlet_seq) store_id, outlet_seq,
           recorded_at, applied_at, committed_at
    FROM ledger WHERE NOT (store_id = ANY($1::text[]))
    ORDER BY store_id, outlet_seq
)
SELECT floor(extract(epoch FROM applied_at) / $2) * $2 AS bucket,
       count(*) AS events,
       percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM applied_at - recorded_at) * 1000) AS p99_ms,
       percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM committed_at - recorded_at) * 1000) AS p99_pg_ms
FROM ev GROUP BY bucket ORDER BY bucket
"""

# The lag's two parts: the store side (recorded_at -> sent_at, the agent
# waiting to send: here a hundred agents share two cores at a low priority)
# and the centre (sent_at -> applied_at: broker, worker).
LAG_SQL = """
WITH ev AS (
    SELECT DISTINCT ON (store_id, outlet_seq) recorded_at, sent_at, applied_at, committed_at
    FROM ledger WHERE NOT (store_id = ANY($1::text[]))
      AND recorded_at >= to_timestamp($2) AND recorded_at < to_timestamp($3)
    ORDER BY store_id, outlet_seq
)
SELECT count(*) AS events,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM applied_at - recorded_at) * 1000) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM applied_at - recorded_at) * 1000) AS p99_ms,
       percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM committed_at - recorded_at) * 1000) AS p99_pg_ms,
       percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM sent_at - recorded_at) * 1000) AS p99_store_side_ms,
       percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM applied_at - sent_at) * 1000) AS p99_centre_ms,
       percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM committed_at - sent_at) * 1000) AS p99_centre_pg_ms
FROM ev
"""


async def lag_figures(
    dsn: str, exclude: list[str], start: float, end: float, bucket_s: float = 5.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    conn = await asyncpg.connect(dsn)
    try:
        series = [
            {
                "t": float(r["bucket"]),
                "events_per_s": int(r["events"]) / bucket_s,
                "p99_ms": float(r["p99_ms"] or 0),
                "p99_pg_ms": float(r["p99_pg_ms"] or 0),
            }
            for r in await conn.fetch(SERIES_SQL, exclude, bucket_s)
        ]
        row = await conn.fetchrow(LAG_SQL, exclude, start, end)
        whole = await conn.fetchrow(LAG_SQL, exclude, 0.0, 1e11)
    finally:
        await conn.close()

    def r(v: Any) -> float | None:
        return None if v is None else round(float(v), 1)

    figs = {
        "steady_events": int(row["events"]) if row else 0,
        "p50_lag_ms": r(row["p50_ms"]) if row else None,
        "p99_lag_ms": r(row["p99_ms"]) if row else None,
        "p99_pg_lag_ms": r(row["p99_pg_ms"]) if row else None,
        "p99_store_side_lag_ms": r(row["p99_store_side_ms"]) if row else None,
        "p99_centre_lag_ms": r(row["p99_centre_ms"]) if row else None,
        "p99_centre_pg_lag_ms": r(row["p99_centre_pg_ms"]) if row else None,
        "p99_lag_ms_whole_run": r(whole["p99_ms"]) if whole else None,
        "p99_pg_lag_ms_whole_run": r(whole["p99_pg_ms"]) if whole else None,
    }
    return figs, series


EVENTS_SQL = """
SELECT DISTINCT ON (store_id, outlet_seq) store_id,
       extract(epoch FROM recorded_at) AS recorded,
       extract(epoch FROM applied_at - recorded_at) * 1000 AS lag_ms
FROM ledger WHERE NOT (store_id = ANY($1::text[]))
ORDER BY store_id, outlet_seq
"""


async def lag_by_fault(dsn: str, exclude: list[str], marks: list[Mark]) -> dict[str, Any]:
    """Where the lag (recorded_at -> applied centrally) comes from: each event by
    the fault window it was recorded in (the stores of a link cut apart: their
    events wait in the outlet until the link is back), with its share of the
    events above the whole run's p99."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(EVENTS_SQL, exclude)
    finally:
        await conn.close()
    if not rows:
        return {}
    lags = [float(r["lag_ms"]) for r in rows]
    p99 = nearest_rank(sorted(lags), 0.99)
    groups: dict[str, list[float]] = {}
    for r in rows:
        at, store = float(r["recorded"]), str(r["store_id"])
        cut = [m for m in marks if m.kind == "link_cut" and m.start <= at <= m.end
               and store in m.detail.split(",")]  # fmt: skip
        label = "link_cut (the cut stores)" if cut else fault_phase(at, marks)
        groups.setdefault(label, []).append(float(r["lag_ms"]))
    ordered = {label: sorted(v) for label, v in groups.items()}
    return {
        label: {
            "events": len(v),
            "p50_ms": round(nearest_rank(v, 0.5)),
            "p99_ms": round(nearest_rank(v, 0.99)),
            "max_ms": round(v[-1]),
            "over_p99": sum(1 for x in v if x > p99),
        }
        for label, v in sorted(ordered.items(), key=lambda kv: -kv[1][-1])
    }


DRAIN_SQL = """
SELECT store_id,
       extract(epoch FROM max(sent_at))::float8 AS sent,
       extract(epoch FROM max(applied_at))::float8 AS applied,
       extract(epoch FROM max(committed_at))::float8 AS committed
FROM ledger JOIN unnest($1::text[], $2::bigint[]) AS b(store_id, last_seq) USING (store_id)
WHERE outlet_seq <= b.last_seq
GROUP BY store_id
"""


async def drain_from_ledger(dsn: str, cut: Mark) -> dict[str, Any]:
    """A link cut's drain timed from the ledger: seconds after the link came back
    when the cut stores' backlogs (the seqs they held then) had been sent by
    their agents (``sent_at``), applied centrally (``applied_at``) and committed
    in PostgreSQL (``committed_at``).

    Exact, where the looks during the run are late: twenty busy agents answered
    their status late, and in run 31 ``/api/sync`` said the backlog was applied
    10 s after the ledger's last ``applied_at`` (41.4 s against 30.9 s)."""
    restored = cut.figures.get("restored_at")
    last = cut.figures.get("backlog_last_seqs")
    backlog = cut.figures.get("backlog")
    if restored is None or not last or not backlog:
        return {}
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(DRAIN_SQL, list(last), list(last.values()))
    finally:
        await conn.close()
    if len(rows) < len(last) or any(r["committed"] is None for r in rows):
        return {}  # a backlog not all in the ledger: the run's own checks say so

    def after(column: str) -> float:
        return max(float(r[column]) for r in rows if r[column] is not None) - float(restored)

    applied_s, committed_s = after("applied"), after("committed")
    stores_s = [float(r["applied"]) - float(restored) for r in rows]
    return {
        "drain_s": round(applied_s, 2),
        "drain_per_s": round(backlog / max(applied_s, 1e-3)),
        "drain_pg_s": round(committed_s, 2),
        "drain_pg_per_s": round(backlog / max(committed_s, 1e-3)),
        "drain_sent_s": round(after("sent"), 2) if any(r["sent"] for r in rows) else None,
        "drain_median_store_s": round(statistics.median(stores_s), 2),
        # what the run's looks saw (upper bounds), for comparison
        "drain_view_s": cut.figures.get("drain_s"),
        "drain_pg_view_s": cut.figures.get("drain_pg_s"),
        **_view_trailed(cut.figures, applied_s),
    }


def _view_trailed(looked: dict[str, Any], applied_s: float) -> dict[str, Any]:
    """How long ``/api/sync`` went on showing a backlog the ledger says was applied.

    The last look that still saw one was asked ``drain_view_behind_s`` after
    the restore; its answer was made then or later. The ledger's last
    ``applied_at`` is when that group's apply began, and the view shows it
    once the group's tables are written, so up to a group's time (about a
    second while a backlog drains) is the view working as designed; more is
    the view trailing.
    """
    return {
        "drain_view_trailed_s": round(max(0.0, looked["drain_view_behind_s"] - applied_s), 2),
        "sync_answer_max_s": looked.get("sync_answer_max_s"),
    }


def _biggest_drain(cut: Mark | None, exact: dict[str, Any]) -> dict[str, Any]:
    """The biggest cut's drain: the ledger's times where it has them, else the looks'."""
    if cut is None:
        return {"drain_per_s": None, "drain_backlog": None}
    d = cut.figures
    looked = {
        "drain_per_s": d["drain_per_s"],
        "drain_backlog": d["backlog"],
        "drain_s": d["drain_s"],
        "drain_pg_per_s": d.get("drain_pg_per_s"),
        "drain_pg_s": d.get("drain_pg_s"),
        "drain_peak_worker_rss_mb": d.get("drain_peak_worker_rss_mb"),
        "drain_cpu_idle_pct": d.get("drain_cpu_idle_pct"),
        "drain_cpu_steal_pct": d.get("drain_cpu_steal_pct"),
        "drain_sent_s": None,
        "drain_median_store_s": d.get("drain_median_store_s"),
        "drain_cpu_cores": d.get("drain_cpu_cores"),
        "drain_worker_apply_pct": d.get("drain_worker_apply_pct"),
        "drain_worker_flush_pct": d.get("drain_worker_flush_pct"),
    }
    return {**looked, **exact}


async def run(sc: Scenario) -> Result:
    shutil.rmtree(sc.data_dir, ignore_errors=True)
    cluster = Cluster(
        sc.data_dir,
        sc.store_ids,
        sc.partitions,
        skewed=sc.agent_skew,
        proxied=sc.proxied,
        persistent=sc.persistent,
        outlet_nice=sc.agent_nice,
    )
    t_start = time.monotonic()
    try:
        await asyncio.to_thread(cluster.start, sc.workers)
        log.warning("cluster up in %.0fs: %d stores", time.monotonic() - t_start, sc.stores)
        return await _run(sc, cluster)
    finally:
        await asyncio.to_thread(cluster.close)


async def _run(sc: Scenario, cluster: Cluster) -> Result:
    central = cluster.workers[0].url
    stores = [
        Store(s, o.url, o.token, occurred_skew_s=sc.terminal_skew.get(s, 0.0))
        for s, o in cluster.outlets.items()
    ]
    workload = Workload(
        stores, sc.skus, rate=sc.rate, batch=sc.batch, seed=sc.seed, central_url=central
    )
    truth = workload.truth

    def central_urls() -> list[str]:
        return [w.url for w in cluster.workers]

    async def sync_rows() -> dict[str, dict[str, Any]]:
        for url in central_urls():
            try:
                return await central_sync(url)
            except (OSError, TimeoutError) as exc:
                log.debug("sync from %s failed: %r", url, exc)
        raise OSError("no worker answered /api/sync")

    sampler = Sampler(central, truth)
    injector = Injector(cluster, sync_rows, truth, seed=sc.seed)
    t0 = time.monotonic()
    wall0 = time.time()
    sampling = asyncio.create_task(sampler.run())
    faults = asyncio.create_task(injector.run(sc.faults, t0))
    done = asyncio.Event()
    supervisor = asyncio.create_task(injector.supervise(done))
    try:
        await workload.run(sc.seconds, web_rate=sc.web_rate)
        traffic_s = time.monotonic() - t0
        await faults  # a fault still running (a long cut) ends before the drain
        sampler.stop()
        await sampling
        settings = Settings(
            kafka_brokers=f"kafka://{cluster.bootstrap}",
            database_url=cluster.database_url,  # type: ignore[arg-type]
            app_id=cluster.app_id,
        )
        dsn = cluster.database_url
        drained, drain_s, behind = await wait_drained(
            truth, central_urls(), dsn, deadline_s=sc.drain_timeout_s
        )
        done.set()
        await supervisor
    finally:
        # however the run ends (a fault that raised included), nothing restarts a
        # process once the cluster closes: a supervisor still running restarted
        # agents as they were being stopped, and left them running
        done.set()
        for task in (supervisor, faults, sampling):
            task.cancel()
        await asyncio.gather(supervisor, faults, sampling, return_exceptions=True)
    checks = [
        Check("drained (centre and Postgres)", drained, f"after {drain_s:.1f}s {behind}"),
        Check(
            "no process crashed on its own",
            not injector.crashes,
            ("; ".join(injector.crashes[:3]) or "none")
            + (
                f" (SIGKILLed from outside: {injector.external_kills})"
                if injector.external_kills
                else ""
            ),
            len(injector.crashes),
        ),
    ]
    more, figures = await final_checks(
        truth, settings, central_urls()[0], sampler, t0=wall0, marks=injector.marks
    )
    checks += more
    # every miss in full, for looking into (the figures keep the first ones)
    misses = [
        {**asdict(m.sample), "applied_above": sorted(m.sample.applied_above),
         "truth": m.truth, "matches": m.matches, "kind": m.kind, "near": m.near,
         "t": round(m.sample.at - wall0, 2)}
        for m in sampler.misses(wall0, injector.marks)
    ]  # fmt: skip
    (sc.data_dir / "in_run_misses.json").write_bytes(orjson.dumps(misses))
    steady_end = wall0 + (sc.steady_s or traffic_s)
    lag, series = await lag_figures(dsn, list(sc.agent_skew), wall0 + 5, steady_end)
    lag["lag_by_fault"] = await lag_by_fault(dsn, list(sc.agent_skew), injector.marks)
    cuts = [m for m in injector.marks if m.kind == "link_cut" and m.figures]
    biggest = max(cuts, key=lambda m: m.figures["backlog"]) if cuts else None
    exact = await drain_from_ledger(dsn, biggest) if biggest else {}
    st = workload.stats
    figures.update(
        {
            "stores": sc.stores,
            "skus": sc.skus,
            "workers": sc.workers,
            "agent_nice": sc.agent_nice,
            "duration_s": round(traffic_s, 1),
            "offered_rate": sc.rate,
            "events": truth.total(),
            # sustained: what the stores posted in the traffic window, over that
            # window (the orders and transfers ended after it are not in it)
            "events_per_s": round(st.accepted_in_window / max(st.window_s, 1e-3), 1),
            **lag,
            # the biggest cut's drain (the bench has one: a fifth of the stores, 5 min)
            **_biggest_drain(biggest, exact),
            "final_drain_s": round(drain_s, 1),
            "posts": st.posts,
            "post_retries": st.retries,
            "repeat_answers": st.repeats,
            "rejected": len(st.rejected),
            "reservations_granted": st.reservations_granted,
            "reservations_refused": st.reservations_refused,
            "reservations_sold": st.reservations_sold,
            "reservations_released": st.reservations_released,
            "faults": [m.kind for m in injector.marks],
            "crashes": injector.crashes,
            "external_sigkills": injector.external_kills,
            "wall_start": wall0,
        }
    )
    if st.rejected:
        log.warning("rejected by the agents: %s", st.rejected[:5])
    return Result(checks, figures, injector.marks, series)
