"""Write many table keys and output records as one batch, and know when it is durable.

A batch's every write (RocksDB + changelog) and output record is queued here;
:meth:`BatchWriter.flush` returns once the broker acknowledged all of them, and
only then may the apply agent ack its source records (SPEC "What is promised").

Two paths: the bulk path (``tables/bulk.py``: record batches straight to
aiokafka, for ``at_least_once``) and Faust's own producer (transactional under
``exactly_once``). Both write RocksDB through Faust's store of the partition.
Encoding keys and values with the store's own codec keeps them byte-identical
to what Faust itself would write and read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

from tables.bulk import BulkProducer
from tables.codec import encode
from tables.partition_context import in_partition_of


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


def partition_of(event: Any) -> int:
    return int(event.message.partition)


class BatchWriter:
    def __init__(self, tables: Iterable[Any], bulk: BulkProducer | None) -> None:
        self.bulk = bulk
        self._by_changelog = {t.changelog_topic.get_topic_name(): t for t in tables}
        self._futures: list[Any] = []

    def set(self, table: Any, partition_event: Any, items: Mapping[str, Any]) -> None:
        """Write ``items`` to ``table`` in the partition of ``partition_event``."""
        if not items:
            return
        partition = partition_of(partition_event)
        store = table.data
        if self.bulk is None:
            with in_partition_of(partition_event):
                for key, value in items.items():
                    store[key] = value
                    self._futures.append(table.send_changelog(partition, key, value))
            return
        changelog = table.changelog_topic.get_topic_name()
        batch = WriteBatch(raw_mode=True)
        put = batch.put
        pairs = [(encode(key), encode(value)) for key, value in items.items()]
        for kb, vb in pairs:
            put(kb, vb)
        self.bulk.extend(changelog, partition, pairs)
        # one RocksDB write per table and partition; readers that do not know
        # the partition (Faust's table.get) find the key by trying each one
        store._db_for_partition(partition).write(batch)

    def send(self, topic: Any, key: bytes, value: bytes) -> None:
        """Queue an output record, partitioned by key."""
        if self.bulk is None:
            self._futures.append(topic.send_soon(key=key, value=value))
        else:
            self.bulk.add(topic.get_topic_name(), None, key, value)

    def detach(self) -> Any:
        """What is queued now, to flush later; writes after this go to the next batch."""
        if self.bulk is None:
            futures, self._futures = self._futures, []
            return futures
        return self.bulk.detach()

    async def flush(self, detached: Any = None, timeout_s: float = 120.0) -> None:
        """Return once everything queued (or ``detached``) is acknowledged by the broker."""
        if detached is None:
            detached = self.detach()
        if self.bulk is None:
            await wait_all(detached, timeout_s)
            return
        try:
            last = await asyncio.wait_for(self.bulk.flush(detached), timeout_s)
        except TimeoutError as exc:
            raise FlushTimeout(f"batch not acknowledged after {timeout_s:.0f}s") from exc
        for (topic, partition), offset in last.items():
            table = self._by_changelog.get(topic)
            if table is not None:
                # what Faust's _on_changelog_sent records: recovery after a
                # restart reads the changelog only past this offset
                table.data.set_persisted_offset(TP(topic, partition), offset)
