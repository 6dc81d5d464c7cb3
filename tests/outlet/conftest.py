"""Fixtures for the outlet agent's tests: an in-process app, a fake centre, a real broker."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.broker import TansuBroker
from outlet_agent.api import create_app
from outlet_agent.config import OutletSettings
from outlet_agent.log import open_sync
from outlet_agent.tokens import add_token
from outlet_agent.view import CentralStock, CentralUnavailable

STORE = "S1"
_txn = itertools.count(1)


def make_event(
    type: str = "sale", *, qty: int = 1, sku: str = "SKU-1", **fields: Any
) -> dict[str, Any]:
    """A terminal event body; override any field, ``lines=None`` drops the lines."""
    body: dict[str, Any] = {
        "type": type,
        "client_txn_id": f"txn-{next(_txn)}",
        "occurred_at": "2025-01-02T10:00:00Z",
        "lines": [{"sku": sku, "qty": qty}],
    }
    if type == "adjustment":
        body["reason"] = "damage"
    if type in ("transfer_out", "transfer_in"):
        body["ref"] = "TR-1"
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


class FakeCentral:
    """The centre's stock API, scripted by the test (unit tests only)."""

    def __init__(self) -> None:
        self.stocks: dict[str, CentralStock] = {}
        self.down = False
        self.calls = 0

    async def stock(self, store_id: str, sku: str) -> CentralStock | None:
        self.calls += 1
        if self.down:
            raise CentralUnavailable("fake centre is down")
        return self.stocks.get(sku)

    async def aclose(self) -> None:
        return None


def outlet_settings(data_dir: Path, **overrides: Any) -> OutletSettings:
    values: dict[str, Any] = {
        "store_id": STORE,
        "data_dir": data_dir,
        "outlet_forward": False,
        "outlet_token_cache_s": 0.0,
    }
    values.update(overrides)
    return OutletSettings(**values)


def make_token(settings: OutletSettings, terminal: str = "T1") -> str:
    db = open_sync(settings.outlet_db_path)
    try:
        return add_token(db, terminal)
    finally:
        db.close()


class Agent:
    """An in-process agent: an httpx client on the ASGI app, a token, the log file."""

    def __init__(self, app: Any, client: httpx.AsyncClient, settings: OutletSettings, token: str):
        self.app = app
        self.client = client
        self.settings = settings
        self.token = token
        self.central: FakeCentral = app.state.outlet.central

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def post(self, body: Any, **kw: Any) -> httpx.Response:
        headers = {**self.auth, **kw.pop("headers", {})}
        return await self.client.post("/v1/events", json=body, headers=headers, **kw)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.settings.outlet_db_path)


AgentFactory = Callable[..., Any]


@pytest.fixture
async def agent_factory(tmp_path: Path) -> AsyncIterator[AgentFactory]:
    stack: list[Any] = []

    async def start(**overrides: Any) -> Agent:
        settings = outlet_settings(tmp_path, **overrides)
        token = make_token(settings)
        app = create_app(settings, central=FakeCentral())
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        stack.append(lifespan)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://outlet")
        stack.append(client)
        return Agent(app, client, settings, token)

    yield start
    for item in reversed(stack):
        await item.__aexit__(None, None, None)


@pytest.fixture
async def agent(agent_factory: AgentFactory) -> Agent:
    result: Agent = await agent_factory()
    return result


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A real Tansu broker (memory storage) shared by the e2e tests of this directory."""
    b = TansuBroker(tmp_path_factory.mktemp("tansu"))
    b.start()
    try:
        yield b
    finally:
        b.close()
