"""sim/role_cpu: which part of the chain spent the CPU while a backlog drained."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from devstack.process import kill_process
from sim.role_cpu import RoleCpu, cpu_seconds
from tests.helpers import wait_for

BURN = "import time\nwhile True: sum(range(10_000))"
#: a parent that only waits, and a child of it that burns a core
PARENT = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN!r}])"


@contextlib.contextmanager
def family() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Each in its own process group, killed whole: the burning grandchild must
    not outlive the test (one that did took a core from a benchmark)."""
    started = {
        "parent": subprocess.Popen([sys.executable, "-c", PARENT], start_new_session=True),
        "idle": subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
        ),
    }
    try:
        yield started
    finally:
        for p in started.values():
            kill_process(p)


@pytest.fixture
def procs() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    with family() as started:
        yield started


def children_cpu(pid: int) -> float:
    mine = cpu_seconds(pid)
    return sum(cpu_seconds(pid, with_children=True).values()) - sum(mine.values())


def test_each_role_is_charged_its_own_processes(
    procs: dict[str, subprocess.Popen[bytes]],
) -> None:
    parent, idle = procs["parent"].pid, procs["idle"].pid
    wait_for(lambda: children_cpu(parent) > 0.05, timeout=30, what="the child burning")
    now = [0.0]
    roles = RoleCpu(
        lambda: {"family+": [parent], "parent": [parent], "idle": [idle]},
        clock=lambda: now[0],
    )
    roles.start()
    before = children_cpu(parent)
    wait_for(lambda: children_cpu(parent) > before + 0.5, timeout=30, what="half a second burnt")
    now[0] = 1.0  # one second of wall time: cores = CPU seconds
    cores = roles.cores()
    assert set(cores) == {"family", "parent", "idle"}
    assert cores["family"] >= 0.5  # the child's CPU, counted through its parent
    assert cores["parent"] < 0.2  # without "+", only the waiting parent itself
    assert cores["idle"] < 0.2


def test_the_family_leaves_no_process_behind() -> None:
    with family() as started:
        parent = psutil.Process(started["parent"].pid)
        wait_for(lambda: parent.children(), timeout=30, what="the burning child")
        everyone = [parent, *parent.children(recursive=True)]
    _gone, alive = psutil.wait_procs(everyone, timeout=10)
    assert not alive, alive


def test_a_process_gone_or_unknown_costs_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert cpu_seconds(gone.pid) == {}
    roles = RoleCpu(lambda: {"gone": [gone.pid], "none": []})
    roles.start()
    assert roles.cores() == {"gone": 0.0, "none": 0.0}
