"""The outlet's durable event log: SQLite in WAL mode with ``synchronous=FULL``.

SPEC "What is promised": a 201 is sent only after the event's COMMIT returned,
so an answered event survives a crash of the agent or of the machine.

Group commit: requests put their events on a bounded queue; one writer task
takes everything waiting (up to ``outlet_group_max`` events), writes it in ONE
transaction and answers every request only after that COMMIT. Many requests
share one fsync, which is what makes the log nearly as fast as the HTTP stack.

``outlet_seq`` is assigned by the writer from an in-memory counter that only
advances after a successful COMMIT, under a lock held for the whole group
transaction: a failed group leaves no gap and no seq is ever reused (the last
seq is also kept in ``meta`` so pruning can never make it go back).

Threads: the writer owns one plain ``sqlite3`` connection on one dedicated
thread and runs a whole group (lookups, inserts, COMMIT) as ONE call there: one
thread hop per group instead of one per statement, which on a single core is
what the group commit's throughput depends on. Readers (status, the stock view,
the forwarder's pages, tokens) use aiosqlite connections of their own and only
ever see committed rows (WAL).

Checkpoints: the writer's automatic WAL checkpoint is off; a background task
checkpoints (PASSIVE) from its own connection, so copying the WAL into the
database never stalls a group commit (it did, by hundreds of ms, once the WAL
had grown during a burst). It looks once a second and checkpoints when
:data:`CHECKPOINT_EVENTS` were written since the last one, or when anything was
and :data:`CHECKPOINT_TRICKLE_S` have passed: a store's few sales a second keep
a small WAL without a checkpoint (a thread hop, copied pages and an fsync) every
second, and an idle agent does none.

The forwarded cursor: while sales come in, the forwarder's cursor rides in the
next group's transaction (``meta.forwarded_seq``), so marking events forwarded
costs no commit of its own; the forwarder persists it alone only when no group
came for a while (``outlet_agent.forwarder.PERSIST_EVERY_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, Protocol, TypeVar

import aiosqlite
import orjson

from app.schema import EVENT_TYPES, SCHEMA, Line, TerminalEvent, utc_now
from app.signing import Signer
from outlet_agent.effects import fold, line_effect
from outlet_agent.errors import OutletLogFull, OutletLogUnavailable, OutletOverloaded

log = logging.getLogger(__name__)

T = TypeVar("T")

#: rows written since the last checkpoint that make the next one due at once
CHECKPOINT_EVENTS: Final = 2_000
#: a checkpoint of whatever was written, at most this often under a trickle
CHECKPOINT_TRICKLE_S: Final = 10.0

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS events (
    seq           INTEGER PRIMARY KEY,
    event_id      TEXT NOT NULL,
    client_txn_id TEXT NOT NULL UNIQUE,
    content_hash  BLOB NOT NULL,
    recorded_at   TEXT NOT NULL,
    recorded_ts   REAL NOT NULL,
    type          TEXT NOT NULL,
    body          BLOB NOT NULL
);
-- one row per line, for the local stock view (signed delta, or the counted value)
CREATE TABLE IF NOT EXISTS event_lines (
    sku   TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    line  INTEGER NOT NULL,
    kind  TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (sku, seq, line)
) WITHOUT ROWID;
-- every sale ever accepted, never pruned: what a void reverses, and whether it was
CREATE TABLE IF NOT EXISTS sales (
    seq           INTEGER PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,
    client_txn_id TEXT NOT NULL UNIQUE,
    lines         BLOB NOT NULL,
    voided_seq    INTEGER
);
-- the view's starting point for each sku: pruned events folded in
CREATE TABLE IF NOT EXISTS sku_base (
    sku      TEXT PRIMARY KEY,
    on_hand  INTEGER NOT NULL,
    upto_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    token_hash  TEXT PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
"""

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=10000")

#: SQLite's limit on ``?`` parameters is far higher, but big IN lists are slow.
_IN_CHUNK = 500


def content_hash(event: TerminalEvent) -> bytes:
    """What a repeated ``client_txn_id`` is compared on (200 vs 409)."""
    return hashlib.sha256(event.content_key()).digest()


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def new_event_ids(n: int, unix_ms: int) -> list[str]:
    """``n`` fresh time-ordered UUIDs (RFC 9562 version 7) from ONE ``os.urandom`` call.

    Each is the 48-bit ``unix_ms`` (the group's ``recorded_at``), the version and
    variant bits, and 74 random bits: unique as a UUID4 is (74 random bits within
    one millisecond of one store), but the ids of one group sort next to each
    other and after older ones. The ``sales`` index on ``event_id`` (never
    pruned) then takes a group's ids on its last few pages instead of on
    hundreds of random ones, each of which COMMIT writes to the WAL. One
    ``os.urandom`` per group, not one per event: it releases the GIL, and the
    writer thread then waits for the event loop to hand it back.
    """
    raw = bytearray(os.urandom(16 * n))
    for i, byte in enumerate((unix_ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")):
        raw[i::16] = bytes((byte,)) * n
    raw[6::16] = bytes(b & 0x0F | 0x70 for b in raw[6::16])  # version 7
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 9562 variant
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


# --------------------------------------------------------------------------- outcomes


class Accepted(NamedTuple):
    """201 (new) or 200 (the same ``client_txn_id`` and content again).

    A named tuple, immutable like a frozen dataclass but made in a fifth of the
    time (one per accepted event, on the writer's hot path).
    """

    status: Literal[200, 201]
    event_id: str
    outlet_seq: int
    recorded_at: str

    def body(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "outlet_seq": self.outlet_seq,
            "recorded_at": self.recorded_at,
        }


@dataclass(frozen=True, slots=True)
class Rejected:
    """409 (key reused for other content), 422 (invalid), 403 (another store), 413."""

    status: int
    detail: str
    reasons: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detail": self.detail}
        if self.reasons:
            out["reasons"] = list(self.reasons)
        out.update(self.extra)
        return out


Outcome = Accepted | Rejected


@dataclass(slots=True)
class Submission:
    """One valid terminal event waiting for the writer: what the writer needs of it.

    Flat fields rather than a :class:`TerminalEvent` inside: the API's fast path
    (``outlet_agent/fastpath.py``) makes these directly, and a frozen dataclass
    per event cost as much as validating it. :meth:`of` makes one from a parsed
    event (the full parser's path).
    """

    type: str
    client_txn_id: str
    occurred_at: datetime
    #: ``occurred_at`` as the envelope writes it (``_iso``)
    occurred_iso: str
    lines: tuple[Line, ...]
    ref: str | None
    reason: str | None
    terminal_id: str
    #: what a repeated ``client_txn_id`` is compared on (:func:`content_hash`)
    content_hash: bytes
    #: a void whose lines the writer fills from the sale named in ``ref``
    fill_from_ref: bool = False

    @classmethod
    def of(
        cls, event: TerminalEvent, terminal_id: str, *, fill_from_ref: bool = False
    ) -> Submission:
        return cls(
            event.type,
            event.client_txn_id,
            event.occurred_at,
            _iso(event.occurred_at),
            event.lines,
            event.ref,
            event.reason,
            terminal_id,
            content_hash(event),
            fill_from_ref,
        )


@dataclass(slots=True)
class _Request:
    items: list[Submission]
    future: asyncio.Future[list[Outcome]]


class LogRecord(NamedTuple):
    """One retained event as the forwarder sends it (a row of ``read_page``)."""

    seq: int
    event_id: str
    recorded_ts: float
    body: bytes


@dataclass(frozen=True, slots=True)
class LogStatus:
    last_seq: int
    forwarded_seq: int
    backlog: int
    oldest_unsent_age_s: float


@dataclass(frozen=True, slots=True)
class LocalLines:
    """What the log holds for one sku: the pruned base and the retained effects."""

    base_on_hand: int
    base_seq: int
    effects: list[tuple[int, str, int]]  # (seq, kind, value) in seq order


# --------------------------------------------------------------------------- the log


class EventLog:
    """The SQLite log: one writer connection (group commit) and reader connections.

    Readers use their own connections, so they only ever see committed rows (WAL).
    """

    def __init__(
        self,
        path: Path,
        *,
        store_id: str,
        queue_max: int = 20_000,
        group_max: int = 2_000,
        on_group: Callable[[int], None] | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.path = path
        self.store_id = store_id
        #: signs each event as it becomes durable; the signed body is what is
        #: stored, forwarded and replayed (issue 10, app/signing.py)
        self.signer = signer
        self.queue_max = queue_max
        self.group_max = group_max
        self.last_seq = 0
        self.forwarded_seq = 0
        self.persisted_forwarded_seq = 0
        #: when the forwarded cursor was last written (monotonic), alone or in a group
        self.persisted_at = 0.0
        self.groups_committed = 0
        #: rows written so far (events, cursor marks, pruned events): what a checkpoint copies
        self.rows_written = 0
        self._on_group = on_group
        self.new_events = asyncio.Event()
        self._queue: deque[_Request] = deque()
        self._queued_events = 0
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writer: sqlite3.Connection | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._reader: aiosqlite.Connection | None = None
        self._forward_reader: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="outlet-log-writer")
        self._writer = await self._in_writer(open_sync, self.path, check_same_thread=False)
        self._reader = await _connect(self.path)
        self._forward_reader = await _connect(self.path)
        self.last_seq, self.forwarded_seq = await self._in_writer(_read_counters, self._writer)
        self.persisted_forwarded_seq = self.forwarded_seq
        await self._in_writer(self._writer.execute, "PRAGMA wal_autocheckpoint=0")
        self._checkpointer = await _connect(self.path)
        self._task = asyncio.create_task(self._write_loop(), name="outlet-log-writer")
        self._checkpoint_task = asyncio.create_task(self._checkpoint_loop(), name="checkpoint")

    async def close(self) -> None:
        """Finish what is queued, stop the writer and close every connection.

        aiosqlite's threads are not daemons: a connection left open hangs shutdown.
        """
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoint_task
            self._checkpoint_task = None
        for conn in (self._forward_reader, self._reader, self._checkpointer):
            if conn is not None:
                await conn.close()
        self._reader = self._forward_reader = self._checkpointer = None
        if self._writer is not None:
            await self._in_writer(self._writer.close)
            self._writer = None
        if self._writer_thread is not None:
            self._writer_thread.shutdown(wait=True)
            self._writer_thread = None

    async def _checkpoint_loop(self, every_s: float = 1.0) -> None:
        """Copy the WAL into the database off the commit path (see the module doc)."""
        db = self._checkpointer
        assert db is not None
        done, done_at = self.rows_written, time.monotonic()
        while True:
            await asyncio.sleep(every_s)
            written = self.rows_written
            if not checkpoint_due(written - done, time.monotonic() - done_at):
                continue
            try:
                await db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError as exc:  # busy or disk full: try again later
                log.warning("outlet log: checkpoint: %s", exc)
                continue
            done, done_at = written, time.monotonic()

    async def _in_writer(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the writer's thread (the only thread that touches its connection).

        Shielded: once a call started it finishes even if the caller is cancelled,
        so the in-memory counters never disagree with what was committed.
        """
        assert self._writer_thread is not None
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.shield(loop.run_in_executor(self._writer_thread, call))

    @property
    def queued_events(self) -> int:
        return self._queued_events

    # ------------------------------------------------------------------ writing

    def submit(self, items: list[Submission]) -> asyncio.Future[list[Outcome]]:
        """Queue a request's events; the future resolves after their group's COMMIT.

        The events of one request always share one transaction, so a batch post is
        all durable or not at all. Raises :class:`OutletOverloaded` when the queue
        is full (the API answers 503 with ``Retry-After``).
        """
        if self._closing:
            raise OutletOverloaded("the outlet agent is shutting down")
        if self._task is None or self._task.done():
            raise OutletLogUnavailable("the outlet log writer is not running; restart the agent")
        if self._queued_events + len(items) > self.queue_max and self._queued_events:
            raise OutletOverloaded(f"{self._queued_events} events are waiting for the log")
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(items, future))
        self._queued_events += len(items)
        self._wakeup.set()
        return future

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group = [self._queue.popleft()]
            size = len(group[0].items)
            while self._queue and size + len(self._queue[0].items) <= self.group_max:
                request = self._queue.popleft()
                group.append(request)
                size += len(request.items)
            self._queued_events -= size
            try:
                outcomes = await self._commit_group([s for r in group for s in r.items])
            except (OutletLogFull, OutletLogUnavailable) as exc:
                _fail(group, exc)
                continue
            except BaseException as exc:
                # a bug, not bad input: answer the waiting requests, then crash loudly;
                # ``submit`` refuses with 503 from now on and the supervisor restarts us
                log.critical("outlet log writer died", exc_info=True)
                _fail(group, OutletLogUnavailable(f"the outlet log writer died: {exc!r}"))
                raise
            i = 0
            for request in group:
                n = len(request.items)
                if not request.future.done():  # the client may have gone away
                    request.future.set_result(outcomes[i : i + n])
                i += n

    async def _commit_group(self, items: list[Submission]) -> list[Outcome]:
        db = self._writer
        assert db is not None
        async with self._lock:
            # the forwarder's cursor, if it moved, rides in this transaction
            moved = self.forwarded_seq > self.persisted_forwarded_seq
            cursor = self.forwarded_seq if moved else None
            try:
                outcomes, last_seq = await self._in_writer(
                    _group_transaction, db, items, self.store_id, self.signer, cursor
                )
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                    log.error("outlet log: disk full, %d events refused (503)", len(items))
                    raise OutletLogFull(
                        f"the outlet's disk is full ({exc}); free space on {self.path.parent}"
                    ) from exc
                log.error("outlet log: commit failed, %d events refused (503): %s", len(items), exc)
                raise OutletLogUnavailable(f"the outlet log could not commit: {exc}") from exc
            self.rows_written += len(items)
            if cursor is not None:
                self._cursor_written(cursor)
            # advanced only after COMMIT: a failed group leaves no gap (issue 4)
            if last_seq != self.last_seq:
                self.last_seq = last_seq
                self.new_events.set()
            self.groups_committed += 1
        if self._on_group is not None:
            self._on_group(len(items))
        return outcomes

    # ------------------------------------------------------------------ forwarding

    async def read_page(self, after: int, limit: int) -> list[LogRecord]:
        """The next ``limit`` retained events after seq ``after``, in seq order."""
        db = self._forward_reader
        assert db is not None
        async with db.execute(
            "SELECT seq, event_id, recorded_ts, body FROM events WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (after, limit),
        ) as cur:
            rows = await cur.fetchall()
        # INTEGER, TEXT, REAL and BLOB columns come back as int, str, float, bytes
        return list(map(LogRecord._make, rows))

    async def mark_forwarded(self, seq: int, *, persist: bool = True) -> None:
        """Note that every event up to ``seq`` was acknowledged by the broker.

        ``persist=False`` only moves the in-memory cursor (what the forwarder reads
        next and what ``/v1/status`` shows); a crash before the next persisted mark
        re-sends those events with their own event_id and seq (SPEC rule 2).
        """
        self.forwarded_seq = max(self.forwarded_seq, seq)
        if not persist:
            return
        db = self._writer
        assert db is not None
        async with self._lock:
            await self._in_writer(db.execute, _SET_FORWARDED, (seq,))
            self.rows_written += 1
            self._cursor_written(seq)

    def _cursor_written(self, seq: int) -> None:
        self.persisted_forwarded_seq = max(self.persisted_forwarded_seq, seq)
        self.persisted_at = time.monotonic()

    async def prune(self, retention_s: float, *, chunk: int = 5_000) -> int:
        """Delete forwarded events older than ``retention_s``; never an unacked one.

        Their effects are folded into ``sku_base`` in the same transaction, so the
        local view computed from the log alone stays right. Sales stay indexed.
        """
        db = self._writer
        assert db is not None
        cutoff = time.time() - retention_s
        pruned = 0
        while True:
            async with self._lock:
                n = await self._in_writer(
                    _prune_chunk, db, self.persisted_forwarded_seq, cutoff, chunk
                )
            if not n:
                return pruned
            pruned += n
            self.rows_written += n

    # ------------------------------------------------------------------ reading

    async def status(self) -> LogStatus:
        db = self._reader
        assert db is not None
        age = 0.0
        if self.last_seq > self.forwarded_seq:
            async with db.execute(
                "SELECT recorded_ts FROM events WHERE seq > ? ORDER BY seq LIMIT 1",
                (self.forwarded_seq,),
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                age = max(0.0, time.time() - float(row[0]))
        return LogStatus(
            last_seq=self.last_seq,
            forwarded_seq=self.forwarded_seq,
            backlog=self.last_seq - self.forwarded_seq,
            oldest_unsent_age_s=round(age, 3),
        )

    async def local_lines(self, sku: str, after_seq: int = 0) -> LocalLines:
        """The retained effects on ``sku`` with seq > ``after_seq``, and the pruned base."""
        db = self._reader
        assert db is not None
        async with db.execute(
            "SELECT on_hand, upto_seq FROM sku_base WHERE sku = ?", (sku,)
        ) as cur:
            base = await cur.fetchone()
        async with db.execute(
            "SELECT seq, kind, value FROM event_lines WHERE sku = ? AND seq > ? ORDER BY seq, line",
            (sku, after_seq),
        ) as cur:
            rows = await cur.fetchall()
        return LocalLines(
            base_on_hand=int(base[0]) if base else 0,
            base_seq=int(base[1]) if base else 0,
            effects=[(int(r[0]), str(r[1]), int(r[2])) for r in rows],
        )

    async def token_terminal(self, token_hash: str) -> str | None:
        """The terminal a (hashed) token belongs to, unless unknown or revoked."""
        db = self._reader
        assert db is not None
        async with db.execute(
            "SELECT terminal_id FROM tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (token_hash,),
        ) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None


# --------------------------------------------------------------------------- helpers


#: a client_txn_id already in the log (or earlier in the group): its content hash
#: and its first answer
_Prior = tuple[bytes, Accepted]


@dataclass(slots=True)
class _Sale:
    seq: int
    lines: tuple[Line, ...]
    voided_seq: int | None


def _fail(group: list[_Request], exc: BaseException) -> None:
    for request in group:
        if not request.future.done():
            request.future.set_exception(exc)


def _repeat(prior: _Prior, digest: bytes) -> Outcome:
    content_hash, a = prior
    if content_hash == digest:
        return Accepted(200, a.event_id, a.outlet_seq, a.recorded_at)
    return Rejected(
        409,
        "client_txn_id was already used for an event with other content; "
        "send a new client_txn_id for a new event",
        extra={"event_id": a.event_id, "outlet_seq": a.outlet_seq},
    )


def _invalid(reason: str) -> Rejected:
    return Rejected(422, "invalid event", (reason,))


#: per event type, the kind of its lines' effects and the sign of their qty
_EFFECT: Final = {t: line_effect(t, 1) for t in EVENT_TYPES}


def _pack_lines(lines: Iterable[Line]) -> bytes:
    return orjson.dumps([[ln.sku, ln.qty, ln.unit_price_cents] for ln in lines])


def _unpack_lines(raw: bytes) -> tuple[Line, ...]:
    return tuple(Line(sku=s, qty=q, unit_price_cents=p) for s, q, p in orjson.loads(raw))


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), _IN_CHUNK):
        yield values[i : i + _IN_CHUNK]


_SET_FORWARDED: Final = (
    "INSERT INTO meta VALUES ('forwarded_seq', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def checkpoint_due(rows: int, since_s: float) -> bool:
    """Whether the WAL should be copied into the database now (see the module doc)."""
    return rows >= CHECKPOINT_EVENTS or (rows > 0 and since_s >= CHECKPOINT_TRICKLE_S)


def _group_transaction(
    db: sqlite3.Connection,
    items: list[Submission],
    store_id: str,
    signer: Signer | None = None,
    forwarded_seq: int | None = None,
) -> tuple[list[Outcome], int]:
    """One group in one transaction, on the writer thread; rolled back on any error.

    The next seq comes from ``meta.last_seq`` read inside the transaction and is
    written back in it: seqs are gap-free and never reused, whatever happened to
    the in-memory counter. ``forwarded_seq``, when given, is the forwarder's
    cursor, written in the same transaction (no commit of its own).
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        result = _write_group(db, items, store_id, signer)
        if forwarded_seq is not None:
            db.execute(_SET_FORWARDED, (forwarded_seq,))
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise
    return result


def _write_group(
    db: sqlite3.Connection, items: list[Submission], store_id: str, signer: Signer | None = None
) -> tuple[list[Outcome], int]:
    row = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
    seq = int(row[0]) if row else 0
    known = _existing_txns(db, [s.client_txn_id for s in items])
    refs = [s.ref for s in items if s.fill_from_ref and s.ref]
    sales = _sales_by_ref(db, refs) if refs else {}
    now = utc_now()
    recorded_at = _iso(now)
    recorded_ts = now.timestamp()
    outcomes: list[Outcome] = []
    ids = iter(new_event_ids(len(items), int(recorded_ts * 1000)))
    event_rows: list[tuple[Any, ...]] = []
    line_rows: list[tuple[Any, ...]] = []
    sale_rows: list[tuple[Any, ...]] = []
    void_rows: list[tuple[int, int]] = []
    for ev in items:
        prior = known.get(ev.client_txn_id)
        if prior is not None:
            outcomes.append(_repeat(prior, ev.content_hash))
            continue
        lines = ev.lines
        if ev.fill_from_ref:
            sale = sales.get(ev.ref or "")
            if sale is None:
                outcomes.append(_invalid(f"ref: no sale {ev.ref!r} in this outlet's log"))
                continue
            if sale.voided_seq is not None:
                outcomes.append(
                    _invalid(f"ref: sale {ev.ref!r} was already voided (seq {sale.voided_seq})")
                )
                continue
            lines = sale.lines
        seq += 1
        event_id = next(ids)
        answer = Accepted(201, event_id, seq, recorded_at)
        known[ev.client_txn_id] = (ev.content_hash, answer)
        outcomes.append(answer)
        body = _encode(
            ev, event_id, store_id, ev.terminal_id, seq, recorded_at, lines, signer,
            ev.occurred_iso,
        )  # fmt: skip
        # blobs as bytearray: sqlite3 binds those directly, where each bytes value
        # first goes through its adapter lookup (two failed attribute lookups)
        event_rows.append(
            (
                seq,
                event_id,
                ev.client_txn_id,
                bytearray(ev.content_hash),
                recorded_at,
                recorded_ts,
                ev.type,
                bytearray(body),
            )
        )
        kind, sign = _EFFECT[ev.type]  # every line of an event has the same kind
        for n, line in enumerate(lines):
            line_rows.append((line.sku, seq, n, kind, sign * line.qty))
        if ev.type == "sale":
            sale_rows.append((seq, event_id, ev.client_txn_id, bytearray(_pack_lines(lines))))
            if refs:  # a void later in this group may name it
                sales[event_id] = sales[ev.client_txn_id] = _Sale(seq, lines, None)
        elif ev.fill_from_ref:
            voided = sales[ev.ref or ""]
            voided.voided_seq = seq
            void_rows.append((seq, voided.seq))
    if event_rows:
        db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", event_rows)
        db.executemany("INSERT INTO event_lines VALUES (?,?,?,?,?)", line_rows)
        if sale_rows:
            db.executemany(
                "INSERT INTO sales (seq, event_id, client_txn_id, lines) VALUES (?,?,?,?)",
                sale_rows,
            )
        if void_rows:
            db.executemany("UPDATE sales SET voided_seq = ? WHERE seq = ?", void_rows)
        db.execute(
            "INSERT INTO meta VALUES ('last_seq', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (seq,),
        )
    return outcomes, seq


class _EventFields(Protocol):
    """What :func:`_encode` reads of an event: a :class:`TerminalEvent` or a Submission."""

    @property
    def type(self) -> str: ...
    @property
    def client_txn_id(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def ref(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...


def _encode(
    ev: _EventFields,
    event_id: str,
    store_id: str,
    terminal_id: str,
    seq: int,
    recorded_at: str,
    lines: tuple[Line, ...],
    signer: Signer | None = None,
    occurred_iso: str | None = None,
) -> bytes:
    """The event's wire form: byte-for-byte ``encode_event`` of the same ``Event``.

    Built directly (recorded_at formatted once per group) because it is the
    writer's hottest line; ``tests/outlet`` checks it against ``encode_event``.
    With a signer, ``key_id`` and ``sig`` come last (``Event.extra`` keeps them
    in that order, so ``encode_event`` of the parsed event is still these bytes).
    """
    envelope: dict[str, Any] = {
        "event_id": event_id,
        "schema": SCHEMA,
        "type": ev.type,
        "store_id": store_id,
        "terminal_id": terminal_id,
        "outlet_seq": seq,
        "client_txn_id": ev.client_txn_id,
        "occurred_at": occurred_iso or _iso(ev.occurred_at),
        "recorded_at": recorded_at,
        "lines": [
            {"sku": ln.sku, "qty": ln.qty}
            if ln.unit_price_cents is None
            else {"sku": ln.sku, "qty": ln.qty, "unit_price_cents": ln.unit_price_cents}
            for ln in lines
        ],
        "ref": ev.ref,
        "reason": ev.reason,
    }
    if signer is not None:
        signer.sign(envelope)
    return orjson.dumps(envelope)


def _existing_txns(db: sqlite3.Connection, txn_ids: list[str]) -> dict[str, _Prior]:
    out: dict[str, _Prior] = {}
    for chunk in _chunks(txn_ids):
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            "SELECT client_txn_id, content_hash, event_id, seq, recorded_at FROM events "
            f"WHERE client_txn_id IN ({marks})",
            tuple(chunk),
        ).fetchall()
        for txn, digest, event_id, seq, recorded_at in rows:
            out[txn] = (bytes(digest), Accepted(201, event_id, int(seq), recorded_at))
    return out


def _sales_by_ref(db: sqlite3.Connection, refs: list[str]) -> dict[str, _Sale]:
    """Sales named by event_id or client_txn_id, each under both keys (one object)."""
    out: dict[str, _Sale] = {}
    for chunk in _chunks(refs):
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            "SELECT seq, event_id, client_txn_id, lines, voided_seq FROM sales "
            f"WHERE event_id IN ({marks}) OR client_txn_id IN ({marks})",
            (*chunk, *chunk),
        ).fetchall()
        for seq, event_id, txn, lines, voided in rows:
            sale = _Sale(int(seq), _unpack_lines(bytes(lines)), voided)
            out[event_id] = out[txn] = sale
    return out


def _prune_chunk(db: sqlite3.Connection, forwarded_seq: int, cutoff: float, chunk: int) -> int:
    """Delete up to ``chunk`` forwarded events older than ``cutoff``; how many went."""
    row = db.execute(
        "SELECT MAX(seq) FROM (SELECT seq FROM events WHERE seq <= ? "
        "AND recorded_ts < ? ORDER BY seq LIMIT ?)",
        (forwarded_seq, cutoff, chunk),
    ).fetchone()
    upto = int(row[0]) if row and row[0] is not None else 0
    if not upto:
        return 0
    db.execute("BEGIN IMMEDIATE")
    try:
        _fold_into_base(db, upto)
        pruned = db.execute("DELETE FROM events WHERE seq <= ?", (upto,)).rowcount
        db.execute("DELETE FROM event_lines WHERE seq <= ?", (upto,))
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise
    return int(pruned)


def _fold_into_base(db: sqlite3.Connection, upto: int) -> None:
    rows = db.execute(
        "SELECT sku, kind, value FROM event_lines WHERE seq <= ? ORDER BY sku, seq, line",
        (upto,),
    ).fetchall()
    by_sku: dict[str, list[tuple[str, int]]] = {}
    for sku, kind, value in rows:
        by_sku.setdefault(str(sku), []).append((str(kind), int(value)))
    for sku, effects in by_sku.items():
        row = db.execute("SELECT on_hand FROM sku_base WHERE sku = ?", (sku,)).fetchone()
        on_hand = fold(int(row[0]) if row else 0, effects)
        db.execute(
            "INSERT INTO sku_base VALUES (?,?,?) ON CONFLICT (sku) DO UPDATE "
            "SET on_hand = excluded.on_hand, upto_seq = excluded.upto_seq",
            (sku, on_hand, upto),
        )


async def _connect(path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        await db.execute(pragma)
    return db


def _read_counters(db: sqlite3.Connection) -> tuple[int, int]:
    meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta").fetchall()}
    row = db.execute("SELECT MAX(seq) FROM events").fetchone()
    max_seq = int(row[0]) if row and row[0] is not None else 0
    return max(meta.get("last_seq", 0), max_seq), meta.get("forwarded_seq", 0)


def _rollback(db: sqlite3.Connection) -> None:
    try:
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:  # SQLite may already have rolled back
        log.warning("outlet log: rollback: %s", exc)


def open_sync(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A plain sqlite3 connection (autocommit; explicit BEGIN), schema made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    for pragma in PRAGMAS:
        db.execute(pragma)
    db.executescript(SCHEMA_SQL)
    return db


__all__ = [
    "Accepted",
    "EventLog",
    "LocalLines",
    "LogRecord",
    "LogStatus",
    "Outcome",
    "Rejected",
    "Submission",
    "content_hash",
    "open_sync",
]
