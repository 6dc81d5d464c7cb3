"""``sku_totals``: one key per (sku, store), replaced only by a newer snapshot.

A real Faust table on RocksDB and the real ``BatchWriter`` write path; only
the broker is faked (the changelog records are kept in a list).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import orjson
import pytest

from agents.repartition import SkuTotals
from app.web.rocks import scan_prefix
from domain.apply import KEY_SEP
from tables.bulk import partition_for
from tables.codec import decode
from tables.writer import BatchWriter

PARTITIONS = 4


class FakeBulk:
    """The bulk producer's interface, keeping what would go to the changelog."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes, bytes]] = []

    def extend(self, topic: str, partition: int, pairs: list[tuple[bytes, bytes]]) -> None:
        self.sent += [(topic, partition, k, v) for k, v in pairs]

    def detach(self) -> None:
        return None

    async def flush(self, detached: Any) -> dict[Any, int]:
        return {}


@pytest.fixture
def table(tmp_path: Path) -> Iterator[Any]:
    app = faust.App(
        "sku-totals-test",
        broker="kafka://127.0.0.1:1",
        store="rocksdb://",
        datadir=str(tmp_path),
    )
    yield app.Table("sku_totals", default=None, partitions=PARTITIONS)


@pytest.fixture
def bulk() -> FakeBulk:
    return FakeBulk()


@pytest.fixture
def folder(table: Any, bulk: FakeBulk) -> SkuTotals:
    return SkuTotals(table, BatchWriter([table], bulk))  # type: ignore[arg-type]


def make_snapshot(store_id: str = "S1", sku: str = "A", ver: int = 1, on_hand: int = 5) -> Any:
    return {
        "store_id": store_id,
        "sku": sku,
        "on_hand": on_hand,
        "reserved": 1,
        "applied_seq": 10 * ver,
        "ver": ver,
    }


def make_record(*snapshots: dict[str, Any]) -> Any:
    """One packed record of the sku-stock topic, in its SKUs' partition."""
    partition = partition_for(snapshots[0]["sku"], PARTITIONS)
    assert all(partition_for(s["sku"], PARTITIONS) == partition for s in snapshots)
    return SimpleNamespace(
        value=orjson.dumps(list(snapshots)), message=SimpleNamespace(partition=partition)
    )


def fold(folder: SkuTotals, *records: Any) -> None:
    asyncio.run(folder.fold(list(records)))


def stored(table: Any, sku: str) -> dict[str, Any]:
    """store_id -> entry, straight from the SKU's partition, as the view reads it."""
    prefix = f"{sku}{KEY_SEP}"
    partition = partition_for(sku, PARTITIONS)
    return {key[len(prefix) :]: value for key, value in scan_prefix(table, partition, prefix)}


def test_two_stores_of_one_sku_are_two_small_keys(
    folder: SkuTotals, table: Any, bulk: FakeBulk
) -> None:
    fold(folder, make_record(make_snapshot("S1", on_hand=5), make_snapshot("S2", on_hand=7)))
    assert stored(table, "A") == {
        "S1": {"on_hand": 5, "reserved": 1, "applied_seq": 10, "ver": 1},
        "S2": {"on_hand": 7, "reserved": 1, "applied_seq": 10, "ver": 1},
    }
    keys = sorted(decode(k) for _, _, k, _ in bulk.sent)
    assert keys == [f"A{KEY_SEP}S1", f"A{KEY_SEP}S2"]
    # the changelog gets the same records, in the SKU's partition, each one small
    assert {p for _, p, _, _ in bulk.sent} == {partition_for("A", PARTITIONS)}
    assert all(len(v) < 100 for _, _, _, v in bulk.sent)


def test_an_older_ver_does_not_overwrite_a_newer(folder: SkuTotals, table: Any) -> None:
    fold(folder, make_record(make_snapshot(ver=3, on_hand=9)))
    fold(folder, make_record(make_snapshot(ver=2, on_hand=1)))
    assert stored(table, "A")["S1"]["on_hand"] == 9
    # nor in one batch, nor when the entry is read back from RocksDB
    folder.reset()
    fold(folder, make_record(make_snapshot(ver=4, on_hand=4), make_snapshot(ver=1, on_hand=0)))
    assert stored(table, "A")["S1"] == {"on_hand": 4, "reserved": 1, "applied_seq": 40, "ver": 4}
    folder.reset()
    fold(folder, make_record(make_snapshot(ver=3, on_hand=3)))
    assert stored(table, "A")["S1"]["ver"] == 4


def test_a_replay_changes_nothing(folder: SkuTotals, table: Any) -> None:
    batch = [
        make_record(make_snapshot("S1", ver=1, on_hand=2), make_snapshot("S1", ver=2, on_hand=6)),
        make_record(make_snapshot("S2", ver=5, on_hand=3)),
    ]
    fold(folder, *batch)
    before = stored(table, "A")
    fold(folder, *batch)
    assert stored(table, "A") == before
    folder.reset()  # the same after a rebalance: read back from RocksDB
    fold(folder, *batch)
    assert stored(table, "A") == before
    assert before["S1"]["on_hand"] == 6 and before["S2"]["on_hand"] == 3


def test_a_sku_scan_never_picks_up_a_longer_sku(folder: SkuTotals, table: Any) -> None:
    # find an "A"-prefixed SKU in A's partition, so both really share one RocksDB
    longer = next(
        f"A{i}"
        for i in range(1000)
        if partition_for(f"A{i}", PARTITIONS) == partition_for("A", PARTITIONS)
    )
    fold(folder, make_record(make_snapshot("S1", "A"), make_snapshot("S1", longer, on_hand=8)))
    assert set(stored(table, "A")) == {"S1"}
    assert stored(table, "A")["S1"]["on_hand"] == 5
    assert stored(table, longer)["S1"]["on_hand"] == 8
