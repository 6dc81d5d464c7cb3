"""Views that span stores, fed by repartition topics.

A transfer has two legs in two stores (two partitions), and "a SKU across
stores" gathers every store: the apply agent re-keys what they need (by
transfer_id, by sku) and these agents fold it into tables. Each entry is
replaced whole and guarded by its version, so a replay changes nothing.

``sku_totals`` has one key per (sku, store), ``f"{sku}{KEY_SEP}{store_id}"``:
a stock snapshot rewrites ~100 bytes, not the SKU's whole row of stores
(which grew with the number of stores). Every key of a SKU lives in the SKU's
partition (the repartition topic is partitioned by SKU), so the SKU view reads
them with one prefix scan of that partition (``app.web.stock.SkuStock``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson

from domain.apply import KEY_SEP
from tables.codec import read
from tables.state import LRU
from tables.writer import BatchWriter


class SkuTotals:
    """Folds per-store snapshots into ``sku_totals``, keeping hot entries in memory."""

    def __init__(self, table: Any, writer: BatchWriter, cache_limit: int = 50_000) -> None:
        # one entry per (sku, store), ~0.4 KB in memory: 50,000 take ~20 MB,
        # less than the 5,000 whole-SKU values this held at 20 stores
        self.table = table
        self.writer = writer
        self.cache = LRU(cache_limit)

    def reset(self) -> None:
        """Partitions were revoked: another worker may now write some of these keys."""
        self.cache.clear()

    def _entry(self, key: str, partition: int) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = self.cache.get(key)
        if entry is None:
            entry = read(self.table, key, partition)
            if entry is None:
                return None  # a new key: cached once the batch has written it
        self.cache.put(key, entry)
        return entry

    async def fold(self, batch: list[Any]) -> None:
        """sku_totals[sku KEY_SEP store] = that store's newest snapshot of the SKU (by ``ver``)."""
        dirty: dict[int, dict[str, Any]] = defaultdict(dict)
        records: dict[int, Any] = {}
        for record in batch:
            value = orjson.loads(record.value)
            partition = record.message.partition
            records[partition] = record
            # packed: a list of snapshots whose skus all hash to this partition
            for snap in value if isinstance(value, list) else [value]:
                key = f"{snap['sku']}{KEY_SEP}{snap['store_id']}"
                old = self._entry(key, partition)
                # ver counts a key's changes: the same after a crash and a replay
                if old is None or old["ver"] <= snap["ver"]:
                    entry = {
                        "on_hand": snap["on_hand"],
                        "reserved": snap.get("reserved", 0),
                        "applied_seq": snap["applied_seq"],
                        "ver": snap["ver"],
                    }
                    self.cache.put(key, entry)
                    dirty[partition][key] = entry
        for partition, items in dirty.items():
            self.writer.set(self.table, records[partition], items)
        self.cache.trim()  # after the writes: a changed entry is never evicted unwritten
        await self.writer.flush()


def _discrepancy(sent: dict[str, int], received: dict[str, int]) -> dict[str, int]:
    """SKU -> received minus sent, for the SKUs where they differ (SPEC "Events")."""
    skus = set(sent) | set(received)
    return {
        s: received.get(s, 0) - sent.get(s, 0)
        for s in sorted(skus)
        if received.get(s, 0) != sent.get(s, 0)
    }


async def fold_transfer_legs(table: Any, batch: list[Any], writer: BatchWriter) -> None:
    """transfers[tid] = both legs, what is in transit, and any discrepancy."""
    latest: dict[str, dict[str, Any]] = {}
    partition_event: dict[str, Any] = {}
    for record in batch:
        leg = orjson.loads(record.value)
        tid = str(leg["transfer_id"])
        partition_event[tid] = record
        entry = latest.setdefault(tid, dict(table.get(tid) or {}))
        entry[leg["leg"]] = {
            "store_id": leg["store_id"],
            "outlet_seq": leg["outlet_seq"],
            "lines": leg["lines"],
        }
        sent = entry.get("out", {}).get("lines", {})
        received = entry.get("in", {}).get("lines", {})
        entry["in_transit"] = {} if "in" in entry else dict(sent)
        entry["discrepancy"] = (
            _discrepancy(sent, received) if "in" in entry and "out" in entry else {}
        )
        entry["transfer_id"] = tid
    for tid, entry in latest.items():
        writer.set(table, partition_event[tid], {tid: entry})
    await writer.flush()
