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
