"""``python -m sim``: a run stopped with SIGTERM closes its cluster.

Killed outright, a benchmark left its hundred outlet agents, the workers,
the broker and PostgreSQL running, and its session at autogroup nice 10.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from devstack.process import kill_process
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(240)
def test_sigterm_stops_every_process_of_the_run(tmp_path: Path) -> None:
    log = tmp_path / "sim.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sim", "run", "--stores", "2", "--skus", "50",
             "--rate", "5", "--seconds", "600", "--data-dir", str(tmp_path / "sim")],
            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    children: list[psutil.Process] = []
    try:
        wait_for(lambda: "cluster up" in log.read_text(), timeout=180, what="the cluster up")
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "outlet_agent" in names and "faust" in names, names
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        kill_process(proc)
        for child in children:
            if child.is_running():
                child.kill()
