"""The fetch-wait override reaches the aiokafka consumer Faust builds (pinned internals)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust

from app.consumer_tuning import set_fetch_max_wait


def test_worker_consumer_gets_the_fetch_wait(tmp_path: Path) -> None:
    set_fetch_max_wait(42)

    async def build() -> int:
        app = faust.App(
            "tuning-test", broker="kafka://127.0.0.1:1", store="memory://", datadir=str(tmp_path)
        )
        thread = app.consumer._thread  # the AIOKafkaConsumerThread
        consumer = thread._create_worker_consumer(app.transport)
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(build()) == 42
