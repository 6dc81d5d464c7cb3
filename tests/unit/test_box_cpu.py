"""sim/faults: the box's idle and stolen shares, and the worker's, while a backlog drains."""

from __future__ import annotations

import psutil

from sim.faults import box_shares, worker_shares

FIELDS = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
]


def times(*ticks: float) -> object:
    return type(psutil.cpu_times())(*ticks, 0.0, 0.0)


def test_shares_of_the_time_spent_between_two_readings() -> None:
    start = times(100, 0, 50, 1000, 10, 0, 5, 20)
    #        +60 user, +20 system, +15 idle, +5 iowait, +0 softirq, +100 steal: 200 s
    end = times(160, 0, 70, 1015, 15, 0, 5, 120)
    assert box_shares(start, end) == {"drain_cpu_idle_pct": 10.0, "drain_cpu_steal_pct": 50.0}


def test_no_steal_counted_no_figure() -> None:
    assert box_shares((1.0, 2.0), (3.0, 4.0)) == {}


def test_this_box_counts_every_kind_and_the_shares_are_percentages() -> None:
    first = psutil.cpu_times()
    assert list(first._fields) == FIELDS
    shares = box_shares(first, psutil.cpu_times())
    assert set(shares) == {"drain_cpu_idle_pct", "drain_cpu_steal_pct"}
    assert all(0.0 <= v <= 100.0 for v in shares.values())


def test_worker_shares_split_the_drain_into_applying_and_waiting_for_acks() -> None:
    before = {"batch": 10.0, "flush": 2.0}
    after = {"batch": 18.0, "flush": 5.0}  # 8 s in batches, 3 s of them in flushes
    assert worker_shares(before, after, 20.0) == {
        "drain_worker_apply_pct": 25.0,
        "drain_worker_flush_pct": 15.0,
    }
    # two workers' sums: each spent half of that, on average
    assert worker_shares(before, after, 20.0, workers=2) == {
        "drain_worker_apply_pct": 12.5,
        "drain_worker_flush_pct": 7.5,
    }


def test_worker_shares_unknown_when_a_reading_is_missing_or_a_worker_restarted() -> None:
    unknown = {"drain_worker_apply_pct": None, "drain_worker_flush_pct": None}
    assert worker_shares({}, {"batch": 1.0, "flush": 0.5}, 10.0) == unknown
    assert (
        worker_shares({"batch": 9.0, "flush": 3.0}, {"batch": 1.0, "flush": 0.5}, 10.0) == unknown
    )
