"""The outlet's own stock view (SPEC "The outlet's own view") with a fake centre."""

from __future__ import annotations

from aiohttp import web

from outlet_agent.view import CentralStock, HttpCentralClient

from .conftest import Agent, make_event


async def _stock(agent: Agent, sku: str) -> dict[str, object]:
    r = await agent.client.get(f"/v1/stock/{sku}")
    assert r.status_code == 200
    result: dict[str, object] = r.json()
    return result


async def test_central_plus_local_events_after_its_seq(agent: Agent) -> None:
    for event in (
        make_event("receipt", sku="A", qty=10),  # 1
        make_event("sale", sku="A", qty=2),  # 2
        make_event("sale", sku="B", qty=1),  # 3
        make_event("adjustment", sku="A", qty=-1),  # 4
        make_event("return", sku="A", qty=1),  # 5
    ):
        assert (await agent.post(event)).status_code == 201
    # the centre applied 1..2 and 4 (past a gap at 3): on_hand there 10-2-1
    agent.central.stocks["A"] = CentralStock(on_hand=7, applied_seq=2, applied_above=frozenset({4}))
    view = await _stock(agent, "A")
    assert view == {
        "store_id": "S1", "sku": "A", "on_hand": 8, "central_seq": 2, "pending": 1,
        "source": "central",
    }  # fmt: skip


async def test_offline_uses_cache_then_local_log(agent: Agent) -> None:
    await agent.post(make_event("receipt", sku="A", qty=10))  # 1
    agent.central.stocks["A"] = CentralStock(on_hand=10, applied_seq=1)
    assert (await _stock(agent, "A"))["on_hand"] == 10
    await agent.post(make_event("sale", sku="A", qty=3))  # 2
    await agent.post(make_event("receipt", sku="Z", qty=4))  # 3
    agent.central.down = True
    cached = await _stock(agent, "A")
    assert (cached["on_hand"], cached["source"], cached["pending"]) == (7, "cached", 1)
    local = await _stock(agent, "Z")
    assert (local["on_hand"], local["source"], local["central_seq"]) == (4, "local", 0)


async def test_count_sets_then_later_deltas_apply(agent: Agent) -> None:
    await agent.post(make_event("sale", sku="C", qty=5))  # 1
    await agent.post(make_event("count", sku="C", qty=20))  # 2
    await agent.post(make_event("sale", sku="C", qty=2))  # 3
    await agent.post(make_event("transfer_out", sku="C", qty=1))  # 4
    await agent.post(make_event("transfer_in", sku="C", qty=4))  # 5
    agent.central.stocks["C"] = CentralStock(on_hand=-5, applied_seq=1)
    view = await _stock(agent, "C")
    assert (view["on_hand"], view["pending"]) == (21, 4)
    agent.central.stocks.clear()  # the centre has no record: the local log alone
    assert (await _stock(agent, "C"))["on_hand"] == 21


async def test_the_centre_is_asked_about_exactly_this_sku() -> None:
    """A sku may hold "/", "?" or "#": the centre (aiohttp, as Faust's web server)
    must be asked about that sku, not a prefix of it (the view once showed
    SKU-0009's stock for "SKU-0009?x=1")."""
    asked: list[tuple[str, str]] = []

    async def item(request: web.Request) -> web.Response:
        asked.append((request.match_info["store_id"], request.match_info["sku"]))
        return web.json_response({"on_hand": 5, "applied_seq": 3, "applied_above": []})

    centre = web.Application()
    centre.router.add_get("/api/stores/{store_id}/stock/{sku}", item)
    runner = web.AppRunner(centre)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = HttpCentralClient(f"http://127.0.0.1:{port}")
    skus = ("Q25439?v=2", "A/B", "C#1", "D%41", "E F", "é")
    try:
        for sku in skus:
            assert await client.stock("S 1", sku) == CentralStock(on_hand=5, applied_seq=3)
    finally:
        await client.aclose()
        await runner.cleanup()
    assert asked == [("S 1", sku) for sku in skus]


async def test_a_sku_no_line_could_hold_is_422_not_a_server_error(agent: Agent) -> None:
    for raw in ("%01", "%00", "%7F", "a%00b", "%20%20"):
        r = await agent.client.get(f"/v1/stock/{raw}")
        assert r.status_code == 422, (raw, r.status_code, r.text)
        assert "sku" in r.json()["reasons"][0]
