"""The outlet's own view of its stock (SPEC "The outlet's own view").

``on_hand`` = the centre's on_hand for this store and sku + the effect of every
local event the centre has not applied yet (seq above its contiguous watermark
``applied_seq`` and not among the few ``applied_above`` it applied past a gap).
So a terminal sees its own sales at once, online or offline.

When the centre cannot be reached the view must not pretend the centre said
"0 at seq 0": it uses the last answer it had for that sku (``source: cached``)
or, with none, folds the whole local log (``source: local``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx

from outlet_agent.effects import fold
from outlet_agent.errors import OutletError
from outlet_agent.log import EventLog

log = logging.getLogger(__name__)

Source = Literal["central", "cached", "local"]


class CentralUnavailable(OutletError):
    """The centre did not answer; the view falls back to its cache or the local log."""

    retriable = True


@dataclass(frozen=True, slots=True)
class CentralStock:
    """The centre's answer for one store and sku."""

    on_hand: int
    applied_seq: int
    applied_above: frozenset[int] = frozenset()


class CentralClient(Protocol):
    """How the view asks the centre; unit tests pass a fake."""

    async def stock(self, store_id: str, sku: str) -> CentralStock | None:
        """The centre's stock, None if it has no record; raises CentralUnavailable."""
        ...

    async def aclose(self) -> None: ...


class HttpCentralClient:
    """``GET {central_url}/api/stores/{store}/stock/{sku}`` with a short timeout."""

    def __init__(self, base_url: str, *, timeout_s: float = 0.5) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)

    async def stock(self, store_id: str, sku: str) -> CentralStock | None:
        try:
            # quoted whole: a sku may hold "/", "?" or "#", and must name itself only
            response = await self._client.get(
                f"/api/stores/{quote(store_id, safe='')}/stock/{quote(sku, safe='')}"
            )
        except httpx.HTTPError as exc:
            raise CentralUnavailable(f"the centre did not answer: {exc!r}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CentralUnavailable(f"the centre answered {response.status_code}")
        try:
            return parse_central(response.json())
        except (ValueError, TypeError, KeyError) as exc:
            raise CentralUnavailable(f"the centre's answer is not understood: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def parse_central(data: Any) -> CentralStock:
    return CentralStock(
        on_hand=int(data["on_hand"]),
        applied_seq=int(data["applied_seq"]),
        applied_above=frozenset(int(s) for s in data.get("applied_above") or ()),
    )


class StockView:
    """Answers ``GET /v1/stock/{sku}`` from the centre's view plus the local log."""

    def __init__(
        self,
        event_log: EventLog,
        central: CentralClient,
        store_id: str,
        *,
        cache_max: int = 10_000,
        retry_after_s: float = 2.0,
    ) -> None:
        self._log = event_log
        self._central = central
        self._store_id = store_id
        self._cache: OrderedDict[str, CentralStock] = OrderedDict()
        self._cache_max = cache_max
        self._retry_after_s = retry_after_s
        self._down_until = 0.0

    async def stock(self, sku: str) -> dict[str, Any]:
        central, source = await self._central_stock(sku)
        if central is None:
            lines = await self._log.local_lines(sku)
            effects = lines.effects
            on_hand = fold(lines.base_on_hand, ((k, v) for _, k, v in effects))
            central_seq = 0
            source = "local"
        else:
            lines = await self._log.local_lines(sku, central.applied_seq)
            effects = [e for e in lines.effects if e[0] not in central.applied_above]
            on_hand = fold(central.on_hand, ((k, v) for _, k, v in effects))
            central_seq = central.applied_seq
        return {
            "store_id": self._store_id,
            "sku": sku,
            "on_hand": on_hand,
            "central_seq": central_seq,
            "pending": len({seq for seq, _, _ in effects}),
            "source": source,
        }

    async def _central_stock(self, sku: str) -> tuple[CentralStock | None, Source]:
        if time.monotonic() >= self._down_until:
            try:
                answer = await self._central.stock(self._store_id, sku)
            except CentralUnavailable as exc:
                log.warning("stock view: %s; using the cache or the local log", exc)
                self._down_until = time.monotonic() + self._retry_after_s
            else:
                if answer is None:  # the centre has no record of this sku here yet
                    self._cache.pop(sku, None)
                    return None, "local"
                self._cache[sku] = answer
                self._cache.move_to_end(sku)
                if len(self._cache) > self._cache_max:
                    self._cache.popitem(last=False)
                return answer, "central"
        cached = self._cache.get(sku)
        return (cached, "cached") if cached is not None else (None, "local")
