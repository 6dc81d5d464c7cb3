"""Every central view gives the same answer whichever of two workers is asked."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.helpers import wait_for
from tests.web.conftest import SKUS, STORES, Cluster

pytestmark = pytest.mark.e2e

#: figures that move with the clock, not with the data
VOLATILE = {"last_event_age_s", "generated_at", "events_per_s", "events_total"}


def stable(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: stable(v) for k, v in data.items() if k not in VOLATILE}
    if isinstance(data, list):
        return [stable(v) for v in data]
    return data


def same_on_both(cluster: Cluster, path: str, **params: Any) -> tuple[int, Any]:
    answers = [cluster.get(i, path, **params) for i in (0, 1)]
    a, b = answers
    assert a.status_code == b.status_code, (path, a.text, b.text)
    assert stable(a.json()) == stable(b.json()), path
    return a.status_code, a.json()


def test_each_worker_owns_some_stores_and_both_answer_for_all(cluster: Cluster) -> None:
    local = [
        {row["store_id"] for row in cluster.get(i, "/api/sync", scope="local").json()["stores"]}
        for i in (0, 1)
    ]
    assert local[0] and local[1], "both workers must own stores, or routing is not exercised"
    assert not local[0] & local[1]
    assert local[0] | local[1] >= set(STORES)

    status, sync = same_on_both(cluster, "/api/sync")
    assert status == 200 and not sync["partial"] and sync["workers"] == 2
    rows = {row["store_id"]: row for row in sync["stores"]}
    assert rows["S001"]["duplicates"] == 1
    assert rows["S002"]["gaps"] == [[3, 3]] and rows["S002"]["behind"]
    assert rows["S010"]["applied_seq"] == 2 and rows["S010"]["lag_p99_ms"] is not None


def test_stock_views_agree_and_are_right(cluster: Cluster) -> None:
    for store in STORES[:20]:
        for sku in SKUS:
            status, body = same_on_both(cluster, f"/api/stores/{store}/stock/{sku}")
            assert status == 200
            assert body["on_hand"] == cluster.expected[(store, sku)], (store, sku)
            assert body["available"] == body["on_hand"] - body["reserved"]
            assert {"applied_seq", "applied_above"} <= set(body)
        status, sync = same_on_both(cluster, f"/api/stores/{store}/sync")
        assert status == 200 and sync["store_id"] == store

    def sku_everywhere() -> bool:
        r = cluster.get(0, "/api/skus/SKU-01/stock")
        if r.status_code != 200:
            return False
        seen = {row["store_id"] for row in r.json()["stores"]}
        # other tests add stores selling SKU-01: all of ours, and all it knows of
        return seen >= set(STORES) and all((s, "SKU-01") in cluster.expected for s in seen)

    wait_for(sku_everywhere, timeout=30, what="SKU-01 totals from every store")
    status, body = same_on_both(cluster, "/api/skus/SKU-01/stock")
    assert status == 200
    for row in body["stores"]:
        assert row["on_hand"] == cluster.expected[(row["store_id"], "SKU-01")], row
    assert body["total_on_hand"] == sum(row["on_hand"] for row in body["stores"])


def test_store_stock_pages_walk_every_sku_once(cluster: Cluster) -> None:
    store = "S050"
    skus = [f"P-{i:03d}" for i in range(23)]
    cluster.produce([cluster.event(store, "receipt", [{"sku": s, "qty": 1} for s in skus])])
    cluster.wait_applied(store, cluster.seqs[store])
    for worker in (0, 1):
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 7}
            if cursor:
                params["cursor"] = cursor
            r = cluster.get(worker, f"/api/stores/{store}/stock", **params)
            assert r.status_code == 200, r.text
            page = r.json()
            seen += [item["sku"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted([*skus, *SKUS]) and len(seen) == len(set(seen))
        assert pages == 4  # 28 SKUs, 7 a page
    same_on_both(cluster, f"/api/stores/{store}/stock", limit=5)


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/stores/S001/stock", {"limit": "0"}, 400),
        ("/api/stores/S001/stock", {"limit": "x"}, 400),
        ("/api/stores/S001/stock", {"limit": "5000"}, 400),
        ("/api/stores/S001/stock", {"cursor": "!!!"}, 400),
        ("/api/stores/NOPE/stock", {}, 404),
        ("/api/stores/NOPE/sync", {}, 404),
        ("/api/skus/NOPE/stock", {}, 404),
        ("/api/alerts", {"kind": "odd"}, 400),
        ("/api/dead-letters", {"limit": "-1"}, 400),
        ("/api/dead-letters", {"kind": "zzz"}, 400),
        ("/api/sync", {"scope": "everything"}, 400),
    ],
)
def test_bad_input_is_a_clear_4xx_on_both(
    cluster: Cluster, path: str, params: dict[str, str], status: int
) -> None:
    got, body = same_on_both(cluster, path, **params)
    assert got == status
    assert body["error"] and body["detail"]


def test_alerts_dead_letters_and_dashboard_agree(cluster: Cluster) -> None:
    def negative_alert() -> bool:
        alerts = cluster.get(0, "/api/alerts").json()["alerts"]
        return any(a["store_id"] == "S003" and a["kind"] == "negative" for a in alerts)

    wait_for(negative_alert, timeout=30, what="negative alert for S003")
    status, alerts = same_on_both(cluster, "/api/alerts")
    assert status == 200 and not alerts["partial"]
    status, dead = same_on_both(cluster, "/api/dead-letters")
    assert status == 200 and dead["total"] >= 1
    assert any("unknown schema" in " ".join(d["reasons"]) for d in dead["dead_letters"])

    started = time.perf_counter()
    status, dash = same_on_both(cluster, "/api/dashboard")
    elapsed = time.perf_counter() - started
    assert status == 200
    assert dash["totals"]["stores"] >= len(STORES)
    assert dash["totals"]["duplicates"] >= 1 and dash["totals"]["missing"] >= 1
    assert dash["totals"]["dead_letters"] >= 1 and dash["totals"]["alerts_negative"] >= 1
    assert sum(p["events"] for p in dash["sales_per_minute"]) >= len(STORES)
    assert elapsed < 2.0, f"two dashboard summaries of 100 stores took {elapsed:.2f}s"


def test_dashboard_headers_and_no_cors(cluster: Cluster) -> None:
    page = httpx.get(cluster.workers[1].url + "/", headers={"Origin": "http://evil.example"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in page.headers
    api = httpx.get(cluster.workers[1].url + "/api/sync", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in api.headers
    for asset in ("/dashboard.js", "/dashboard.css"):
        assert httpx.get(cluster.workers[0].url + asset).status_code == 200


def test_openapi_lists_exactly_the_routes_served(cluster: Cluster) -> None:
    doc = cluster.get(0, "/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    expected = {
        "/api/stores/{store_id}/stock/{sku}": {"get"},
        "/api/stores/{store_id}/stock": {"get"},
        "/api/skus/{sku}/stock": {"get"},
        "/api/stores/{store_id}/sync": {"get"},
        "/api/sync": {"get"},
        "/api/stores/{store_id}/reservations": {"post"},
        "/api/stores/{store_id}/reservations/{order_id}": {"delete"},
        "/api/alerts": {"get"},
        "/api/dead-letters": {"get"},
        "/api/dashboard": {"get"},
        "/api/openapi.json": {"get"},
        "/": {"get"},
        "/dashboard.js": {"get"},
        "/dashboard.css": {"get"},
    }
    assert {p: set(ops) for p, ops in doc["paths"].items()} == expected
    # and every documented operation is really served (not a 404/405 from the router)
    for path, ops in expected.items():
        concrete = path.format(store_id="S001", sku="SKU-01", order_id="none")
        for method in ops:
            r = httpx.request(
                method.upper(), cluster.workers[0].url + concrete, json={}, timeout=15
            )
            assert r.status_code not in (404, 405) or r.json().get("error"), (method, path)
