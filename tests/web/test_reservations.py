"""Reservations: two concurrent requests for the last unit, one to each worker: one 201."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.helpers import wait_for
from tests.web.conftest import Cluster

pytestmark = pytest.mark.e2e


def _store_with_one_unit(cluster: Cluster, sku: str) -> str:
    store = f"R-{uuid.uuid4().hex[:6]}"
    cluster.produce([cluster.event(store, "receipt", [{"sku": sku, "qty": 1}])])
    cluster.wait_applied(store, 1)
    return store


async def _race(cluster: Cluster, store: str, sku: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(
                        f"{w.url}/api/stores/{store}/reservations",
                        json={"sku": sku, "qty": 1, "order_id": f"order-{i}", "ttl_s": 60},
                    )
                    for i, w in enumerate(cluster.workers)
                )
            )
        )


def test_two_requests_for_the_last_unit_exactly_one_granted(cluster: Cluster) -> None:
    sku = "LAST-1"
    for _ in range(3):  # three fresh stores: land on either owner, race from both sides
        store = _store_with_one_unit(cluster, sku)
        answers = asyncio.run(_race(cluster, store, sku))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [201, 409], [r.text for r in answers]
        granted = next(r.json() for r in answers if r.status_code == 201)
        refused = next(r.json() for r in answers if r.status_code == 409)
        assert granted["granted"] is True and refused["granted"] is False
        assert refused["available"] == 0

        for i in (0, 1):  # both workers show the reservation
            body = cluster.get(i, f"/api/stores/{store}/stock/{sku}").json()
            assert (body["on_hand"], body["reserved"], body["available"]) == (1, 1, 0)

        order = granted["order_id"]
        released = httpx.delete(
            f"{cluster.workers[1].url}/api/stores/{store}/reservations/{order}", timeout=30
        )
        assert released.status_code == 200 and released.json()["released"] is True
        again = httpx.delete(
            f"{cluster.workers[0].url}/api/stores/{store}/reservations/{order}", timeout=30
        )
        assert again.status_code == 404

        def available(store: str = store) -> bool:
            body = cluster.get(0, f"/api/stores/{store}/stock/{sku}").json()
            return bool(body["available"] == 1)

        wait_for(available, timeout=10, what="the unit available again")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"sku": "A", "qty": 0, "order_id": "o"}',
        b'{"sku": "A", "qty": true, "order_id": "o"}',
        b'{"sku": "", "qty": 1, "order_id": "o"}',
        b'{"sku": "A", "qty": 1}',
        b'{"sku": "A", "qty": 1, "order_id": "o", "ttl_s": -5}',
        b'{"sku": "A", "qty": 1, "order_id": "o", "ttl_s": "soon"}',
    ],
)
def test_bad_reservation_bodies_are_400(cluster: Cluster, body: bytes) -> None:
    for w in cluster.workers:
        r = httpx.post(f"{w.url}/api/stores/S001/reservations", content=body, timeout=10)
        assert r.status_code == 400, r.text
        assert r.json()["detail"]


def test_reservation_at_store_without_stock_is_refused(cluster: Cluster) -> None:
    """No events yet means no stock: decided and refused with available 0, not a 404."""
    r = httpx.post(
        f"{cluster.workers[0].url}/api/stores/NOPE/reservations",
        json={"sku": "A", "qty": 1, "order_id": "o", "ttl_s": 60},
        timeout=20,
    )
    assert r.status_code == 409, r.text
    assert r.json()["available"] == 0


def test_tiny_ttl_is_decided_not_timed_out(cluster: Cluster) -> None:
    """A TTL of 10 us is positive: it rounds up to 1 ms instead of an invalid 0 (found by schemathesis)."""
    r = httpx.post(
        f"{cluster.workers[0].url}/api/stores/TINY/reservations",
        json={"sku": "A", "qty": 1, "order_id": "tiny", "ttl_s": 1e-05},
        timeout=20,
    )
    assert r.status_code == 409, r.text
