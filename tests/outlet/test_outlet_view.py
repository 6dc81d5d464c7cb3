"""The outlet's own stock view (SPEC "The outlet's own view") with a fake centre."""

from __future__ import annotations

from outlet_agent.view import CentralStock

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
