"""Recent sync lag per store, kept in the worker's memory for the sync views."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted, non-empty ``ordered`` (nearest rank, no interpolation)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LagStats:
    """The last ``window`` lags per store, with their percentiles.

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
    ) -> None:
        self._lags: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._sorted: dict[str, tuple[float, list[float]]] = {}
        self._refresh_s = refresh_s
        self._clock = clock

    def add(self, store_id: str, seconds: float) -> None:
        self._lags[store_id].append(seconds)

    def percentile(self, store_id: str, q: float) -> float | None:
        values = self._lags.get(store_id)
        if not values:
            return None
        now = self._clock()
        cached = self._sorted.get(store_id)
        if cached is None or now - cached[0] >= self._refresh_s:
            cached = (now, sorted(values))
            self._sorted[store_id] = cached
        return nearest_rank(cached[1], q)
