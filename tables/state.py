"""The worker's tables, and a cache in front of them for one batch at a time.

Why each table is safe under ``at_least_once`` (SPEC design note):

- ``stock``: a value carries the seqs it reflects (``wm`` + ``applied``), so a
  replayed event is a no-op on any key that already has it, whatever happened
  to the other tables' changelog records.
- ``progress``: counts and gap bookkeeping per store; a replay is recognised by
  its seq. Its ``durable_wm`` is only advanced after a flush has been acked, so
  no key ever forgets a seq that could still come again.
- ``sales``: each minute bucket keeps the seq ranges it has counted.
- ``dead_letters``: keyed by the source record's coordinates, so a replay
  writes the same key again.
- ``reservations``: an index order -> sku; the reservation itself lives in
  the stock value (same record as the quantity it holds back).
- ``voids``: one key per voided sale, with the seq of the void that reversed
  it (a sale is voided once). A replayed void finds its own seq there and is
  applied again only to stock keys that lack it; the key is written again.
  (Before this table the map rode in each store's ``progress`` value, which
  every batch rewrites: it grew with every void the store ever made.)
- ``alerts``: written when a key's alert changes; the stock value notes the
  last one written, so a replay that finds its seqs applied writes it again.
- ``transfers``: fed by a repartition topic; each leg is replaced whole,
  so a replay is a no-op.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import faust

from app.settings import Settings
from domain.apply import KEY_SEP
from domain.progress import ProgressState
from domain.stock import StockState
from tables.codec import read


@dataclass
class Tables:
    stock: Any
    progress: Any
    sales: Any
    dead_letters: Any
    transfers: Any
    reservations: Any
    alerts: Any
    voids: Any


def define_tables(app: faust.App, settings: Settings) -> Tables:
    options = {
        "write_buffer_size": settings.rocksdb_write_buffer_mb << 20,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.rocksdb_block_cache_mb << 20,
    }

    def table(name: str, help_: str) -> Any:
        return app.Table(
            name,
            default=None,
            partitions=settings.topic_partitions,
            help=help_,
            options=dict(options),
        )

    return Tables(
        stock=table("stock", "(store, sku) -> on_hand, reservations and the seqs reflected"),
        progress=table("progress", "store -> applied seqs, gaps, duplicates"),
        sales=table("sales", "(store, minute) -> units, revenue, events"),
        dead_letters=table("dead_letters", "source record -> reasons"),
        transfers=table("transfers", "transfer_id -> legs sent and received"),
        reservations=table("reservations", "(store, order_id) -> sku, qty, expiry"),
        alerts=table("alerts", "(store, sku) -> negative or low stock"),
        voids=table("voids", "(store, sale event_id) -> the seq of the void that reversed it"),
    )


class LRU(OrderedDict[str, Any]):
    """Least recently used first out, but only when :meth:`trim` is called.

    Entries a batch has changed must stay until the batch has written them:
    evicting one mid-batch would drop its change and reread the old value.
    So ``put`` never evicts; the owner trims after each batch's writes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)

    def trim(self) -> None:
        while len(self) > self.limit:
            self.popitem(last=False)


class StateCache:
    """Decoded table values kept across batches (dropped on every rebalance).

    Reads come from memory after the first; each batch writes every dirty key
    once (one changelog record per key per batch, STYLE "Batches").
    """

    def __init__(self, tables: Tables, *, stock_limit: int = 50_000) -> None:
        self.tables = tables
        self._stock: LRU = LRU(stock_limit)
        self._progress: dict[str, ProgressState] = {}
        self._sales: LRU = LRU(10_000)
        self._reservations: LRU = LRU(100_000)
        self._voids: LRU = LRU(100_000)
        #: store -> its partition (set by the apply agent for the stores in a batch)
        self.partitions: dict[str, int] = {}

    def trim(self) -> None:
        """Evict down to the limits: call only once a batch's writes are queued."""
        self._stock.trim()
        self._sales.trim()
        self._reservations.trim()
        self._voids.trim()

    def clear(self) -> None:
        self._stock.clear()
        self._progress.clear()
        self._sales.clear()
        self._reservations.clear()
        self._voids.clear()
        self.partitions.clear()

    def _read(self, table: Any, key: str) -> Any:
        """Read a "store<US>..." key from its store's partition when known."""
        return read(table, key, self.partitions.get(key.partition(KEY_SEP)[0]))

    def stock(self, key: str) -> StockState:
        state = self._stock.get(key)
        if state is None:
            state = StockState.from_json(self._read(self.tables.stock, key))
            self._stock.put(key, state)
        return state

    def progress(self, store_id: str) -> ProgressState:
        state = self._progress.get(store_id)
        if state is None:
            state = ProgressState.from_json(
                read(self.tables.progress, store_id, self.partitions.get(store_id))
            )
            self._progress[store_id] = state
        return state

    def sales(self, key: str) -> dict[str, Any]:
        return self._dict_value(self._sales, self.tables.sales, key)

    def reservation(self, key: str) -> dict[str, Any]:
        return self._dict_value(self._reservations, self.tables.reservations, key)

    def void(self, key: str) -> dict[str, Any]:
        return self._dict_value(self._voids, self.tables.voids, key)

    def _dict_value(self, cache: LRU, table: Any, key: str) -> dict[str, Any]:
        """A table's dict value, cached; the caller changes it in place and writes it."""
        value: dict[str, Any] | None = cache.get(key)
        if value is None:
            value = dict(self._read(table, key) or {})
            cache.put(key, value)
        return value
