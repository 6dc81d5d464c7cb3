"""Where events are written: the Postgres sink (SPEC "What is promised").

A Faust agent over the ``applied`` and dead-letter topics. Each batch is one
transaction (``sink.writer``); its records are acked only after COMMIT. When
PostgreSQL is down or slow the agent retries the same batch with capped
backoff: its own stream stops pulling (memory stays bounded), while the apply
agent, a separate stream, keeps going.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import asyncpg
import orjson

from app import metrics
from app.settings import Settings
from sink.migrate import migrate
from sink.writer import SinkRecord, ensure_temp_tables, write_batch

log = logging.getLogger(__name__)

RETRIABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncio.TimeoutError,
)


class PostgresSink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: asyncpg.Connection | None = None
        self._migrated = False
        self.oldest_pending: float | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            dsn = self.settings.database_url.get_secret_value()
            if not self._migrated:
                await migrate(dsn)
                self._migrated = True
            self._conn = await asyncpg.connect(dsn, timeout=5)
            await ensure_temp_tables(self._conn)
        return self._conn

    async def write(self, events: list[Any]) -> None:
        """Write the batch, retrying until PostgreSQL takes it (never drops it)."""
        records = [
            SinkRecord(
                e.message.topic, e.message.partition, e.message.offset, orjson.loads(e.value)
            )
            for e in events
        ]
        delay = 0.1
        while True:
            try:
                conn = await self._connection()
                result = await write_batch(conn, records)
                break
            except RETRIABLE as exc:
                metrics.SINK_ERRORS.inc()
                log.warning("Postgres unavailable (%r); retrying in %.1fs", exc, delay)
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
        now = time.time()
        metrics.SINK_ROWS.inc(result.ledger_rows)
        for ts in result.recorded_at:
            metrics.SINK_LAG.observe(max(0.0, now - ts))
        metrics.SINK_BEHIND.set(0)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
