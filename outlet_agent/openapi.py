"""``GET /openapi.json``: the OpenAPI 3 document of the terminals' API.

Written by hand next to the handlers in ``api.py``; ``tests/outlet`` runs
schemathesis against it, so a drift between the two fails a test.
"""

from __future__ import annotations

from typing import Any

from app.schema import EVENT_TYPES, MAX_ID_LEN
from outlet_agent.config import OutletSettings


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _error_or_batch(description: str) -> dict[str, Any]:
    """A refusal: one event's error, or a batch whose every item was refused alike."""
    return _json({"oneOf": [_ref("Error"), _ref("BatchResult")]}, description)


def openapi_document(settings: OutletSettings) -> dict[str, Any]:
    """The document for this agent's limits (body size, lines, batch size)."""
    ident = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN}
    retry_after = {
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "schema": {"type": "integer"},
        }
    }
    event_responses: dict[str, Any] = {
        "201": _json(
            {"oneOf": [_ref("Accepted"), _ref("BatchResult")]},
            "Durable: the event (or at least one event of a batch) is committed to the log",
        ),
        "200": _json(
            {"oneOf": [_ref("Accepted"), _ref("BatchResult")]},
            "The same client_txn_id and content again: the first answer",
        ),
        "401": _error("No, unknown or revoked bearer token"),
        "403": _error_or_batch("The body names another store_id (a batch: every item did)"),
        "409": _error_or_batch(
            "The client_txn_id was used for other content (a batch: so was every item's)"
        ),
        "413": _error_or_batch(
            f"Body over {settings.max_event_bytes} bytes (one event) or over "
            f"{max(settings.outlet_max_body_bytes, settings.max_event_bytes)} "
            "bytes (a batch; or every item of a batch over the event limit)"
        ),
        "422": _json(
            {"oneOf": [_ref("Error"), _ref("BatchResult")]},
            "Invalid: `reasons` lists every reason (a batch: every item was refused)",
        ),
        "503": {
            **_error("The log cannot make the event durable now (disk full, overloaded)"),
            "headers": retry_after,
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Retail outlet agent",
            "version": "1",
            "description": (
                "The store's durable, offline-first event log. Every 2xx answer means the "
                "event is committed to disk and will reach the centre (SPEC 'What is "
                "promised'). Terminals authenticate with a per-terminal bearer token."
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Line": {
                    "type": "object",
                    "required": ["sku", "qty"],
                    "properties": {
                        "sku": ident,
                        "qty": {
                            "type": "integer",
                            "description": "units (grams for weighed goods); positive, "
                            "signed for an adjustment, >= 0 for a count",
                        },
                        "unit_price_cents": {"type": "integer", "minimum": 0},
                    },
                },
                "TerminalEvent": {
                    "type": "object",
                    "required": ["type", "client_txn_id", "occurred_at"],
                    "properties": {
                        "type": {"type": "string", "enum": sorted(EVENT_TYPES)},
                        "client_txn_id": {**ident, "description": "the idempotency key"},
                        "occurred_at": {"type": "string", "format": "date-time"},
                        "lines": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": settings.max_lines,
                            "items": _ref("Line"),
                            "description": "required except for a void, whose lines the "
                            "agent takes from the sale named in ref",
                        },
                        "ref": {
                            **ident,
                            "description": "void/return: the sale's event_id or "
                            "client_txn_id; transfers: the transfer_id",
                        },
                        "reason": {"type": "string", "minLength": 1},
                        "store_id": {
                            "type": "string",
                            "description": "optional; another store's id is refused (403)",
                        },
                    },
                },
                "Batch": {
                    "type": "object",
                    "required": ["events"],
                    "properties": {
                        "events": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": settings.outlet_batch_max,
                            "items": _ref("TerminalEvent"),
                        }
                    },
                },
                "Accepted": {
                    "type": "object",
                    "required": ["event_id", "outlet_seq", "recorded_at"],
                    "properties": {
                        "event_id": {"type": "string"},
                        "outlet_seq": {"type": "integer", "minimum": 1},
                        "recorded_at": {"type": "string", "format": "date-time"},
                    },
                },
                "BatchResult": {
                    "type": "object",
                    "required": ["results"],
                    "properties": {
                        "results": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"type": "integer"}},
                                "description": "one per event, in order: the status and "
                                "body a single post would get",
                            },
                        }
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["detail"],
                    "properties": {
                        "detail": {"type": "string"},
                        "reasons": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Stock": {
                    "type": "object",
                    "required": ["store_id", "sku", "on_hand", "central_seq", "pending", "source"],
                    "properties": {
                        "store_id": {"type": "string"},
                        "sku": {"type": "string"},
                        "on_hand": {"type": "integer"},
                        "central_seq": {
                            "type": "integer",
                            "description": "the store's seq the centre had applied up to "
                            "(0 when computed from the local log alone)",
                        },
                        "pending": {
                            "type": "integer",
                            "description": "local events on this sku the centre has not applied",
                        },
                        "source": {
                            "type": "string",
                            "enum": ["central", "cached", "local"],
                            "description": "central: live answer; cached: the centre is "
                            "unreachable, its last answer; local: the whole local log",
                        },
                    },
                },
                "Status": {
                    "type": "object",
                    "required": [
                        "store_id",
                        "last_seq",
                        "forwarded_seq",
                        "backlog",
                        "oldest_unsent_age_s",
                        "broker_connected",
                    ],
                    "properties": {
                        "store_id": {"type": "string"},
                        "last_seq": {"type": "integer"},
                        "forwarded_seq": {"type": "integer"},
                        "backlog": {"type": "integer"},
                        "oldest_unsent_age_s": {"type": "number"},
                        "broker_connected": {"type": "boolean"},
                    },
                },
            },
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Record one event or a batch from a terminal",
                    "description": (
                        "A batch is committed in one transaction and answered with one "
                        "result per event, in order; each event is accepted or refused on "
                        "its own. Its HTTP status is 201 if any event was created, else 200 "
                        "if any was a repeat, else the events' status if they share one "
                        "(403, 409, 413, 422), else 422."
                    ),
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [_ref("TerminalEvent"), _ref("Batch")]}
                            }
                        },
                    },
                    "responses": event_responses,
                }
            },
            "/v1/stock/{sku}": {
                "get": {
                    "summary": "The outlet's view of a sku's stock",
                    "parameters": [
                        {"name": "sku", "in": "path", "required": True, "schema": ident}
                    ],
                    "responses": {
                        "200": _json(_ref("Stock"), "The outlet's view"),
                        "404": {"description": "Not a sku path (e.g. a control character)"},
                        "422": _error(f"sku blank, over {MAX_ID_LEN} characters or not printable"),
                    },
                }
            },
            "/v1/status": {
                "get": {
                    "summary": "The log and forwarding progress",
                    "responses": {"200": _json(_ref("Status"), "Progress")},
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": _json({"type": "object"}, "The agent is up")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
