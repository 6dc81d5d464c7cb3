"""HTTP hardening of the outlet agent (issue 10, SECURITY.md).

One pure-ASGI middleware in front of the API:

- security headers on every answer (no sniffing, no caching, no framing, no
  referrer; a ``default-src 'none'`` CSP: the agent serves JSON, never pages);
- rate limits per client address (a token bucket; off unless
  ``RETAIL_OUTLET_RATE_LIMIT_PER_S`` is set), answered ``429`` + ``Retry-After``;
- a brute-force brake: an address that collected ``outlet_auth_failures_per_min``
  401s in a minute gets ``429`` for the rest of that minute, whatever it sends;
- no CORS: no ``Access-Control-*`` header is ever sent, so a browser page of
  another origin cannot read the API (terminals are not browsers).

Unexpected errors are answered by :func:`internal_error` (a generic JSON 500,
the traceback only in the agent's log).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)

#: Addresses tracked at most (each costs a few dozen bytes); beyond it the oldest go.
MAX_TRACKED = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class _Failures:
    count: int
    window_start: float


class HardeningMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        rate_per_s: float = 0.0,
        burst: int = 200,
        auth_failures_per_min: int = 30,
        exempt_paths: frozenset[str] = frozenset({"/health"}),
    ) -> None:
        self.app = app
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.auth_failures_per_min = auth_failures_per_min
        self.exempt_paths = exempt_paths
        self._buckets: dict[str, _Bucket] = {}
        self._failures: dict[str, _Failures] = {}
        self.limited = 0  # answers refused with 429 (tests, metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        addr = str(client[0]) if client else "-"
        now = time.monotonic()
        if scope.get("path") not in self.exempt_paths:
            retry_after = self._refuse(addr, now)
            if retry_after is not None:
                self.limited += 1
                await _too_many(retry_after)(scope, receive, send)
                return

        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 401:
                    self._auth_failed(addr, now)
                headers = [
                    (k, v) for k, v in message.get("headers", []) if not k.startswith(b"access-")
                ]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_hardened)

    def _refuse(self, addr: str, now: float) -> int | None:
        """Seconds to wait if ``addr`` must be refused now, else ``None``."""
        failures = self._failures.get(addr)
        if failures is not None:
            if now - failures.window_start >= 60:
                del self._failures[addr]
            elif failures.count >= self.auth_failures_per_min:
                return max(1, int(60 - (now - failures.window_start)) + 1)
        if self.rate_per_s <= 0:
            return None
        bucket = self._buckets.get(addr)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._buckets.pop(next(iter(self._buckets)))
            bucket = self._buckets[addr] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        if bucket.tokens < 1.0:
            return max(1, int((1.0 - bucket.tokens) / self.rate_per_s) + 1)
        bucket.tokens -= 1.0
        return None

    def _auth_failed(self, addr: str, now: float) -> None:
        failures = self._failures.get(addr)
        if failures is None or now - failures.window_start >= 60:
            if len(self._failures) >= MAX_TRACKED:
                self._failures.pop(next(iter(self._failures)))
            failures = self._failures[addr] = _Failures(0, now)
        failures.count += 1
        if failures.count == self.auth_failures_per_min:
            log.warning(
                "outlet API: %d bad tokens from %s within a minute; refusing it (429) "
                "until the minute is over",
                failures.count, addr,
            )  # fmt: skip


def _too_many(retry_after: int) -> Response:
    return Response(
        orjson.dumps({"detail": "too many requests; slow down and retry later"}),
        status_code=429,
        media_type="application/json",
        headers={"Retry-After": str(retry_after)},
    )


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug: log it with the traceback, tell the client nothing about the inside."""
    log.error(
        "outlet API: unhandled error on %s %s", request.method, request.url.path, exc_info=exc
    )
    return Response(
        orjson.dumps({"detail": "internal error; the outlet agent's log has the details"}),
        status_code=500,
        media_type="application/json",
    )
