"""Ask every worker for the part of an answer it owns, and merge (``/api/sync``, alerts …).

Stores are spread over the workers by partition; a view about all stores asks
each worker named in the assignor's table metadata for its *local* part
(``?scope=local``, with the forwarded header so it is never re-gathered),
computes its own part in-process, and merges. A worker that does not answer
makes the result ``partial`` (with the error) rather than failing the request:
an operator looking at a dashboard wants what is known now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from faust.web import Request

from app.web.common import bad_request
from app.web.routing import FORWARDED

if TYPE_CHECKING:
    from app.faust_app import Central

GATHER_TIMEOUT_S = 3.0
#: what a worker that cannot answer raises; anything else is a bug and propagates
GATHER_ERRORS = (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError)


@dataclass
class Gathered:
    parts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    workers: int = 0

    @property
    def partial(self) -> bool:
        return bool(self.errors)

    def envelope(self) -> dict[str, Any]:
        return {"workers": self.workers, "partial": self.partial, "errors": self.errors}


def local_envelope(**body: Any) -> dict[str, Any]:
    """The answer of a worker asked for its local part: the same shape as a gathered one."""
    return {"workers": 1, "partial": False, "errors": [], **body}


def own_url(central: Central) -> str:
    return str(central.app.conf.canonical_url).rstrip("/")


def worker_urls(central: Central) -> list[str]:
    """Every worker holding partitions of our tables, this one first."""
    me = own_url(central)
    others = {str(url).rstrip("/") for url in central.app.router.tables_metadata()}
    others.discard(me)
    return [me, *sorted(others)]


def is_local_request(request: Request) -> bool:
    """``?scope=local`` or a forwarded request: answer from this worker's partitions only."""
    scope = request.query.get("scope")
    if scope not in (None, "", "local", "all"):
        raise bad_request(f"scope must be local or all, got {scope[:40]!r}")
    return scope == "local" or bool(request.headers.get(FORWARDED))


async def gather(
    central: Central,
    request: Request,
    local: Callable[[], Awaitable[dict[str, Any]]],
) -> Gathered:
    """This worker's part from ``local()``, the others' from the same path with scope=local."""
    urls = worker_urls(central)
    result = Gathered(workers=len(urls))
    query = {k: v for k, v in request.query.items() if k != "scope"}
    query["scope"] = "local"

    async def remote(url: str) -> dict[str, Any]:
        async with central.app.http_client.get(
            url + str(request.url.path),
            params=query,
            headers={FORWARDED: "1"},
            timeout=aiohttp.ClientTimeout(total=GATHER_TIMEOUT_S),
        ) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
            data = orjson.loads(body)
            if not isinstance(data, dict):
                raise RuntimeError("not a JSON object")
            return data

    answers = await asyncio.gather(
        local(), *(remote(url) for url in urls[1:]), return_exceptions=True
    )
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, GATHER_ERRORS):
                raise answer
            result.errors.append({"worker": url, "error": f"{type(answer).__name__}: {answer}"})
        else:
            result.parts.append(answer)
    return result


def newest_per_store(
    parts: list[list[dict[str, Any]]], rank: Callable[[dict[str, Any]], Any]
) -> list[dict[str, Any]]:
    """One row per ``store_id``, by store: during a rebalance two workers may both
    report a store; the row with the greater ``rank`` (the newer state) wins."""
    best: dict[str, dict[str, Any]] = {}
    for rows in parts:
        for row in rows:
            seen = best.get(row["store_id"])
            if seen is None or rank(row) > rank(seen):
                best[row["store_id"]] = row
    return [best[k] for k in sorted(best)]
