"""Send a request about a store to the worker that owns the store's partition.

Faust's own ``topic_route`` needs producer metadata for the source topic that
a worker may not have yet; we compute the partition the way the outlet's
producer does (murmur2 of the ``store_id`` key) and look the owner up in the
assignor's table metadata, which every worker holds after a rebalance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from faust.web import Request, Response, View
from yarl import URL

from tables.bulk import partition_for as partition_for  # re-exported for the views

if TYPE_CHECKING:
    from app.faust_app import Central


#: a request that was already forwarded once is answered where it lands
FORWARDED = "X-Retail-Forwarded"
#: the owner's answer headers worth passing on to the client
RELAYED_HEADERS = ("Retry-After", "Cache-Control", "X-Content-Type-Options")
#: a forwarded request waits this long for the owner (a reservation waits up to 10 s)
FORWARD_TIMEOUT_S = 15.0


def owner_url(central: Central, key: str, table: Any | None = None) -> str | None:
    """The web URL of the worker that owns ``key``'s partition (None: unknown yet)."""
    partition = partition_for(key, central.settings.topic_partitions)
    changelog = (table or central.tables.progress).changelog_topic.get_topic_name()
    for url, topics in central.app.router.tables_metadata().items():
        if partition in topics.get(changelog, ()):
            return str(url)
    return None


def is_local(central: Central, url: str | None) -> bool:
    return url is None or url.rstrip("/") == str(central.app.conf.canonical_url).rstrip("/")


async def forward(central: Central, view: View, request: Request, url: str) -> Response:
    """Proxy ``request`` to the worker at ``url`` and relay its answer.

    The path is forwarded as received (still percent-encoded), so a SKU or a
    store id with ``/``, ``?`` or ``%`` in it reaches the owner unchanged. An
    owner that cannot be reached (it is restarting, a rebalance is moving the
    partition) is a ``503`` with ``Retry-After``: the client asks again.
    """
    target = URL(url.rstrip("/") + str(request.rel_url.raw_path_qs), encoded=True)
    body = await request.read() if request.method in ("POST", "PUT", "PATCH", "DELETE") else None
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json"),
               FORWARDED: "1"}  # fmt: skip
    try:
        async with central.app.http_client.request(
            request.method,
            target,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
        ) as response:
            payload = await response.read()
            relayed = view.bytes(
                payload,
                content_type=response.content_type or "application/json",
                status=response.status,
            )
            for name in RELAYED_HEADERS:
                if name in response.headers:
                    relayed.headers[name] = response.headers[name]
            return relayed
    except (aiohttp.ClientError, TimeoutError) as exc:
        body_out = orjson.dumps(
            {
                "error": "owner_unavailable",
                "detail": f"the worker owning this key ({url}) did not answer: "
                f"{type(exc).__name__}; retry shortly",
            }
        )
        unavailable = view.bytes(body_out, content_type="application/json", status=503)
        unavailable.headers["Retry-After"] = "1"
        return unavailable


async def route(
    central: Central, view: View, request: Request, key: str, table: Any | None = None
) -> Response | None:
    """Forward to the owner when that is another worker; None means answer here."""
    if request.headers.get(FORWARDED):
        return None
    url = owner_url(central, key, table)
    if is_local(central, url):
        return None
    assert url is not None
    return await forward(central, view, request, url)
