"""Negative and low-stock alerts (SPEC rule 5), from the ``alerts`` table of every worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.web import Request, Response

from app.web import openapi as oa
from app.web.common import Api, ApiView, bool_param, choice_param, int_param, require
from app.web.gather import gather, is_local_request, local_envelope
from app.web.rocks import local_items
from app.web.routing import partition_for
from tables.codec import read

if TYPE_CHECKING:
    from app.faust_app import Central

KINDS = ("negative", "low")


def local_alerts(
    central: Central, *, kind: str | None, include_inactive: bool, store_id: str | None
) -> list[dict[str, Any]]:
    table = require(central, "tables", "alerts", "the lead's alerts table")
    out = []
    for key, alert in local_items(table):
        if not isinstance(alert, dict):
            continue
        if not include_inactive and not alert.get("active"):
            continue
        if kind is not None and alert.get("kind") != kind:
            continue
        if store_id is not None and alert.get("store_id") != store_id:
            continue
        out.append(with_current_on_hand(central, key, alert))
    return out


def with_current_on_hand(central: Central, key: str, alert: dict[str, Any]) -> dict[str, Any]:
    """The alert with its key's on_hand as it is now.

    An alert record is written when the alert changes, not each time its
    stock moves (agents/apply.py), so the record's own on_hand is the one
    that raised or cleared it.
    """
    partition = partition_for(str(alert.get("store_id")), central.settings.topic_partitions)
    stock = read(central.tables.stock, key, partition)
    if isinstance(stock, dict) and "on_hand" in stock:
        return {**alert, "on_hand": int(stock["on_hand"])}
    return alert


def sort_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Negative first, then by store and SKU: the order an operator works through them."""
    return sorted(
        alerts,
        key=lambda a: (a.get("kind") != "negative", str(a.get("store_id")), str(a.get("sku"))),
    )


class Alerts(ApiView):
    """``GET /api/alerts?kind=&store_id=&all=&limit=``."""

    async def get(self, request: Request) -> Response:
        kind = choice_param(request, "kind", KINDS)
        include_inactive = bool_param(request, "all")
        limit = int_param(request, "limit", 500, minimum=1, maximum=10_000)
        store_id = request.query.get("store_id") or None

        async def local() -> dict[str, Any]:
            return local_envelope(
                alerts=local_alerts(
                    self.central, kind=kind, include_inactive=include_inactive, store_id=store_id
                )
            )

        if is_local_request(request):
            return self.json_ok(await local())
        gathered = await gather(self.central, request, local)
        alerts = sort_alerts([a for part in gathered.parts for a in part.get("alerts", [])])
        return self.json_ok({**gathered.envelope(), "total": len(alerts), "alerts": alerts[:limit]})


def register(api: Api) -> None:
    api.register(
        "/api/alerts",
        Alerts,
        {
            "get": oa.op(
                "Negative and low-stock alerts",
                "Active alerts of every store (negative first); `all=true` adds cleared ones.",
                params=[
                    oa.query_str("kind", "only this kind", list(KINDS)),
                    oa.query_str("store_id", "only this store"),
                    oa.query_str("all", "include cleared alerts", ["true", "false"]),
                    oa.query_int("limit", 1, 10_000, 500, "at most this many"),
                    oa.scope_param(),
                ],
                ok=oa.ref("Alerts"),
                errors=(400, 503),
            )
        },
    )
