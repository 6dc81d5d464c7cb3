"""Write Faust tables from a batch, outside per-event stream iteration.

Faust decides a table write's partition (for the changelog and for the RocksDB
store) from the *current event*, a private context variable set by its stream
iterator. A batch taken with ``noack_take`` has no current event, so writes
fail with "Cannot modify table key from outside of stream iteration". We set
that context variable to an event of the partition we are writing. It is
private to faust-streaming, which is why ``pyproject.toml`` pins 0.15.3 exactly;
``tests/central/test_partition_context.py`` fails loudly if it moves.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust.streams as faust_streams


@contextmanager
def in_partition_of(event: Any) -> Iterator[None]:
    """Table writes inside this block go to ``event``'s partition."""
    var = faust_streams._current_event
    token = var.set(weakref.ref(event))
    try:
        yield
    finally:
        var.reset(token)
