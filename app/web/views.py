"""Central views (SPEC "Public interfaces", central).

Any worker answers any key: a request about a store is routed to the worker
that owns the store's partition of ``retail.events`` (where its tables live).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from app import metrics
from app.web.routing import route
from domain.apply import stock_key
from domain.progress import ProgressState
from domain.stock import StockState

if TYPE_CHECKING:
    from app.faust_app import Central


def json_response(view: View, data: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(data), content_type="application/json", status=status)


def register_views(central: Central) -> None:
    app = central.app
    tables = central.tables

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return json_response(self, {"status": "ok"})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(
                generate_latest(metrics.REGISTRY), content_type="text/plain; version=0.0.4"
            )

    @app.page("/api/stores/{store_id}/stock/{sku}")
    class StockItem(View):
        async def get(self, request: Request, store_id: str, sku: str) -> Response:
            routed = await route(central, self, request, store_id)
            if routed is not None:
                return routed
            now_ms = int(time.time() * 1000)
            state = StockState.from_json(tables.stock.get(stock_key(store_id, sku)))
            progress = ProgressState.from_json(tables.progress.get(store_id))
            reserved = state.reserved(now_ms)
            return json_response(
                self,
                {
                    "store_id": store_id,
                    "sku": sku,
                    "on_hand": state.on_hand,
                    "reserved": reserved,
                    "available": state.on_hand - reserved,
                    "applied_seq": progress.seqs.watermark,
                    "applied_above": sorted(progress.seqs.above),
                },
            )
