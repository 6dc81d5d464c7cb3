"""Sends the log to Kafka in ``outlet_seq`` order (SPEC rule 1, "What is promised").

- Reads the log in pages (``forward_batch_max`` events, at most
  :data:`PAGE_BYTES` of them): memory stays bounded however large the backlog,
  and a page is one produce request, acknowledged well inside the send timeout
  even on a slow store uplink (1 MiB at 1 Mbit/s: 8 s).
- Marks a page forwarded only after the broker acknowledged every record of it
  (``acks="all"``). A crash between the ack and the mark re-sends the same
  records: same ``event_id`` and ``outlet_seq``, so the centre drops them as
  duplicates (SPEC rule 2).
- A failed page is re-sent whole after a capped exponential backoff with full
  jitter, on a fresh producer. Never reordered: a page is sent only once the
  previous one is acknowledged, and aiokafka keeps one request in flight per broker.
- While draining a backlog, up to ``forward_pack_max`` consecutive events travel
  in one record as a JSON array (``app.schema.encode_packed``'s format); a lone
  live event is a plain JSON object. The key is always ``store_id``, so a
  store's records share one partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.security import aiokafka_security
from outlet_agent.config import OutletSettings
from outlet_agent.errors import OutletError
from outlet_agent.log import EventLog, LogRecord
from outlet_agent.metrics import OutletMetrics

log = logging.getLogger(__name__)

#: Kafka's default ``max.message.bytes`` is 1 MiB; a packed record stays below it.
MAX_PACKED_BYTES = 512 * 1024

#: The producer's ``max_batch_size`` and ``max_request_size``
REQUEST_BYTES = 1 << 20
#: A page's event bytes at most (the first event always goes): below
#: :data:`REQUEST_BYTES` with room for the records' own bytes, so a page is
#: one produce request
PAGE_BYTES = REQUEST_BYTES - (64 << 10)

#: How long the forwarded cursor may wait for the next group commit to carry
#: it (``EventLog``: it rides in that transaction) before it gets a commit of
#: its own. A crash re-sends what was forwarded since it was last written (same
#: event_id and seq, dropped by the centre as duplicates). At 1 s, a store
#: posting every 2 s paid one extra commit and fsync per post.
PERSIST_EVERY_S = 5.0

#: exit status of the crash-test hook (``RETAIL_OUTLET_CRASH_AFTER_SEND``)
CRASH_EXIT_CODE = 70

ProducerFactory = Callable[[OutletSettings], Any]


def make_producer(settings: OutletSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"outlet-{settings.store_id}",
        acks="all",
        # Tansu rejects InitProducerId; real Kafka may turn it on (a setting)
        enable_idempotence=settings.enable_idempotence,
        request_timeout_ms=int(settings.outlet_send_timeout_s * 1000),
        retry_backoff_ms=100,
        linger_ms=0,
        max_batch_size=REQUEST_BYTES,
        max_request_size=REQUEST_BYTES,
        **aiokafka_security(settings),  # TLS / SASL-SCRAM (issue 10)
    )


def within_bytes(page: list[LogRecord], budget: int) -> list[LogRecord]:
    """The longest head of ``page`` whose bodies fit ``budget`` (never empty if ``page`` is not)."""
    size = 0
    for i, record in enumerate(page):
        size += len(record.body)
        if size > budget and i > 0:
            return page[:i]
    return page


def pack_records(page: Sequence[LogRecord], pack_max: int) -> list[tuple[bytes, int]]:
    """Group consecutive events into record values: ``(value, events in it)``.

    A page of one event (live traffic) is sent as that event's JSON object. In a
    backlog, runs of up to ``pack_max`` events become one JSON array; the bytes
    equal ``encode_packed`` of the same events (orjson's compact output joined),
    without decoding and re-encoding each event.
    """
    if len(page) == 1 or pack_max <= 1:
        return [(r.body, 1) for r in page]
    out: list[tuple[bytes, int]] = []
    chunk: list[bytes] = []
    size = 0
    for record in page:
        if chunk and (len(chunk) >= pack_max or size + len(record.body) > MAX_PACKED_BYTES):
            out.append(_packed(chunk))
            chunk, size = [], 0
        chunk.append(record.body)
        size += len(record.body) + 1
    if chunk:
        out.append(_packed(chunk))
    return out


def _packed(bodies: list[bytes]) -> tuple[bytes, int]:
    if len(bodies) == 1:
        return bodies[0], 1
    return b"[" + b",".join(bodies) + b"]", len(bodies)


class Forwarder:
    def __init__(
        self,
        settings: OutletSettings,
        event_log: EventLog,
        metrics: OutletMetrics,
        *,
        producer_factory: ProducerFactory = make_producer,
    ) -> None:
        self.settings = settings
        self.log = event_log
        self.metrics = metrics
        self.connected = False
        self._factory = producer_factory
        self._producer: Any = None
        self._key = settings.store_id.encode()
        self._next_prune = 0.0

    async def run(self) -> None:
        """Forward forever; cancel the task to stop."""
        failures = 0
        try:
            while True:
                try:
                    sent = await self._step()
                except (KafkaError, TimeoutError, OSError) as exc:
                    failures += 1
                    self.connected = False
                    self.metrics.broker_connected.set(0)
                    self.metrics.error("forward")
                    delay = self._backoff(failures)
                    log.warning(
                        "forwarder: send failed (%r); attempt %d, retrying in %.2fs",
                        exc, failures, delay,
                    )  # fmt: skip
                    await self._drop_producer()
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                if not sent:
                    await self._idle()
        finally:
            if self.log.persisted_forwarded_seq < self.log.forwarded_seq:
                with contextlib.suppress(OutletError, sqlite3.Error):
                    await self._persist()  # a clean stop leaves nothing to re-send
            await self._drop_producer()

    def _backoff(self, failures: int) -> float:
        s = self.settings
        cap = min(s.outlet_backoff_max_s, s.outlet_backoff_min_s * 2 ** min(failures, 20))
        return random.uniform(s.outlet_backoff_min_s, cap)  # full jitter, never below min

    async def _persist(self) -> None:
        await self.log.mark_forwarded(self.log.forwarded_seq)

    def _cursor_due_in(self) -> float:
        """Seconds until the cursor gets a commit of its own (≤ 0: due now)."""
        return PERSIST_EVERY_S - (time.monotonic() - self.log.persisted_at)

    async def _idle(self) -> None:
        unpersisted = self.log.persisted_forwarded_seq < self.log.forwarded_seq
        if unpersisted and self._cursor_due_in() <= 0:
            await self._persist()
            unpersisted = False
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + self.settings.outlet_prune_interval_s
            pruned = await self.log.prune(self.settings.retention_s)
            if pruned:
                log.info("forwarder: pruned %d forwarded events past retention", pruned)
        self.log.new_events.clear()
        if self.log.last_seq > self.log.forwarded_seq:
            return
        with contextlib.suppress(TimeoutError):
            # an unwritten cursor waits for a group commit to carry it, until it is due
            wait_s = max(0.05, self._cursor_due_in()) if unpersisted else 1.0
            await asyncio.wait_for(self.log.new_events.wait(), timeout=wait_s)
            if self.settings.outlet_forward_linger_s:
                await asyncio.sleep(self.settings.outlet_forward_linger_s)  # batching

    async def _step(self) -> int:
        """Send the next page and mark it; the number of events forwarded."""
        if self.log.last_seq <= self.log.forwarded_seq:
            return 0  # nothing new (the log's counters are this process's own): no disk read
        page = await self.log.read_page(self.log.forwarded_seq, self.settings.forward_batch_max)
        page = within_bytes(page, PAGE_BYTES)
        if not page:
            return 0
        producer = await self._ensure_producer()
        records = pack_records(page, self.settings.forward_pack_max)
        topic = self.settings.events_topic
        futures = [await producer.send(topic, value=value, key=self._key) for value, _ in records]
        await asyncio.wait_for(asyncio.gather(*futures), self.settings.outlet_send_timeout_s)
        if self.settings.outlet_crash_after_send:
            # crash tests: the broker has the records, the log does not know yet
            log.error("forwarder: crash hook after ack of seq %d", page[-1].seq)
            os._exit(CRASH_EXIT_CODE)
        seq = page[-1].seq
        due = (
            seq - self.log.persisted_forwarded_seq >= self.settings.forward_batch_max
            or self._cursor_due_in() <= 0
        )
        await self.log.mark_forwarded(seq, persist=False)
        if due:
            await self._persist()
        self.connected = True
        self.metrics.broker_connected.set(1)
        self.metrics.forwarded.inc(len(page))
        self.metrics.forward_pages.inc()
        self.metrics.forward_records.inc(len(records))
        return len(page)

    async def _ensure_producer(self) -> Any:
        if self._producer is None:
            producer = self._factory(self.settings)
            try:
                await asyncio.wait_for(producer.start(), self.settings.outlet_send_timeout_s)
            except BaseException:
                await _stop_quietly(producer, self.settings.outlet_send_timeout_s)
                raise
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer, self.settings.outlet_send_timeout_s)


async def _stop_quietly(producer: Any, wait_s: float) -> None:
    """Stop a producer that may be wedged on a dead link, without waiting forever."""
    try:
        await asyncio.wait_for(producer.stop(), wait_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.warning("forwarder: producer stop: %r", exc)
