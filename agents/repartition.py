"""Views that span stores, fed by repartition topics.

A transfer has two legs in two stores (two partitions), and "a SKU across
stores" gathers every store: the apply agent re-keys what they need (by
transfer_id, by sku) and these agents fold it into tables. Each entry is
replaced whole and guarded by its version, so a replay changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson

from tables.codec import read
from tables.writer import BatchWriter


async def fold_sku_snapshots(table: Any, batch: list[Any], writer: BatchWriter) -> None:
    """sku_totals[sku]["stores"][store] = the newest (applied_seq, ver) snapshot."""
    latest: dict[str, dict[str, Any]] = {}
    partition_event: dict[str, Any] = {}
    snapshots: list[tuple[dict[str, Any], Any]] = []
    for record in batch:
        value = orjson.loads(record.value)
        # packed: a list of snapshots whose skus all hash to this partition
        snapshots.extend((snap, record) for snap in (value if isinstance(value, list) else [value]))
    for snap, record in snapshots:
        sku = snap["sku"]
        partition_event[sku] = record
        partition = record.message.partition
        entry = latest.setdefault(sku, dict(read(table, sku, partition) or {"stores": {}}))
        old = entry["stores"].get(snap["store_id"])
        if old is None or (old["applied_seq"], old["ver"]) <= (snap["applied_seq"], snap["ver"]):
            entry["stores"][snap["store_id"]] = {
                "on_hand": snap["on_hand"],
                "reserved": snap.get("reserved", 0),
                "applied_seq": snap["applied_seq"],
                "ver": snap["ver"],
            }
    by_record: dict[int, dict[str, Any]] = defaultdict(dict)
    records: dict[int, Any] = {}
    for sku, entry in latest.items():
        record = partition_event[sku]
        records[id(record)] = record
        by_record[id(record)][sku] = entry
    for rid, items in by_record.items():
        writer.set(table, records[rid], items)
    await writer.flush()


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
