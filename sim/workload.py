"""The traffic of a retail chain, posted through the outlet agents' real HTTP API.

Each store has a terminal loop that posts baskets (sales of several lines),
returns, voids (``ref`` = the sale's ``event_id``; the agent fills the lines),
receipts, adjustments, physical counts and transfers (``transfer_out`` at A,
then ``transfer_in`` at B with the same ``ref``), at a steady rate, in batches
(``{"events": [...]}``) like a store server relaying its tills. A web-shop loop
reserves stock through the centre and either sells the order (a sale whose
``ref`` is the order id) or releases it.

A POST that fails (agent killed, 503) is retried with the same
``client_txn_id``s until it is answered: the agent answers a key it already
made durable with ``200`` and the first answer, so the ground truth sees every
event exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from sim.truth import Accepted, Truth

log = logging.getLogger("sim")

KINDS = ["sale", "return", "void", "receipt", "adjustment", "count", "transfer_out"]
WEIGHTS = [66, 5, 4, 8, 4, 3, 4]
REASONS = ["damage", "theft", "expiry", "correction"]


class Zipf:
    """SKU popularity: the k-th SKU is picked with weight 1/k**s."""

    def __init__(self, skus: int, s: float = 1.1) -> None:
        self.names = [f"SKU-{i:05d}" for i in range(1, skus + 1)]
        total = 0.0
        self.cum: list[float] = []
        for k in range(1, skus + 1):
            total += 1.0 / k**s
            self.cum.append(total)

    def pick(self, rng: random.Random) -> str:
        i = bisect_left(self.cum, rng.random() * self.cum[-1])
        return self.names[min(i, len(self.names) - 1)]

    def basket(self, rng: random.Random, size: int) -> list[str]:
        out: list[str] = []
        for _ in range(size * 3):
            sku = self.pick(rng)
            if sku not in out:
                out.append(sku)
            if len(out) == size:
                break
        return out


@dataclass
class Transfer:
    transfer_id: str
    source: str
    dest: str
    lines: list[tuple[str, int]]
    sent_mono: float


@dataclass
class Store:
    store_id: str
    url: str
    token: str
    occurred_skew_s: float = 0.0  # the terminal's clock (occurred_at) off by this much
    sales: deque[tuple[str, list[tuple[str, int]]]] = field(
        default_factory=lambda: deque(maxlen=64)
    )
    orders: deque[tuple[str, str, int]] = field(default_factory=deque)  # (order, sku, qty)
    paused: bool = False


@dataclass
class Stats:
    posts: int = 0
    retries: int = 0
    accepted: int = 0
    repeats: int = 0
    rejected: list[str] = field(default_factory=list)
    reservations_granted: int = 0
    reservations_refused: int = 0
    reservations_released: int = 0
    reservations_sold: int = 0
    reservation_errors: int = 0
    #: (monotonic second, accepted events) for the throughput plot
    accepted_at: list[float] = field(default_factory=list)
    #: the traffic window (seconds from the first post to the stop) and the events
    #: the store loops had accepted when they ended: posted inside the window
    window_s: float = 0.0
    accepted_in_window: int = 0


class Workload:
    """Every store's terminal loop and the web shop, feeding :class:`Truth`."""

    def __init__(
        self,
        stores: list[Store],
        skus: int,
        *,
        rate: float,
        batch: int = 1,
        seed: int = 1,
        central_url: str = "",
        truth: Truth | None = None,
    ) -> None:
        self.stores = {s.store_id: s for s in stores}
        self.zipf = Zipf(skus)
        self.rate = rate
        self.batch = batch
        self.rng = random.Random(seed)
        self.central_url = central_url
        self.truth = truth or Truth()
        self.stats = Stats()
        self.transfers: dict[str, list[Transfer]] = {s.store_id: [] for s in stores}
        self._txn = itertools.count(1)
        self._ids = itertools.count(1)
        self._stop = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.started = time.monotonic()
        self._sale_lines: dict[str, list[tuple[str, int]]] = {}

    # ------------------------------------------------------------------ events
    def _body(
        self, store: Store, kind: str, lines: list[dict[str, Any]], **extra: Any
    ) -> dict[str, Any]:
        occurred = datetime.now(UTC) + timedelta(seconds=store.occurred_skew_s)
        body: dict[str, Any] = {
            "type": kind,
            "client_txn_id": f"{store.store_id}-{next(self._txn)}-{self.rng.getrandbits(32):08x}",
            "occurred_at": occurred.isoformat(),
            "lines": lines,
        }
        body.update({k: v for k, v in extra.items() if v is not None})
        return body

    def _lines(self, size: int, qty_max: int = 3, price: bool = True) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for sku in self.zipf.basket(self.rng, size):
            line: dict[str, Any] = {"sku": sku, "qty": self.rng.randint(1, qty_max)}
            if price:
                line["unit_price_cents"] = self.rng.choice((99, 199, 349, 999, 2499))
            out.append(line)
        return out

    def next_event(self, store: Store) -> tuple[dict[str, Any], Any]:
        """One terminal event, and a note of what to remember once it is accepted."""
        rng = self.rng
        now = time.monotonic()
        inbound = self.transfers[store.store_id]
        if inbound and now - inbound[0].sent_mono > 0.5:
            tr = inbound.pop(0)
            got = list(tr.lines)
            if rng.random() < 0.1:  # a short delivery: a transfer discrepancy
                got[0] = (got[0][0], max(1, got[0][1] - 1))
            lines: list[dict[str, Any]] = [{"sku": sku, "qty": qty} for sku, qty in got]
            return self._body(store, "transfer_in", lines, ref=tr.transfer_id), None
        if store.orders and rng.random() < 0.3:
            order, sku, qty = store.orders.popleft()
            self.stats.reservations_sold += 1
            return self._body(store, "sale", [{"sku": sku, "qty": qty}], ref=order), None
        kind = rng.choices(KINDS, WEIGHTS)[0]
        if kind == "void" and store.sales:
            sale_id, _lines = store.sales.popleft()  # each sale is voided at most once
            return self._body(store, "void", [], ref=sale_id), ("void", sale_id)
        if kind == "return" and store.sales:
            sale_id, sold = store.sales[rng.randrange(len(store.sales))]
            sku, qty = sold[0]
            return self._body(store, "return", [{"sku": sku, "qty": qty}], ref=sale_id), None
        if kind == "receipt":
            return self._body(store, "receipt", self._lines(rng.randint(3, 10), 24, False)), None
        if kind == "adjustment":
            line = self._lines(1, 2, False)[0]
            line["qty"] = -line["qty"] if rng.random() < 0.8 else line["qty"]
            return self._body(store, "adjustment", [line], reason=rng.choice(REASONS)), None
        if kind == "count":
            sku = self.zipf.pick(rng)
            counted = max(0, self.truth.stock(store.store_id, sku) + rng.randint(-2, 1))
            return self._body(store, "count", [{"sku": sku, "qty": counted}]), None
        if kind == "transfer_out" and len(self.stores) > 1:
            dest = rng.choice([s for s in self.stores if s != store.store_id])
            tr_id = f"TR-{store.store_id}-{next(self._ids)}"
            lines = self._lines(rng.randint(1, 3), 6, False)
            body = self._body(store, "transfer_out", lines, ref=tr_id)
            return body, ("transfer", Transfer(tr_id, store.store_id, dest, [], 0.0))
        return self._body(store, "sale", self._lines(rng.randint(1, 5))), ("sale", None)

    # ------------------------------------------------------------------ posting
    async def post(self, store: Store, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST until answered; every body's result (201, 200 or a refusal)."""
        assert self.session is not None
        payload = orjson.dumps({"events": bodies})
        headers = {"Authorization": f"Bearer {store.token}", "Content-Type": "application/json"}
        delay = 0.05
        while True:
            self.stats.posts += 1
            try:
                async with self.session.post(
                    f"{store.url}/v1/events", data=payload, headers=headers
                ) as resp:
                    if resp.status in (200, 201, 422):
                        data = orjson.loads(await resp.read())
                        if "results" in data:
                            return list(data["results"])
                    log.debug("outlet %s answered %s; retrying", store.store_id, resp.status)
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            self.stats.retries += 1
            if self._stop.is_set() and store.paused:
                return []
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _accept(
        self, store: Store, body: dict[str, Any], result: dict[str, Any], note: Any
    ) -> None:
        status = int(result.get("status", 0))
        if status not in (200, 201):
            self.stats.rejected.append(f"{store.store_id} {body['type']}: {result}")
            return
        if status == 200:
            self.stats.repeats += 1
        if note and note[0] == "void":  # the agent filled the lines from the sale
            pairs = tuple(self._sale_lines.pop(note[1], []))
        else:
            pairs = tuple((str(ln["sku"]), int(ln["qty"])) for ln in body["lines"])
        self.truth.record(
            Accepted(
                store.store_id,
                int(result["outlet_seq"]),
                str(result["event_id"]),
                str(body["type"]),
                pairs,
                str(result["recorded_at"]),
                time.monotonic(),
            )
        )
        self.stats.accepted += 1
        if note and note[0] == "sale":
            store.sales.append((str(result["event_id"]), list(pairs)))
            self._sale_lines[str(result["event_id"])] = list(pairs)
        elif note and note[0] == "transfer":
            tr: Transfer = note[1]
            tr.lines, tr.sent_mono = list(pairs), time.monotonic()
            self.transfers[tr.dest].append(tr)

    async def store_loop(self, store: Store) -> None:
        per_store = self.rate / max(1, len(self.stores))
        interval = self.batch / per_store
        next_t = time.monotonic() + self.rng.random() * interval
        while not self._stop.is_set():
            now = time.monotonic()
            if next_t > now:
                await asyncio.sleep(next_t - now)
            # a late post does not drop the sales it is late for: the tills kept
            # selling, so the next posts follow at once until the store catches up
            next_t += interval
            if store.paused:
                continue
            drafts = [self.next_event(store) for _ in range(self.batch)]
            bodies = [b for b, _ in drafts]
            # a void must not name a sale of its own batch: it only names answered sales
            results = await self.post(store, bodies)
            for (body, note), result in zip(drafts, results, strict=False):
                self._accept(store, body, result, note)
            self.stats.accepted_at.append(time.monotonic())

    async def web_shop(self, rate: float) -> None:
        """Reservations through the centre: reserve, then sell (the store loop) or release."""
        assert self.session is not None
        live: deque[tuple[str, str]] = deque()
        while not self._stop.is_set():
            await asyncio.sleep(self.rng.expovariate(rate))
            store = self.rng.choice(list(self.stores.values()))
            if live and self.rng.random() < 0.3:
                s_id, order = live.popleft()
                await self._release(s_id, order)
                continue
            sku, qty = self.zipf.pick(self.rng), self.rng.randint(1, 2)
            order = f"ORD-{next(self._ids)}"
            url = f"{self.central_url}/api/stores/{store.store_id}/reservations"
            body = {"sku": sku, "qty": qty, "order_id": order, "ttl_s": 3600}
            try:
                async with self.session.post(url, json=body) as resp:
                    if resp.status == 201:
                        self.stats.reservations_granted += 1
                        if self.rng.random() < 0.5:
                            store.orders.append((order, sku, qty))
                        else:
                            live.append((store.store_id, order))
                    elif resp.status == 409:
                        self.stats.reservations_refused += 1
                    else:
                        self.stats.reservation_errors += 1
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.stats.reservation_errors += 1
        while live:  # end every reservation the web shop still holds
            s_id, order = live.popleft()
            await self._release(s_id, order)

    async def _release(self, store_id: str, order: str) -> None:
        assert self.session is not None
        url = f"{self.central_url}/api/stores/{store_id}/reservations/{order}"
        for _ in range(20):
            try:
                async with self.session.delete(url) as resp:
                    if resp.status in (200, 404):
                        self.stats.reservations_released += resp.status == 200
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            await asyncio.sleep(0.5)
        self.stats.reservation_errors += 1

    async def flush_orders(self) -> None:
        """Sell every order still waiting in a store, and every transfer still on the road."""
        for store in self.stores.values():
            while store.orders or self.transfers[store.store_id]:
                drafts = []
                while store.orders or self.transfers[store.store_id]:
                    if self.transfers[store.store_id]:
                        self.transfers[store.store_id][0].sent_mono = 0.0
                        drafts.append(self.next_event(store))
                    else:
                        order, sku, qty = store.orders.popleft()
                        self.stats.reservations_sold += 1
                        drafts.append(
                            (self._body(store, "sale", [{"sku": sku, "qty": qty}], ref=order), None)
                        )
                results = await self.post(store, [b for b, _ in drafts])
                for (body, note), result in zip(drafts, results, strict=False):
                    self._accept(store, body, result, note)

    async def run(self, seconds: float, web_rate: float = 2.0) -> None:
        """Post for ``seconds`` (forever if 0), then end open orders and transfers."""
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self.session = session
            started = time.monotonic()
            tasks = [asyncio.create_task(self.store_loop(s)) for s in self.stores.values()]
            if self.central_url and web_rate > 0:
                tasks.append(asyncio.create_task(self.web_shop(web_rate)))
            try:
                # a loop that dies is a bug of the simulator: stop at once and say so
                await asyncio.wait(
                    tasks, timeout=seconds or None, return_when=asyncio.FIRST_EXCEPTION
                )
            finally:
                self._stop.set()
                self.stats.window_s = time.monotonic() - started
                for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(outcome, BaseException):
                        raise outcome
            self.stats.accepted_in_window = self.stats.accepted
            await self.flush_orders()
            self.session = None

    def stop(self) -> None:
        self._stop.set()
