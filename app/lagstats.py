"""Recent sync lag per store, kept in the worker's memory for the sync views."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted, non-empty ``ordered`` (nearest rank, no interpolation)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LagStats:
    """The recent lags per store, with their percentiles.

    Recent means the last ``window`` lags of the last ``max_age_s`` seconds,
    but never fewer than the last ``keep`` of them. By count alone, a quiet
    store (a demo's few events a second) kept its first minutes' lags, those of
    a worker still starting, for as long as 1,024 events took, and the sync view
    called it behind all that time. ``keep`` leaves a store that went quiet the
    lags it last had, rather than none.

    Every batch reports p50/p99 for each store it touched, so sorting a
    store's window each time (100 stores x 1,024 values per batch) was a
    visible cost; the sorted window is reused for ``refresh_s`` seconds, so a
    percentile may be that much behind the newest lags.
    """

    def __init__(
        self,
        window: int = 1024,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_age_s: float = 60.0,
        keep: int = 32,
    ) -> None:
        self._lags: dict[str, deque[tuple[float, float]]] = defaultdict(
            lambda: deque(maxlen=window)
        )
        self._sorted: dict[str, tuple[float, list[float]]] = {}
        self._refresh_s = refresh_s
        self._clock = clock
        self._max_age_s = max_age_s
        self._keep = keep

    def add(self, store_id: str, seconds: float) -> None:
        self._lags[store_id].append((self._clock(), seconds))

    def percentile(self, store_id: str, q: float) -> float | None:
        values = self._lags.get(store_id)
        if not values:
            return None
        now = self._clock()
        cached = self._sorted.get(store_id)
        if cached is None or now - cached[0] >= self._refresh_s:
            too_old = now - self._max_age_s
            while len(values) > self._keep and values[0][0] < too_old:
                values.popleft()
            cached = (now, sorted(lag for _, lag in values))
            self._sorted[store_id] = cached
        return nearest_rank(cached[1], q)
