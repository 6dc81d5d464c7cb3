"""Central worker throughput against the raw aiokafka ceiling (``make bench-central``).

Pre-loads N sales (1-5 lines) for 100 stores x 20k SKUs into a fresh events
topic, once one event per record (live traffic) and once packed 50 to a
record (backlog drain), then times one worker applying them to its RocksDB
tables; in the same run a raw aiokafka consumer reads the same records (the
ceiling). The result is checked: the stock changelog, read back to its end,
must equal a reference computed here (``mismatched_keys``). Then the p99 lag
recorded_at -> applied at a steady 1,000 events/s, and the time a worker takes
to apply again after kill -9 (``recovery_s``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.changelog_ends import records_to_end
from bench.common import exit_cleanly_on_sigterm, progress, report
from devstack import DevStack
from devstack.stack import create_topics
from tests.helpers import WorkerProcess, wait_for


def make_sales(n: int, stores: int, skus: int, rng: random.Random) -> list[dict[str, Any]]:
    seqs: dict[str, int] = defaultdict(int)
    out = []
    now = datetime.now(UTC).isoformat()
    for _ in range(n):
        store = f"S{rng.randrange(stores):03d}"
        seqs[store] += 1
        lines = [
            {"sku": f"SKU{rng.randrange(skus):05d}", "qty": rng.randint(1, 3)}
            for _ in range(rng.randint(1, 5))
        ]
        out.append(
            {
                "event_id": str(uuid.uuid4()), "schema": "retail.v1", "type": "sale",
                "store_id": store, "terminal_id": "T1", "outlet_seq": seqs[store],
                "client_txn_id": f"{store}-{seqs[store]}", "occurred_at": now, "recorded_at": now,
                "lines": lines, "ref": None, "reason": None,
            }
        )  # fmt: skip
    return out


def reference(events: list[dict[str, Any]]) -> dict[str, int]:
    stock: dict[str, int] = defaultdict(int)
    for e in events:
        for line in e["lines"]:
            stock[f"{e['store_id']}\x1f{line['sku']}"] -= line["qty"]
    return stock


async def preload(bootstrap: str, topic: str, events: list[dict[str, Any]], pack: int) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20,
        max_request_size=8 << 20,
    )  # fmt: skip
    await producer.start()
    by_store: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_store[e["store_id"]].append(e)
    records = 0
    try:
        pending = []
        for store, evs in by_store.items():
            for i in range(0, len(evs), pack):
                chunk = evs[i : i + pack]
                value = orjson.dumps(chunk if pack > 1 else chunk[0])
                pending.append(await producer.send(topic, value, key=store.encode()))
                records += 1
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return records


async def raw_ceiling(bootstrap: str, topic: str, records: int) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        group_id=f"raw-{uuid.uuid4().hex[:6]}", max_partition_fetch_bytes=8 << 20,
    )  # fmt: skip
    await consumer.start()
    seen = 0
    started = time.monotonic()
    try:
        while seen < records:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for msgs in batch.values():
                for m in msgs:
                    orjson.loads(m.value)
                    seen += 1
    finally:
        await consumer.stop()
    return records / (time.monotonic() - started)


async def read_changelog(bootstrap: str, topic: str) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: dict[str, int] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async for m in records_to_end(consumer, tps):
            if m.value is not None:
                out[orjson.loads(m.key)] = orjson.loads(m.value)["on_hand"]
    finally:
        await consumer.stop()
    return out


def applied_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith("retail_events_applied_total "):
            return float(line.split()[1])
    return 0.0


def applied_at_least(url: str, n: float) -> bool:
    return applied_total(url) >= n


def lag_buckets(url: str) -> list[tuple[float, float]]:
    """The cumulative buckets of retail_apply_lag_seconds: (upper bound, count)."""
    buckets = []
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("retail_apply_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[1])))
    return buckets


def p99_between(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """p99 (bucket upper bound) of the observations made between two scrapes."""
    diff = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = diff[-1][1] if diff else 0
    for le, count in diff:
        if total and count >= 0.99 * total:
            return le
    return float("nan")


def worker_env(stack: DevStack, app_id: str, topic: str) -> dict[str, str]:
    """A benchmark worker's settings: its own app id and events topic, no sink."""
    return {
        **stack.env(), "RETAIL_APP_ID": app_id, "RETAIL_EVENTS_TOPIC": topic,
        "RETAIL_SINK_ENABLED": "false", "RETAIL_LOG_LEVEL": "warning",
    }  # fmt: skip


def sync_answer_s(url: str) -> float:
    """How long ``GET /api/sync`` took to answer (the views share the worker's event loop)."""
    started = time.monotonic()
    httpx.get(f"{url}/api/sync", timeout=60).raise_for_status()
    return time.monotonic() - started


def run_worker_until(
    env: dict[str, str], data_dir: Path, n_events: int
) -> tuple[float, float, WorkerProcess, list[float]]:
    """Start a worker and wait until it applied ``n_events``: its rate, peak RSS,
    and how long ``/api/sync`` took to answer each look meanwhile."""
    worker = WorkerProcess(env=env, data_dir=data_dir)
    worker.start()
    worker.wait_ready(timeout=120)
    assert worker.proc is not None
    proc = psutil.Process(worker.proc.pid)
    peak = 0.0
    first = None
    answers: list[float] = []
    started = time.monotonic()
    while True:
        answers.append(sync_answer_s(worker.url))
        done = applied_total(worker.url)
        peak = max(peak, proc.memory_info().rss / 2**20)
        if done and first is None:
            first = (time.monotonic(), done)
        if done >= n_events:
            break
        if time.monotonic() - started > 1800:
            raise RuntimeError(f"worker applied only {done} of {n_events}")
        time.sleep(0.2)
    t0, d0 = first or (started, 0)
    rate = (n_events - d0) / max(1e-6, time.monotonic() - t0)
    return rate, peak, worker, answers


async def steady_lag(
    bootstrap: str, topic: str, rate: int, seconds: int, stores: int, prefix: str = "L"
) -> None:
    """Sales at a steady rate; ``prefix`` keeps each phase's stores (and seqs) apart."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    rng = random.Random(3)
    seqs: dict[str, int] = defaultdict(lambda: 1_000_000)
    try:
        interval = 1.0 / rate
        next_at = time.monotonic()
        end = next_at + seconds
        while time.monotonic() < end:
            store = f"{prefix}{rng.randrange(stores):03d}"
            seqs[store] += 1
            now = datetime.now(UTC).isoformat()
            event = {
                "event_id": str(uuid.uuid4()), "schema": "retail.v1", "type": "sale",
                "store_id": store, "terminal_id": "T1", "outlet_seq": seqs[store],
                "client_txn_id": uuid.uuid4().hex, "occurred_at": now, "recorded_at": now,
                "lines": [{"sku": f"SKU{rng.randrange(20000):05d}", "qty": 1}],
            }  # fmt: skip
            await producer.send(topic, orjson.dumps(event), key=store.encode())
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", 100_000)))
    parser.add_argument("--stores", type=int, default=100)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--pack", type=int, default=50)
    parser.add_argument("--lag-seconds", type=int, default=20)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="bench-central-"))
    stack = DevStack(tmp / "stack", partitions=8)
    stack.start()
    workers: list[WorkerProcess] = []
    try:
        rng = random.Random(42)
        events = make_sales(args.events, args.stores, args.skus, rng)
        want = reference(events)
        figures: dict[str, Any] = {"events": args.events, "stores": args.stores, "skus": args.skus}
        for mode, pack in (("live", 1), ("packed", args.pack)):
            app_id = f"bench-{mode}"
            topic = f"events-{mode}"
            asyncio.run(create_topics(stack.broker.bootstrap, {topic: 8}))
            progress(f"[{mode}] pre-loading {args.events} events")
            records = asyncio.run(preload(stack.broker.bootstrap, topic, events, pack))
            progress(f"[{mode}] raw aiokafka ceiling over {records} records")
            ceiling_records = asyncio.run(raw_ceiling(stack.broker.bootstrap, topic, records))
            env = worker_env(stack, app_id, topic)
            progress(f"[{mode}] one worker applying")
            rate, peak, worker, answers = run_worker_until(env, tmp / f"worker-{mode}", args.events)
            workers.append(worker)
            answers.sort()
            p50_ms, max_ms = answers[len(answers) // 2] * 1000, answers[-1] * 1000
            progress(
                f"[{mode}] {rate:,.0f} events/s, peak RSS {peak:,.0f} MB; "
                f"/api/sync answered in {p50_ms:,.0f} ms (p50), {max_ms:,.0f} ms (max)"
            )
            figures[f"{mode}_events_per_s"] = round(rate)
            figures[f"{mode}_raw_ceiling_per_s"] = round(ceiling_records * args.events / records)
            figures[f"{mode}_peak_rss_mb"] = round(peak)
            figures[f"{mode}_sync_answer_p50_ms"] = round(p50_ms)
            figures[f"{mode}_sync_answer_max_ms"] = round(max_ms)
            if mode == "packed":
                got = asyncio.run(
                    read_changelog(stack.broker.bootstrap, f"{app_id}-stock-changelog")
                )
                figures["mismatched_keys"] = sum(1 for k, v in want.items() if got.get(k) != v)
                progress(f"[{mode}] steady 1,000 events/s for {args.lag_seconds}s")
                before = lag_buckets(worker.url)
                asyncio.run(steady_lag(stack.broker.bootstrap, topic, 1000, args.lag_seconds, 100))
                target = args.events + int(1000 * args.lag_seconds * 0.99)
                wait_for(
                    partial(applied_at_least, worker.url, target),
                    timeout=120,
                    what="the steady load applied",
                )
                figures["p99_lag_ms_at_1000"] = round(
                    p99_between(before, lag_buckets(worker.url)) * 1000
                )
                progress(f"[{mode}] kill -9 and restart")
                worker.kill()
                t0 = time.monotonic()
                worker.start()
                asyncio.run(steady_lag(stack.broker.bootstrap, topic, 200, 1, 10, prefix="R"))
                wait_for(partial(applied_at_least, worker.url, 1), timeout=300, what="applying")
                figures["recovery_s"] = round(time.monotonic() - t0, 1)
            worker.stop()
        figures["events_per_s"] = figures.pop("packed_events_per_s")
        figures["raw_ceiling_per_s"] = figures.pop("packed_raw_ceiling_per_s")
        figures["ratio"] = round(figures["events_per_s"] / figures["raw_ceiling_per_s"], 4)
        figures["peak_rss_mb"] = max(
            figures.pop("live_peak_rss_mb"), figures.pop("packed_peak_rss_mb")
        )
        report("central", figures)
    finally:
        for w in workers:
            w.kill()
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
