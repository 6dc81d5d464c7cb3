"""Where events are written: the Postgres sink (SPEC "What is promised").

It reads the ``applied`` and dead-letter topics with a consumer of its own
(``sink/service.py``: inside a worker, or as ``python -m sink run``). Each
batch is one transaction (``sink.writer``) that also moves ``sink_offsets``;
a crash at any moment leaves the batch to be read again, and the writer makes
the redelivery a no-op.

PostgreSQL down or slow: the sink retries the same batch with capped,
jittered backoff and never drops it. It fetches nothing more meanwhile, so
its memory stays bounded by one fetch per partition, while the apply agent,
a consumer of its own, keeps going. The backlog waits in Kafka.

How far behind Postgres is: :attr:`PostgresSink.lag_seconds` (age of the oldest
record taken but not yet committed), also the ``retail_sink_behind_seconds``
gauge, and :meth:`PostgresSink.status` for the sync view.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
import orjson

from app import metrics
from app.settings import Settings
from sink.migrate import migrate
from sink.writer import SinkRecord, WriteResult, ensure_temp_tables, write_batch

log = logging.getLogger(__name__)

#: Errors after which the same batch is tried again on a fresh connection.
#: Anything else (a bad record, a missing privilege) crashes the agent loudly.
RETRIABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown, cancel
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, too many connections
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.LockNotAvailableError,
    # PostgreSQL shutting down mid-batch: the transaction's ROLLBACK starts while
    # asyncpg still consumes the FATAL error ("cannot switch to state 15;
    # another operation (2) is in progress"), hiding the admin-shutdown error.
    # The connection is unusable; the batch is one transaction and idempotent.
    asyncpg.exceptions.InternalClientError,
)
#: A statement that takes longer than this is treated as "Postgres is down".
COMMAND_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
BACKOFF_MAX_S = 5.0
SINK_ROLE = "retail_sink"


class Delivered(Protocol):
    """A consumed record (aiokafka's ``ConsumerRecord``; a test's stand-in)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


def _record_time(value: dict[str, Any]) -> float:
    """When the record was produced: the apply agent's ``sent_at`` (or a dead letter's ``at``)."""
    for name in ("sent_at", "at"):
        ts = value.get(name)
        if isinstance(ts, (int, float)):
            return float(ts)
    return time.time()


class PostgresSink:
    """Write batches to PostgreSQL, retrying until they are committed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: asyncpg.Connection | None = None
        self._migrated = False
        #: produced-at time of the oldest record taken but not committed (None: none)
        self.oldest_pending: float | None = None
        self.pending_records = 0
        self.last_commit_at: float | None = None
        self.committed_records = 0
        self.retries = 0
        self.connected = False
        self.last_error: str | None = None
        #: store_id -> (commit time, seconds from its oldest recorded_at to that commit)
        self.store_commits: dict[str, tuple[float, float]] = {}
        metrics.SINK_BEHIND.set_function(lambda: self.lag_seconds)

    @property
    def lag_seconds(self) -> float:
        """How far Postgres is behind: age of the oldest record not yet committed."""
        oldest = self.oldest_pending
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def commit_of(self, store_id: str) -> tuple[float, float] | None:
        """(when this sink last committed rows of the store, their oldest one's commit lag)."""
        return self.store_commits.get(store_id)

    def behind_s(self, store_id: str, applied_seq: int, now: float) -> float | None:
        """How far PostgreSQL is behind; this sink knows it for all its stores at once."""
        return round(self.lag_seconds, 3)

    def status(self) -> dict[str, Any]:
        """For the sync view (``GET /api/sync``): the sink's side of each store's lag."""
        return {
            "connected": self.connected,
            "lag_seconds": round(self.lag_seconds, 3),
            "pending_records": self.pending_records,
            "last_commit_at": self.last_commit_at,
            "committed_records": self.committed_records,
            "retries": self.retries,
            "last_error": self.last_error,
            "stores": {
                store: {"committed_at": at, "commit_lag_s": round(lag, 3)}
                for store, (at, lag) in self.store_commits.items()
            },
        }

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            dsn = self.settings.database_url.get_secret_value()
            if not self._migrated and self.settings.sink_migrate:
                await migrate(dsn)
                self._migrated = True
            conn = await asyncpg.connect(
                dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S
            )
            try:
                # Least privilege: write as the role the DDL made for the sink.
                if await conn.fetchval(
                    "SELECT pg_has_role(current_user, $1, 'MEMBER')"
                    " FROM pg_roles WHERE rolname = $1",
                    SINK_ROLE,
                ):
                    await conn.execute(f"SET ROLE {SINK_ROLE}")
                await ensure_temp_tables(conn)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
        return self._conn

    async def write_records(self, delivered: Sequence[Delivered]) -> WriteResult:
        """Write the batch, retrying until PostgreSQL takes it (never drops it)."""
        records = []
        oldest: float | None = None
        for msg in delivered:
            if msg.value is None:  # a tombstone: nothing to write, its offset still counts
                value: dict[str, Any] = {}
            else:
                value = orjson.loads(msg.value)
            records.append(SinkRecord(msg.topic, msg.partition, msg.offset, value))
            produced = _record_time(value)
            oldest = produced if oldest is None else min(oldest, produced)
        self.pending_records = len(records)
        self.oldest_pending = oldest
        delay = 0.1
        while True:
            try:
                conn = await self._connection()
                result = await write_batch(conn, records)
                break
            except RETRIABLE as exc:
                self.retries += 1
                self.connected = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                metrics.SINK_ERRORS.inc()
                log.warning(
                    "Postgres unavailable (%s); retrying %d records in %.1fs, %.1fs behind",
                    self.last_error, len(records), delay, self.lag_seconds,
                )  # fmt: skip
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, BACKOFF_MAX_S)
        now = time.time()
        if self.last_error:
            log.info("Postgres is back: batch of %d records committed", len(records))
            self.last_error = None
        self.connected = True
        self.last_commit_at = now
        self.committed_records += len(records)
        self.pending_records = 0
        self.oldest_pending = None
        metrics.SINK_ROWS.inc(result.ledger_rows)
        for store_id, commit in result.stores.items():
            lag = max(0.0, now - commit.oldest_recorded_at)
            self.store_commits[store_id] = (now, lag)
            metrics.SINK_LAG.observe(lag)
        return result

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
