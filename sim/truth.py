"""The ground truth: every event an outlet answered 201 for, in ``outlet_seq`` order.

The simulator records each accepted event from the agent's answer (its
``outlet_seq`` and ``event_id``) with the effects it has on ``on_hand``
(SPEC "Events"); the centre's stock must equal what this model computes. A
count supersedes every delta of a smaller seq (rule 4), so the stock at any
set of applied seqs is: the last count in the set, plus the deltas after it.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Accepted:
    store_id: str
    seq: int
    event_id: str
    type: str
    lines: tuple[tuple[str, int], ...]  # (sku, qty) as the agent logged them
    recorded_at: str
    accepted_mono: float  # the simulator's monotonic clock when the 201 arrived


@dataclass
class Truth:
    """Accepted events per store, and each (store, sku)'s history in seq order."""

    events: dict[str, dict[int, Accepted]] = field(default_factory=dict)
    #: (store, sku) -> sorted [(seq, is_count, signed qty)]
    history: dict[tuple[str, str], list[tuple[int, bool, int]]] = field(default_factory=dict)
    #: the keys of ``history`` in the order they appeared: a sampled read picks
    #: one by index (copying 400,000 keys for each read cost the simulator a
    #: fifth of a core late in a benchmark, CPU the system under test needs)
    keys: list[tuple[str, str]] = field(default_factory=list)
    repeats: int = 0  # 200 answers: the same client_txn_id again (a retry after a lost answer)
    conflicts: list[str] = field(default_factory=list)

    def record(self, event: Accepted) -> None:
        per_store = self.events.setdefault(event.store_id, {})
        prior = per_store.get(event.seq)
        if prior is not None:
            if prior.event_id != event.event_id:
                self.conflicts.append(
                    f"{event.store_id} seq {event.seq}: {prior.event_id} and {event.event_id}"
                )
            self.repeats += 1
            return
        per_store[event.seq] = event
        sign = {"sale": -1, "transfer_out": -1}.get(event.type, 1)
        for sku, qty in event.lines:
            entry = (event.seq, event.type == "count", qty if event.type == "count" else sign * qty)
            key = (event.store_id, sku)
            seqs = self.history.get(key)
            if seqs is None:
                seqs = self.history[key] = []
                self.keys.append(key)
            insort(seqs, entry)

    def max_seq(self, store_id: str) -> int:
        seqs = self.events.get(store_id)
        return max(seqs) if seqs else 0

    def total(self) -> int:
        return sum(len(v) for v in self.events.values())

    def stock(
        self,
        store_id: str,
        sku: str,
        watermark: int | None = None,
        above: frozenset[int] = frozenset(),
    ) -> int:
        """``on_hand`` after the seqs ``1..watermark`` and ``above`` (all of them if None)."""
        on_hand = 0
        for seq, is_count, qty in self.history.get((store_id, sku), ()):
            if watermark is not None and seq > watermark and seq not in above:
                continue
            on_hand = qty if is_count else on_hand + qty
        return on_hand

    def final(self) -> dict[tuple[str, str], int]:
        return {key: self.stock(*key) for key in self.history}

    def expected_lines(self) -> dict[tuple[str, int], int]:
        return {
            (store, seq): len(ev.lines)
            for store, evs in self.events.items()
            for seq, ev in evs.items()
        }
