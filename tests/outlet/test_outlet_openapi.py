"""schemathesis against the real agent's ``/openapi.json`` (uvicorn, a subprocess).

No input gives a 5xx; every answer matches the document; and the auth, store
and size rules hold over real HTTP: no/bad token 401, another store 403,
oversize 413.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.process import port_answers, wait_until

from .conftest import make_event
from .helpers import AgentProcess

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def live_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, str]]:
    # no broker: the forwarder is off, the API and the log are what is under test
    agent = AgentProcess(
        tmp_path_factory.mktemp("schemathesis"), "127.0.0.1:9", "unused",
        extra_env={"RETAIL_OUTLET_FORWARD": "0"},
    )  # fmt: skip
    token = agent.add_token()
    agent.start()
    try:
        wait_until(lambda: port_answers(agent.port), timeout=30, what="the agent")
        yield agent, token
    finally:
        agent.stop()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_matches_its_document(live_agent: tuple[AgentProcess, str], mode: Any) -> None:
    """Every operation, valid and invalid inputs (schemathesis' pytest plugin does
    not run on pytest 9, so its strategies are driven by hypothesis directly)."""
    agent, token = live_agent
    schema = schemathesis.openapi.from_url(f"{agent.url}/openapi.json")
    auth = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 5
    if mode == GenerationMode.NEGATIVE:  # only operations with inputs can get bad ones
        operations = [op for op in operations if op.path in ("/v1/events", "/v1/stock/{sku}")]
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=auth, checks=CHECKS)

        check()


def test_auth_store_and_size_over_http(live_agent: tuple[AgentProcess, str]) -> None:
    agent, token = live_agent
    url = f"{agent.url}/v1/events"
    good = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=5) as c:
        assert c.post(url, json=make_event()).status_code == 401
        bad = {"Authorization": "Bearer rt_not-a-token"}
        assert c.post(url, json=make_event(), headers=bad).status_code == 401
        assert c.post(url, json=make_event(store_id="S2"), headers=good).status_code == 403
        r = c.post(url, content=b"x" * (2 << 20), headers=good)
        assert r.status_code == 413
        big = make_event(reason="x" * (80 * 1024))
        assert c.post(url, json=big, headers=good).status_code == 413
        assert c.post(url, json=make_event(), headers=good).status_code == 201
