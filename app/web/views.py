"""Central views (SPEC "Public interfaces", central): where every route is registered.

Any worker answers any key: a request about a store is routed to the worker
that owns the store's partition of ``retail.events`` (where its tables live);
a request about all stores gathers every worker's part. One module per
resource: ``stock``, ``sync``, ``reservations``, ``alerts``, ``dead_letters``,
``dashboard``; ``openapi`` documents what they registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from app import metrics
from app.web import alerts, dashboard, dead_letters, openapi, reservations, stock, sync
from app.web.common import Api

if TYPE_CHECKING:
    from app.faust_app import Central


def json_response(view: View, data: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(data), content_type="application/json", status=status)


def register_views(central: Central) -> Api:
    app = central.app

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

    api = Api(central)
    for module in (stock, sync, reservations, alerts, dead_letters, dashboard):
        module.register(api)
    openapi.register(api)  # last: documents every route above
    return api
