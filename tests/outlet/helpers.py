"""Real processes for the outlet's e2e tests: the agent as a subprocess, a topic reader."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.changelog_ends import records_to_end
from app.schema import Event, decode_record
from devstack.process import Killable, free_port, spawn

ROOT = Path(__file__).resolve().parents[2]
_topics = itertools.count(1)


def new_topic(prefix: str = "outlet-test") -> str:
    return f"{prefix}-{os.getpid()}-{next(_topics)}"


async def wait_for(
    condition: Callable[[], Any], *, deadline_s: float, what: str, interval: float = 0.05
) -> Any:
    """Poll an (async or sync) condition until truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class AgentProcess(Killable):
    """``python -m outlet_agent run`` as a real subprocess, killable with SIGKILL."""

    data_dir: Path
    bootstrap: str
    topic: str
    store_id: str = "S1"
    port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / f"outlet-{self.store_id}.sqlite"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "agent.log"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RETAIL_STORE_ID": self.store_id,
                "RETAIL_DATA_DIR": str(self.data_dir),
                "RETAIL_KAFKA_BROKERS": f"kafka://{self.bootstrap}",
                "RETAIL_EVENTS_TOPIC": self.topic,
                "RETAIL_OUTLET_PORT": str(self.port),
                "RETAIL_CENTRAL_URL": "http://127.0.0.1:9",
                "RETAIL_OUTLET_SEND_TIMEOUT_S": "3",
                "RETAIL_OUTLET_BACKOFF_MAX_S": "0.5",
                # schemathesis sends many bad tokens from one address; the
                # brute-force brake has its own tests (tests/security)
                "RETAIL_OUTLET_AUTH_FAILURES_PER_MIN": "1000000",
                "RETAIL_LOG_LEVEL": "warning",
            }
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "outlet_agent", *args],
            env=self.env(),
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout

    def add_token(self, terminal: str = "T1") -> str:
        return self.cli("tokens", "add", "--terminal", terminal).strip()

    def start(self, **extra_env: str) -> None:
        self.proc = spawn(
            [sys.executable, "-m", "outlet_agent", "run"],
            log_path=self.log_path,
            env=self.env(**extra_env),
            cwd=ROOT,
        )
        self.starts += 1

    async def wait_ready(self, deadline_s: float = 20.0) -> None:
        async def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}; see {self.log_path}")
            try:
                async with httpx.AsyncClient(timeout=0.5) as c:
                    return (await c.get(f"{self.url}/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, deadline_s=deadline_s, what=f"the agent on {self.url}")

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=2.0) as c:
            result: dict[str, Any] = (await c.get(f"{self.url}/v1/status")).json()
            return result


async def read_topic(bootstrap: str, topic: str, *, deadline_s: float = 5.0) -> list[Event]:
    """Every event on the topic, in record order (packed records unpacked)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + deadline_s
        while not parts:
            if time.monotonic() > deadline:
                return []
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Event] = []

        async def read_all() -> None:
            async for msg in records_to_end(consumer, tps):
                for item in decode_record(msg.value):
                    assert isinstance(item, Event), item
                    out.append(item)

        try:
            await asyncio.wait_for(read_all(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"could not read {topic} to its end in {deadline_s}s") from None
        return out
    finally:
        await consumer.stop()


def log_rows(db_path: Path) -> list[tuple[int, str, str]]:
    """(seq, client_txn_id, event_id) of every event in an agent's log."""
    import sqlite3

    db = sqlite3.connect(db_path)
    try:
        rows = db.execute("SELECT seq, client_txn_id, event_id FROM events ORDER BY seq")
        return [(int(s), str(t), str(e)) for s, t, e in rows.fetchall()]
    finally:
        db.close()


def check_delivery(topic_events: list[Event], log: list[tuple[int, str, str]]) -> None:
    """SPEC 'What is promised': every logged seq arrives, in seq order, once per seq.

    A re-send (crash window, retry) may repeat a record, but only with the same
    event_id and seq, so the centre drops it (rule 2).
    """
    by_seq: dict[int, Event] = {}
    first_seen: list[int] = []
    for event in topic_events:
        prior = by_seq.get(event.outlet_seq)
        if prior is None:
            by_seq[event.outlet_seq] = event
            first_seen.append(event.outlet_seq)
        else:
            assert prior.event_id == event.event_id, f"seq {event.outlet_seq} with two event_ids"
            assert prior.content_key() == event.content_key()
    assert first_seen == sorted(first_seen), "records arrived out of seq order"
    expected = {seq: (txn, eid) for seq, txn, eid in log}
    assert set(by_seq) == set(expected), (
        f"missing {sorted(set(expected) - set(by_seq))[:10]}, "
        f"extra {sorted(set(by_seq) - set(expected))[:10]}"
    )
    for seq, (txn, eid) in expected.items():
        assert (by_seq[seq].client_txn_id, by_seq[seq].event_id) == (txn, eid)
