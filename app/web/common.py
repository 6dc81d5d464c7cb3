"""What every central view shares: JSON via orjson, 4xx errors, headers, the route registry.

A view raises :class:`ApiError` for anything wrong with the request; the base
class turns it into a JSON body ``{"error": ..., "detail": ...}`` with the
status, so bad input is a clear 4xx and never a 5xx.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from aiohttp.web import HTTPException
from faust.web import Request, Response, View

if TYPE_CHECKING:
    from app.faust_app import Central

log = logging.getLogger(__name__)

#: Every answer of the API: no caching by proxies, no MIME sniffing.
API_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class ApiError(Exception):
    """A request the API cannot answer as asked; ``status`` is a 4xx (or 503 to retry)."""

    def __init__(
        self, status: int, error: str, detail: str, *, headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:  # fmt: skip
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def not_found(what: str, detail: str) -> ApiError:
    return ApiError(404, f"unknown_{what}", detail)


def bad_request(detail: str, error: str = "bad_request") -> ApiError:
    return ApiError(400, error, detail)


def json_response(
    view: View, data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = view.bytes(orjson.dumps(data), content_type="application/json", status=status)
    for name, value in {**API_HEADERS, **(headers or {})}.items():
        response.headers[name] = value
    return response


class ApiView(View):
    """Base of the central views: holds the :class:`Central` and maps errors to 4xx."""

    central: ClassVar[Central]

    async def dispatch(self, request: Any) -> Any:
        try:
            return await super().dispatch(request)
        except ApiError as exc:
            body = {"error": exc.error, "detail": exc.detail, **exc.extra}
            return json_response(self, body, exc.status, exc.headers)
        except HTTPException:
            raise  # aiohttp's own answers, e.g. 413 for a body over its 1 MiB limit
        except Exception:  # a bug: the traceback goes to the log, never to the client
            log.exception("central API: unhandled error on %s %s", request.method, request.path)
            body = {"error": "internal", "detail": "internal error; the worker's log has details"}
            return json_response(self, body, 500)

    def json_ok(self, data: Any, status: int = 200) -> Response:
        return json_response(self, data, status)


def now_s() -> float:
    return time.time()


# ------------------------------------------------------------------ parameters


def int_param(
    request: Request, name: str, default: int, *, minimum: int, maximum: int
) -> int:  # fmt: skip
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not minimum <= value <= maximum:
        raise bad_request(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def choice_param(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise bad_request(f"{name} must be one of {', '.join(choices)}, got {raw[:40]!r}")
    return raw


def bool_param(request: Request, name: str) -> bool:
    raw = (request.query.get(name) or "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise bad_request(f"{name} must be true or false, got {raw[:40]!r}")


def require(central: Central, holder: str, name: str, issue: str) -> Any:
    """A table or service the lead's agents add; a clear 503 until it is deployed."""
    obj = getattr(central, holder) if holder != "central" else central
    value = getattr(obj, name, None)
    if value is None:
        raise ApiError(
            503,
            "not_deployed",
            f"{holder}.{name} is not available in this worker build ({issue})",
        )
    return value


# ------------------------------------------------------------------ registry


@dataclass
class Route:
    path: str
    view: type[ApiView] | type[View]
    #: method -> OpenAPI operation object
    operations: dict[str, dict[str, Any]]


@dataclass
class Api:
    """The routes this module registers, with their OpenAPI operations beside them.

    ``/api/openapi.json`` is built from here, and ``register`` is the only way
    a view gets on the app, so the document and the code cannot drift apart.
    """

    central: Central
    routes: list[Route] = field(default_factory=list)

    def register(self, path: str, view: type[View], operations: dict[str, dict[str, Any]]) -> None:
        bound: type[View] = type(view.__name__, (view,), {"central": self.central})
        self.central.app.page(path)(bound)
        self.routes.append(Route(path, bound, operations))

    def page(
        self, path: str, **operations: dict[str, Any]
    ) -> Callable[[type[View]], type[View]]:  # fmt: skip
        def decorate(view: type[View]) -> type[View]:
            self.register(path, view, operations)
            return view

        return decorate
