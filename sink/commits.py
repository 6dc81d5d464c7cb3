"""What PostgreSQL has per store, for a worker whose sink runs elsewhere.

With the sink in the worker (``RETAIL_SINK_ENABLED=true``) the sync view asks
:class:`agents.sink.PostgresSink` itself. With ``python -m sink run`` apart,
the worker learns the same figures from PostgreSQL, once a second, in one
indexed query: ``outlet_sync`` (the seq PostgreSQL has applied, and when) and
each store's newest ledger row (its recorded_at → committed_at lag).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import asyncpg

from agents.sink import RETRIABLE
from app.settings import Settings

log = logging.getLogger(__name__)

COMMITS_SQL = """
SELECT o.store_id, o.applied_seq,
       extract(epoch FROM o.updated_at)::float8 AS updated_at,
       newest.committed_at, newest.lag_s
FROM outlet_sync o
LEFT JOIN LATERAL (
    SELECT extract(epoch FROM l.committed_at)::float8 AS committed_at,
           extract(epoch FROM l.committed_at - l.recorded_at)::float8 AS lag_s
    FROM ledger l WHERE l.store_id = o.store_id
    ORDER BY l.outlet_seq DESC LIMIT 1
) newest ON true
"""


@dataclass(frozen=True, slots=True)
class StoreInPostgres:
    applied_seq: int
    updated_at: float
    committed_at: float | None
    commit_lag_s: float | None


class PostgresCommits:
    """The sync view's Postgres side when no sink runs in this worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores: dict[str, StoreInPostgres] = {}
        self.read_at: float | None = None
        self._conn: asyncpg.Connection | None = None

    async def refresh(self) -> None:
        """Read every store's row again; on failure keep the last answer (it ages)."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(
                    self.settings.database_url.get_secret_value(), timeout=5, command_timeout=5
                )
            rows = await self._conn.fetch(COMMITS_SQL)
        except Exception as exc:  # noqa: BLE001 - a view's source must never stop the worker
            # An exception here would end Faust's timer, and with it the worker:
            # ``make bench`` run 8 lost a worker to asyncpg's InternalClientError
            # ("cannot switch to state 12") as PostgreSQL shut down mid-query.
            expected = isinstance(exc, RETRIABLE)  # PostgreSQL down or restarting
            log.log(logging.DEBUG if expected else logging.WARNING,
                    "Postgres commits unreadable: %r", exc)  # fmt: skip
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            return
        self.stores = {
            r["store_id"]: StoreInPostgres(
                int(r["applied_seq"]), float(r["updated_at"]), r["committed_at"], r["lag_s"]
            )
            for r in rows
        }
        self.read_at = time.time()

    def commit_of(self, store_id: str) -> tuple[float, float] | None:
        """(when the store's newest ledger row was committed, its commit lag in seconds)."""
        row = self.stores.get(store_id)
        if row is None or row.committed_at is None or row.commit_lag_s is None:
            return None
        return row.committed_at, row.commit_lag_s

    def behind_s(self, store_id: str, applied_seq: int, now: float) -> float | None:
        """0 when PostgreSQL has the seq the centre applied; else how long since it last moved.

        ``None``: PostgreSQL has nothing of this store yet (or was never read).
        """
        row = self.stores.get(store_id)
        if row is None:
            return None
        return 0.0 if row.applied_seq >= applied_seq else round(max(0.0, now - row.updated_at), 3)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
