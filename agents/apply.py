"""Where events are applied: dedup, rules, one write per key per batch.

The batch loop is the unit of exactness: events are applied in memory by the
pure rules (``domain.apply``), every dirty key is written once to RocksDB and
its changelog, the outputs (dead letters, ledger rows for the sink, transfer
legs, SKU snapshots) are sent, and only when the broker has acknowledged all of
it are the source records acked, so their offsets can be committed.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from agents.ingest import Source, validate_record
from agents.reservations import Reservations
from app import faults, metrics
from app.lagstats import LagStats
from app.schema import Event
from app.settings import Settings
from app.topics import Topics
from domain.apply import BatchOutcome, DeadLetter, apply_events, finish_batch, split_key
from domain.reservations import CLEARED, InvalidCommand, ReservationCommand, alert_for, alert_note
from tables.state import StateCache, Tables
from tables.writer import BatchWriter

log = logging.getLogger(__name__)

#: events (validated, applied, or their keys' rows made) between two yields to
#: the event loop. A 5,000-event group of a draining backlog is seconds of CPU
#: on a shared box; in stretches of 2,000 events the web views waited ~1 s for
#: each turn of the loop, and ``/api/sync`` took 1-14 s to answer while a
#: backlog drained. The table writes of a group stay in one stretch, so a view
#: never sees one table written and the other not.
CHUNK_EVENTS = 500
#: stores' ``applied`` records made between two yields
CHUNK_STORES = 10

T = TypeVar("T")


async def with_turns(items: Sequence[T], size: int) -> AsyncIterator[Sequence[T]]:
    """``items`` in slices of ``size``; the event loop gets a turn between two."""
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)  # the web views answer between slices
        yield items[start : start + size]


#: events applied, written and acknowledged together
GROUP_EVENTS = 5_000

#: (store_id, outlet_seq) -> when the outlet's forwarder sent the event's record
#: (its Kafka timestamp, s). The ledger keeps it, so a lag splits into the
#: store side (recorded_at -> sent_at) and the centre (sent_at -> applied_at).
SentAt = dict[tuple[str, int], float]


@dataclass(slots=True)
class BatchRows:
    """Per store, what a batch writes for the stock and sales keys it changed."""

    #: key -> stock table value
    values: defaultdict[str, dict[str, Any]] = field(default_factory=lambda: defaultdict(dict))
    #: key -> alert record, for the keys whose alert changed (or was replayed)
    alerts: defaultdict[str, dict[str, Any]] = field(default_factory=lambda: defaultdict(dict))
    #: the sink's ``stock_levels`` rows
    snapshots: defaultdict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: (store, minute) key -> sales bucket
    sales: defaultdict[str, dict[str, Any]] = field(default_factory=lambda: defaultdict(dict))


@dataclass
class Applier:
    settings: Settings
    topics: Topics
    tables: Tables
    cache: StateCache
    reservations: Reservations
    writer: BatchWriter
    lags: LagStats = field(default_factory=LagStats)
    #: (expires_at_ms, store_id, order_id) of reservations granted here
    expiries: list[tuple[int, str, str]] = field(default_factory=list)
    #: seqs of acknowledged flushes not yet folded into durable_wm, per store
    _unconfirmed: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    #: a record of each store's partition (table writes go to its partition)
    _store_record: dict[str, Any] = field(default_factory=dict)
    #: bumped by reset(): a flush that straddles a rebalance confirms nothing
    _generation: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def process(self, batch: list[Any]) -> None:
        """Apply a batch taken from the stream, in groups of at most ``GROUP_EVENTS`` events.

        Packed records hold up to 50 events each, so a take of records can be
        huge; each group is applied, written and acknowledged on its own, and
        the event loop gets a turn between groups (the web views stay live).
        """
        valid: list[Event | ReservationCommand] = []
        dead: list[tuple[str, DeadLetter, Any]] = []
        store_event: dict[str, Any] = {}
        sent: SentAt = {}
        commands_topic = self.topics.reservations.get_topic_name()
        since_yield = 0
        for record in batch:
            msg = record.message
            key = msg.key.decode("utf-8", "replace") if isinstance(msg.key, bytes) else None
            source = Source(msg.topic, msg.partition, msg.offset, key)
            if msg.topic == commands_topic:
                try:
                    command = ReservationCommand.from_json(orjson.loads(record.value))
                except (InvalidCommand, orjson.JSONDecodeError) as exc:
                    letter = DeadLetter([str(exc)], None, key)
                    dead.append((source.dead_letter_key(0), letter, record))
                    continue
                store_event.setdefault(command.store_id, record)
                valid.append(command)
            else:
                events, bad = validate_record(record.value, source, self.settings)
                stamp = msg.timestamp  # the outlet's forwarder sent the record (s)
                for event in events:
                    store_event.setdefault(event.store_id, record)
                    if stamp:  # the first copy is the one applied
                        sent.setdefault((event.store_id, event.outlet_seq), stamp)
                valid.extend(events)
                dead.extend((k, d, record) for k, d in bad)
                since_yield += len(events)
            if len(valid) >= GROUP_EVENTS:
                await self._apply_group(valid, dead, store_event, sent)
                valid, dead, store_event, sent = [], [], {}, {}
                since_yield = 0
            elif since_yield >= CHUNK_EVENTS:
                await asyncio.sleep(0)  # the web views get a turn while a take is decoded
                since_yield = 0
        if valid or dead:
            await self._apply_group(valid, dead, store_event, sent)

    async def _apply_group(
        self,
        valid: list[Event | ReservationCommand],
        dead: list[tuple[str, DeadLetter, Any]],
        store_event: dict[str, Any],
        sent: SentAt,
    ) -> BatchOutcome:
        # A rebalance waits for the group in hand (reset_when_idle), so a
        # revoked partition never gets a late write from this worker.
        async with self._lock:
            return await self._apply_group_locked(valid, dead, store_event, sent)

    async def reset_when_idle(self) -> None:
        """Partitions are being revoked: let the group in hand finish, then forget."""
        async with self._lock:
            self.reset()

    async def _apply_group_locked(
        self,
        valid: list[Event | ReservationCommand],
        dead: list[tuple[str, DeadLetter, Any]],
        store_event: dict[str, Any],
        sent: SentAt,
    ) -> BatchOutcome:
        started = time.monotonic()
        now = time.time()
        for store_id, record in store_event.items():
            self.cache.partitions[store_id] = record.message.partition
            self._store_record[store_id] = record
        # The previous group's flush was acknowledged: its seqs are durable in
        # every key, so durable_wm may move over them. The new value rides in
        # this group's flush; the agent acks the previous take only after it
        # (so a restart never starts from a durable_wm behind committed offsets).
        confirmed = self._confirm_flushed()
        outcome = BatchOutcome()
        async for events in with_turns(valid, CHUNK_EVENTS):
            apply_events(events, self.cache, now=now, out=outcome, finish=False)
        await asyncio.sleep(0)  # and one before the rows are made
        finish_batch(outcome, self.cache)
        outcome.touched_progress |= confirmed
        rows = await self._rows(outcome, now)
        self._write_state(outcome, store_event, rows)  # one stretch: see CHUNK_EVENTS
        await self._send_outputs(outcome, store_event, dead, now, rows, sent)
        self.cache.trim()  # only now: every changed value has been serialized
        generation = self._generation
        if faults.ARMED:  # TEST ONLY (app/faults.py)
            faults.reach("before_changelog")
        flush_started = time.monotonic()
        await self.writer.flush()
        metrics.FLUSH_SECONDS.observe(time.monotonic() - flush_started)
        if faults.ARMED:
            faults.reach("before_commit")
        if generation != self._generation:
            # partitions were revoked while this flush was on its way: the
            # state it confirms is no longer ours to track
            return outcome
        for store_id, seqs in outcome.seen.items():
            self._unconfirmed[store_id].extend(seqs)
        self.reservations.answer(outcome.replies)
        for reply in outcome.replies.values():
            if reply.get("granted") and reply.get("expires_at_ms"):
                heapq.heappush(
                    self.expiries,
                    (int(reply["expires_at_ms"]), reply["store_id"], reply["order_id"]),
                )

        metrics.EVENTS_APPLIED.inc(outcome.new_events)
        metrics.DUPLICATES.inc(outcome.duplicates)
        for store_id, lag in outcome.lags:
            metrics.APPLY_LAG.observe(lag)
            self.lags.add(store_id, lag)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        if valid:
            log.debug(
                "applied group: %d items, %d new, %d duplicates, %d dead letters, %d keys",
                len(valid), outcome.new_events, outcome.duplicates,
                len(dead) + len(outcome.dead_letters), len(outcome.touched_stock),
            )  # fmt: skip
        return outcome

    def _confirm_flushed(self) -> set[str]:
        """Stores whose durable_wm moved over the seqs of acknowledged flushes."""
        moved = set()
        for store_id, seqs in self._unconfirmed.items():
            known = store_id in self._store_record
            if seqs and known and self.cache.progress(store_id).confirm(seqs):
                moved.add(store_id)
        self._unconfirmed.clear()
        return moved

    def reset(self) -> None:
        """Forget all in-memory state (partitions were revoked)."""
        self._generation += 1
        self.cache.clear()
        self._unconfirmed.clear()
        self._store_record.clear()

    def _write_state(
        self, outcome: BatchOutcome, store_event: dict[str, Any], rows: BatchRows
    ) -> None:
        for store_id, alerts in rows.alerts.items():
            self.writer.set(self.tables.alerts, store_event[store_id], alerts)
        for store_id, values in rows.values.items():
            self.writer.set(self.tables.stock, store_event[store_id], values)
        for store_id in outcome.touched_progress:
            self.writer.set(
                self.tables.progress,
                self._store_record[store_id],
                {store_id: self.cache.progress(store_id).to_json()},
            )
        for store_id, buckets in rows.sales.items():
            self.writer.set(self.tables.sales, store_event[store_id], buckets)
        self._write_by_store(
            self.tables.reservations, outcome.touched_reservations, self.cache.reservation,
            store_event,
        )  # fmt: skip
        self._write_by_store(self.tables.voids, outcome.touched_voids, self.cache.void, store_event)

    def _write_by_store(
        self,
        table: Any,
        keys: set[str],
        value_of: Callable[[str], dict[str, Any]],
        store_event: dict[str, Any],
    ) -> None:
        """Write "store<US>..." keys of ``table``, one write per store's partition."""
        by_store: dict[str, dict[str, Any]] = defaultdict(dict)
        for key in keys:
            by_store[split_key(key)[0]][key] = dict(value_of(key))
        for store_id, items in by_store.items():
            self.writer.set(table, store_event[store_id], items)

    async def _rows(self, outcome: BatchOutcome, now: float) -> BatchRows:
        """The rows of every key a batch changed (:meth:`_stock_rows`), yielding between chunks."""
        rows = BatchRows()
        async for keys in with_turns(list(outcome.touched_stock), CHUNK_EVENTS):
            self._stock_rows(outcome, keys, now, rows)  # nothing a view reads is written here
        for skey in outcome.touched_sales:
            rows.sales[split_key(skey)[0]][skey] = self.cache.sales(skey)
        return rows

    def _stock_rows(
        self, outcome: BatchOutcome, keys: Sequence[str], now: float, rows: BatchRows
    ) -> None:
        """One pass over stock keys a batch changed: table values, alerts, the sink's rows.

        SPEC rule 5: negative (and low) stock raises an alert; recovery clears it.
        An alert record is written when it changes (raised, changed kind,
        cleared), not each time its key moves: the view reads the current
        on_hand from the stock table. The stock value remembers the last alert
        written for it (``"cleared:<kind>"`` once cleared), in the same record
        as the seqs it reflects, so a replay that finds its seqs already
        applied writes that alert again, in case the crash lost it. So the
        alert is decided before the value is serialized.
        """
        threshold = self.settings.low_stock_threshold
        now_ms = int(now * 1000)
        for key in keys:
            store_id, sku = split_key(key)
            state = self.cache.stock(key)
            on_hand = state.on_hand
            kind = alert_for(on_hand, threshold)
            before, after = state.alert, alert_note(state.alert, kind)
            if after is not None and (after != before or key in outcome.replayed_stock):
                rows.alerts[store_id][key] = {
                    "store_id": store_id,
                    "sku": sku,
                    "kind": kind or after.removeprefix(CLEARED),
                    "on_hand": on_hand,
                    "threshold": threshold,
                    "active": kind is not None,
                    "at": now,
                }
                state.alert = after
            rows.values[store_id][key] = state.to_json()
            rows.snapshots[store_id].append(
                {
                    "store_id": store_id,
                    "sku": sku,
                    "on_hand": on_hand,
                    "reserved": state.reserved(now_ms),
                    "applied_seq": state.applied_seq,
                    "ver": state.ver,
                    "updated_at": now,
                }
            )

    async def _send_outputs(
        self,
        outcome: BatchOutcome,
        store_event: dict[str, Any],
        dead: list[tuple[str, DeadLetter, Any]],
        now: float,
        rows: BatchRows,
        sent: SentAt,
    ) -> None:
        # dead letters: invalid records (keyed by their source coordinates) and
        # conflicts (keyed by the event), to the topic and the table
        keyed = list(dead)
        for d in outcome.dead_letters:
            assert d.event is not None and d.store_id is not None
            key = f"{d.kind}:{d.store_id}:{d.event.get('outlet_seq')}:{d.event.get('event_id')}"
            keyed.append((key, d, store_event[d.store_id]))
        for key, d, record in keyed:
            value = {
                "key": key,
                "kind": d.kind,
                "reasons": d.reasons,
                "store_id": d.store_id,
                "event": d.event,
                "at": now,
            }
            self.writer.set(self.tables.dead_letters, record, {key: value})
            self.writer.send(
                self.topics.dead_letters, (d.store_id or "").encode(), orjson.dumps(value)
            )
            metrics.DEAD_LETTERS.labels(kind=d.kind).inc()

        # per store: what the Postgres sink needs (agents.apply.applied_records)
        ledger_by_store: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in outcome.ledger:
            row["sent_at"] = sent.get((row["store_id"], row["outlet_seq"]))
            ledger_by_store[row["store_id"]].append(row)
        async for stores in with_turns(list(outcome.touched_progress), CHUNK_STORES):
            for store_id in stores:  # outputs only: nothing a view reads
                self._send_applied(
                    store_id, ledger_by_store, rows, now, outcome.withdrawn.get(store_id)
                )
        for leg in outcome.transfer_legs:
            self.writer.send(
                self.topics.transfers, str(leg["transfer_id"]).encode(), orjson.dumps(leg)
            )

    def _send_applied(
        self,
        store_id: str,
        ledger_by_store: dict[str, list[dict[str, Any]]],
        rows: BatchRows,
        now: float,
        withdrawn: set[int] | None = None,
    ) -> None:
        """One store's ``applied`` records: its ledger lines, stock rows, sales and progress,
        and the seqs of withdrawn voids (their ledger rows become ``ignored``)."""
        progress = self.cache.progress(store_id)
        sales = [
            {
                "store_id": store_id,
                "minute": split_key(k)[1],
                **_sales_figures(bucket),
            }
            for k, bucket in rows.sales.get(store_id, {}).items()
        ]
        figures = {
            "store_id": store_id,
            "applied_seq": progress.seqs.watermark,
            "highest_seq": progress.seqs.highest,
            "gaps": progress.seqs.gaps(),
            "missing": progress.seqs.missing_count(),
            "duplicates": progress.duplicates,
            "conflicts": progress.conflicts,
            "events": progress.events,
            "last_recorded_at": progress.last_recorded_at,
            "lag_p50_ms": _ms(self.lags.percentile(store_id, 0.5)),
            "lag_p99_ms": _ms(self.lags.percentile(store_id, 0.99)),
        }
        for record in applied_records(
            store_id,
            ledger_by_store.get(store_id, []),
            rows.snapshots.get(store_id, []),
            sales,
            figures,
            now,
            sorted(withdrawn or ()),
        ):
            self.writer.send(self.topics.applied, store_id.encode(), orjson.dumps(record))


#: rows (ledger lines and stock snapshots) per ``applied`` record
APPLIED_ROWS_MAX = 2_000


def applied_records(
    store_id: str,
    ledger: list[dict[str, Any]],
    stock: list[dict[str, Any]],
    sales: list[dict[str, Any]],
    progress: dict[str, Any],
    sent_at: float,
    withdrawn: list[int] | None = None,
) -> list[dict[str, Any]]:
    """What the Postgres sink gets of one store's share of a group, in order.

    A backlog's group holds up to ``GROUP_EVENTS`` events, and one store's
    share of it (an outlet back from an outage, alone) runs to megabytes of
    ledger rows: Apache Kafka refuses records above 1 MB by default (Tansu
    takes them, so nothing here fails without this). So the rows
    travel in records of at most ``APPLIED_ROWS_MAX``, and only the last
    carries the store's progress: PostgreSQL's
    ``outlet_sync`` never claims a seq before every ledger row up to it is
    there (the records share a partition, so they arrive in this order).
    ``withdrawn`` (seqs of voids another void replaced) rides on the last
    one too, after the rows it corrects.
    """
    parts: list[dict[str, Any]] = []
    li = si = 0
    while True:  # ledger rows first, then snapshots, APPLIED_ROWS_MAX a record
        part_ledger = ledger[li : li + APPLIED_ROWS_MAX]
        li += len(part_ledger)
        part_stock = stock[si : si + APPLIED_ROWS_MAX - len(part_ledger)]
        si += len(part_stock)
        parts.append({"ledger": part_ledger, "stock": part_stock})
        if li >= len(ledger) and si >= len(stock):
            break
    records = [{"store_id": store_id, **part, "sales": [], "sent_at": sent_at} for part in parts]
    records[-1].update(sales=sales, progress=progress)
    if withdrawn:
        records[-1]["withdrawn"] = withdrawn
    return records


def _sales_figures(bucket: dict[str, Any]) -> dict[str, int]:
    return {
        "units": int(bucket.get("units", 0)),
        "revenue_cents": int(bucket.get("revenue_cents", 0)),
        "events": int(bucket.get("events", 0)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
