"""Apply a batch of validated events to the state of their stores (SPEC rules 1-6).

Pure: the caller hands in a :class:`StateAccess` (a cache in front of the
tables) and gets back what changed and what to emit. One batch touches each
key as often as its events need, but the caller writes each key once.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.schema import Event
from domain.progress import ProgressState, id_hash
from domain.reservations import ReservationCommand
from domain.seqs import ranges_add
from domain.stock import Effect, StockState

KEY_SEP = "\x1f"


def stock_key(store_id: str, sku: str) -> str:
    return f"{store_id}{KEY_SEP}{sku}"


def split_key(key: str) -> tuple[str, str]:
    store_id, _, rest = key.partition(KEY_SEP)
    return store_id, rest


def fingerprint(event: Event) -> str:
    """A hash of the event_id, then of the content: equal for a true duplicate (SPEC rule 2).

    24 hex digits: the content's 64 bits decide duplicate or conflict (a
    conflict taken for a duplicate would apply its lines to keys that lack the
    seq); the event_id's 32 only choose the wording of a conflict's reason.
    """
    digest = hashlib.blake2b(event.content_key(), digest_size=8).hexdigest()
    return id_hash(event.event_id) + digest


def line_effects(event: Event) -> dict[str, int]:
    """Signed stock change per SKU (for a count: the counted quantity)."""
    sign = {
        "sale": -1,
        "return": 1,
        "receipt": 1,
        "adjustment": 1,
        "void": 1,  # reverses the sale's lines, which the outlet put in the void
        "transfer_out": -1,
        "transfer_in": 1,
        "count": 1,
    }[event.type]
    out: dict[str, int] = defaultdict(int)
    for line in event.lines:
        out[line.sku] += sign * line.qty
    return dict(out)


class StateAccess(Protocol):
    def stock(self, key: str) -> StockState: ...
    def progress(self, store_id: str) -> ProgressState: ...
    def sales(self, key: str) -> dict[str, Any]: ...
    def reservation(self, key: str) -> dict[str, Any]: ...
    def void(self, key: str) -> dict[str, Any]: ...


#: every kind of dead letter: failed validation, conflicting content (SPEC
#: rule 2), a second void of a sale, a signature not accepted (issue 10)
DEAD_LETTER_KINDS = ("invalid", "conflict", "void_rejected", "signature")


@dataclass(slots=True)
class DeadLetter:
    reasons: list[str]
    event: dict[str, Any] | None
    store_id: str | None
    kind: str = "invalid"  # one of DEAD_LETTER_KINDS


@dataclass(slots=True)
class BatchOutcome:
    touched_stock: set[str] = field(default_factory=set)
    #: stock keys a replayed event found already applied: what was derived from
    #: them (their alert record) may have been lost in a crash, so it is written again
    replayed_stock: set[str] = field(default_factory=set)
    touched_progress: set[str] = field(default_factory=set)
    touched_sales: set[str] = field(default_factory=set)
    touched_reservations: set[str] = field(default_factory=set)
    #: (store, sale) keys of the voids table this batch set or met again
    touched_voids: set[str] = field(default_factory=set)
    #: store -> seqs of voids a void of the same sale with a smaller seq replaced:
    #: their ledger rows become ``ignored`` (sent again with every replay)
    withdrawn: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    #: request_id -> the answer for the web view waiting on it
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    transfer_legs: list[dict[str, Any]] = field(default_factory=list)
    #: seconds from recorded_at to applied, per newly applied event
    lags: list[tuple[str, float]] = field(default_factory=list)
    #: every seq seen per store in this batch (new or duplicate): once the batch
    #: is acknowledged, their effects are durable in every key they touch
    seen: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    new_events: int = 0
    duplicates: int = 0
    effects: dict[Effect, int] = field(default_factory=lambda: defaultdict(int))


def apply_events(
    events: Iterable[Event | ReservationCommand],
    state: StateAccess,
    *,
    now: float,
    out: BatchOutcome | None = None,
    finish: bool = True,
) -> BatchOutcome:
    """Apply ``events`` in arrival order; the stock is independent of that order.

    A caller that applies a batch in several calls passes ``finish=False`` and
    calls :func:`finish_batch` once at the end.
    """
    out = out or BatchOutcome()
    for event in events:
        if isinstance(event, ReservationCommand):
            _apply_command(event, state, out)
        else:
            _apply_one(event, state, now, out)
    if finish:
        finish_batch(out, state)
    return out


def finish_batch(out: BatchOutcome, state: StateAccess) -> None:
    """Let each touched key forget per-seq detail below its store's durable watermark."""
    durable: dict[str, int] = {}
    for key in out.touched_stock:
        store_id = split_key(key)[0]
        if store_id not in durable:
            durable[store_id] = state.progress(store_id).durable_wm
        state.stock(key).advance(durable[store_id])


def _apply_one(event: Event, state: StateAccess, now: float, out: BatchOutcome) -> None:
    store = event.store_id
    seq = event.outlet_seq
    progress = state.progress(store)
    out.seen[store].append(seq)
    fp = fingerprint(event)
    if seq in progress.seqs:
        known = progress.fingerprints.get(seq)
        if known is not None and known != fp:
            progress.conflicts += 1
            out.touched_progress.add(store)
            same_id = known[:8] == fp[:8]
            reason = (
                f"conflict: event_id {event.event_id} seen before with other content"
                if same_id
                else f"conflict: outlet_seq {seq} of store {store} already used by another event"
            )
            out.dead_letters.append(DeadLetter([reason], event.to_dict(), store, "conflict"))
            return
        progress.duplicates += 1
        out.duplicates += 1
        out.touched_progress.add(store)
        if seq <= progress.durable_wm:
            # every key it touched reflects it durably: nothing to repair (and
            # its fingerprint may be gone, so its content is not trusted)
            return
        # Fall through: a key whose record was lost in a crash still needs the
        # event, and its own seq set makes this a no-op everywhere else.
        new = False
    else:
        progress.seqs.add(seq)
        progress.remember(seq, fp)
        progress.events += 1
        progress.last_recorded_at = max(progress.last_recorded_at, event.recorded_at.timestamp())
        progress.last_applied_at = now
        out.touched_progress.add(store)
        out.new_events += 1
        out.lags.append((store, max(0.0, now - event.recorded_at.timestamp())))
        new = True

    effects = line_effects(event)
    ignored = False
    replaced: list[tuple[int, list[str]]] = []
    if event.type == "void":
        assert event.ref is not None
        first = progress.voided.get(event.ref)  # voided before the voids table
        if first is None:
            vkey = stock_key(store, event.ref)
            record = state.void(vkey)
            first, taken_over = _void_of_sale(record, seq, event.event_id, effects)
            if taken_over is not None and new:
                old_seq, _, old_id = taken_over
                # what the centre keeps of the withdrawn void: its dead letter
                # has the key it has when it arrives second
                kept = {"store_id": store, "outlet_seq": old_seq, "event_id": old_id,
                        "type": "void", "ref": event.ref}  # fmt: skip
                _reject_void(progress, out, kept, f"seq {old_seq} withdrawn: voided by seq {seq}")
            if first == seq:  # withdrawn again on a replay: a crash may have lost it
                replaced = [(int(o[0]), list(o[1])) for o in record.get("over", ())]
            # written again on a replay too: a crash may have lost its record
            out.touched_voids.add(vkey)
        if first != seq:
            ignored = True  # a sale is voided once; the second void changes nothing
            if new:
                _reject_void(progress, out, event.to_dict(), f"already voided by seq {first}")

    for old_seq, skus in replaced:  # the voids this one replaced give their units back
        out.withdrawn[store].add(old_seq)
        for sku in skus:
            key = stock_key(store, sku)
            stock = state.stock(key)
            if stock.withdraw(old_seq):
                stock.ver += 1
            out.touched_stock.add(key)

    if not ignored:
        for sku, qty in effects.items():
            key = stock_key(store, sku)
            stock = state.stock(key)
            effect = (
                stock.apply_count(seq, qty)
                if event.type == "count"
                else stock.apply_delta(seq, qty)
            )
            out.effects[effect] += 1
            if effect != "duplicate":
                stock.ver += 1
            else:
                out.replayed_stock.add(key)
            out.touched_stock.add(key)

    if event.type == "sale" and event.ref:
        # SPEC "Reservations": a sale naming an order ends its reservation.
        rkey = stock_key(store, event.ref)
        index = state.reservation(rkey)
        for sku in effects:
            key = stock_key(store, sku)
            if state.stock(key).release(event.ref):
                state.stock(key).ver += 1
                out.touched_stock.add(key)
                _end_reservation(index, sku)
        if index:  # written again on a replay too (see _apply_command)
            out.touched_reservations.add(rkey)

    if event.type == "sale":
        minute = event.occurred_at.replace(second=0, microsecond=0).isoformat()
        skey = f"{store}{KEY_SEP}{minute}"
        bucket = state.sales(skey)
        if ranges_add(bucket.setdefault("seqs", []), seq):
            bucket["units"] = bucket.get("units", 0) + sum(line.qty for line in event.lines)
            bucket["revenue_cents"] = bucket.get("revenue_cents", 0) + sum(
                line.qty * (line.unit_price_cents or 0) for line in event.lines
            )
            bucket["events"] = bucket.get("events", 0) + 1
        # A replay writes the bucket again, as it does stock keys: a crash can
        # leave it counted in RocksDB while its changelog record and the sink's
        # copy were never sent (tests/central/test_kill_in_flush.py).
        out.touched_sales.add(skey)

    if event.type in ("transfer_out", "transfer_in"):
        out.transfer_legs.append(
            {
                "transfer_id": event.ref,
                "leg": "out" if event.type == "transfer_out" else "in",
                "store_id": store,
                "outlet_seq": seq,
                "lines": {sku: abs(q) for sku, q in effects.items()},
            }
        )

    # what every line's ledger row shares, made once per event
    sign = -1 if event.type in ("sale", "transfer_out") else 1
    row = {
        "store_id": store,
        "outlet_seq": seq,
        "event_id": event.event_id,
        "type": event.type,
        "effect": "ignored" if ignored else ("count" if event.type == "count" else "delta"),
        "occurred_at": event.occurred_at.isoformat(),
        "recorded_at": event.recorded_at.isoformat(),
        "applied_at": now,
        "reason": event.reason,
        "ref": event.ref,
    }
    for line_no, line in enumerate(event.lines):
        out.ledger.append(
            {
                **row,
                "line_no": line_no,
                "sku": line.sku,
                "qty": sign * line.qty,
                "unit_price_cents": line.unit_price_cents,
            }
        )


def _void_of_sale(
    record: dict[str, Any], seq: int, event_id: str, effects: dict[str, int]
) -> tuple[int, list[Any] | None]:
    """Which void of a sale counts (``record``: the sale's voids-table value).

    A sale is voided once (SPEC "Events"), by its first void in seq order (rule
    1), whatever order its voids arrive in: a void with a smaller seq than the
    one applied takes its place, and the one applied goes to ``over`` (its seq,
    skus and event_id) to be withdrawn from the keys it changed. A record
    written before ``skus`` was kept takes this void's: a void names its
    sale's lines. Returns the seq of the void that counts, and the ``over``
    entry of the void this one just replaced.
    """
    first = int(record.setdefault("seq", seq))
    record.setdefault("skus", sorted(effects))
    record.setdefault("id", event_id if first == seq else None)
    if seq >= first:
        return first, None
    replaced = [first, record["skus"], record["id"]]
    record["over"] = [*record.get("over", ()), replaced]
    record.update(seq=seq, skus=sorted(effects), id=event_id)
    return seq, replaced


def _reject_void(
    progress: ProgressState, out: BatchOutcome, event: dict[str, Any], why: str
) -> None:
    """Count and dead-letter the void of a sale that does not count (SPEC: voided once)."""
    progress.void_rejected += 1
    reason = f"void: sale {event['ref']} {why}"
    out.dead_letters.append(DeadLetter([reason], event, event["store_id"], "void_rejected"))


def _end_reservation(index: dict[str, Any], sku: str) -> None:
    """Keep an ended reservation's sku: a replay of what ended it must find its stock key."""
    index.clear()
    index.update(sku=sku, ended=True)


def _apply_command(cmd: ReservationCommand, state: StateAccess, out: BatchOutcome) -> None:
    """Decide a reservation against the store's stock as it is now (SPEC "Reservations")."""
    rkey = stock_key(cmd.store_id, cmd.order_id)
    index = state.reservation(rkey)
    live = bool(index) and not index.get("ended")
    reply: dict[str, Any] = {"store_id": cmd.store_id, "order_id": cmd.order_id}
    # A command replayed after a crash finds its own effect in RocksDB, but the
    # crash may have kept it from the changelog and the sink (SPEC "How
    # idempotence is kept"): every key it decides on is written again, with
    # ``ver`` moved only by a real change.
    if cmd.op == "reserve":
        assert cmd.sku is not None
        sku = str(index["sku"]) if live else cmd.sku
        key = stock_key(cmd.store_id, sku)
        stock = state.stock(key)
        granted, available = stock.reserve(cmd.order_id, cmd.qty, cmd.at_ms, cmd.ttl_ms)
        if granted:
            if not live:
                index.clear()
                index.update(sku=sku, qty=cmd.qty, expires_at_ms=cmd.at_ms + cmd.ttl_ms)
                stock.ver += 1
            out.touched_reservations.add(rkey)
            out.touched_stock.add(key)
        reply.update(
            granted=granted,
            available=available,
            sku=sku,
            qty=int(index.get("qty", cmd.qty)),
            expires_at_ms=index.get("expires_at_ms"),
        )
    else:
        released = False
        ending = live and (cmd.op == "release" or int(index.get("expires_at_ms", 0)) <= cmd.at_ms)
        if ending or index.get("ended"):
            key = stock_key(cmd.store_id, str(index["sku"]))
            stock = state.stock(key)
            released = stock.release(cmd.order_id)
            if released:
                stock.ver += 1
            out.touched_stock.add(key)
            out.touched_reservations.add(rkey)
            if ending:
                _end_reservation(index, str(index["sku"]))
        reply["released"] = released
    out.replies[cmd.request_id] = reply
