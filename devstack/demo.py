"""Gentle simulated sales for ``make run``, through the outlet agents' real API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import uuid
from datetime import UTC, datetime

import httpx

SKUS = [f"SKU-{i:04d}" for i in range(1, 51)]


async def _post(client: httpx.AsyncClient, url: str, token: str, body: dict[str, object]) -> None:
    # the demo keeps going through errors; the agent's own log shows what happened
    with contextlib.suppress(httpx.HTTPError):
        await client.post(
            f"{url}/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}
        )


async def run(outlets: list[tuple[str, str, str]], rate: float) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        for _store, url, token in outlets:  # stock up first
            for sku in SKUS:
                await _post(client, url, token, _event("receipt", sku, 200))
        while True:
            _store, url, token = random.choice(outlets)
            kind = random.choices(["sale", "return", "receipt"], weights=[90, 5, 5])[0]
            sku = random.choice(SKUS)
            await _post(client, url, token, _event(kind, sku, random.randint(1, 3)))
            await asyncio.sleep(random.expovariate(rate))


def _event(kind: str, sku: str, qty: int) -> dict[str, object]:
    return {
        "type": kind,
        "client_txn_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "lines": [{"sku": sku, "qty": qty, "unit_price_cents": 199}],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--outlet", action="append", default=[], help="STORE=URL=TOKEN")
    args = parser.parse_args()
    outlets = []
    for spec in args.outlet:
        store, url, token = spec.split("=", 2)
        outlets.append((store, url, token))
    asyncio.run(run(outlets, args.rate))


if __name__ == "__main__":
    main()
