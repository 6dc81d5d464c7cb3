"""The small chaos run (issue 9): a few stores, one of each fault, every check.

The full run is ``make chaos`` / ``make bench``; this one keeps the same
schedule at a size that fits ``make test`` on two cores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sim.faults import chaos_schedule
from sim.runner import Scenario, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(420)
def test_small_chaos_run_passes_every_check(tmp_path: Path) -> None:
    sc = Scenario(
        stores=3,
        skus=300,
        rate=20.0,
        batch=4,
        seconds=80.0,
        data_dir=tmp_path / "sim",
        drain_timeout_s=150.0,
        web_rate=1.0,
    )
    ids = sc.store_ids
    sc.faults = chaos_schedule(ids, sc.seconds)
    sc.agent_skew = {ids[1]: -2 * 3600.0}  # the agent's own clock two hours slow
    sc.terminal_skew = {ids[2]: 5 * 3600.0}  # the tills' clocks five hours fast
    result = asyncio.run(run(sc))
    kinds = {m.kind for m in result.marks}
    assert {"link_cut", "outlet_kill", "dup_reorder", "worker_kill", "rebalance",
            "pg_outage", "broker_kill"} <= kinds, kinds  # fmt: skip
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.passed]
    assert not failed, "\n".join(failed)
    assert result.figures["lost"] == 0 and result.figures["doubled"] == 0
    assert result.figures["events"] > 500
