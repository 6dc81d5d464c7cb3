"""The broker out of reach during sales: a cut link, then a broker killed and restarted.

SPEC "What is promised": answered events survive a network outage and a broker
restart that keeps its data; they all arrive, in seq order, once per seq.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devstack.broker import TansuBroker, tansu_binary
from devstack.process import free_port, port_answers, spawn, stop_process, wait_until
from devstack.stack import create_topics

from .helpers import AgentProcess, check_delivery, log_rows, new_topic, read_topic, wait_for
from .tcp_proxy import TcpProxy
from .test_outlet_crash import Terminals, _check_log, _drained

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A Tansu that advertises the proxy's port, so every client goes through the proxy."""
    broker_port, proxy_port = free_port(), free_port()
    url = f"tcp://127.0.0.1:{broker_port}"
    proc: subprocess.Popen[bytes] = spawn(
        [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}",
            "--storage-engine", "memory://tansu/",
        ],
        log_path=tmp_path / "tansu-proxied.log",
    )  # fmt: skip
    try:
        wait_until(lambda: port_answers(broker_port), timeout=30, what="Tansu (proxied)")
        yield broker_port, proxy_port
    finally:
        stop_process(proc)


@pytest.fixture
async def proxy(proxied_broker: tuple[int, int]) -> AsyncIterator[TcpProxy]:
    broker_port, proxy_port = proxied_broker
    p = TcpProxy(broker_port, proxy_port)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


async def _forwarded(agent: AgentProcess, seq: int) -> None:
    async def done() -> bool:
        return bool((await agent.status())["forwarded_seq"] >= seq)

    await wait_for(done, deadline_s=30, what=f"seq {seq} forwarded")


async def test_link_cut_then_restored(tmp_path: Path, proxy: TcpProxy) -> None:
    bootstrap = f"127.0.0.1:{proxy.listen_port}"
    topic = new_topic()
    await create_topics(bootstrap, {topic: 4})
    agent = AgentProcess(
        tmp_path / "agent", bootstrap, topic, extra_env={"RETAIL_LOG_LEVEL": "debug"}
    )
    token = agent.add_token()
    agent.start()
    terminals = Terminals(agent.url, token, pause_s=0.005)
    try:
        await agent.wait_ready()
        load = asyncio.create_task(terminals.run(8))
        await wait_for(lambda: terminals.created >= 100, deadline_s=30, what="sales before the cut")
        await _forwarded(agent, 100)
        proxy.cut()
        cut_at = terminals.created
        await wait_for(
            lambda: terminals.created >= cut_at + 300, deadline_s=30, what="sales during the cut"
        )

        async def disconnected() -> bool:
            st = await agent.status()
            return not st["broker_connected"] and st["backlog"] > 0

        await wait_for(disconnected, deadline_s=30, what="the agent to notice the cut")
        proxy.restore()
        await wait_for(lambda: terminals.created >= cut_at + 400, deadline_s=30, what="sales after")
        terminals.stop()
        await load
        await _drained(agent)
        assert (await agent.status())["broker_connected"]
        rows = _check_log(agent, terminals)
        check_delivery(await read_topic(bootstrap, topic), rows)
    finally:
        terminals.stop()
        agent.stop()


async def test_broker_killed_and_restarted_keeps_everything(tmp_path: Path) -> None:
    broker = TansuBroker(tmp_path / "tansu", persistent=True)
    broker.start()
    agent: AgentProcess | None = None
    terminals: Terminals | None = None
    try:
        topic = new_topic()
        await create_topics(broker.bootstrap, {topic: 4})
        agent = AgentProcess(tmp_path / "agent", broker.bootstrap, topic)
        token = agent.add_token()
        agent.start()
        await agent.wait_ready()
        terminals = Terminals(agent.url, token, pause_s=0.005)
        load = asyncio.create_task(terminals.run(8))
        t = terminals
        await wait_for(lambda: t.created >= 100, deadline_s=30, what="sales before the kill")
        await _forwarded(agent, 50)
        broker.kill()  # kill -9, mid-traffic; S3 storage keeps what it acked
        killed_at = t.created
        await wait_for(
            lambda: t.created >= killed_at + 200, deadline_s=30, what="sales, broker down"
        )
        await asyncio.to_thread(broker.start)  # the same port, the same S3 bucket
        await wait_for(
            lambda: t.created >= killed_at + 300, deadline_s=30, what="sales after restart"
        )
        t.stop()
        await load
        await _drained(agent, deadline_s=60)
        rows = _check_log(agent, t)
        assert len(rows) == len(log_rows(agent.db_path)) >= 300
        check_delivery(await read_topic(broker.bootstrap, topic, deadline_s=15), rows)
    finally:
        if terminals is not None:
            terminals.stop()
        if agent is not None:
            agent.stop()
        broker.close()
