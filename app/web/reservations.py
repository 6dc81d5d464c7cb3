"""Reservations (SPEC "Reservations"): decided by the agent of the store's partition.

The view runs on the worker owning the store (routed first); the decision is
made by the reservation agent in order with the store's stock events, so two
requests can never both take the last unit.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from faust.web import Request, Response

from app.web import openapi as oa
from app.web.common import Api, ApiError, ApiView, bad_request
from app.web.routing import route
from app.web.stock import check_id

MAX_BODY = 16 * 1024
MAX_QTY = 1_000_000
MAX_TTL_S = 7 * 24 * 3600
DEFAULT_TTL_S = 900.0


def _reservations(view: ApiView) -> Any:
    service = getattr(view.central, "reservations", None)
    if service is None:
        raise ApiError(
            503,
            "not_deployed",
            "the reservation agent is not running in this worker build (central.reservations)",
            headers={"Retry-After": "5"},
        )
    return service


def _timeout_type() -> type[BaseException]:
    try:
        from agents.reservations import ReservationTimeout
    except ImportError:  # the agent is not deployed: _reservations() said so already
        return TimeoutError
    return ReservationTimeout


async def parse_body(request: Request) -> dict[str, Any]:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", f"body over {MAX_BODY} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("body must be a JSON object {sku, qty, order_id, ttl_s}") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object {sku, qty, order_id, ttl_s}")
    reasons = []
    sku, qty, order_id = body.get("sku"), body.get("qty"), body.get("order_id")
    ttl_s = body.get("ttl_s", DEFAULT_TTL_S)
    if not isinstance(sku, str) or not sku:
        reasons.append("sku: required, a non-empty string")
    if not isinstance(order_id, str) or not order_id:
        reasons.append("order_id: required, a non-empty string")
    if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
        reasons.append(f"qty: required, an integer from 1 to {MAX_QTY}")
    if (
        isinstance(ttl_s, bool)
        or not isinstance(ttl_s, int | float)
        or not math.isfinite(ttl_s)
        or not 0 < ttl_s <= MAX_TTL_S
    ):
        reasons.append(f"ttl_s: a number of seconds above 0 and at most {MAX_TTL_S}")
    if reasons:
        raise ApiError(400, "invalid_reservation", "; ".join(reasons), reasons=reasons)
    assert isinstance(sku, str) and isinstance(order_id, str)
    check_id("sku", sku)
    check_id("order_id", order_id)
    return {"sku": sku, "qty": qty, "order_id": order_id, "ttl_s": float(ttl_s)}


def known_store(view: ApiView, store_id: str) -> None:
    """404 for a store outside ``RETAIL_STORES`` (when that list is set)."""
    known = view.central.settings.known_stores
    if known and store_id not in known:
        raise ApiError(404, "unknown_store", f"store {store_id!r} is not in RETAIL_STORES")


class Reserve(ApiView):
    """``POST /api/stores/{store_id}/reservations``: 201 granted, 409 refused with ``available``."""

    async def post(self, request: Request, store_id: str) -> Response:
        check_id("store_id", store_id)
        body = await parse_body(request)
        routed = await route(self.central, self, request, store_id)
        if routed is not None:
            return routed
        service = _reservations(self)
        # A store with no events yet has no stock: the request is decided (and
        # refused with available 0), not rejected. Only a store outside
        # RETAIL_STORES is unknown.
        known_store(self, store_id)
        try:
            answer = await service.reserve(
                store_id, body["sku"], body["qty"], body["order_id"], body["ttl_s"]
            )
        except _timeout_type() as exc:
            raise ApiError(503, "no_decision", str(exc), headers={"Retry-After": "1"}) from exc
        return self.json_ok(answer, 201 if answer.get("granted") else 409)


class Release(ApiView):
    """``DELETE /api/stores/{store_id}/reservations/{order_id}``: 200 released, 404 unknown."""

    async def delete(self, request: Request, store_id: str, order_id: str) -> Response:
        check_id("store_id", store_id)
        check_id("order_id", order_id)
        routed = await route(self.central, self, request, store_id)
        if routed is not None:
            return routed
        service = _reservations(self)
        known_store(self, store_id)
        try:
            answer = await service.release(store_id, order_id)
        except _timeout_type() as exc:
            raise ApiError(503, "no_decision", str(exc), headers={"Retry-After": "1"}) from exc
        if not answer.get("released"):
            raise ApiError(
                404,
                "unknown_reservation",
                f"no live reservation {order_id!r} at store {store_id!r}",
                released=False,
            )
        return self.json_ok(answer)


def register(api: Api) -> None:
    api.register(
        "/api/stores/{store_id}/reservations",
        Reserve,
        {
            "post": oa.op(
                "Reserve stock for an order",
                "Decided in order with the store's stock events; the same order_id again "
                "gets the same answer.",
                params=[oa.path("store_id")],
                body=oa.ref("ReservationRequest"),
                ok=oa.ref("Reservation"),
                ok_status=201,
                errors=(400, 404, 413, 503),
                extra={409: oa.ref("Reservation")},
            )
        },
    )
    api.register(
        "/api/stores/{store_id}/reservations/{order_id}",
        Release,
        {
            "delete": oa.op(
                "Release a reservation",
                "Ends the reservation at once (a sale naming it, or its time to live, also do).",
                params=[oa.path("store_id"), oa.path("order_id")],
                ok=oa.ref("Released"),
                errors=(400, 404, 503),
            )
        },
    )
