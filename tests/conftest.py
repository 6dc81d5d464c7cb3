"""Session fixtures: the real embedded stack (Tansu + PostgreSQL), started by the project."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from devstack import DevStack
from tests.helpers import WorkerProcess, isolated_app_env


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """One broker (memory storage) and one PostgreSQL for the whole session."""
    devstack = DevStack(tmp_path_factory.mktemp("stack"), partitions=4)
    devstack.start()
    try:
        yield devstack
    finally:
        devstack.stop()


@pytest.fixture
def app_env(stack: DevStack) -> dict[str, str]:
    """Environment for one test's central app (see ``isolated_app_env``)."""
    return isolated_app_env(stack)


@pytest.fixture
def worker(app_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(env=app_env, data_dir=tmp_path / "worker1")
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


async def produce(bootstrap: str, topic: str, events: list[Any]) -> None:
    """Send events to the events topic keyed by store_id, like the outlet forwarder."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            if isinstance(event, (bytes, bytearray)):
                await producer.send_and_wait(topic, bytes(event), key=b"S1")
                continue
            key = (event[0] if isinstance(event, list) else event)["store_id"].encode()
            await producer.send_and_wait(topic, orjson.dumps(event), key=key)
    finally:
        await producer.stop()
