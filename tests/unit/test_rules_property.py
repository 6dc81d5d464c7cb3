"""SPEC "Ordering, duplicates, conflicts": any arrival order gives the same stock.

Generated histories for several stores (every event type, counts, voids,
transfers) are delivered shuffled, with duplicates and replays, in batches of
random size, sometimes with a simulated crash that loses part of a batch's
writes. The result must equal a plain reference model applied in seq order.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.schema import Event, Line, new_event_id
from domain.apply import apply_events, split_key, stock_key
from domain.progress import FINGERPRINTS_KEPT, ProgressState
from domain.reservations import ReservationCommand
from domain.stock import StockState

SKUS = ["A", "B", "C"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    for store in draw(
        st.lists(st.sampled_from(["S1", "S2", "S3"]), min_size=1, max_size=3, unique=True)
    ):
        sales: list[Event] = []
        for seq in range(1, draw(st.integers(1, 25)) + 1):
            kind = draw(
                st.sampled_from(
                    ["sale", "sale", "return", "receipt", "adjustment", "count", "void",
                     "transfer_out", "transfer_in"]
                )
            )  # fmt: skip
            ref = None
            reason = None
            if kind == "void":
                if not sales:
                    kind = "sale"
                else:  # a sale voided before too: only the first void counts
                    sale = draw(st.sampled_from(sales))
                    ref = sale.event_id
                    lines = sale.lines
            if kind != "void":
                skus = draw(
                    st.lists(st.sampled_from(SKUS), min_size=1, max_size=3, unique=kind == "count")
                )
                if kind == "adjustment":
                    qty = st.integers(-5, 5).filter(bool)
                    reason = "correction"
                elif kind == "count":
                    qty = st.integers(0, 20)
                else:
                    qty = st.integers(1, 5)
                lines = tuple(Line(sku, draw(qty)) for sku in skus)
            if kind.startswith("transfer"):
                ref = f"TR-{store}-{seq}"
            event = Event(
                event_id=new_event_id(),
                type=kind,
                store_id=store,
                terminal_id="T1",
                outlet_seq=seq,
                client_txn_id=f"{store}-{seq}",
                occurred_at=T0 + timedelta(seconds=seq),
                recorded_at=T0 + timedelta(seconds=seq),
                lines=lines,
                ref=ref,
                reason=reason,
            )
            if kind == "sale":
                sales.append(event)
            events.append(event)
    return events


def reference(events: list[Event]) -> dict[str, int]:
    """The plain model: each store's events once, in seq order (SPEC rules 1 and 4);
    a sale is voided by its first void, and a later one changes nothing."""
    stock: dict[str, int] = defaultdict(int)
    sign = {"sale": -1, "return": 1, "receipt": 1, "adjustment": 1, "void": 1,
            "transfer_out": -1, "transfer_in": 1}  # fmt: skip
    voided: set[str | None] = set()
    for event in sorted(events, key=lambda e: (e.store_id, e.outlet_seq)):
        if event.type == "void" and event.ref in voided:
            continue
        voided.add(event.ref if event.type == "void" else None)
        if event.type == "count":
            for line in event.lines:
                stock[stock_key(event.store_id, line.sku)] = line.qty
        else:
            for line in event.lines:
                stock[stock_key(event.store_id, line.sku)] += sign[event.type] * line.qty
    return {k: v for k, v in stock.items()}


@dataclass
class Tables:
    """What a worker has durably: one JSON value per key (the changelog's view)."""

    stock: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    voids: dict[str, Any] = field(default_factory=dict)


@dataclass
class Worker:
    """The apply loop of ``agents/apply.py`` on in-memory tables, with crashes."""

    tables: Tables
    stock_cache: dict[str, StockState] = field(default_factory=dict)
    progress_cache: dict[str, ProgressState] = field(default_factory=dict)
    void_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    other: dict[str, dict[str, Any]] = field(default_factory=dict)
    unconfirmed: dict[str, list[int]] = field(default_factory=dict)

    def stock(self, key: str) -> StockState:
        if key not in self.stock_cache:
            self.stock_cache[key] = StockState.from_json(self.tables.stock.get(key))
        return self.stock_cache[key]

    def progress(self, store_id: str) -> ProgressState:
        if store_id not in self.progress_cache:
            self.progress_cache[store_id] = ProgressState.from_json(
                self.tables.progress.get(store_id)
            )
        return self.progress_cache[store_id]

    def sales(self, key: str) -> dict[str, Any]:
        return self.other.setdefault(f"sales:{key}", {})

    def reservation(self, key: str) -> dict[str, Any]:
        return self.other.setdefault(f"res:{key}", {})

    def void(self, key: str) -> dict[str, Any]:
        if key not in self.void_cache:
            self.void_cache[key] = dict(self.tables.voids.get(key) or {})
        return self.void_cache[key]

    def batch(self, events: list[Event], rng: random.Random | None) -> bool:
        """Apply and write; with ``rng``, crash part-way through the writes (False).

        Like agents/apply.py: the seqs of the previous (acknowledged) flush are
        confirmed first and ride in this flush.
        """
        confirmed = {s for s, seqs in self.unconfirmed.items() if self.progress(s).confirm(seqs)}
        self.unconfirmed = {}
        out = apply_events(events, self, now=0.0)
        writes = [("stock", k, self.stock(k).to_json()) for k in out.touched_stock]
        writes += [("voids", k, dict(self.void(k))) for k in out.touched_voids]
        writes += [
            ("progress", s, self.progress(s).to_json()) for s in out.touched_progress | confirmed
        ]
        if rng is not None:
            rng.shuffle(writes)
            writes = [w for w in writes if rng.random() < 0.5]
        for table, key, value in writes:
            getattr(self.tables, table)[key] = value
        if rng is not None:
            return False
        for store_id, seqs in out.seen.items():
            self.unconfirmed.setdefault(store_id, []).extend(seqs)
        return True


def run(deliveries: list[Event], batch_sizes: list[int], crash_at: set[int], seed: int) -> Tables:
    tables = Tables()
    worker = Worker(tables)
    rng = random.Random(seed)
    committed = 0  # offsets committed: a take is acked after the next take's flush
    position = 0  # where the worker reads next
    previous = 0  # size of the take not acked yet
    i = 0
    n_batch = 0
    while committed < len(deliveries):
        size = batch_sizes[n_batch % len(batch_sizes)]
        batch = deliveries[position : position + size]
        crash = n_batch in crash_at
        n_batch += 1
        if batch and worker.batch(batch, rng if crash else None):
            committed += previous
            position += len(batch)
            previous = len(batch)
        elif not batch:
            committed += previous  # the stream is drained: the last take is acked
            previous = 0
        else:
            worker = Worker(tables)  # restart: caches gone, replay from the commit
            position = committed
            previous = 0
        i += 1
        assert i < 10_000
    return tables


@settings(max_examples=300, deadline=None)
@given(
    histories(),
    st.randoms(use_true_random=False),
    st.lists(st.integers(1, 12), min_size=1, max_size=5),
    st.sets(st.integers(0, 30), max_size=4),
)
def test_any_arrival_order_gives_the_reference_stock(
    events: list[Event], rnd: random.Random, batch_sizes: list[int], crash_at: set[int]
) -> None:
    deliveries = list(events)
    deliveries += rnd.sample(events, k=min(len(events), rnd.randint(0, 5)))  # duplicates
    rnd.shuffle(deliveries)
    deliveries += deliveries[: rnd.randint(0, len(deliveries))]  # a replay of a prefix
    tables = run(deliveries, batch_sizes, crash_at, rnd.randint(0, 2**32))
    got = {k: StockState.from_json(v).on_hand for k, v in tables.stock.items()}
    want = reference(events)
    assert {k: v for k, v in got.items() if v or k in want} == want
    for store_id, value in tables.progress.items():
        progress = ProgressState.from_json(value)
        highest = max(e.outlet_seq for e in events if e.store_id == store_id)
        assert progress.seqs.watermark == highest
        assert not progress.seqs.gaps()


def test_late_count_supersedes_earlier_delta() -> None:
    """SPEC rule 4 spelled out: seq 2 counts 10; a sale of seq 1 arriving after it changes nothing."""
    sale = Event(new_event_id(), "sale", "S1", "T1", 1, "c1", T0, T0, (Line("A", 3),))
    count = Event(new_event_id(), "count", "S1", "T1", 2, "c2", T0, T0, (Line("A", 10),))
    sale3 = Event(new_event_id(), "sale", "S1", "T1", 3, "c3", T0, T0, (Line("A", 1),))
    worker = Worker(Tables())
    worker.batch([sale3, count], None)
    assert worker.stock(stock_key("S1", "A")).on_hand == 9
    worker.batch([sale], None)
    state = worker.stock(stock_key("S1", "A"))
    assert state.on_hand == 9
    progress = worker.progress("S1")
    assert progress.seqs.watermark == 3


def test_gap_is_reported_until_filled() -> None:
    """SPEC rule 3: seq 3 applied with 2 missing; the late 2 is applied, not dropped."""
    e1 = Event(new_event_id(), "receipt", "S1", "T1", 1, "c1", T0, T0, (Line("A", 5),))
    e2 = Event(new_event_id(), "sale", "S1", "T1", 2, "c2", T0, T0, (Line("A", 1),))
    e3 = Event(new_event_id(), "sale", "S1", "T1", 3, "c3", T0, T0, (Line("A", 1),))
    worker = Worker(Tables())
    worker.batch([e1, e3], None)
    assert worker.progress("S1").seqs.gaps() == [(2, 2)]
    assert worker.stock(stock_key("S1", "A")).on_hand == 4
    worker.batch([e2, e2], None)
    assert worker.progress("S1").seqs.gaps() == []
    assert worker.stock(stock_key("S1", "A")).on_hand == 3
    assert worker.progress("S1").duplicates == 1


def test_conflict_goes_to_dead_letters() -> None:
    """SPEC rule 2: the same seq with other content is a conflict, not a duplicate."""
    e1 = Event(new_event_id(), "sale", "S1", "T1", 1, "c1", T0, T0, (Line("A", 1),))
    forged = Event(e1.event_id, "sale", "S1", "T1", 1, "c1", T0, T0, (Line("A", 50),))
    worker = Worker(Tables())
    worker.batch([e1], None)
    out = apply_events([forged], worker, now=0.0)
    assert [d.kind for d in out.dead_letters] == ["conflict"]
    assert "other content" in out.dead_letters[0].reasons[0]
    assert worker.stock(stock_key("S1", "A")).on_hand == -1


def test_an_old_seq_reused_changes_nothing_even_past_the_fingerprint_window() -> None:
    """An outlet that lost its log sends seq 1 again with other lines: below
    durable_wm it is dropped (counted), never applied to the keys it names."""
    e1 = Event(new_event_id(), "sale", "S1", "T1", 1, "c1", T0, T0, (Line("A", 1),))
    later = [
        Event(new_event_id(), "sale", "S1", "T1", seq, f"c{seq}", T0, T0, (Line("A", 1),))
        for seq in range(2, FINGERPRINTS_KEPT + 10)
    ]
    reused = Event(new_event_id(), "sale", "S1", "T1", 1, "x1", T0, T0, (Line("B", 7),))
    worker = Worker(Tables())
    worker.batch([e1, *later], None)
    worker.batch([], None)  # the next flush confirms the first: durable_wm moves
    assert worker.progress("S1").durable_wm == FINGERPRINTS_KEPT + 9
    assert 1 not in worker.progress("S1").fingerprints
    out = apply_events([reused], worker, now=0.0)
    assert out.duplicates == 1 and not out.touched_stock
    assert worker.stock(stock_key("S1", "B")).on_hand == 0


def test_second_void_changes_nothing() -> None:
    sale = Event(new_event_id(), "sale", "S1", "T1", 1, "c1", T0, T0, (Line("A", 2),))
    void1 = Event(
        new_event_id(), "void", "S1", "T1", 2, "c2", T0, T0, (Line("A", 2),), ref=sale.event_id
    )
    void2 = Event(
        new_event_id(), "void", "S1", "T1", 3, "c3", T0, T0, (Line("A", 2),), ref=sale.event_id
    )
    worker = Worker(Tables())
    out = apply_events([sale, void1, void2], worker, now=0.0)
    assert worker.stock(stock_key("S1", "A")).on_hand == 0
    assert [d.kind for d in out.dead_letters] == ["void_rejected"]


def _sale_voided_at(*seqs: int) -> list[Event]:
    """A sale of 2 A at seq 1, and a void of it at each of ``seqs``."""
    sale = Event(new_event_id(), "sale", "S1", "T1", 1, "c1", T0, T0, (Line("A", 2),))
    return [sale] + [
        Event(new_event_id(), "void", "S1", "T1", seq, f"c{seq}", T0, T0, (Line("A", 2),),
              ref=sale.event_id)
        for seq in seqs
    ]  # fmt: skip


def test_the_first_void_in_seq_order_counts_whatever_arrives_first() -> None:
    """Two voids of one sale with a count between them: the void of seq 2 counts
    (the count at 3 supersedes it), the void of seq 4 changes nothing. Arriving
    first, seq 4 is applied, then withdrawn when seq 2 comes: same stock."""
    sale, void2, void4 = _sale_voided_at(2, 4)
    count = Event(new_event_id(), "count", "S1", "T1", 3, "c3", T0, T0, (Line("A", 10),))
    key = stock_key("S1", "A")
    for order in ([sale, void2, count, void4], [sale, count, void4, void2],
                  [void4, count, void2, sale], [void4, void2, sale, count]):  # fmt: skip
        tables = Tables()
        worker = Worker(tables)
        rejected: list[tuple[Any, ...]] = []
        withdrawn: set[int] = set()
        for event in order:
            out = apply_events([event], worker, now=0.0)
            rejected += [
                (d.kind, d.event["outlet_seq"], d.event["event_id"], d.event["type"])
                for d in out.dead_letters
                if d.event
            ]
            withdrawn |= out.withdrawn.get("S1", set())
        assert worker.stock(key).on_hand == 10, order
        # the same dead letter (the same key) whichever void came first
        assert rejected == [("void_rejected", 4, void4.event_id, "void")], order
        assert worker.progress("S1").void_rejected == 1
        assert worker.void(stock_key("S1", sale.event_id))["seq"] == 2
        # the ledger rows of seq 4 are made ignored where seq 4 was applied first
        assert withdrawn == ({4} if order.index(void4) < order.index(void2) else set())


def test_a_replayed_void_withdraws_again_what_a_crash_lost() -> None:
    """The voids table kept the switch to seq 2, the stock key did not: the
    replay of seq 2 withdraws seq 4 from the key again, and applies itself."""
    sale, void2, void4 = _sale_voided_at(2, 4)
    tables = Tables()
    assert Worker(tables).batch([sale, void4], None)
    before = dict(tables.stock)
    assert Worker(tables).batch([void2], None)
    tables.stock = before  # the crash: the key's record of the switch is lost
    replayed = Worker(tables)
    key = stock_key("S1", "A")
    assert replayed.stock(key).applied == {1: -2, 4: 2}  # seq 4's units, still there
    out = apply_events([void2], replayed, now=0.0)
    assert out.withdrawn == {"S1": {4}} and out.duplicates == 1
    assert not out.dead_letters  # reported once, when seq 2 was new
    assert replayed.stock(key).applied == {1: -2, 4: 0, 2: 2}
    assert replayed.stock(key).on_hand == 0  # voided once, not twice


def test_a_void_is_remembered_in_the_voids_table_not_in_the_progress_value() -> None:
    """Every batch rewrites a store's progress value: what it holds must not
    grow with every void the store ever made."""
    sales = [
        Event(new_event_id(), "sale", "S1", "T1", seq, f"c{seq}", T0, T0, (Line("A", 1),))
        for seq in range(1, 51)
    ]
    voids = [
        Event(new_event_id(), "void", "S1", "T1", 50 + seq, f"v{seq}", T0, T0, (Line("A", 1),),
              ref=sale.event_id)
        for seq, sale in enumerate(sales, start=1)
    ]  # fmt: skip
    tables = Tables()
    worker = Worker(tables)
    assert worker.batch(sales, None) and worker.batch(voids, None)
    worker.batch([], None)  # confirms the last flush
    progress = tables.progress["S1"]
    assert "voided" not in progress, progress
    assert tables.voids == {
        stock_key("S1", s.event_id): {"seq": 50 + i, "skus": ["A"], "id": v.event_id}
        for i, (s, v) in enumerate(zip(sales, voids, strict=True), start=1)
    }
    assert StockState.from_json(tables.stock[stock_key("S1", "A")]).on_hand == 0
    # a restarted worker reads the voids back: a second void changes nothing
    again = Event(new_event_id(), "void", "S1", "T1", 101, "v-again", T0, T0, (Line("A", 1),),
                  ref=sales[0].event_id)  # fmt: skip
    restarted = Worker(tables)
    out = apply_events([again], restarted, now=0.0)
    assert [d.kind for d in out.dead_letters] == ["void_rejected"]
    assert restarted.stock(stock_key("S1", "A")).on_hand == 0


def test_a_sale_voided_before_the_voids_table_is_still_voided_once() -> None:
    """A progress value written before the voids table holds its voids in a map:
    they are read from there, and the map is kept as it is."""
    sale = Event(new_event_id(), "sale", "S1", "T1", 1, "c1", T0, T0, (Line("A", 2),))
    void1 = Event(
        new_event_id(), "void", "S1", "T1", 2, "c2", T0, T0, (Line("A", 2),), ref=sale.event_id
    )
    tables = Tables()
    assert Worker(tables).batch([sale, void1], None)
    legacy = dict(tables.progress["S1"], voided={sale.event_id: 2})
    tables.progress["S1"], tables.voids = legacy, {}
    worker = Worker(tables)
    void2 = Event(
        new_event_id(), "void", "S1", "T1", 3, "c3", T0, T0, (Line("A", 2),), ref=sale.event_id
    )
    out = apply_events([void2], worker, now=0.0)
    assert [d.kind for d in out.dead_letters] == ["void_rejected"]
    assert worker.stock(stock_key("S1", "A")).on_hand == 0
    assert not out.touched_voids
    assert worker.progress("S1").to_json()["voided"] == {sale.event_id: 2}


def test_a_replay_writes_its_keys_again() -> None:
    """A crash can keep a batch in RocksDB but lose its changelog and sink records:
    the replayed sale must write its stock key and its sales bucket again."""
    sale = Event(new_event_id(), "sale", "S1", "T1", 1, "c1", T0, T0, (Line("A", 2, 150),))
    worker = Worker(Tables())
    first = apply_events([sale], worker, now=0.0)
    replay = apply_events([sale], worker, now=0.0)
    assert replay.duplicates == 1 and replay.new_events == 0
    assert replay.touched_stock == first.touched_stock == {stock_key("S1", "A")}
    assert replay.touched_sales == first.touched_sales != set()
    (bucket,) = replay.touched_sales
    assert worker.sales(bucket)["units"] == 2  # counted once
    assert worker.sales(bucket)["revenue_cents"] == 300


def test_a_replayed_reservation_command_writes_its_keys_again() -> None:
    """The same for reservations: a reserve, a sale ending it and a release, each
    replayed on the state it left in RocksDB, write their stock key and their
    reservation entry again (the changelog may never have had them)."""
    receipt = Event(new_event_id(), "receipt", "S1", "T1", 1, "c1", T0, T0, (Line("A", 5),))
    worker = Worker(Tables())
    apply_events([receipt], worker, now=0.0)
    key, rkey = stock_key("S1", "A"), stock_key("S1", "O1")

    def reserve(order: str) -> ReservationCommand:
        return ReservationCommand("reserve", "r1", "S1", order, 1_000, "A", 2, 60_000)

    for command in (reserve("O1"), reserve("O1")):  # the second is the replay
        out = apply_events([command], worker, now=0.0)
        assert out.touched_stock == {key} and out.touched_reservations == {rkey}
        assert out.replies["r1"]["granted"] is True
    assert worker.stock(key).ver == 2  # the receipt and the reservation: not the replay

    sale = Event(new_event_id(), "sale", "S1", "T1", 2, "c2", T0, T0, (Line("A", 2),), ref="O1")
    for _ in range(2):
        out = apply_events([sale], worker, now=0.0)
        assert out.touched_stock == {key} and out.touched_reservations == {rkey}
    assert worker.stock(key).reservations == {} and worker.stock(key).on_hand == 3

    release = ReservationCommand("release", "r2", "S1", "O2", 2_000)
    apply_events([reserve("O2")], worker, now=0.0)
    for released in (True, False):  # the replay finds it released already
        out = apply_events([release], worker, now=0.0)
        assert out.touched_stock == {key}
        assert out.touched_reservations == {stock_key("S1", "O2")}
        assert out.replies["r2"]["released"] is released
    assert worker.stock(key).available(3_000) == 3


def test_split_key_round_trip() -> None:
    assert split_key(stock_key("S1", "A|B")) == ("S1", "A|B")
