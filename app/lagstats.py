"""Recent sync lag per store, kept in the worker's memory for the sync views."""

from __future__ import annotations

from collections import defaultdict, deque


class LagStats:
    def __init__(self, window: int = 1024) -> None:
        self._lags: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))

    def add(self, store_id: str, seconds: float) -> None:
        self._lags[store_id].append(seconds)

    def percentile(self, store_id: str, q: float) -> float | None:
        values = self._lags.get(store_id)
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
