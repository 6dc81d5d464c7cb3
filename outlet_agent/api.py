"""The terminals' HTTP API (SPEC "Public interfaces", outlet agent).

``POST /v1/events`` takes one event or ``{"events": [...]}``; the answer is
sent only once the events are durable in the log (group commit).

A batch is committed in one transaction (all durable, or 503 for all) and
answered with ``{"results": [...]}``, one item per event in order, each with its
own ``status`` (201, 200, 403, 409, 413, 422) and the body a single post would
get. The batch's HTTP status is 201 if any item was created, else 200 if any
was a repeat, else the items' status if they share one (403, 409, 413, 422),
else 422. Each item stands alone: a refused item does not refuse the others.
A bad token (401), a body over the size limit (413) or a log that cannot
commit (503) apply to the whole batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from app.schema import MAX_ID_LEN, InvalidEvent, fast_id, parse_terminal_event, utc_now
from app.signing import load_signer
from outlet_agent.config import OutletSettings
from outlet_agent.errors import OutletError, OutletLogFull, OutletOverloaded
from outlet_agent.fastpath import fast_submission
from outlet_agent.forwarder import Forwarder, ProducerFactory, make_producer
from outlet_agent.hardening import HardeningMiddleware, internal_error
from outlet_agent.log import Accepted, EventLog, Outcome, Rejected, Submission
from outlet_agent.metrics import OutletMetrics
from outlet_agent.openapi import openapi_document
from outlet_agent.tokens import TokenCache
from outlet_agent.view import CentralClient, HttpCentralClient, StockView

log = logging.getLogger(__name__)

#: stands in for a void's lines until the writer fills them from the sale
_VOID_PLACEHOLDER = [{"sku": "-", "qty": 1}]


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class _TooLarge(Exception):
    pass


def _result(outcome: Outcome) -> dict[str, Any]:
    """One item of a batch answer: ``{"status": ..., **outcome.body()}``."""
    if isinstance(outcome, Accepted):
        status, event_id, outlet_seq, recorded_at = outcome
        return {
            "status": status,
            "event_id": event_id,
            "outlet_seq": outlet_seq,
            "recorded_at": recorded_at,
        }
    return {"status": outcome.status, **outcome.body()}


def _refused(statuses: set[int]) -> int:
    """A batch with every item refused: their status if they share one (403, 409 ...), else 422."""
    return next(iter(statuses)) if len(statuses) == 1 else 422


def _error(status: int, detail: str, **extra: Any) -> JSON:
    return JSON({"detail": detail, **extra}, status_code=status)


class OutletApp:
    """The agent's parts, built in the lifespan and shared by the handlers."""

    def __init__(
        self,
        settings: OutletSettings,
        *,
        central: CentralClient | None = None,
        producer_factory: ProducerFactory = make_producer,
    ) -> None:
        self.settings = settings
        self.metrics = OutletMetrics(settings.store_id)
        self.log = EventLog(
            settings.outlet_db_path,
            store_id=settings.store_id,
            queue_max=settings.outlet_write_queue_max,
            group_max=settings.outlet_group_max,
            on_group=self.metrics.group_size.observe,
            signer=load_signer(
                settings.signing_key_id, settings.signing_key, settings.signing_key_file
            ),
        )
        self.central: CentralClient = central or HttpCentralClient(
            settings.central_url, timeout_s=settings.outlet_central_timeout_s
        )
        self.view = StockView(self.log, self.central, settings.store_id)
        self.tokens = TokenCache(self.log, settings.outlet_token_cache_s)
        self.forwarder = Forwarder(
            settings, self.log, self.metrics, producer_factory=producer_factory
        )
        self._forward_task: asyncio.Task[None] | None = None
        self._fake_seq = 0  # --no-log bench mode only
        self._retry_after = str(settings.outlet_retry_after_s)
        self._max_body = max(settings.outlet_max_body_bytes, settings.max_event_bytes)

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.log.open()
        s = self.settings
        log.info(
            "outlet agent for store %s: log %s at seq %d (forwarded %d)",
            s.store_id, s.outlet_db_path, self.log.last_seq, self.log.forwarded_seq,
        )  # fmt: skip
        if s.outlet_forward and not s.outlet_no_log:
            self._forward_task = asyncio.create_task(self.forwarder.run(), name="forwarder")
        try:
            yield
        finally:
            if self._forward_task is not None:
                self._forward_task.cancel()
                with suppress(asyncio.CancelledError):
                    await self._forward_task
            await self.central.aclose()
            await self.log.close()  # aiosqlite's thread is non-daemon: close or hang

    def starlette(self) -> Starlette:
        s = self.settings
        return Starlette(
            middleware=[
                Middleware(
                    HardeningMiddleware,
                    rate_per_s=s.outlet_rate_limit_per_s,
                    burst=s.outlet_rate_burst,
                    auth_failures_per_min=s.outlet_auth_failures_per_min,
                )
            ],
            exception_handlers={Exception: internal_error},
            routes=[
                Route("/v1/events", self.post_events, methods=["POST"]),
                Route("/v1/stock/{sku:path}", self.get_stock, methods=["GET"]),
                Route("/v1/status", self.get_status, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.get_metrics, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
            ],
            lifespan=self.lifespan,
        )

    # ------------------------------------------------------------------ handlers

    async def post_events(self, request: Request) -> Response:
        terminal = await self._terminal(request)
        if terminal is None:
            self.metrics.rejected(401)
            return JSON(
                {
                    "detail": "missing, unknown or revoked bearer token; make one with "
                    "`python -m outlet_agent tokens add --terminal ID`"
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            raw = await self._body(request)
        except _TooLarge:
            self.metrics.rejected(413)
            return _error(413, f"request body over {self._max_body} bytes")
        except TimeoutError:
            self.metrics.rejected(408)
            return _error(
                408, f"request body not received within {self.settings.outlet_body_timeout_s}s"
            )
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.metrics.rejected(422)
            return _error(422, "invalid event", reasons=[f"body: not JSON ({exc})"])
        if isinstance(obj, dict) and "events" in obj and "type" not in obj:
            return await self._post_batch(obj, terminal)
        if len(raw) > self.settings.max_event_bytes:
            self.metrics.rejected(413)
            return _error(413, f"event over {self.settings.max_event_bytes} bytes")
        item = self._prepare(obj, terminal)
        if isinstance(item, Rejected):
            self.metrics.rejected(item.status)
            return JSON(item.body(), status_code=item.status)
        outcomes = await self._submit([item])
        if isinstance(outcomes, Response):
            return outcomes
        outcome = outcomes[0]
        self._count([outcome])
        return JSON(outcome.body(), status_code=outcome.status)

    async def _post_batch(self, obj: dict[str, Any], terminal: str) -> Response:
        events = obj["events"]
        limit = self.settings.outlet_batch_max
        if not isinstance(events, list) or not events or len(events) > limit:
            self.metrics.rejected(422)
            return _error(
                422, "invalid batch", reasons=[f"events: must be a list of 1 to {limit} events"]
            )
        prepared: list[Submission | Rejected] = []
        for item in events:
            if len(orjson.dumps(item)) > self.settings.max_event_bytes:
                prepared.append(Rejected(413, f"event over {self.settings.max_event_bytes} bytes"))
            else:
                prepared.append(self._prepare(item, terminal))
        subs = [p for p in prepared if isinstance(p, Submission)]
        outcomes: list[Outcome] = []
        if subs:
            result = await self._submit(subs)
            if isinstance(result, Response):
                return result
            outcomes = result
        it = iter(outcomes)
        results: list[Outcome] = [p if isinstance(p, Rejected) else next(it) for p in prepared]
        self._count(results)
        statuses = {r.status for r in results}
        status = 201 if 201 in statuses else 200 if 200 in statuses else _refused(statuses)
        return JSON({"results": [_result(r) for r in results]}, status_code=status)

    def _prepare(self, obj: Any, terminal: str) -> Submission | Rejected:
        """Validate one terminal event; 403 for another store, 422 with every reason."""
        fill = False
        if isinstance(obj, dict):
            store = obj.get("store_id")
            if isinstance(store, str) and store != self.settings.store_id:
                return Rejected(
                    403,
                    f"this outlet agent serves store {self.settings.store_id!r}, "
                    f"not {store[:64]!r}",
                )
            if obj.get("type") != "void":
                fast = fast_submission(obj, terminal, self.settings.max_lines)
                if fast is not None:  # well-formed; else the full parser says why not
                    return fast
            elif not obj.get("lines"):
                # the agent fills a void's lines from the sale it names (in the writer)
                obj = {**obj, "lines": _VOID_PLACEHOLDER}
                fill = True
            else:
                fill = True  # lines a terminal sent are replaced by the sale's
        try:
            event = parse_terminal_event(obj, max_lines=self.settings.max_lines)
        except InvalidEvent as exc:
            return Rejected(422, "invalid event", tuple(exc.reasons))
        return Submission.of(event, terminal, fill_from_ref=fill)

    async def _submit(self, items: list[Submission]) -> list[Outcome] | Response:
        if self.settings.outlet_no_log:
            return self._answer_without_log(items)
        try:
            return await self.log.submit(items)
        except OutletError as exc:
            self.metrics.rejected(503, len(items))
            if not isinstance(exc, OutletOverloaded):
                self.metrics.error("log_full" if isinstance(exc, OutletLogFull) else "log")
            return JSON(
                {"detail": f"{exc}; retry later"},
                status_code=503,
                headers={"Retry-After": self._retry_after},
            )

    def _answer_without_log(self, items: list[Submission]) -> list[Outcome]:
        """Bench only: the same HTTP stack answering without the log (the ceiling)."""
        now = utc_now().isoformat()
        out: list[Outcome] = []
        for _ in items:
            self._fake_seq += 1
            out.append(Accepted(201, "00000000-0000-0000-0000-000000000000", self._fake_seq, now))
        return out

    def _count(self, outcomes: list[Outcome]) -> None:
        created = dup = 0
        for o in outcomes:
            if o.status == 201:
                created += 1
            elif o.status == 200:
                dup += 1
            else:
                self.metrics.rejected(o.status)
        if created:
            self.metrics.accepted.inc(created)
        if dup:
            self.metrics.duplicates.inc(dup)

    async def _terminal(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return await self.tokens.terminal(token.strip())

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        async with asyncio.timeout(self.settings.outlet_body_timeout_s):  # slow-loris: 408
            async for chunk in request.stream():
                size += len(chunk)
                if size > self._max_body:
                    raise _TooLarge
                chunks.append(chunk)
        return b"".join(chunks)

    async def get_stock(self, request: Request) -> Response:
        sku = request.path_params["sku"]
        if not fast_id(sku):  # what a line's sku may be
            reason = f"sku: 1 to {MAX_ID_LEN} printable characters, not all blank"
            return _error(422, "invalid sku", reasons=[reason])
        return JSON(await self.view.stock(sku))

    async def get_status(self, _request: Request) -> Response:
        return JSON(await self.status())

    async def status(self) -> dict[str, Any]:
        st = await self.log.status()
        m = self.metrics
        m.backlog.set(st.backlog)
        m.oldest_unsent_age.set(st.oldest_unsent_age_s)
        m.last_seq.set(st.last_seq)
        m.forwarded_seq.set(st.forwarded_seq)
        return {
            "store_id": self.settings.store_id,
            "last_seq": st.last_seq,
            "forwarded_seq": st.forwarded_seq,
            "backlog": st.backlog,
            "oldest_unsent_age_s": st.oldest_unsent_age_s,
            "broker_connected": self.forwarder.connected,
        }

    async def health(self, _request: Request) -> Response:
        return JSON({"status": "ok", "store_id": self.settings.store_id})

    async def get_metrics(self, _request: Request) -> Response:
        await self.status()  # refresh the gauges computed from the log
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(self, _request: Request) -> Response:
        return JSON(openapi_document(self.settings))


def create_app(
    settings: OutletSettings,
    *,
    central: CentralClient | None = None,
    producer_factory: ProducerFactory = make_producer,
) -> Starlette:
    """The ASGI app; ``app.state.outlet`` is the :class:`OutletApp` behind it."""
    outlet = OutletApp(settings, central=central, producer_factory=producer_factory)
    app = outlet.starlette()
    app.state.outlet = outlet
    return app
