"""agents/sink.py: a batch whose connection broke is written again on a fresh one.

A chaos run's Postgres outage once made the worker exit with
``InternalClientError('cannot switch to state 15; another operation (2) is in
progress')``: PostgreSQL shut down in the middle of a batch, and the
transaction's ROLLBACK (a simple query, state 15) started while asyncpg was
still consuming the server's FATAL error (state 2). The connection is broken
like any other in an outage, so the sink retries the batch (one transaction,
idempotent) on a new connection instead of exiting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest

import agents.sink
from agents.sink import PostgresSink
from app.settings import Settings
from sink.writer import SinkRecord, WriteResult


@dataclass
class Message:
    topic: str = "sim.applied"
    partition: int = 0
    offset: int = 7
    value: bytes | None = None


class Conn:
    def __init__(self) -> None:
        self.terminated = False

    def is_closed(self) -> bool:
        return self.terminated

    def terminate(self) -> None:
        self.terminated = True


def test_a_connection_broken_by_a_shutdown_mid_batch_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = PostgresSink(Settings(sink_migrate=False))
    conns: list[Conn] = []

    async def connection() -> Conn:  # PostgresSink._connection without PostgreSQL
        if sink._conn is None:
            conns.append(Conn())
            sink._conn = conns[-1]
        return conns[-1]

    writes: list[tuple[Conn, list[SinkRecord]]] = []

    async def write_batch(conn: Conn, records: list[SinkRecord]) -> WriteResult:
        writes.append((conn, records))
        if len(writes) == 1:
            raise asyncpg.exceptions.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )
        return WriteResult(ledger_rows=1)

    monkeypatch.setattr(sink, "_connection", connection)
    monkeypatch.setattr(agents.sink, "write_batch", write_batch)
    raw = orjson.dumps({"store_id": "S1", "sent_at": 1.0})
    result: Any = asyncio.run(sink.write_records([Message(value=raw)]))
    assert result.ledger_rows == 1
    assert len(writes) == 2 and writes[0][1] == writes[1][1]  # the same batch again
    assert conns[0].terminated and writes[1][0] is conns[1]  # on a fresh connection
    assert sink.retries == 1 and sink.last_error is None
