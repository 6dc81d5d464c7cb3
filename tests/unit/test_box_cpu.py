"""sim/faults.box_shares: the box's idle and stolen shares while a backlog drains."""

from __future__ import annotations

from sim.faults import box_cpu, box_shares


def test_shares_of_the_ticks_spent_between_two_readings() -> None:
    start = [100, 0, 50, 1000, 10, 0, 5, 20]
    #        +60 user, +20 system, +15 idle, +5 iowait, +0 softirq, +100 steal: 200 ticks
    end = [160, 0, 70, 1015, 15, 0, 5, 120]
    assert box_shares(start, end) == {"drain_cpu_idle_pct": 10.0, "drain_cpu_steal_pct": 50.0}


def test_no_reading_no_figure() -> None:
    assert box_shares([], [1] * 8) == {}


def test_this_box_reads_eight_counters_that_only_grow() -> None:
    first = box_cpu()
    assert len(first) == 8
    assert all(b >= a for a, b in zip(first, box_cpu(), strict=True))
