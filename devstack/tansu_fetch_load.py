"""Measurement: Tansu's CPU under the benchmark's fetch load, by partition age and layout.

``python -m devstack.tansu_fetch_load [--age 3000] [--seconds 20] [--fetch-wait-ms 50]``
starts a Tansu on memory storage and gives each partition of three topics
``--age`` record batches: ``events`` (8 partitions), ``applied8`` (8) and
``applied1`` (1). Then, twice for each layout of ``applied`` (8 partitions,
then 1), it runs the benchmark's live load for ``--seconds`` and reports the
broker's CPU (cores) over it:

- 50 sends a second to random partitions of ``events`` (a hundred outlets
  posting every 2 s);
- a fetcher of every ``events`` partition, ``--fetch-wait-ms`` a fetch (the
  worker);
- 6 flushes a second to ``applied``, one batch in each of its partitions (a
  worker's groups);
- a fetcher of ``applied``, 250 ms a fetch (``python -m sink run``).

Why: Tansu 0.6.0's ``fetch`` lists every batch a partition ever got each time
it finds data (see ``devstack.tansu_fetch_cost``), so what a run costs the
broker grows with its age, and with how many partitions each fetch finds
data in. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devstack.broker import TansuBroker
from devstack.stack import create_topics
from devstack.tansu_fetch_cost import VALUE

EVENTS, EVENT_PARTITIONS = "events", 8
SENDS_PER_S = 50
FLUSHES_PER_S = 6
SINK_WAIT_MS = 250


async def _age(producer: AIOKafkaProducer, topic: str, partitions: int, batches: int) -> None:
    """``batches`` one-record batches in each partition (one send awaited at a time)."""

    async def fill(partition: int) -> None:
        for _ in range(batches):
            await (await producer.send(topic, VALUE, partition=partition))

    await asyncio.gather(*(fill(p) for p in range(partitions)))


async def _live(
    producer: AIOKafkaProducer, applied: str, partitions: int, stop: asyncio.Event
) -> None:
    async def outlets() -> None:
        while not stop.is_set():
            await producer.send(EVENTS, VALUE * 14, partition=random.randrange(EVENT_PARTITIONS))
            await asyncio.sleep(1 / SENDS_PER_S)

    async def flushes() -> None:
        while not stop.is_set():
            sent = [
                await producer.send(applied, VALUE * 20, partition=p) for p in range(partitions)
            ]
            await asyncio.gather(*sent)
            await asyncio.sleep(1 / FLUSHES_PER_S)

    await asyncio.gather(outlets(), flushes())


async def _fetch(
    bootstrap: str, topic: str, partitions: int, wait_ms: int, stop: asyncio.Event
) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=wait_ms
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    records = 0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            records += sum(len(v) for v in batch.values())
    finally:
        await consumer.stop()
    return records


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _window(
    bootstrap: str, pid: int, applied: str, partitions: int, seconds: float, wait_ms: int
) -> float:
    """The broker's cores over ``seconds`` of the live load, ``applied`` on ``partitions``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(_live(producer, applied, partitions, stop)),
        asyncio.create_task(_fetch(bootstrap, EVENTS, EVENT_PARTITIONS, wait_ms, stop)),
        asyncio.create_task(_fetch(bootstrap, applied, partitions, SINK_WAIT_MS, stop)),
    ]
    try:
        await asyncio.sleep(5)  # every fetcher at the end of its partitions
        broker = psutil.Process(pid)
        cpu0, t0 = _cpu_s(broker), time.monotonic()
        await asyncio.sleep(seconds)
        return (_cpu_s(broker) - cpu0) / (time.monotonic() - t0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await producer.stop()


async def measure(
    bootstrap: str, pid: int, age: int, seconds: float, wait_ms: int
) -> dict[str, list[float]]:
    await create_topics(bootstrap, {EVENTS: EVENT_PARTITIONS, "applied8": 8, "applied1": 1})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for topic, partitions in ((EVENTS, EVENT_PARTITIONS), ("applied8", 8), ("applied1", 1)):
            await _age(producer, topic, partitions, age)
    finally:
        await producer.stop()
    cores: dict[str, list[float]] = {"applied_on_8": [], "applied_on_1": []}
    for _ in range(2):
        for topic, partitions in (("applied8", 8), ("applied1", 1)):
            used = await _window(bootstrap, pid, topic, partitions, seconds, wait_ms)
            cores[f"applied_on_{partitions}"].append(round(used, 3))
            sys.stderr.write(f"age {age}: applied on {partitions}: Tansu {used:.3f} cores\n")
    return cores


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.tansu_fetch_load", description=__doc__
    )
    parser.add_argument("--age", type=int, default=3000, help="batches in each partition first")
    parser.add_argument("--seconds", type=float, default=20.0, help="each measured window")
    parser.add_argument("--fetch-wait-ms", type=int, default=50, help="the events fetcher's wait")
    args = parser.parse_args()
    broker = TansuBroker(Path(tempfile.mkdtemp(prefix="tansu-load-")))
    broker.start()
    try:
        assert broker.proc is not None
        cores = asyncio.run(
            measure(broker.bootstrap, broker.proc.pid, args.age, args.seconds, args.fetch_wait_ms)
        )
    finally:
        broker.stop()
    summary = {"age_batches": args.age, "fetch_wait_ms": args.fetch_wait_ms, "tansu_cores": cores}
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
