"""Faults on a schedule, each against the real processes of a :class:`sim.cluster.Cluster`.

Every fault is something SPEC "What is promised" says the system survives:
a store's broker link cut (then replay), an outlet agent kill -9 (it replays
its log), a broker kill -9 and restart on persistent storage, a worker
kill -9, a second worker joining and leaving (two rebalances), a Postgres
outage, records delivered twice and out of order, and clocks off by hours
(those are set when the cluster starts: see :class:`sim.cluster.Outlet`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from prometheus_client.parser import text_string_to_metric_families

from agents.sink import RETRIABLE
from sim.cluster import Cluster
from sim.role_cpu import RoleCpu

log = logging.getLogger("sim.faults")


def box_shares(start: Any, end: Any) -> dict[str, float]:
    """The box's idle and stolen shares (%) between two ``psutil.cpu_times()``.

    A drain is CPU-bound here, so these tell a slow drain on a busy host
    (``steal``: the hypervisor ran someone else) from one the box spent
    elsewhere (``idle`` near 0 either way). Empty where the platform does
    not count stolen time."""
    if not hasattr(start, "steal"):
        return {}
    total = sum(end) - sum(start) or 1.0

    def share(*kinds: str) -> float:
        spent: float = sum(getattr(end, k) - getattr(start, k) for k in kinds)
        return round(100 * spent / total, 1)

    return {"drain_cpu_idle_pct": share("idle", "iowait"), "drain_cpu_steal_pct": share("steal")}


def worker_shares(
    before: dict[str, float], after: dict[str, float], wall_s: float, workers: int = 1
) -> dict[str, float | None]:
    """Shares (%) of a drain's wall time a worker spent applying batches and
    waiting for their flushes to be acknowledged (the mean of ``workers``, whose
    sums these are); the rest it waited for records. None where a reading is
    missing or a worker restarted (its sums went back)."""
    shares: dict[str, float | None] = {
        "drain_worker_apply_pct": None,
        "drain_worker_flush_pct": None,
    }
    if not before or not after or wall_s <= 0 or workers < 1:
        return shares
    batch = after["batch"] - before["batch"]
    flush = after["flush"] - before["flush"]
    if batch < 0 or flush < 0:
        return shares
    shares["drain_worker_apply_pct"] = round(100 * (batch - flush) / wall_s / workers, 1)
    shares["drain_worker_flush_pct"] = round(100 * flush / wall_s / workers, 1)
    return shares


@dataclass
class Fault:
    at_s: float  # seconds after the start of the traffic
    #: link_cut, outlet_kill, broker_kill, worker_kill, rebalance, pg_outage, dup_reorder
    kind: str
    duration_s: float = 0.0
    stores: list[str] = field(default_factory=list)


@dataclass
class Mark:
    """What happened when (epoch seconds), for the report and the plot."""

    kind: str
    start: float
    end: float
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def chaos_schedule(stores: list[str], seconds: float, *, group: int = 1) -> list[Fault]:
    """One of each fault, spread over ``seconds`` of traffic (needs ≥ 2 stores)."""
    slot = seconds / 8
    cut = stores[:group]
    return [
        Fault(slot * 0.5, "link_cut", min(slot * 1.5, 300), cut),
        Fault(slot * 1.5, "outlet_kill", 0, [stores[-1]]),
        Fault(slot * 2.5, "dup_reorder", 0),
        Fault(slot * 3.0, "worker_kill", 0),
        Fault(slot * 4.0, "rebalance", slot * 1.2),
        Fault(slot * 5.5, "pg_outage", slot * 0.8),
        # last: a worker recovering across a broker kill -9 (Tansu on S3 under-
        # reports ListOffsets; app/changelog_ends.py reads to the last record)
        Fault(slot * 7.0, "broker_kill", 0),
    ]


def bench_schedule(stores: list[str], seconds: float, steady_s: float) -> list[Fault]:
    """A steady window first (the lag figures); then a fifth of the stores cut
    off for up to 5 minutes (the issue's outage: the drain figure), with the
    outlet kill and the duplicated delivery inside the cut; the other faults
    come after the backlog has drained, so the drain is measured beside the
    live load alone, as the issue states it. (With a worker kill and a
    rebalance inside the cut, the same drain measured 1,660-1,930 events/s
    instead of 2,960.)"""
    rest = seconds - steady_s
    cut_s = min(300.0, rest * 0.55)
    group = stores[: max(1, len(stores) // 5)]
    other = stores[len(group) :] or stores
    at = steady_s
    after = at + cut_s + min(45.0, rest * 0.1)  # the drain, and time to settle
    slot = max(seconds - after, 8.0) / 8
    return [
        Fault(at, "link_cut", cut_s, group),
        Fault(at + cut_s * 0.2, "outlet_kill", 0, [other[-1]]),
        Fault(at + cut_s * 0.4, "dup_reorder", 0),
        Fault(after, "worker_kill", 0),
        Fault(after + slot * 1.0, "rebalance", slot * 2.0),
        Fault(after + slot * 4.0, "pg_outage", slot * 1.2),
        Fault(after + slot * 6.5, "broker_kill", 0),
    ]


def _last_error(data_dir: Path) -> str:
    """The last ERROR/CRITICAL line of the newest log in ``data_dir``."""
    logs = sorted(data_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return "no log"
    lines = logs[-1].read_text(errors="replace").splitlines()
    errors = [ln for ln in lines if "ERROR" in ln or "CRITICAL" in ln or "Error" in ln]
    return (errors[0] if errors else (lines[-1] if lines else ""))[:400]


@dataclass
class _DrainLooks:
    """What the drain's two look loops found, and when (seconds after the restore)."""

    centre_s: float | None = None
    pg_s: float | None = None
    #: when each store's backlog was seen applied centrally: one slow store
    #: (a forwarder late to reconnect) stretches the whole drain
    store_s: dict[str, float] = field(default_factory=dict)
    #: when the last centre look that still saw a backlog was asked
    behind_asked_s: float = 0.0
    #: the slowest ``/api/sync`` answer meanwhile
    sync_answer_max_s: float = 0.0
    peak_rss: float = 0.0
    cpu_drained: Any = None
    role_cores: dict[str, float] = field(default_factory=dict)
    worker_after: dict[str, float] = field(default_factory=dict)


class Injector:
    """Runs a schedule against a cluster; ``marks`` says what was done and when."""

    def __init__(self, cluster: Cluster, central_sync: Any, truth: Any, seed: int = 3) -> None:
        self.cluster = cluster
        self.central_sync = central_sync  # async () -> {store: sync row}
        self.truth = truth
        self.marks: list[Mark] = []
        self.rng = random.Random(seed)
        self.crashes: list[str] = []
        self.external_kills: list[str] = []

    async def run(self, schedule: list[Fault], t0: float) -> None:
        tasks = []
        for fault in sorted(schedule, key=lambda f: f.at_s):
            delay = t0 + fault.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.apply(fault)))
        await asyncio.gather(*tasks)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart a worker or agent that died on its own, as systemd would; each such
        crash is a finding (``crashes``), with the tail of its log."""
        while not stop.is_set():
            await asyncio.sleep(1.0)
            for proc in self.cluster.crashed():
                code = proc.proc.returncode if proc.proc else None
                name = proc.name
                if code == -9:
                    # SIGKILL from outside the run (the OOM killer, or another session on
                    # this shared machine): restarted like any crash, reported apart
                    self.external_kills.append(f"{name} at {time.strftime('%H:%M:%S')}")
                else:
                    self.crashes.append(f"{name} exited {code}: {_last_error(proc.data_dir)}")
                log.warning("supervisor: %s exited %s; restarting", name, code)
                proc.proc = None
                proc.start()
                self.marks.append(Mark("crash_restart", time.time(), time.time(), name))

    async def apply(self, fault: Fault) -> None:
        start = time.time()
        log.warning("fault %s %s for %.0fs", fault.kind, fault.stores, fault.duration_s)
        figures: dict[str, Any] = {}
        c = self.cluster
        if fault.kind == "link_cut":
            for s in fault.stores:
                c.proxy.cut(s)
            await asyncio.sleep(fault.duration_s)
            restored = time.time()
            before = await self._applied(fault.stores)
            target = {s: self.truth.max_seq(s) for s in fault.stores}
            for s in fault.stores:
                c.proxy.restore(s)
            figures = await self._drain(fault.stores, before, target, restored)
        elif fault.kind == "outlet_kill":
            for s in fault.stores:
                outlet = c.outlets[s]
                outlet.kill()
                await asyncio.sleep(1.0)
                outlet.start()
                await asyncio.to_thread(outlet.wait_ready)
        elif fault.kind == "broker_kill":
            await asyncio.to_thread(c.stack.restart_broker, kill=True)
        elif fault.kind == "worker_kill":
            w = c.workers[0]
            w.kill()
            await asyncio.sleep(1.0)
            w.start()
            await asyncio.to_thread(w.wait_ready)
        elif fault.kind == "rebalance":
            w2 = c.add_worker()
            await asyncio.to_thread(w2.wait_ready)
            await asyncio.sleep(fault.duration_s)
            w2.kill()  # the second rebalance: a member leaves by crashing
            c.workers.remove(w2)
        elif fault.kind == "pg_outage":
            await asyncio.to_thread(c.stack.postgres.stop)
            await asyncio.sleep(fault.duration_s)
            await asyncio.to_thread(c.stack.postgres.start)
        elif fault.kind == "dup_reorder":
            figures = {"copies": await self._duplicate(400)}
        else:
            raise ValueError(f"unknown fault {fault.kind!r}")
        detail = ",".join(fault.stores)
        self.marks.append(Mark(fault.kind, start, time.time(), detail, figures))
        log.warning("fault %s done %s", fault.kind, figures)

    async def _applied(self, stores: list[str]) -> dict[str, int]:
        for _ in range(20):
            try:
                rows = await self.central_sync()
                return {s: int(rows.get(s, {}).get("applied_seq", 0)) for s in stores}
            except (OSError, TimeoutError, ValueError) as exc:
                log.debug("sync read failed: %r", exc)
                await asyncio.sleep(0.5)
        return dict.fromkeys(stores, 0)

    async def _drain(
        self, stores: list[str], before: dict[str, int], target: dict[str, int], restored: float
    ) -> dict[str, Any]:
        """Backlog of the cut stores at restore, how fast the centre applied it and
        PostgreSQL committed it, and the workers' peak memory meanwhile.

        The centre and PostgreSQL are looked at in loops of their own, so a slow
        query on a busy PostgreSQL never makes the centre's look late (or the
        other way round). Each centre look keeps when it was asked and answered:
        the last look that still saw a backlog was asked at ``drain_view_behind_s``,
        so if the ledger says the backlog was applied well before that,
        ``/api/sync`` itself trailed (``sim.runner.drain_from_ledger``).
        """
        backlog = sum(max(0, target[s] - before[s]) for s in stores)
        deadline = time.monotonic() + 600
        looks = _DrainLooks()
        # one connection for the whole drain, not one per look (a PostgreSQL
        # backend started twice a second on the box being measured)
        pool = await asyncpg.create_pool(
            self.cluster.database_url, min_size=0, max_size=1, timeout=5
        )
        cpu_start = psutil.cpu_times()
        roles = RoleCpu(self.cluster.role_pids)
        roles.start()
        worker_before = await self._worker_seconds()

        async def centre() -> None:
            while time.monotonic() < deadline:
                looks.peak_rss = max(looks.peak_rss, self.cluster.worker_rss_mb())
                asked = time.time()
                now = await self._applied(stores)
                answered = time.time()
                looks.sync_answer_max_s = max(looks.sync_answer_max_s, answered - asked)
                for s in stores:
                    if now[s] >= target[s]:
                        looks.store_s.setdefault(s, answered - restored)
                if len(looks.store_s) == len(stores):
                    looks.centre_s = answered - restored
                    looks.cpu_drained = psutil.cpu_times()
                    looks.role_cores = roles.cores()
                    looks.worker_after = await self._worker_seconds()
                    return
                looks.behind_asked_s = asked - restored
                # twice a second: each look reads every store's progress on the
                # worker that is draining, and the times are late by at most this
                await asyncio.sleep(0.5)

        async def postgres() -> None:
            while time.monotonic() < deadline:
                in_pg = await self._in_postgres(stores, pool)
                if all(in_pg.get(s, 0) >= target[s] for s in stores):
                    looks.pg_s = time.time() - restored
                    return
                await asyncio.sleep(0.5)

        try:
            await asyncio.gather(centre(), postgres())
        finally:
            await pool.close()
        took = max(looks.centre_s or time.time() - restored, 1e-3)
        took_pg = max(looks.pg_s or time.time() - restored, 1e-3)
        store_s = looks.store_s
        return {
            "backlog": backlog,
            "drain_s": round(took, 2),
            "drain_per_s": round(backlog / took),
            "drain_pg_s": round(took_pg, 2),
            "drain_pg_per_s": round(backlog / took_pg),
            "drain_peak_worker_rss_mb": round(looks.peak_rss),
            **box_shares(cpu_start, looks.cpu_drained or psutil.cpu_times()),
            # when the agents had sent it: from the ledger's sent_at once the
            # run is over (sim.runner.drain_sent_s)
            "restored_at": round(restored, 3),
            "backlog_last_seqs": target,
            "drain_first_store_s": round(min(store_s.values()), 2) if store_s else None,
            "drain_median_store_s": (
                round(statistics.median(store_s.values()), 2) if store_s else None
            ),
            "drain_view_behind_s": round(looks.behind_asked_s, 2),
            "sync_answer_max_s": round(looks.sync_answer_max_s, 3),  # ms: a quick answer is not 0
            "drain_cpu_cores": looks.role_cores or roles.cores(),
            **worker_shares(worker_before, looks.worker_after, took, len(self.cluster.workers)),
        }

    async def _worker_seconds(self) -> dict[str, float]:
        """The workers' seconds spent in apply batches and in their flushes so far."""
        wanted = {
            "retail_apply_batch_seconds_sum": "batch",
            "retail_apply_flush_seconds_sum": "flush",
        }
        out = dict.fromkeys(wanted.values(), 0.0)
        timeout = aiohttp.ClientTimeout(total=5)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                for w in self.cluster.workers:
                    async with session.get(f"{w.url}/metrics") as resp:
                        for family in text_string_to_metric_families(await resp.text()):
                            for sample in family.samples:
                                if sample.name in wanted:
                                    out[wanted[sample.name]] += sample.value
        except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as exc:
            log.debug("worker metrics unreadable: %r", exc)
            return {}
        return out

    async def _in_postgres(self, stores: list[str], pool: asyncpg.Pool) -> dict[str, int]:
        """The seq PostgreSQL has applied per store (``outlet_sync``); {} while unreadable."""
        try:
            rows = await pool.fetch(
                "SELECT store_id, applied_seq FROM outlet_sync WHERE store_id = ANY($1::text[])",
                stores,
                timeout=5,
            )
        except RETRIABLE as exc:
            log.debug("Postgres unreadable: %r", exc)
            return {}
        return {r["store_id"]: int(r["applied_seq"]) for r in rows}

    async def _duplicate(self, n: int) -> int:
        """Copies of records already on the events topic, produced again in shuffled order."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        topic = "retail.events"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.cluster.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        records: list[tuple[bytes | None, bytes]] = []
        try:
            await consumer.topics()  # loads the metadata of every topic
            parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + 10
            while len(records) < n * 3 and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                for msgs in batch.values():
                    records.extend((m.key, m.value) for m in msgs if m.value is not None)
        finally:
            await consumer.stop()
        picked = self.rng.sample(records, min(n, len(records)))
        self.rng.shuffle(picked)
        producer = AIOKafkaProducer(bootstrap_servers=self.cluster.bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in picked:
                await producer.send(topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()
        return len(picked)
