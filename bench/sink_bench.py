"""Postgres sink benchmark (issue 7): ``python -m bench.sink_bench`` (``make bench-sink``).

Starts its own embedded stack (Tansu + PostgreSQL 18, fsync on).

- ``rows_per_s``: ledger + stock_levels rows/s through ``sink.writer.write_batch``
  (one transaction per batch: COPY into temp tables, ``INSERT … ON CONFLICT``
  into the indexed tables, ver-guarded stock upsert, sink_offsets). Batches are
  shaped like the apply agent's output: one record per store, a few ledger
  lines per event, one stock snapshot per touched key, progress and sales.
- ``raw_ceiling_rows_per_s``: the same rows with plain asyncpg COPY into
  unindexed tables, one transaction per batch, in the same run; ``ratio`` =
  rows_per_s / raw_ceiling_rows_per_s.
- ``p99_commit_lag_ms_at_1000``: a real ``faust -A app worker`` fed a steady
  1,000 events/s; p99 of ``committed_at - recorded_at`` over the ledger rows
  (recorded_at is stamped when the event is produced, as the outlet agent does).

The last line printed is one JSON object, also written to bench/results/sink.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from devstack.process import free_port, spawn, stop_process, wait_until
from devstack.stack import DevStack, create_topics
from sink.migrate import migrate
from sink.writer import LEDGER_COLUMNS, STOCK_COLUMNS, SinkRecord, ensure_temp_tables, write_batch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "sink.json"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_batches(
    n_batches: int, *, stores: int, events_per_store: int, skus: int, seed: int = 1
) -> list[list[SinkRecord]]:
    """Apply-agent-shaped records: per batch, one record per store."""
    rng = random.Random(seed)
    seq = dict.fromkeys(range(stores), 0)
    ver: dict[tuple[int, str], int] = {}
    batches = []
    offset = 0
    for _ in range(n_batches):
        records = []
        for s in range(stores):
            store = f"B{s:03d}"
            now = time.time()
            iso = datetime.now(UTC).isoformat()
            ledger, touched = [], {}
            for _ in range(events_per_store):
                seq[s] += 1
                event_id = str(uuid.uuid4())
                for line_no in range(rng.randint(1, 3)):
                    sku = f"SKU-{rng.randrange(skus):05d}"
                    ledger.append({
                        "store_id": store, "outlet_seq": seq[s], "line_no": line_no,
                        "event_id": event_id, "type": "sale", "sku": sku, "qty": -1,
                        "effect": "delta", "unit_price_cents": 250, "occurred_at": iso,
                        "recorded_at": iso, "applied_at": now, "sent_at": now,
                        "reason": None, "ref": None,
                    })  # fmt: skip
                    ver[(s, sku)] = ver.get((s, sku), 0) + 1
                    touched[sku] = ver[(s, sku)]
            stock = [
                {"store_id": store, "sku": sku, "on_hand": -v, "reserved": 0,
                 "applied_seq": seq[s], "ver": v, "updated_at": now}
                for sku, v in touched.items()
            ]  # fmt: skip
            progress = {
                "store_id": store, "applied_seq": seq[s], "highest_seq": seq[s], "gaps": [],
                "missing": 0, "duplicates": 0, "conflicts": 0, "events": seq[s],
                "last_recorded_at": now, "lag_p50_ms": 50.0, "lag_p99_ms": 90.0,
            }  # fmt: skip
            sales = [{"store_id": store, "minute": iso[:16] + ":00+00:00", "units": seq[s],
                      "revenue_cents": 250 * seq[s], "events": seq[s]}]  # fmt: skip
            value = {"store_id": store, "ledger": ledger, "stock": stock, "sales": sales,
                     "progress": progress, "sent_at": now}  # fmt: skip
            records.append(SinkRecord("bench.applied", s % 8, offset, value))
            offset += 1
        batches.append(records)
    return batches


def _rows(batch: list[SinkRecord]) -> tuple[int, int]:
    return (
        sum(len(r.value["ledger"]) for r in batch),
        sum(len(r.value["stock"]) for r in batch),
    )


async def throughput(dsn: str, batches: list[list[SinkRecord]]) -> tuple[float, float]:
    """(write_batch rows/s, raw COPY rows/s) for the same rows."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET ROLE retail_sink")
        await ensure_temp_tables(conn)
        await write_batch(conn, batches[0])  # warm-up: plans, temp tables, first keys
        rows, started = 0, time.perf_counter()
        for batch in batches[1:]:
            result = await write_batch(conn, batch)
            ledger, _ = _rows(batch)
            assert result.ledger_rows == ledger, (result.ledger_rows, ledger)
            rows += result.ledger_rows + result.stock_rows
        sink_rate = rows / (time.perf_counter() - started)
        await conn.execute("RESET ROLE")

        # ceiling: the same tuples, COPY into tables with no index, no conflict checks
        await conn.execute(
            "CREATE TABLE raw_ledger (LIKE ledger INCLUDING DEFAULTS);"
            "CREATE TABLE raw_stock (LIKE stock_levels INCLUDING DEFAULTS)"
        )
        prepared = []
        for batch in batches[1:]:
            ledger_t = [tuple(_conv(row[c]) for c in LEDGER_COLUMNS)
                        for r in batch for row in r.value["ledger"]]  # fmt: skip
            stock_t = [tuple(_conv(s[c]) for c in STOCK_COLUMNS)
                       for r in batch for s in r.value["stock"]]  # fmt: skip
            prepared.append((ledger_t, stock_t))
        raw_rows, started = 0, time.perf_counter()
        for ledger_t, stock_t in prepared:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "raw_ledger", records=ledger_t, columns=LEDGER_COLUMNS
                )
                await conn.copy_records_to_table(
                    "raw_stock", records=stock_t, columns=STOCK_COLUMNS
                )
            raw_rows += len(ledger_t) + len(stock_t)
        raw_rate = raw_rows / (time.perf_counter() - started)
    finally:
        await conn.close()
    return sink_rate, raw_rate


def _conv(value: Any) -> Any:
    if isinstance(value, float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and len(value) > 20 and value[4] == "-" and "T" in value:
        return datetime.fromisoformat(value)
    return value


async def steady_load(
    bootstrap: str, topic: str, rate: int, seconds: float, seqs: dict[str, int]
) -> int:
    """Produce ``rate`` events/s on a fixed schedule, stamping recorded_at at send time."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    sent = 0
    tick = 0.02
    per_tick = max(1, int(rate * tick))
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            futures = []
            for _ in range(per_tick):
                store = f"L{sent % 20:02d}"
                seqs[store] = seqs.get(store, 0) + 1
                now = datetime.now(UTC).isoformat()
                event = {
                    "event_id": str(uuid.uuid4()), "schema": "retail.v1", "type": "sale",
                    "store_id": store, "terminal_id": "T1", "outlet_seq": seqs[store],
                    "client_txn_id": uuid.uuid4().hex, "occurred_at": now, "recorded_at": now,
                    "lines": [{"sku": f"SKU-{sent % 500:04d}", "qty": 1, "unit_price_cents": 99}],
                    "ref": None, "reason": None,
                }  # fmt: skip
                futures.append(await producer.send(topic, orjson.dumps(event), key=store.encode()))
                sent += 1
            await asyncio.gather(*futures)
            tick_no = sent // per_tick
            delay = started + tick_no * tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await producer.stop()
    return sent


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass('ledger')") is None:
            return 0  # the worker's sink has not migrated yet
        return int(await conn.fetchval("SELECT count(*) FROM ledger"))
    finally:
        await conn.close()


async def _ledger_stats(dsn: str, warmup_s: float) -> tuple[int, float | None, float | None]:
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass('ledger')") is None:
            return 0, None, None  # the worker's sink has not migrated yet
        row = await conn.fetchrow(
            """
            WITH l AS (SELECT extract(epoch FROM committed_at - recorded_at) * 1000 AS ms,
                              extract(epoch FROM applied_at - recorded_at) * 1000 AS apply_ms,
                              recorded_at FROM ledger),
                 w AS (SELECT * FROM l WHERE recorded_at > (SELECT min(recorded_at) FROM l)
                                                 + make_interval(secs => $1))
            SELECT (SELECT count(*) FROM l) AS n,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY apply_ms) AS apply_p99
            FROM w
            """,
            warmup_s,
        )
    finally:
        await conn.close()
    assert row is not None
    if row["apply_p99"] is not None:
        log(f"  (p99 recorded_at -> applied centrally: {row['apply_p99']:.0f} ms)")
    return int(row["n"]), row["p50"], row["p99"]


def commit_lag(stack: DevStack, work: Path, rate: int, seconds: float) -> tuple[float, float]:
    """(p50, p99) ms from recorded_at to committed in Postgres, through a real worker."""
    tag = uuid.uuid4().hex[:6]
    topic = f"bench-events-{tag}"
    asyncio.run(create_topics(stack.broker.bootstrap, {topic: stack.partitions}))
    database = f"lag_{tag}"
    dsn = stack.postgres.url(database)

    async def create_db() -> None:
        conn = await asyncpg.connect(stack.postgres.url())
        try:
            await conn.execute(f"CREATE DATABASE {database}")
        finally:
            await conn.close()

    asyncio.run(create_db())
    port = free_port()
    env = {
        **os.environ,
        **stack.env(),
        "RETAIL_DATABASE_URL": dsn,
        "RETAIL_APP_ID": f"bench-{tag}",
        "RETAIL_EVENTS_TOPIC": topic,
        "RETAIL_DEAD_LETTERS_TOPIC": f"bench-dead-{tag}",
        "RETAIL_DATA_DIR": str(work / "worker"),
        "RETAIL_WEB_PORT": str(port),
    }
    proc = spawn(
        [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "warn"],
        log_path=work / "worker.log", env=env, cwd=ROOT,
    )  # fmt: skip
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the bench worker exited; see {work / 'worker.log'}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=90, what="the bench worker")
        # warm the pipeline (consumer group joined, sink connected and migrated)
        seqs: dict[str, int] = {}  # per store, across both loads
        asyncio.run(steady_load(stack.broker.bootstrap, topic, 50, 1.0, seqs))
        wait_until(lambda: asyncio.run(_count(dsn)) >= 50, timeout=60,
                   what="warm-up rows in Postgres")  # fmt: skip
        warm = asyncio.run(_count(dsn))
        log(f"steady load: {rate} events/s for {seconds:.0f}s through the worker ...")
        sent = asyncio.run(steady_load(stack.broker.bootstrap, topic, rate, seconds, seqs))
        wait_until(
            lambda: asyncio.run(_count(dsn)) >= warm + sent,
            timeout=120, what=f"{sent} events in Postgres",
        )  # fmt: skip
        _, p50, p99 = asyncio.run(_ledger_stats(dsn, 2.0))
    finally:
        stop_process(proc, timeout=20)
    assert p50 is not None and p99 is not None
    return p50, p99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sink_bench", description=__doc__)
    parser.add_argument(
        "--batches", type=int, default=41, help="write_batch batches (first is warm-up)"
    )
    parser.add_argument("--stores", type=int, default=200, help="records (stores) per batch")
    parser.add_argument("--events", type=int, default=25, help="events per store per batch")
    parser.add_argument("--rate", type=int, default=1000, help="events/s for the lag run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the lag run")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sink-bench-") as tmp:
        work = Path(tmp)
        stack = DevStack(work / "stack", partitions=4)
        stack.start()
        try:
            batches = make_batches(
                args.batches, stores=args.stores, events_per_store=args.events, skus=2000
            )
            ledger, stock = _rows(batches[1])
            log(f"write_batch: {args.batches - 1} batches of ~{ledger} ledger + {stock} stock rows")
            sink_rate, raw_rate = asyncio.run(throughput(stack.database_url, batches))
            log(f"  sink {sink_rate:,.0f} rows/s, raw COPY {raw_rate:,.0f} rows/s")
            p50, p99 = commit_lag(stack, work, args.rate, args.seconds)
            log(f"  commit lag at {args.rate}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        finally:
            stack.stop()

    result = {
        "rows_per_s": round(sink_rate),
        "raw_ceiling_rows_per_s": round(raw_rate),
        "ratio": round(sink_rate / raw_rate, 3),
        "p99_commit_lag_ms_at_1000": round(p99, 1),
        "p50_commit_lag_ms_at_1000": round(p50, 1),
        "batch_ledger_rows": ledger,
        "batch_stock_rows": stock,
    }
    line = orjson.dumps(result).decode()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
