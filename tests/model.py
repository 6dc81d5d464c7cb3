"""A plain reference model of SPEC's stock rules, and random store histories."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

SIGN = {"sale": -1, "return": 1, "receipt": 1, "adjustment": 1, "void": 1,
        "transfer_out": -1, "transfer_in": 1}  # fmt: skip


def reference_stock(events: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Each store's events once, in seq order (SPEC rules 1 and 4)."""
    stock: dict[tuple[str, str], int] = defaultdict(int)
    unique = {(e["store_id"], e["outlet_seq"]): e for e in events}
    for _, event in sorted(unique.items()):
        for line in event["lines"]:
            key = (event["store_id"], line["sku"])
            if event["type"] == "count":
                stock[key] = line["qty"]
            else:
                stock[key] += SIGN[event["type"]] * line["qty"]
    return dict(stock)


def random_history(
    rng: random.Random, stores: list[str], skus: list[str], per_store: int
) -> list[dict[str, Any]]:
    """Envelopes as the outlet agents would forward them, seqs 1..per_store per store."""
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    out: list[dict[str, Any]] = []
    for store in stores:
        sales: list[dict[str, Any]] = []
        for seq in range(1, per_store + 1):
            kind = rng.choices(
                ["sale", "return", "receipt", "adjustment", "count", "void"],
                weights=[60, 5, 15, 5, 5, 5],
            )[0]
            ref = reason = None
            if kind == "void":
                open_sales = [s for s in sales if not s.get("_voided")]
                if not open_sales:
                    kind = "sale"
                else:
                    sale = rng.choice(open_sales)
                    sale["_voided"] = True
                    ref = sale["event_id"]
                    lines = sale["lines"]
            if kind != "void":
                n = rng.randint(1, 3)
                chosen = rng.sample(skus, k=min(n, len(skus)))
                if kind == "count":
                    lines = [{"sku": s, "qty": rng.randint(0, 50)} for s in chosen]
                elif kind == "adjustment":
                    lines = [{"sku": s, "qty": rng.choice([-3, -1, 2, 4])} for s in chosen]
                    reason = "correction"
                else:
                    lines = [{"sku": s, "qty": rng.randint(1, 4)} for s in chosen]
            ts = (t0 + timedelta(milliseconds=seq)).isoformat()
            event = {
                "event_id": str(uuid.uuid4()),
                "schema": "retail.v1",
                "type": kind,
                "store_id": store,
                "terminal_id": "T1",
                "outlet_seq": seq,
                "client_txn_id": f"{store}-{seq}",
                "occurred_at": ts,
                "recorded_at": ts,
                "lines": lines,
                "ref": ref,
                "reason": reason,
            }
            if kind == "sale":
                sales.append(event)
            out.append(event)
    for event in out:
        event.pop("_voided", None)
    return out
