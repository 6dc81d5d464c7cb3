"""Write many keys of a table in one go and get back what to wait for.

``table[key] = value`` sends its changelog record and forgets the future; to
be able to say "this batch is durable" we keep every future and await them all
before acking the source records (SPEC "What is promised").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from tables.partition_context import in_partition_of


def write_keys(table: Any, partition_event: Any, items: Mapping[str, Any]) -> list[Any]:
    """Write ``items`` to RocksDB and the changelog, in ``partition_event``'s partition."""
    partition = partition_event.message.partition
    futures = []
    with in_partition_of(partition_event):
        for key, value in items.items():
            table.data[key] = value
            futures.append(table.send_changelog(partition, key, value))
    return futures


class FlushTimeout(RuntimeError):
    """The broker did not acknowledge a batch in time; the worker restarts and replays it."""


async def wait_all(futures: Iterable[Any], timeout_s: float = 120.0) -> None:
    """Wait until the broker has acknowledged every send (raises if one failed)."""
    pending = list(futures)
    if not pending:
        return
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.gather(*pending)), timeout_s)
    except TimeoutError as exc:
        stuck = [f for f in pending if not f.done()]
        raise FlushTimeout(
            f"{len(stuck)} of {len(pending)} sends not acknowledged after {timeout_s:.0f}s"
        ) from exc
