"""The standalone sink fetches on its own, longer wait; an S3 broker's clients get theirs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.settings import Settings
from devstack.broker import S3_FETCH_MAX_WAIT_MS, TansuBroker
from sink.service import SINK_PARTITION_FETCH_BYTES, make_consumer


def _fetch_wait(settings: Settings) -> int:
    async def build() -> int:
        consumer = make_consumer(settings)
        return int(consumer._fetch_max_wait_ms)

    return asyncio.run(build())


def test_the_sink_waits_longer_than_the_worker_by_default() -> None:
    settings = Settings()
    assert _fetch_wait(settings) == settings.sink_fetch_max_wait_ms == 250
    assert settings.consumer_fetch_max_wait_ms < settings.sink_fetch_max_wait_ms


def test_the_sink_fetch_wait_is_a_setting() -> None:
    assert _fetch_wait(Settings(sink_fetch_max_wait_ms=40)) == 40


def test_an_s3_broker_gives_the_sink_its_long_fetch_wait_too(tmp_path: Path) -> None:
    env = TansuBroker(data_dir=tmp_path, persistent=True).client_env()
    assert env["RETAIL_SINK_FETCH_MAX_WAIT_MS"] == str(S3_FETCH_MAX_WAIT_MS)
    assert env["RETAIL_CONSUMER_FETCH_MAX_WAIT_MS"] == str(S3_FETCH_MAX_WAIT_MS)
    assert TansuBroker(data_dir=tmp_path).client_env() == {"RETAIL_APPLIED_PARTITIONS": "1"}


def test_the_applied_topic_follows_the_events_topic_unless_set() -> None:
    assert Settings(topic_partitions=6).applied_topic_partitions == 6
    assert Settings(topic_partitions=6, applied_partitions=1).applied_topic_partitions == 1


def test_the_sink_fetches_a_whole_backlog_of_one_partition() -> None:
    async def build() -> int:
        return int(make_consumer(Settings())._max_partition_fetch_bytes)

    assert asyncio.run(build()) == SINK_PARTITION_FETCH_BYTES > 1 << 20
