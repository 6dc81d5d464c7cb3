"""A store's share of a big apply group reaches the sink in records of bounded size."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from agents.apply import APPLIED_ROWS_MAX, applied_records


def rows(n: int, kind: str) -> list[dict[str, Any]]:
    """Ledger lines ("l") or stock snapshots ("s") of the size the apply agent writes."""
    if kind == "s":
        return [
            {"store_id": "S001", "sku": f"SKU-{i:05d}", "on_hand": -12, "reserved": 0,
             "applied_seq": 123456, "ver": 789, "updated_at": 1795708410.285264}
            for i in range(n)
        ]  # fmt: skip
    return [
        {"store_id": "S001", "outlet_seq": 100000 + i, "event_id": str(uuid.UUID(int=i)),
         "type": "sale", "effect": "delta", "occurred_at": "2026-11-26T14:44:02.610303+00:00",
         "recorded_at": "2026-11-26T14:44:02.843426+00:00", "applied_at": 1795708410.285264,
         "reason": None, "ref": None, "line_no": i % 3, "sku": f"SKU-{i % 20000:05d}",
         "qty": -3, "unit_price_cents": 1999}
        for i in range(n)
    ]  # fmt: skip


def test_a_small_share_is_one_record() -> None:
    [record] = applied_records("S1", rows(3, "l"), rows(2, "s"), [{"m": 1}], {"p": 1}, 5.0)
    assert record == {
        "store_id": "S1",
        "ledger": rows(3, "l"),
        "stock": rows(2, "s"),
        "sales": [{"m": 1}],
        "progress": {"p": 1},
        "sent_at": 5.0,
    }


def test_a_big_share_is_cut_and_only_the_last_record_carries_progress() -> None:
    ledger = rows(2 * APPLIED_ROWS_MAX + 1, "l")
    stock = rows(APPLIED_ROWS_MAX + 1, "s")
    records = applied_records("S1", ledger, stock, [{"m": 1}], {"p": 1}, 5.0)
    assert all(len(r["ledger"]) + len(r["stock"]) <= APPLIED_ROWS_MAX for r in records), [
        len(r["ledger"]) + len(r["stock"]) for r in records
    ]
    assert [row for r in records for row in r["ledger"]] == ledger
    assert [row for r in records for row in r["stock"]] == stock
    assert [("progress" in r, bool(r["sales"])) for r in records] == [(False, False)] * (
        len(records) - 1
    ) + [(True, True)]
    # full-size rows: none reaches Apache Kafka's 1 MB default; all in one record would
    assert max(len(orjson.dumps(r)) for r in records) < 1 << 20
    assert len(orjson.dumps({"ledger": ledger, "stock": stock})) > 1 << 20


def test_a_store_with_only_progress_still_gets_its_record() -> None:
    [record] = applied_records("S1", [], [], [], {"p": 1}, 5.0)
    assert record["progress"] == {"p": 1} and record["ledger"] == record["stock"] == []
