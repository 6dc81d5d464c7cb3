"""Per-store lag percentiles: exact when fresh, reused for at most refresh_s."""

from __future__ import annotations

from app.lagstats import LagStats


def test_percentiles_follow_new_lags_after_the_refresh_interval() -> None:
    now = [0.0]
    stats = LagStats(window=100, refresh_s=1.0, clock=lambda: now[0])
    assert stats.percentile("S1", 0.5) is None
    for i in range(100):
        stats.add("S1", i / 100)
    assert stats.percentile("S1", 0.5) == 0.5
    assert stats.percentile("S1", 0.99) == 0.99
    for _ in range(100):
        stats.add("S1", 5.0)
    assert stats.percentile("S1", 0.5) == 0.5  # within refresh_s: the sorted window is reused
    now[0] = 1.0
    assert stats.percentile("S1", 0.5) == 5.0  # the window now holds only the new lags
    assert stats.percentile("S2", 0.5) is None


def test_lags_older_than_the_age_limit_leave_the_window_but_the_last_few_stay() -> None:
    """A worker's slow start must not make a quiet store look behind for minutes."""
    now = [0.0]
    stats = LagStats(window=1024, refresh_s=1.0, clock=lambda: now[0], max_age_s=60.0, keep=4)
    for _ in range(20):
        stats.add("S1", 3.0)  # the first events waited for the worker to start
    now[0] = 30.0
    for _ in range(10):
        stats.add("S1", 0.1)
    assert stats.percentile("S1", 0.99) == 3.0  # all within the last minute
    now[0] = 61.0
    assert stats.percentile("S1", 0.99) == 0.1  # the slow start has aged out
    now[0] = 500.0
    assert stats.percentile("S1", 0.5) == 0.1  # a quiet store keeps its last lags
