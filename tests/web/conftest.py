"""Two real central workers sharing the partitions, with events for 100 stores.

Started once for the package (about 20 s) and shared by every web test; each
test adds its own stores or keys where it changes state, so tests stay
independent of their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import DevStack
from tests.conftest import produce
from tests.helpers import WorkerProcess, isolated_app_env, make_event, wait_for

STORES = [f"S{i:03d}" for i in range(1, 101)]
SKUS = [f"SKU-{i:02d}" for i in range(1, 6)]


@dataclass
class Cluster:
    stack: DevStack
    env: dict[str, str]
    workers: list[WorkerProcess]
    #: (store, sku) -> expected on_hand
    expected: dict[tuple[str, str], int] = field(default_factory=dict)
    #: store -> next outlet_seq
    seqs: dict[str, int] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return self.env["RETAIL_EVENTS_TOPIC"]

    def produce(self, events: list[Any]) -> None:
        """Send and wait for the acks; in a thread, so it also works under playwright's loop."""
        with ThreadPoolExecutor(1) as pool:
            pool.submit(
                asyncio.run, produce(self.stack.broker.bootstrap, self.topic, events)
            ).result()

    def next_seq(self, store: str) -> int:
        self.seqs[store] = self.seqs.get(store, 0) + 1
        return self.seqs[store]

    def event(
        self, store: str, type: str, lines: list[dict[str, Any]], **kw: Any
    ) -> dict[str, Any]:
        seq = kw.pop("seq", None) or self.next_seq(store)
        sign = {"sale": -1, "receipt": 1, "return": 1}.get(type, 0)
        for line in lines:
            key = (store, line["sku"])
            self.expected[key] = self.expected.get(key, 0) + sign * line["qty"]
        return make_event(store, seq, type, lines, **kw)

    def get(self, worker: int, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.workers[worker].url}{path}", params=params, timeout=10)

    def wait_applied(self, store: str, seq: int, timeout: float = 60) -> None:
        def applied() -> bool:
            r = self.get(0, f"/api/stores/{store}/sync")
            return r.status_code == 200 and r.json()["highest_seq"] >= seq

        try:
            wait_for(applied, timeout=timeout, what=f"{store} applied up to {seq}")
        except AssertionError as exc:
            views = [self.get(i, f"/api/stores/{store}/sync").text for i in (0, 1)]
            logs = "\n".join(w.log_tail(15) for w in self.workers)
            raise AssertionError(f"{exc}\nviews: {views}\nlogs:\n{logs}") from None


def _both_assigned(workers: list[WorkerProcess]) -> bool:
    """Both workers see the same two-member assignment."""
    for w in workers:
        r = httpx.get(f"{w.url}/api/sync", timeout=5)
        if r.status_code != 200:
            return False
        body = r.json()
        if body["workers"] != 2 or body["partial"]:
            return False
    return True


@pytest.fixture(scope="package")
def cluster(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = isolated_app_env(stack)
    root: Path = tmp_path_factory.mktemp("web")
    workers = [WorkerProcess(env=env, data_dir=root / f"worker{i}") for i in (1, 2)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.wait_ready()
        wait_for(lambda: _both_assigned(workers), timeout=90, what="two workers sharing partitions")
        c = Cluster(stack, env, workers)
        events: list[Any] = []
        for store in STORES:
            events.append(c.event(store, "receipt", [{"sku": s, "qty": 10} for s in SKUS]))
            events.append(
                c.event(store, "sale", [{"sku": "SKU-01", "qty": 2, "unit_price_cents": 150}])
            )
        # S001: a duplicate; S002: a gap (seq 3 never sent); S003: negative stock
        events.append(dict(events[1]))
        c.seqs["S002"] += 1
        events.append(c.event("S002", "sale", [{"sku": "SKU-02", "qty": 1}]))
        events.append(c.event("S003", "sale", [{"sku": "SKU-03", "qty": 15}]))
        bad = make_event("S004", 99, schema="retail.v0")
        events.append(bad)
        c.produce(events)
        c.wait_applied("S002", 4)
        c.wait_applied("S003", 3)
        for store in STORES:
            c.wait_applied(store, 2)
        yield c
    finally:
        for w in workers:
            w.stop()
