"""Reproduction: what Tansu 0.6.0 on S3 storage reports as a partition's end.

``python -m devstack.tansu_s3_offsets`` starts a loopback moto_server and Tansu
on ``s3://`` storage (the devstack's own), then with aiokafka only:

1. produces record batches of several sizes to three partitions, one batch per
   request, and compares ``end_offsets`` (ListOffsets "latest") and the high
   watermark of a Fetch answer with the true end (records acked), and reads
   every partition from 0 to see what is really fetchable;
2. lists the batch objects in the bucket (key = base offset, LastModified);
3. kill -9s the broker, restarts it on the same bucket and checks again;
4. produces more and checks that the new records got new offsets (nothing
   acked earlier was overwritten) and that every record is read back once;
5. (``--fetch-wait``) writes a few hundred one-record batches to one partition
   and fetches its last records with several max waits.

It prints one line per check and a JSON summary last; exit 1 if a record was
lost or overwritten (the end offsets being wrong is the known finding, so it
is reported, not failed).

What it shows (Tansu 0.6.0, ``tansu-storage/src/dynostore.rs``):

- ListOffsets(latest) does not read the partition's watermark. It lists the
  partition's batch objects and answers ``base offset + 1`` of the object with
  the newest ``LastModified``, keeping the first one listed on a tie (strict
  ``>``). S3 (and moto) give ``LastModified`` in whole seconds in a listing,
  so every batch written in the last second ties and the *first* of them wins:
  the answer can be far below the true end, not just inside the last batch.
  On memory storage the timestamps are exact, so the answer is the last batch's
  base offset + 1 (the quirk the one-record tail of ``tables/bulk.py`` covers).
- Fetch uses ``watermark.json`` (one object per partition, updated with a
  conditional put before each batch is written): its high watermark is exact
  and survives a kill -9, and every acked record is fetchable before and after.
- But every fetch lists all of the partition's batch objects again, and stops
  listing when the fetch's max wait runs out: it then answers nothing. With a
  few hundred batches in a partition a 50 ms fetch (the worker's default
  ``RETAIL_CONSUMER_FETCH_MAX_WAIT_MS``) never gets a record (step 5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack.broker import TansuBroker

TOPIC = "repro.offsets"
PARTITIONS = 3
#: batch sizes per partition, produced one batch per request, in this order
SIZES = [[1, 5, 3, 10, 1], [7, 1, 1, 20], [4, 4, 4, 4]]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class Check:
    phase: str
    partition: int
    true_end: int
    list_offsets: int
    fetch_highwater: int
    fetchable: int

    @property
    def line(self) -> str:
        ok = "exact" if self.list_offsets == self.true_end else "UNDER-REPORTED"
        return (
            f"{self.phase:<22} p{self.partition}: acked end {self.true_end:>3}  "
            f"ListOffsets {self.list_offsets:>3} ({ok})  fetch highwater "
            f"{self.fetch_highwater:>3}  fetchable records {self.fetchable:>3}"
        )


@dataclass
class Run:
    broker: TansuBroker
    acked: dict[int, list[bytes]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    async def produce(self, label: str, sizes: list[list[int]], pause: float = 0.0) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.broker.bootstrap, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            for partition, batch_sizes in enumerate(sizes):
                for size in batch_sizes:
                    batch = producer.create_batch()
                    values: list[bytes] = []
                    for _ in range(size):
                        n = len(self.acked.setdefault(partition, [])) + len(values)
                        value = f"{label}:p{partition}:{n}".encode()
                        assert batch.append(key=None, value=value, timestamp=None) is not None
                        values.append(value)
                    fut = await producer.send_batch(batch, TOPIC, partition=partition)
                    meta = await fut
                    expected = len(self.acked[partition])
                    if meta.offset != expected:
                        self.problems.append(
                            f"{label} p{partition}: batch acked at base offset {meta.offset}, "
                            f"{expected} records were acked before it"
                        )
                    self.acked[partition].extend(values)
                    if pause:
                        await asyncio.sleep(pause)
        finally:
            await producer.stop()

    async def check(self, phase: str) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.broker.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            got: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
            offsets: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
            for tp in tps:
                consumer.seek(tp, 0)
            # read until every acked record came, or nothing new for 2 s
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 2.0:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        got[tp.partition].append(record.value or b"")
                        offsets[tp.partition].append(record.offset)
                    quiet_since = time.monotonic()
                if all(len(got[p]) >= len(self.acked.get(p, [])) for p in got):
                    break
            for tp in tps:
                p = tp.partition
                want = self.acked.get(p, [])
                check = Check(
                    phase, p, len(want), ends[tp], consumer.highwater(tp) or -1, len(got[p])
                )
                self.checks.append(check)
                say(check.line)
                if got[p] != want:
                    missing = len(set(want) - set(got[p]))
                    self.problems.append(
                        f"{phase} p{p}: read {len(got[p])} records, acked {len(want)}, "
                        f"{missing} acked values missing, offsets read {offsets[p][:5]}..."
                    )
                if offsets[p] != list(range(len(offsets[p]))):
                    self.problems.append(f"{phase} p{p}: offsets not 0..n-1: {offsets[p]}")
        finally:
            await consumer.stop()

    def list_objects(self, partition: int) -> list[tuple[int, str]]:
        """(base offset, LastModified) of each batch object, as S3 lists them."""
        assert self.broker.s3 is not None
        prefix = f"clusters/tansu_cluster/topics/{TOPIC}/partitions/{partition:0>10}/records/"
        response = httpx.get(
            f"{self.broker.s3.endpoint}/{self.broker.s3.bucket}",
            params={"list-type": "2", "prefix": prefix},
            timeout=10,
        )
        keys = re.findall(r"<Key>[^<]*/(\d{20})\.batch</Key>", response.text)
        stamps = re.findall(r"<LastModified>([^<]*)</LastModified>", response.text)
        return [(int(k), s) for k, s in zip(keys, stamps, strict=True)]


async def fetch_waits(bootstrap: str, batches: int) -> dict[str, Any]:
    """Fetch the last records of a partition of ``batches`` batches, per max wait."""
    from aiokafka.protocol.fetch import FetchRequest
    from aiokafka.record.memory_records import MemoryRecords

    topic = f"{TOPIC}.waits"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for _ in range(batches):
            await producer.send_and_wait(topic, b"x", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    out: dict[str, Any] = {"batches": batches}
    try:
        node = consumer._client.cluster.leader_for_partition(TopicPartition(topic, 0))
        for wait_ms in (50, 200, 2000):
            started = time.monotonic()
            request = FetchRequest(wait_ms, 1, 1 << 20, 0, [(topic, [(0, batches - 5, 1 << 20)])])
            response = await consumer._client.send(node, request)
            got = 0
            for _topic, partitions in response.topics:
                for *_, data in partitions:
                    records = MemoryRecords(data) if data else None
                    while records is not None and records.has_next() and records.next_batch():
                        got += 1
            took = time.monotonic() - started
            say(
                f"fetch wait {wait_ms:>4} ms, {batches} batches in the partition: "
                f"{got} of the last 5 batches returned in {took:.2f} s"
            )
            out[f"batches_at_{wait_ms}ms"] = got
    finally:
        await consumer.stop()
    return out


async def create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", help="memory storage (no restart)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument(
        "--fetch-wait", type=int, default=0, metavar="N",
        help="also fetch from a partition of N one-record batches with several max waits",
    )  # fmt: skip
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="tansu-offsets-"))
    broker = TansuBroker(data_dir / "broker", persistent=not args.memory)
    run = Run(broker)
    summary: dict[str, Any] = {"storage": "memory" if args.memory else "s3"}
    try:
        broker.start()
        asyncio.run(create_topic(broker.bootstrap))
        asyncio.run(run.produce("a", SIZES))
        asyncio.run(run.check("1 produced"))
        if not args.memory:
            for p in range(PARTITIONS):
                say(f"  p{p} objects (base offset, LastModified): {run.list_objects(p)}")
        # a one-record batch more than a second after the rest: now the newest alone
        time.sleep(1.1)
        asyncio.run(run.produce("b", [[1]] * PARTITIONS))
        asyncio.run(run.check("2 tail after 1.1 s"))
        # the same tail again with no pause (it ties with the one before on S3)
        asyncio.run(run.produce("c", [[3, 1]] * PARTITIONS))
        asyncio.run(run.check("3 no pause"))
        if not args.memory:
            broker.kill()
            broker.start()
            asyncio.run(run.check("4 after kill -9"))
            asyncio.run(run.produce("d", [[2, 6, 1]] * PARTITIONS))
            asyncio.run(run.check("5 produced after"))
        if args.fetch_wait:
            summary["fetch_wait"] = asyncio.run(fetch_waits(broker.bootstrap, args.fetch_wait))
        summary["checks"] = [c.__dict__ for c in run.checks]
        summary["under_reported"] = sum(1 for c in run.checks if c.list_offsets < c.true_end)
        summary["over_reported"] = sum(1 for c in run.checks if c.list_offsets > c.true_end)
        summary["fetch_highwater_exact"] = all(c.fetch_highwater == c.true_end for c in run.checks)
        summary["all_acked_fetchable"] = not run.problems
        summary["problems"] = run.problems
    finally:
        broker.close()
        if not args.keep:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
    for problem in run.problems:
        say(f"PROBLEM: {problem}")
    say(json.dumps(summary))
    return 1 if run.problems else 0


if __name__ == "__main__":
    sys.exit(main())
