"""Transfers span two stores: their legs meet in a table keyed by transfer_id.

A transfer's two legs are events of two stores (two partitions), so the
apply agent re-keys each leg by transfer_id (a repartition topic) and this
agent folds both into one entry, replaced whole, so a replay is a no-op.

(One SKU across stores needs no such topic: the view asks every worker for
its stores' stock keys, ``app.web.stock.SkuStock``.)
"""

from __future__ import annotations

from typing import Any

import orjson

from tables.writer import BatchWriter


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
