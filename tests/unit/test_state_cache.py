"""A batch's changed values must never be evicted before the batch writes them."""

from __future__ import annotations

from tables.state import LRU


def test_put_never_evicts_and_trim_drops_the_least_recent() -> None:
    cache = LRU(limit=2)
    for key in "abcd":
        cache.put(key, key.upper())
    assert list(cache) == ["a", "b", "c", "d"]  # a batch may hold more than the limit
    cache.put("a", "A2")  # touched again: now the most recent
    cache.trim()
    assert list(cache) == ["d", "a"]
    assert cache["a"] == "A2"
