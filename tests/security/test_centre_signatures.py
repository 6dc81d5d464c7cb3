"""End to end (issue 10): a signing outlet agent, a worker that requires signatures.

The outlet agent runs in-process and forwards to the real broker; the worker is a
real ``faust worker`` process with ``RETAIL_REQUIRE_SIGNATURES=true``. Forged,
unknown-key, other-store-key, unsigned and altered-replay records are produced
straight onto the events topic (what a network attacker or a compromised outlet
could do): each becomes a ``signature`` dead letter with its reason, and the
stock shows only the outlet's genuine events. The central API's hardening is
checked on the same worker.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from app.signing import Signer
from devstack import DevStack
from outlet_agent.api import create_app
from tests.conftest import produce
from tests.helpers import WorkerProcess, make_event, wait_for
from tests.outlet.conftest import FakeCentral, make_token, outlet_settings
from tests.outlet.conftest import make_event as terminal_event
from tests.security.keys import RING, key

pytestmark = pytest.mark.e2e


@pytest.fixture
def signing_worker(app_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(
        env=app_env,
        data_dir=tmp_path / "worker",
        extra_env={"RETAIL_SIGNING_KEYS": RING, "RETAIL_REQUIRE_SIGNATURES": "true"},
    )
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def stock(worker: WorkerProcess, sku: str) -> dict[str, Any] | None:
    r = httpx.get(f"{worker.url}/api/stores/S1/stock/{sku}", timeout=5)
    return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]


def signature_letters(worker: WorkerProcess) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{worker.url}/api/dead-letters", params={"kind": "signature", "limit": 100}, timeout=5
    )
    r.raise_for_status()
    return r.json()["dead_letters"]  # type: ignore[no-any-return]


def signed(signer: Signer, **fields: Any) -> dict[str, Any]:
    event = make_event("S1", **fields)
    return signer.sign(event)


async def run_outlet(
    settings: Any, token: str, body_batches: list[list[dict[str, Any]]]
) -> list[bytes]:
    """Post batches through the agent, wait until forwarded; the logged (signed) bodies."""
    app = create_app(settings, central=FakeCentral())
    auth = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://o") as client:
            for batch in body_batches:
                r = await client.post("/v1/events", json={"events": batch}, headers=auth)
                assert r.status_code == 201, r.text
            outlet = app.state.outlet
            deadline = asyncio.get_running_loop().time() + 30
            while outlet.log.forwarded_seq < outlet.log.last_seq:
                assert asyncio.get_running_loop().time() < deadline, "outlet never forwarded"
                await asyncio.sleep(0.05)
            page = await outlet.log.read_page(0, 100)
    return [r.body for r in page]


def test_only_genuine_signed_events_change_stock(
    stack: DevStack, app_env: dict[str, str], signing_worker: WorkerProcess, tmp_path: Path
) -> None:
    worker = signing_worker
    topic = app_env["RETAIL_EVENTS_TOPIC"]
    settings = outlet_settings(
        tmp_path / "outlet",
        kafka_brokers=stack.kafka_brokers,
        events_topic=topic,
        outlet_forward=True,
        signing_key_id="s1-2026",
        signing_key=SecretStr(key(2)),
    )
    token = make_token(settings)
    # 1. the genuine outlet: a receipt of 10 and a sale of 2 (seqs 1, 2)
    bodies = asyncio.run(
        run_outlet(
            settings,
            token,
            [[terminal_event("receipt", qty=10, sku="A"), terminal_event("sale", qty=2, sku="A")]],
        )
    )
    wait_for(lambda: (s := stock(worker, "A")) and s["applied_seq"] == 2, timeout=60,
             what="the outlet's signed events applied")  # fmt: skip
    assert stock(worker, "A")["on_hand"] == 8  # type: ignore[index]

    # 2. what an attacker puts on the topic for store S1
    forger = Signer("s1-2026", b"a guess at the key, 32 bytes ...")
    stranger = Signer("s9-0000", base64.urlsafe_b64decode(key(9) + "="))
    other_store = Signer("s2-2025", base64.urlsafe_b64decode(key(3) + "="))  # S2's real key
    altered = orjson.loads(bodies[1])
    altered["lines"] = [{"sku": "A", "qty": 9}]  # the sale, replayed with other lines
    altered_new_seq = {**orjson.loads(bodies[0]), "outlet_seq": 5}  # a receipt, re-sequenced
    attacks = {
        "forged": signed(forger, seq=3, type="receipt", lines=[{"sku": "A", "qty": 100}]),
        "unknown key": signed(stranger, seq=3, type="receipt", lines=[{"sku": "A", "qty": 100}]),
        "other store": signed(other_store, seq=3, type="receipt", lines=[{"sku": "A", "qty": 1}]),
        "unsigned": make_event("S1", 4, "receipt", [{"sku": "A", "qty": 100}]),
        "altered replay": altered,
        "altered seq": altered_new_seq,
    }
    asyncio.run(produce(stack.broker.bootstrap, topic, list(attacks.values())))

    # 3. the genuine outlet again (seq 3): it was processed after the attacks
    asyncio.run(run_outlet(settings, token, [[terminal_event("sale", qty=1, sku="A")]]))
    wait_for(lambda: (s := stock(worker, "A")) and s["applied_seq"] == 3, timeout=60,
             what="seq 3 applied")  # fmt: skip
    letters = wait_for(
        lambda: (found := signature_letters(worker)) and len(found) >= len(attacks) and found,
        timeout=30,
        what="a signature dead letter per attack",
    )
    assert stock(worker, "A")["on_hand"] == 7  # type: ignore[index]  # 10 - 2 - 1, nothing else
    reasons = sorted(r for letter in letters for r in letter["reasons"])
    assert len(letters) == len(attacks), reasons
    joined = "\n".join(reasons)
    assert joined.count("does not match") == 3  # forged, altered replay, altered seq
    assert "unknown key id 's9-0000'" in joined
    assert "belongs to store 'S2'" in joined
    assert "unsigned event" in joined

    # the central API's hardening, on the same worker
    r = httpx.get(f"{worker.url}/api/stores/S1/stock/A", headers={"Origin": "https://evil.example"})
    assert r.headers["x-content-type-options"] == "nosniff"
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    page = httpx.get(f"{worker.url}/", timeout=5)
    assert "default-src" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    big = httpx.post(
        f"{worker.url}/api/stores/S1/reservations", content=b"{" + b" " * (2 << 20) + b"}",
        headers={"Content-Type": "application/json"}, timeout=10,
    )  # fmt: skip
    assert big.status_code == 413, big.text  # aiohttp client_max_size (1 MiB)
    bad = httpx.post(f"{worker.url}/api/stores/S1/reservations", content=b"{not json", timeout=5)
    assert bad.status_code == 400 and "Traceback" not in bad.text
