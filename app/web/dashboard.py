"""The live dashboard: a static page and script, and one summary endpoint it polls.

``GET /`` is plain HTML with a small script (no build step, no CDN: the
machines are offline). Every second the script asks ``GET /api/dashboard``,
which gathers each worker's local summary once and caches the merged answer
for half a second, so ten open dashboards and a hundred stores cost one
gather per half second, not one per store per viewer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from app import metrics
from app.web import openapi as oa
from app.web.alerts import local_alerts, sort_alerts
from app.web.common import Api, ApiError, ApiView
from app.web.dead_letters import local_dead_letters, newest
from app.web.gather import gather, is_local_request, local_envelope, own_url
from app.web.rocks import scan_prefix_backwards
from app.web.routing import partition_for
from app.web.sync import local_sync_rows, merge_rows
from domain.apply import KEY_SEP

if TYPE_CHECKING:
    from app.faust_app import Central

#: minutes of sales in the chart
SALES_MINUTES = 30
#: how long a merged summary is reused
SUMMARY_TTL_S = 0.5

#: No inline script or style, nothing from elsewhere, no framing, no referrer.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-cache",
}


class EventRate:
    """Events applied per second on this worker, sampled once a second."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque(maxlen=64)

    @staticmethod
    def total() -> float:
        return metrics.REGISTRY.get_sample_value("retail_events_applied_total") or 0.0

    def sample(self) -> None:
        self.samples.append((time.monotonic(), self.total()))

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        t_last, n_last = self.samples[-1]
        t_first, n_first = self.samples[0]
        for t, n in self.samples:
            if t_last - t <= self.window_s:
                t_first, n_first = t, n
                break
        elapsed = t_last - t_first
        return 0.0 if elapsed <= 0 else round((n_last - n_first) / elapsed, 1)


def local_sales(central: Central, stores: list[str], now: float) -> dict[int, list[int]]:
    """Sales per minute (epoch minute -> [events, units, revenue_cents]) of these stores.

    Reads each store's newest minute buckets backwards from the end of its key
    range and stops at the first older than the window: O(stores x minutes
    shown), whatever the history. Minutes are the terminals' ``occurred_at``;
    a store whose terminals mix UTC offsets may have a bucket stop the scan early.
    """
    cutoff = (int(now) // 60 - SALES_MINUTES + 1) * 60
    table = central.tables.sales
    partitions = central.settings.topic_partitions
    out: dict[int, list[int]] = {}
    for store_id in stores:
        prefix = f"{store_id}{KEY_SEP}"
        read = 0
        partition = partition_for(store_id, partitions)
        for key, bucket in scan_prefix_backwards(table, partition, prefix):
            read += 1
            try:
                minute = int(datetime.fromisoformat(key[len(prefix) :]).timestamp())
            except ValueError:
                continue
            if minute < cutoff or read > SALES_MINUTES * 2:
                break
            if minute > now + 60 or not isinstance(bucket, dict):
                continue  # a terminal clock in the future: not on this chart
            slot = out.setdefault(minute, [0, 0, 0])
            slot[0] += int(bucket.get("events", 0))
            slot[1] += int(bucket.get("units", 0))
            slot[2] += int(bucket.get("revenue_cents", 0))
    return out


def local_summary(central: Central, rate: EventRate) -> dict[str, Any]:
    now = time.time()
    stores = local_sync_rows(central)
    try:
        alerts = local_alerts(central, kind=None, include_inactive=False, store_id=None)
        alerts_error = None
    except ApiError as exc:  # the alerts table is not deployed yet: say so on the page
        alerts, alerts_error = [], exc.detail
    dead_total, dead_recent = local_dead_letters(central, kind=None, store_id=None, limit=10)
    sales = local_sales(central, [row["store_id"] for row in stores], now)
    return local_envelope(
        worker=own_url(central),
        events_total=int(rate.total()),
        events_per_s=rate.rate(),
        stores=stores,
        alerts=sort_alerts(alerts)[:200],
        alerts_total=len(alerts),
        alerts_negative=sum(1 for a in alerts if a.get("kind") == "negative"),
        alerts_error=alerts_error,
        dead_letters_total=dead_total,
        dead_letters=dead_recent,
        sales=[[minute, *figures] for minute, figures in sorted(sales.items())],
    )


def merge_summaries(parts: list[dict[str, Any]], now: float) -> dict[str, Any]:
    stores = merge_rows([p.get("stores", []) for p in parts])
    sales: dict[int, list[int]] = {}
    for part in parts:
        for minute, events, units, revenue in part.get("sales", []):
            slot = sales.setdefault(int(minute), [0, 0, 0])
            slot[0] += events
            slot[1] += units
            slot[2] += revenue
    first = (int(now) // 60 - SALES_MINUTES + 1) * 60
    alerts = sort_alerts([a for p in parts for a in p.get("alerts", [])])
    return {
        "generated_at": now,
        "events_per_s": round(sum(float(p.get("events_per_s", 0)) for p in parts), 1),
        "events_total": sum(int(p.get("events_total", 0)) for p in parts),
        "totals": {
            "stores": len(stores),
            "behind": sum(1 for s in stores if s["behind"]),
            "missing": sum(s["missing"] for s in stores),
            "stores_with_gaps": sum(1 for s in stores if s["missing"]),
            "duplicates": sum(s["duplicates"] for s in stores),
            "conflicts": sum(s["conflicts"] for s in stores),
            "applied": sum(s["events"] for s in stores),
            "dead_letters": sum(int(p.get("dead_letters_total", 0)) for p in parts),
            "alerts": sum(int(p.get("alerts_total", 0)) for p in parts),
            "alerts_negative": sum(int(p.get("alerts_negative", 0)) for p in parts),
        },
        "stores": stores,
        "alerts": alerts[:200],
        "alerts_error": next((p["alerts_error"] for p in parts if p.get("alerts_error")), None),
        "dead_letters": newest([d for p in parts for d in p.get("dead_letters", [])], 10),
        "sales_per_minute": [
            dict(
                zip(
                    ("minute", "events", "units", "revenue_cents"),
                    (m, *sales.get(m, [0, 0, 0])),
                    strict=True,
                )
            )
            for m in range(first, first + SALES_MINUTES * 60, 60)
        ],
    }


class SummaryCache:
    """The last merged summary, and a lock so concurrent pollers share one gather."""

    def __init__(self) -> None:
        self.at = 0.0
        self.value: dict[str, Any] | None = None
        self.lock = asyncio.Lock()


class DashboardData(ApiView):
    """``GET /api/dashboard``: everything the page shows, in one answer."""

    rate: EventRate
    cache: SummaryCache

    async def get(self, request: Request) -> Response:
        if is_local_request(request):
            return self.json_ok(local_summary(self.central, self.rate))
        async with self.cache.lock:
            if self.cache.value is None or time.monotonic() - self.cache.at > SUMMARY_TTL_S:

                async def local() -> dict[str, Any]:
                    return local_summary(self.central, self.rate)

                gathered = await gather(self.central, request, local)
                self.cache.value = {
                    **gathered.envelope(),
                    **merge_summaries(gathered.parts, time.time()),
                }
                self.cache.at = time.monotonic()
            value = self.cache.value
        return self.json_ok(value)


def _static(name: str) -> bytes:
    return resources.files("app.web").joinpath("static", name).read_bytes()


class StaticFile(View):
    """The page and its script and style, read once from ``app/web/static``."""

    file_name = ""
    content_type = ""
    _body: bytes | None = None

    async def get(self, request: Request) -> Response:
        cls = type(self)
        if cls._body is None:
            cls._body = _static(cls.file_name)
        response = self.bytes(cls._body, content_type=cls.content_type)
        for name, value in PAGE_HEADERS.items():
            response.headers[name] = value
        return response


class DashboardPage(StaticFile):
    file_name = "dashboard.html"
    content_type = "text/html"


class DashboardScript(StaticFile):
    file_name = "dashboard.js"
    content_type = "text/javascript"


class DashboardStyle(StaticFile):
    file_name = "dashboard.css"
    content_type = "text/css"


def register(api: Api) -> None:
    rate = EventRate()
    app = api.central.app

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def sample_event_rate() -> None:
        rate.sample()

    DashboardData.rate = rate
    DashboardData.cache = SummaryCache()
    api.register(
        "/api/dashboard",
        DashboardData,
        {
            "get": oa.op(
                "Everything the dashboard shows",
                "Events/s, per-store sync, totals, alerts, dead letters, sales per minute; "
                "gathered from every worker, cached for half a second.",
                params=[oa.scope_param()],
                ok=oa.ref("Dashboard"),
                errors=(400,),
            )
        },
    )
    for path, view, content_type, summary in (
        ("/", DashboardPage, "text/html", "The live dashboard"),
        ("/dashboard.js", DashboardScript, "text/javascript", "The dashboard's script"),
        ("/dashboard.css", DashboardStyle, "text/css", "The dashboard's style"),
    ):
        api.register(
            path,
            view,
            {
                "get": oa.op(
                    summary,
                    "Static; served with a strict Content-Security-Policy.",
                    ok={"type": "string"},
                    content_type=content_type,
                )
            },
        )
