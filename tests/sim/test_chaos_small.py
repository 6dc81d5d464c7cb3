"""The small chaos run (issue 9): a few stores, one of each fault, every check.

The full run is ``make chaos`` / ``make bench``; these keep the same schedule
at a size that fits ``make test`` on two cores. Two runs, because of what the
full run found on the embedded broker (bench/HISTORY.md, finding 2): on Tansu's S3 storage a restarted worker crash-loops in
recovery, so the worker faults run on memory storage and the broker kill -9 on
S3 storage with no worker restart after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import psutil
import pytest

from sim.faults import Fault, chaos_schedule
from sim.runner import Result, Scenario, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _scenario(tmp_path: Path, seconds: float, *, persistent: bool) -> Scenario:
    sc = Scenario(
        stores=3,
        skus=300,
        rate=20.0,
        batch=4,
        seconds=seconds,
        data_dir=tmp_path / "sim",
        drain_timeout_s=120.0,
        web_rate=1.0,
        persistent=persistent,
    )
    ids = sc.store_ids
    sc.agent_skew = {ids[1]: -2 * 3600.0}  # that agent's own clock two hours slow
    sc.terminal_skew = {ids[2]: 5 * 3600.0}  # those tills' clocks five hours fast
    return sc


def _check(result: Result) -> None:
    failed = {c.name: c.detail for c in result.checks if not c.passed}
    for name, detail in failed.items():
        print(f"FAIL {name}: {detail}")  # shown in full with the failure
    assert result.figures["lost"] == 0 and result.figures["doubled"] == 0, failed
    assert result.figures["events"] > 300
    assert not failed, "\n".join(f"{k}: {v}" for k, v in failed.items())


@pytest.mark.timeout(300)
def test_small_chaos_run_memory_broker(tmp_path: Path) -> None:
    """Link cut, outlet kill -9, duplicated + reordered records, worker kill -9, a
    second worker joining and crashing, a Postgres outage, skewed clocks."""
    sc = _scenario(tmp_path, 70.0, persistent=False)
    sc.faults = [f for f in chaos_schedule(sc.store_ids, sc.seconds) if f.kind != "broker_kill"]
    result = asyncio.run(run(sc))
    kinds = {m.kind for m in result.marks}
    assert {"link_cut", "outlet_kill", "dup_reorder", "worker_kill", "rebalance",
            "pg_outage"} <= kinds, kinds  # fmt: skip
    _check(result)
    drain = next(m.figures for m in result.marks if m.kind == "link_cut")
    assert drain["backlog"] > 0
    # the ledger's times: sent, then applied, then committed, each no later
    # than the run's looks saw it
    f = result.figures
    assert 0 < f["drain_sent_s"] <= f["drain_s"] <= drain["drain_s"], (f, drain)
    assert f["drain_s"] <= f["drain_pg_s"] <= drain["drain_pg_s"], (f, drain)
    # the rate from the unrounded seconds
    assert f["drain_per_s"] == pytest.approx(drain["backlog"] / f["drain_s"], rel=0.02), f
    assert drain["drain_median_store_s"] <= drain["drain_s"], drain
    # the centre's looks: the last one still behind was asked before the one
    # that saw it all; /api/sync answered; how far it trailed the ledger
    assert 0 <= drain["drain_view_behind_s"] < drain["drain_s"], drain
    assert drain["sync_answer_max_s"] > 0, drain
    assert f["drain_view_trailed_s"] == pytest.approx(
        max(0.0, drain["drain_view_behind_s"] - f["drain_s"]), abs=0.02
    ), (f, drain)
    # the view shows a group once its tables are written: it may trail the
    # ledger's applied_at (the group's start) by a group's time, not more
    assert f["drain_view_trailed_s"] < 5, (f, drain)
    assert drain["drain_worker_apply_pct"] is not None, drain
    assert drain["drain_worker_flush_pct"] is not None, drain
    assert set(drain["drain_cpu_cores"]) == {
        "workers", "sink", "broker", "s3", "proxy", "postgres", "outlets", "simulator"
    }, drain  # fmt: skip


@pytest.mark.timeout(240)
def test_small_chaos_run_broker_kill(tmp_path: Path) -> None:
    """The broker killed -9 mid-traffic and restarted on its S3 storage."""
    sc = _scenario(tmp_path, 40.0, persistent=True)
    sc.rate = 10.0  # what Tansu on S3-on-moto keeps up with here
    sc.faults = [Fault(15.0, "broker_kill")]
    result = asyncio.run(run(sc))
    assert [m.kind for m in result.marks] == ["broker_kill"]
    _check(result)


def _ours_alive(root: Path) -> list[str]:
    """Processes still running with a ``RETAIL_DATA_DIR`` under ``root`` (agents, workers, sink)."""
    alive = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("RETAIL_DATA_DIR", "").startswith(str(root)):
                alive.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])}")
    return alive


@pytest.mark.timeout(180)
def test_a_run_that_raises_leaves_no_process_behind(tmp_path: Path) -> None:
    """A fault that raises ends the run, and the cluster closes with nothing
    restarted behind it: the supervisor stops first. Run 23 raised while its
    supervisor still ran, and it restarted two agents as the cluster stopped
    them, which then ran on with no one to stop them."""
    sc = _scenario(tmp_path, 10.0, persistent=False)
    sc.faults = [Fault(2.0, "outlet_kill", stores=[sc.store_ids[0]]), Fault(4.0, "no_such_fault")]
    with pytest.raises(ValueError, match="unknown fault 'no_such_fault'"):
        asyncio.run(run(sc))
    assert _ours_alive(sc.data_dir) == []
