"""The worker's collector settings still collect cyclic garbage."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.gc_tuning import YOUNG, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_freezes_what_is_loaded_and_still_collects_new_cycles(restored_collector: None) -> None:
    tune_collector()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    # enough new tracked objects to trigger a young collection
    kept: list[list[int]] = [[] for _ in range(YOUNG + 1)]
    assert gone() is None
    assert len(kept) == YOUNG + 1
