"""The agent as a real subprocess against a real broker, killed at bad moments.

SPEC "What is promised": an event answered 2xx is never lost, and reaches the
topic in seq order, once per seq (a re-send only with the same event_id and seq).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.broker import TansuBroker
from devstack.stack import create_topics

from .conftest import make_event
from .helpers import AgentProcess, check_delivery, log_rows, new_topic, read_topic, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Terminals:
    """Terminals posting sales forever; each retries the same event until answered."""

    url: str
    token: str
    #: seconds each terminal waits between sales (0: as fast as the agent answers)
    pause_s: float = 0.0
    answered: dict[str, int] = field(default_factory=dict)  # client_txn_id -> seq
    created: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def run(self, n: int) -> None:
        await asyncio.gather(*(self._terminal(i) for i in range(n)))

    def stop(self) -> None:
        self._stop.set()

    async def _terminal(self, i: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0, headers=headers) as client:
            while not self._stop.is_set():
                if self.pause_s:
                    await asyncio.sleep(self.pause_s)  # pacing, not synchronisation
                event = make_event(client_txn_id=f"t{i}-{next(self._ids)}")
                while True:  # a terminal keeps its event until the agent answers it
                    try:
                        r = await client.post("/v1/events", json=event)
                    except httpx.HTTPError:
                        r = None
                    if r is not None and r.status_code in (200, 201):
                        self.answered[event["client_txn_id"]] = r.json()["outlet_seq"]
                        self.created += r.status_code == 201
                        break
                    assert r is None or r.status_code == 503, r.text
                    if self._stop.is_set() and r is None:
                        return  # the agent is gone for good; this one was never answered
                    await asyncio.sleep(0.02)


@pytest.fixture
async def agent_proc(tmp_path: Path, broker: TansuBroker) -> AsyncIterator[AgentProcess]:
    topic = new_topic()
    await create_topics(broker.bootstrap, {topic: 4})
    agent = AgentProcess(tmp_path / "agent", broker.bootstrap, topic)
    try:
        yield agent
    finally:
        agent.stop()


async def _drained(agent: AgentProcess, deadline_s: float = 30.0) -> None:
    async def done() -> bool:
        st = await agent.status()
        return bool(st["last_seq"] == st["forwarded_seq"])

    await wait_for(done, deadline_s=deadline_s, what="the agent to forward its whole log")


def _check_log(agent: AgentProcess, terminals: Terminals) -> list[tuple[int, str, str]]:
    rows = log_rows(agent.db_path)
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1)), "seq gap or repeat"
    by_txn = {txn: seq for seq, txn, _ in rows}
    assert len(by_txn) == len(rows), "a client_txn_id logged twice"
    for txn, seq in terminals.answered.items():
        assert by_txn.get(txn) == seq, f"{txn} answered seq {seq}, log has {by_txn.get(txn)}"
    return rows


async def test_forwards_in_order(agent_proc: AgentProcess, broker: TansuBroker) -> None:
    token = agent_proc.add_token()
    agent_proc.start()
    await agent_proc.wait_ready()
    terminals = Terminals(agent_proc.url, token)
    load = asyncio.create_task(terminals.run(8))
    await wait_for(lambda: terminals.created >= 300, deadline_s=30, what="300 sales")
    terminals.stop()
    await load
    await _drained(agent_proc)
    rows = _check_log(agent_proc, terminals)
    check_delivery(await read_topic(broker.bootstrap, agent_proc.topic), rows)


async def test_kill_9_twenty_times_loses_nothing(
    agent_proc: AgentProcess, broker: TansuBroker
) -> None:
    token = agent_proc.add_token()
    agent_proc.start()
    await agent_proc.wait_ready()
    terminals = Terminals(agent_proc.url, token)
    load = asyncio.create_task(terminals.run(16))
    for kill in range(20):
        target = terminals.created + 40
        await wait_for(lambda t=target: terminals.created >= t, deadline_s=30, what=f"kill {kill}")
        agent_proc.kill()  # SIGKILL mid-traffic: groups in flight, forwarder mid-send
        agent_proc.start()
        await agent_proc.wait_ready()
    target = terminals.created + 40
    await wait_for(lambda: terminals.created >= target, deadline_s=30, what="sales after the kills")
    terminals.stop()
    await load
    assert agent_proc.starts == 21
    await _drained(agent_proc)
    rows = _check_log(agent_proc, terminals)
    assert len(rows) >= 20 * 40
    check_delivery(await read_topic(broker.bootstrap, agent_proc.topic), rows)


async def test_crash_between_ack_and_mark_resends_same_ids(
    agent_proc: AgentProcess, broker: TansuBroker
) -> None:
    token = agent_proc.add_token()
    agent_proc.start(RETAIL_OUTLET_CRASH_AFTER_SEND="1", RETAIL_OUTLET_FORWARD="0")
    await agent_proc.wait_ready()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=agent_proc.url, headers=headers) as client:
        answers = [(await client.post("/v1/events", json=make_event())).json() for _ in range(5)]
    assert [a["outlet_seq"] for a in answers] == [1, 2, 3, 4, 5]
    agent_proc.stop()
    # now forward: the hook exits right after the broker's ack, before the mark
    agent_proc.start(RETAIL_OUTLET_CRASH_AFTER_SEND="1")
    assert agent_proc.proc is not None
    await wait_for(lambda: agent_proc.proc.poll() is not None, deadline_s=30, what="the crash hook")
    assert agent_proc.proc.returncode == 70
    first = await read_topic(broker.bootstrap, agent_proc.topic)
    assert [e.outlet_seq for e in first] == [1, 2, 3, 4, 5]
    agent_proc.start()
    await agent_proc.wait_ready()
    await _drained(agent_proc)
    events = await read_topic(broker.bootstrap, agent_proc.topic)
    assert [e.outlet_seq for e in events] == [1, 2, 3, 4, 5] * 2
    assert [e.event_id for e in events[5:]] == [a["event_id"] for a in answers]
    assert [e.event_id for e in events[:5]] == [a["event_id"] for a in answers]


async def _metric(agent: AgentProcess, name: str) -> float:
    async with httpx.AsyncClient(timeout=2.0) as c:
        text = (await c.get(f"{agent.url}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def test_a_backlog_replays_in_pages_of_forward_batch_max(
    agent_proc: AgentProcess, broker: TansuBroker
) -> None:
    """Each page waits for its acknowledgement, so a backlog replays in backlog /
    page round trips: 4,500 events logged while the forwarder was off go in 3
    pages of at most 2,000 (an agent starved of CPU spent seconds on each)."""
    token = agent_proc.add_token()
    agent_proc.start(RETAIL_OUTLET_FORWARD="false")
    await agent_proc.wait_ready()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=agent_proc.url, headers=headers, timeout=30) as c:
        for _ in range(9):
            r = await c.post("/v1/events", json={"events": [make_event() for _ in range(500)]})
            assert r.status_code == 201, r.text
    assert (await agent_proc.status())["backlog"] == 4500
    agent_proc.stop()
    agent_proc.start()
    await agent_proc.wait_ready()
    await _drained(agent_proc)
    assert await _metric(agent_proc, "outlet_forward_pages_total") == 3
    assert await _metric(agent_proc, "outlet_forwarded_events_total") == 4500
    check_delivery(
        await read_topic(broker.bootstrap, agent_proc.topic), log_rows(agent_proc.db_path)
    )
