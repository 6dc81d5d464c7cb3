"""The OpenAPI 3.1 document of the central API, built from the registered routes.

Each module registers its views with their operations (``Api.register``), so
``GET /api/openapi.json`` lists exactly the routes the worker serves;
``tests/web/test_openapi.py`` checks that, and schemathesis checks the answers.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response

from app.web.common import Api, ApiView

ERROR_TEXT = {
    400: "Bad input (paging, ids, body): the `detail` says what",
    404: "Unknown store, SKU or reservation",
    409: "Refused: not enough available",
    413: "Body too large",
    503: "Retry later (`Retry-After`): the owner is moving or a service is not up",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def path(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    }


def query_int(name: str, minimum: int, maximum: int, default: int, text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": text,
        "schema": {"type": "integer", "minimum": minimum, "maximum": maximum, "default": default},
    }


def query_str(name: str, text: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    return {"name": name, "in": "query", "required": False, "description": text, "schema": schema}


def scope_param() -> dict[str, Any]:
    return query_str(
        "scope", "`local`: only this worker's partitions (used between workers)", ["all", "local"]
    )


def _json(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


def op(
    summary: str,
    description: str,
    *,
    params: list[dict[str, Any]] | None = None,
    ok: dict[str, Any],
    ok_status: int = 200,
    errors: tuple[int, ...] = (),
    body: dict[str, Any] | None = None,
    content_type: str = "application/json",
    extra: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(ok_status): {"description": "OK", "content": {content_type: {"schema": ok}}}
    }
    for status, schema in (extra or {}).items():
        responses[str(status)] = _json(schema, ERROR_TEXT.get(status, "see body"))
    for status in errors:
        responses.setdefault(str(status), _json(ref("Error"), ERROR_TEXT[status]))
    operation: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "parameters": params or [],
        "responses": responses,
    }
    if body is not None:
        content = {"application/json": {"schema": body}}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


_INT = {"type": "integer"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR = {"type": "string"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or list(props)}


SYNC_ROW = _obj(
    {
        "store_id": _STR,
        "applied_seq": _INT,
        "highest_seq": _INT,
        "gaps": {"type": "array", "items": {"type": "array", "items": _INT}},
        "missing": _INT,
        "duplicates": _INT,
        "conflicts": _INT,
        "events": _INT,
        "lag_p50_ms": _NUM_OR_NULL,
        "lag_p99_ms": _NUM_OR_NULL,
        "last_recorded_at": _NUM_OR_NULL,
        "last_applied_at": _NUM_OR_NULL,
        "last_event_age_s": _NUM_OR_NULL,
        "pg_committed_at": _NUM_OR_NULL,
        "pg_commit_lag_ms": _NUM_OR_NULL,
        "pg_behind_s": _NUM_OR_NULL,
        "behind": {"type": "boolean"},
    }
)
GATHER = {
    "workers": _INT,
    "partial": {"type": "boolean"},
    "errors": {"type": "array", "items": _obj({"worker": _STR, "error": _STR})},
}
ALERT = _obj(
    {
        "store_id": _STR,
        "sku": _STR,
        "kind": {"type": "string", "enum": ["negative", "low"]},
        "on_hand": _INT,
        "threshold": _INT,
        "active": {"type": "boolean"},
        "at": {"type": "number"},
    }
)
DEAD_LETTER = _obj(
    {
        "key": _STR,
        "kind": _STR,
        "reasons": {"type": "array", "items": _STR},
        "store_id": {"type": ["string", "null"]},
        "event": {},
        "at": {"type": "number"},
    }
)
STOCK_FIGURES = {"on_hand": _INT, "reserved": _INT, "available": _INT, "applied_seq": _INT}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR, "detail": _STR}),
    "StockItem": _obj(
        {
            "store_id": _STR,
            "sku": _STR,
            **STOCK_FIGURES,
            "applied_above": {"type": "array", "items": _INT},
        }
    ),
    "StockPage": _obj(
        {
            "store_id": _STR,
            "store_applied_seq": _INT,
            "limit": _INT,
            "items": {"type": "array", "items": _obj({"sku": _STR, **STOCK_FIGURES})},
            "next_cursor": {"type": ["string", "null"]},
        }
    ),
    "SkuStock": _obj(
        {
            **GATHER,
            "sku": _STR,
            "total_on_hand": _INT,
            "stores": {
                "type": "array",
                "items": _obj({"store_id": _STR, **STOCK_FIGURES}),
            },
        }
    ),
    "StoreSync": SYNC_ROW,
    "Sync": _obj({**GATHER, "stores": {"type": "array", "items": ref("StoreSync")}}),
    "ReservationRequest": {
        "type": "object",
        "properties": {
            "sku": {"type": "string", "minLength": 1, "maxLength": 200},
            "qty": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            "order_id": {"type": "string", "minLength": 1, "maxLength": 200},
            "ttl_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 604_800, "default": 900},
        },
        "required": ["sku", "qty", "order_id"],
    },
    "Reservation": {
        "type": "object",
        "properties": {
            "granted": {"type": "boolean"},
            "available": _INT,
            "store_id": _STR,
            "sku": _STR,
            "order_id": _STR,
            "expires_at": {},
        },
        "required": ["granted", "available"],
    },
    "Released": {"type": "object", "properties": {"released": {"type": "boolean"}}},
    "Alert": ALERT,
    "Alerts": _obj({**GATHER, "alerts": {"type": "array", "items": ref("Alert")}}),
    "DeadLetter": DEAD_LETTER,
    "DeadLetters": _obj(
        {**GATHER, "total": _INT, "dead_letters": {"type": "array", "items": ref("DeadLetter")}}
    ),
    "Dashboard": {"type": "object"},
}


def document(api: Api) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in api.routes:
        paths.setdefault(route.path, {}).update(route.operations)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Retail sync: central API",
            "version": "1.0.0",
            "description": "Served by every central worker; any worker answers any key.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


class OpenApi(ApiView):
    """``GET /api/openapi.json``."""

    async def get(self, request: Request) -> Response:
        return self.json_ok(self.api_document)

    api_document: dict[str, Any] = {}


def register(api: Api) -> None:
    doc_op = op(
        "This document",
        "OpenAPI 3.1 of the central API, built from the routes the worker registers.",
        ok={"type": "object"},
    )
    api.register("/api/openapi.json", OpenApi, {"get": doc_op})
    # built last, once every module registered its routes (see views.register_views)
    route = api.routes[-1]
    route.view.api_document = document(api)  # type: ignore[union-attr]
