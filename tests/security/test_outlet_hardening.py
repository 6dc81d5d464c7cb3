"""The outlet agent's HTTP hardening (issue 10): store binding, signing, headers, limits.

In-process (httpx on the ASGI app), with the real SQLite log.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from agents.ingest import Source, validate_record
from tests.outlet.conftest import Agent, make_event
from tests.security.keys import centre_settings, key

AgentFactory = Any


def logged_bodies(agent: Agent) -> list[bytes]:
    db = agent.db()
    try:
        return [bytes(r[0]) for r in db.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        db.close()


async def test_terminal_of_store_a_posting_as_store_b_is_403(agent: Agent) -> None:
    r = await agent.post(make_event(store_id="S2"))
    assert r.status_code == 403, r.text
    batch = await agent.post({"events": [make_event(store_id="S2"), make_event(store_id="S9")]})
    assert [item["status"] for item in batch.json()["results"]] == [403, 403]
    assert logged_bodies(agent) == []  # nothing durable, nothing forwarded


async def test_agent_signs_every_event_it_makes_durable(agent_factory: AgentFactory) -> None:
    agent = await agent_factory(signing_key_id="s1-2026", signing_key=SecretStr(key(2)))
    assert (await agent.post(make_event())).status_code == 201
    batch = await agent.post({"events": [make_event(), make_event("receipt", qty=5)]})
    assert batch.status_code == 201
    bodies = logged_bodies(agent)
    assert len(bodies) == 3
    for body in bodies:
        assert orjson.loads(body)["key_id"] == "s1-2026"
        valid, dead = validate_record(body, Source("t", 0, 0, "S1"), centre_settings())
        assert len(valid) == 1 and dead == [], dead
    # a replay sends these bytes again; the same packed, too
    packed = b"[" + b",".join(bodies) + b"]"
    valid, dead = validate_record(packed, Source("t", 0, 1, "S1"), centre_settings())
    assert len(valid) == 3 and dead == []


async def test_agent_refuses_to_start_with_half_a_signing_config(
    agent_factory: AgentFactory,
) -> None:
    from app.signing import SigningConfigError

    with pytest.raises(SigningConfigError):
        await agent_factory(signing_key_id="s1-2026")
    with pytest.raises(SigningConfigError):
        await agent_factory(
            signing_key_id="s1", signing_key=SecretStr(base64.b64encode(b"x").decode())
        )


async def test_security_headers_and_no_cors(agent: Agent) -> None:
    origin = {"Origin": "https://evil.example"}
    for r in (
        await agent.post(make_event(), headers=origin),
        await agent.client.get("/v1/status", headers=origin),
        await agent.client.get("/health"),
        await agent.client.options(
            "/v1/events", headers={**origin, "Access-Control-Request-Method": "POST"}
        ),
    ):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]


async def test_unexpected_error_is_a_generic_500_without_traceback(agent: Agent) -> None:
    async def broken(sku: str) -> dict[str, Any]:
        raise RuntimeError("secret internals: /var/lib/retail/outlet.sqlite")

    agent.app.state.outlet.view.stock = broken
    import httpx

    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=agent.app, raise_app_exceptions=False),
        base_url="http://outlet",
    )
    async with client:
        r = await client.get("/v1/stock/SKU-1", headers=agent.auth)
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error; the outlet agent's log has the details"}
    assert "secret" not in r.text and "Traceback" not in r.text


async def test_rate_limit_answers_429_with_retry_after(agent_factory: AgentFactory) -> None:
    agent = await agent_factory(outlet_rate_limit_per_s=0.5, outlet_rate_burst=3)
    statuses = [(await agent.client.get("/v1/status")).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429, 429]
    r = await agent.client.get("/v1/status")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert (await agent.client.get("/health")).status_code == 200  # liveness never limited


async def test_repeated_bad_tokens_are_braked(agent_factory: AgentFactory) -> None:
    agent = await agent_factory(outlet_auth_failures_per_min=3)
    for _ in range(3):
        r = await agent.client.post(
            "/v1/events", json=make_event(), headers={"Authorization": "Bearer rt_guess"}
        )
        assert r.status_code == 401
    # the address is now refused for the minute, even with a good token
    r = await agent.post(make_event())
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert logged_bodies(agent) == []


async def test_slow_body_is_cut_off_with_408(agent_factory: AgentFactory) -> None:
    agent = await agent_factory(outlet_body_timeout_s=0.3)
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"type": "sa', "more_body": True}
        await asyncio.Event().wait()  # the rest never comes (slow-loris)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"",
        "root_path": "", "client": ("10.0.0.9", 5000), "server": ("outlet", 80),
        "headers": [(b"authorization", f"Bearer {agent.token}".encode()),
                    (b"content-type", b"application/json")],
    }  # fmt: skip
    await asyncio.wait_for(agent.app(scope, receive, send), timeout=5)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 408
