"""Measurement: Tansu's memory storage costs more per fetch as a partition grows.

``python -m devstack.tansu_fetch_cost [--rounds 6] [--per-round 20000]``
starts a Tansu on memory storage, then with aiokafka only, round after round:
produces ``per-round`` records of 700 bytes to one partition (ten per send,
as an outlet agent's small batches), and times 30 fetches of the partition's
last 10 records. It prints one line per round and a JSON summary last.

Why it matters here: at a constant load, the benchmark's lag to the centre
creeps up as the run ages (README, "Simulation, chaos and the benchmark
report"), and a 5-minute outage's backlog drains at half the rate when it
comes 3 minutes later. A broker whose fetch cost grows with the log, on the
two cores the worker shares with it, is enough to do that. Kafka finds a
fetch offset through its offset index, whatever the log's length, so this is
a limit of the embedded broker, not of the system on a real cluster. Its
source says why: Tansu 0.6.0's ``dynostore`` ``fetch`` lists every record
batch object of the partition each time it finds data, so the cost follows
the number of batches (sends), not of records or bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devstack.broker import TansuBroker

TOPIC = "fetch-cost"
VALUE = b"x" * 700
FETCHES = 30


async def _produce(producer: AIOKafkaProducer, n: int) -> float:
    """Produce ``n`` records, ten per send; milliseconds per send."""
    started = time.perf_counter()
    for _ in range(0, n, 10):
        futures = [await producer.send(TOPIC, VALUE, key=b"S1", partition=0) for _ in range(10)]
        await asyncio.gather(*futures)
    return (time.perf_counter() - started) / max(1, n // 10) * 1000


async def _tail_fetch_ms(consumer: AIOKafkaConsumer, tp: TopicPartition) -> float:
    end = (await consumer.end_offsets([tp]))[tp]
    started = time.perf_counter()
    for _ in range(FETCHES):
        consumer.seek(tp, max(0, end - 10))
        await consumer.getmany(tp, timeout_ms=2000)
    return (time.perf_counter() - started) / FETCHES * 1000


async def measure(bootstrap: str, rounds: int, per_round: int) -> list[dict[str, float]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50
    )
    await producer.start()
    await consumer.start()
    rows: list[dict[str, float]] = []
    try:
        tp = TopicPartition(TOPIC, 0)
        total = 0
        for _ in range(rounds):
            send_ms = await _produce(producer, per_round)
            total += per_round
            consumer.assign([tp])
            fetch_ms = await _tail_fetch_ms(consumer, tp)
            rows.append({"records": total, "tail_fetch_ms": round(fetch_ms, 2),
                         "send_ms": round(send_ms, 2)})  # fmt: skip
            sys.stderr.write(
                f"{total:8,d} records: a fetch of the last 10 takes {fetch_ms:6.1f} ms;"
                f" a send of 10, {send_ms:.2f} ms\n"
            )
    finally:
        await producer.stop()
        await consumer.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.tansu_fetch_cost", description=__doc__
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=20_000)
    args = parser.parse_args()
    broker = TansuBroker(Path(tempfile.mkdtemp(prefix="tansu-fetch-")))
    broker.start()
    try:
        rows = asyncio.run(measure(broker.bootstrap, args.rounds, args.per_round))
    finally:
        broker.stop()
    first, last = rows[0], rows[-1]
    summary = {
        "rows": rows,
        "fetch_ms_growth": round(last["tail_fetch_ms"] / max(first["tail_fetch_ms"], 1e-3), 1),
        "records_growth": round(last["records"] / first["records"], 1),
    }
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
