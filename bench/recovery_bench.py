"""A worker's restart on Tansu's S3 storage (``make bench-recovery``).

Pre-loads N sales, packed 50 to a record, into a fresh events topic on a
broker with S3 storage (moto on loopback, as the broker-restart tests use),
lets one worker apply them, then kills it (-9) and starts it again:
``recovery_s`` is the time from the restart until it applies new events.

Most of a restart used to go into finding where each changelog partition
really ends (``app/changelog_ends.py``), one partition after another, each
fetch queued behind the consumer's own long poll (the broker answers a
connection's requests in order). The same read is timed here, with the
worker stopped and this process's consumer long-polling as a worker's does:
as the worker now does it (``exact_ends_s``), one partition at a time as
before (``exact_ends_serial_s``), and the ListOffsets request it starts from
(``list_offsets_s``), whose answers on S3 are short for
``under_reported_partitions`` of the ``partitions``. Both reads must find the
same ends (``ends_agree``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import changelog_ends
from bench.central_bench import (
    applied_at_least,
    make_sales,
    preload,
    run_worker_until,
    worker_env,
)
from bench.common import exit_cleanly_on_sigterm, progress, report
from devstack import DevStack
from devstack.broker import S3_FETCH_MAX_WAIT_MS
from devstack.stack import create_topics
from tables.state import Tables
from tests.helpers import wait_for

TOPIC = "events-recovery"
APP_ID = "bench-recovery"


async def _poll(consumer: AIOKafkaConsumer) -> None:
    while True:
        await consumer.getmany(timeout_ms=1000)


async def time_ends(bootstrap: str, partitions: int) -> dict[str, Any]:
    """ListOffsets, then the exact ends read at once and one partition at a time.

    As in a worker, the consumer meanwhile long-polls a topic with the fetch
    wait of an S3 broker's clients: the broker answers one connection's
    requests in order, so each fetch of the ends waits behind a poll.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=S3_FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    consumer.assign([TopicPartition(TOPIC, p) for p in range(partitions)])
    await consumer.seek_to_end()
    polling = asyncio.create_task(_poll(consumer))
    try:
        # the worker's changelogs: one per table (``tables.state.Tables``), named by Faust
        tps = [
            TopicPartition(f"{APP_ID}-{table.name}-changelog", p)
            for table in dataclasses.fields(Tables)
            for p in range(partitions)
        ]
        t0 = time.monotonic()
        listed = await consumer.end_offsets(tps)
        t1 = time.monotonic()
        exact = await changelog_ends.exact_end_offsets(consumer, tps)
        t2 = time.monotonic()
        serial = await changelog_ends.exact_end_offsets(consumer, tps, concurrency=1)
        t3 = time.monotonic()
    finally:
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)
        await consumer.stop()
    return {
        "partitions": len(tps),
        "under_reported_partitions": sum(exact[tp] > listed[tp] for tp in tps),
        "list_offsets_s": round(t1 - t0, 2),
        "exact_ends_s": round(t2 - t1, 2),
        "exact_ends_serial_s": round(t3 - t2, 2),
        "ends_agree": exact == serial,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--stores", type=int, default=100)
    parser.add_argument("--skus", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    stack = DevStack(tmp / "stack", partitions=args.partitions, persistent=True)
    progress("starting Tansu on S3 (moto) and PostgreSQL")
    stack.start()
    worker = None
    try:
        # one history, in two parts: applied before the kill, and after the restart
        more = max(1000, args.events // 10)
        sales = make_sales(args.events + more, args.stores, args.skus, random.Random(42))
        bootstrap = stack.broker.bootstrap
        asyncio.run(create_topics(bootstrap, {TOPIC: args.partitions}))
        progress(f"pre-loading {args.events} events")
        asyncio.run(preload(bootstrap, TOPIC, sales[: args.events], 50))
        env = worker_env(stack, APP_ID, TOPIC)
        progress("one worker applying")
        rate, _, worker = run_worker_until(env, tmp / "worker", args.events)
        progress(f"{rate:,.0f} events/s; kill -9 and restart")
        worker.kill()
        started = time.monotonic()
        worker.start()
        asyncio.run(preload(bootstrap, TOPIC, sales[args.events :], 50))
        wait_for(partial(applied_at_least, worker.url, 1), timeout=600, what="applying again")
        figures: dict[str, Any] = {
            "events": args.events,
            "recovery_s": round(time.monotonic() - started, 1),
        }
        wait_for(partial(applied_at_least, worker.url, more), timeout=600, what="the new events")
        worker.stop()
        progress(f"restarted in {figures['recovery_s']} s; timing the changelog ends")
        figures |= asyncio.run(time_ends(bootstrap, args.partitions))
        report("recovery", figures)
    finally:
        if worker is not None:
            worker.kill()
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
