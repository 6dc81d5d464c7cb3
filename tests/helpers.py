"""Test helpers: waiting on conditions with deadlines, worker processes, event factories."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

from devstack.process import Killable, free_port, health_answers, spawn

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def async_wait_for(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = await probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def metric(url: str, name: str) -> float:
    """A value of a Prometheus text page (``{url}/metrics``): a worker's, a sink's."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def make_event(
    store_id: str = "S1",
    seq: int = 1,
    type: str = "sale",
    lines: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid retail.v1 envelope (what the outlet agent forwards)."""
    now = datetime.now(UTC).isoformat()
    event = {
        "event_id": str(uuid.uuid4()),
        "schema": "retail.v1",
        "type": type,
        "store_id": store_id,
        "terminal_id": "T1",
        "outlet_seq": seq,
        "client_txn_id": f"{store_id}-{seq}-{uuid.uuid4().hex[:6]}",
        "occurred_at": now,
        "recorded_at": now,
        "lines": lines if lines is not None else [{"sku": "A", "qty": 1}],
        "ref": None,
        "reason": None,
    }
    event.update(overrides)
    return event


@dataclass
class WorkerProcess(Killable):
    """``faust -A app worker`` as a real process that tests can kill -9 and restart."""

    env: dict[str, str]
    data_dir: Path
    web_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    stop_timeout_s: ClassVar[float] = 15.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"worker-{self.starts}.log"

    def start(self) -> None:
        self.web_port = self.web_port or free_port()
        self.starts += 1
        env = {
            **os.environ,
            **self.env,
            **self.extra_env,
            "RETAIL_DATA_DIR": str(self.data_dir),
            "RETAIL_WEB_PORT": str(self.web_port),
        }
        self.proc = spawn(
            [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "warn"],
            log_path=self.log_path,
            env=env,
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            return health_answers(self.url)

        wait_for(ready, timeout=timeout, what=f"worker on {self.url}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def isolated_app_env(stack: Any) -> dict[str, str]:
    """Environment for one test's central app: its own app id, topics and database.

    The broker and PostgreSQL are shared by the session; a fresh app id,
    events topic and database keep each test's figures its own.
    """
    from devstack.stack import create_database, create_topics

    tag = uuid.uuid4().hex[:8]
    database = f"t_{tag}"
    create_database(stack.postgres, database)
    events_topic = f"events-{tag}"
    asyncio.run(create_topics(stack.broker.bootstrap, {events_topic: stack.partitions}))
    return {
        "RETAIL_KAFKA_BROKERS": stack.kafka_brokers,
        "RETAIL_DATABASE_URL": stack.postgres.url(database),
        "RETAIL_TOPIC_PARTITIONS": str(stack.partitions),
        "RETAIL_APP_ID": f"retail-{tag}",
        "RETAIL_EVENTS_TOPIC": events_topic,
        "RETAIL_DEAD_LETTERS_TOPIC": f"dead-letters-{tag}",
    }
