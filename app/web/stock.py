"""Stock views: one SKU at a store, a store's SKUs (paged), one SKU across stores."""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response

from app.web.common import Api, ApiError, ApiView, bad_request, int_param, not_found
from app.web.gather import gather, is_local_request, local_envelope, newest_per_store
from app.web.routing import partition_for, route
from domain.apply import stock_key
from domain.progress import ProgressState
from domain.seqs import SeqSet
from domain.stock import StockState
from tables.codec import read

if TYPE_CHECKING:
    from app.faust_app import Central

MAX_ID = 200


def check_id(name: str, value: str) -> str:
    """Store ids and SKUs: non-empty, at most 200 characters, no key separator."""
    if not value or len(value) > MAX_ID or any(ord(c) < 32 or c == "\x7f" for c in value):
        raise bad_request(f"{name} must be 1-{MAX_ID} characters without control characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise bad_request(f"{name} is not valid UTF-8") from None
    return value


def known_progress(view: ApiView, store_id: str) -> ProgressState:
    """The store's progress record; 404 if the centre never saw an event of it."""
    data = view.central.tables.progress.get(store_id)
    if not data:
        raise not_found("store", f"no event of store {store_id!r} has reached the centre")
    return ProgressState.figures_from_json(data)


def stock_figures(state: StockState, now_ms: int) -> dict[str, int]:
    reserved = state.reserved(now_ms)
    return {
        "on_hand": state.on_hand,
        "reserved": reserved,
        "available": state.on_hand - reserved,
        "applied_seq": state.applied_seq,
    }


def encode_cursor(sku: str) -> str:
    return base64.urlsafe_b64encode(sku.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        sku = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_request("cursor is not one this API returned", "bad_cursor") from None
    try:
        return check_id("cursor", sku)
    except ApiError:
        raise bad_request("cursor is not one this API returned", "bad_cursor") from None


def recovering(what: str) -> ApiError:
    return ApiError(
        503,
        "recovering",
        f"{what} is being recovered on this worker; retry shortly",
        headers={"Retry-After": "1"},
    )


def reflected_seqs(state: StockState, seqs: SeqSet) -> tuple[int, list[int]]:
    """The store's seqs a stock value reflects: ``(applied_seq, applied_above)``.

    Normally the store's applied seqs (its progress record) cover everything the
    value reflects. After a worker dies mid-flush, the broker may have the
    key's changelog record but not the store's progress record: the recovered
    value then reflects seqs the progress does not list. The value's own seqs
    (``wm``: every seq up to it; ``applied``: those above) are added, so
    ``on_hand`` is exactly the effect of the seqs answered (SPEC "The outlet's
    own view": the outlet adds its events after them, never one twice).
    """
    merged = SeqSet(watermark=max(seqs.watermark, state.wm))
    for seq in (*seqs.above, *state.applied):
        merged.add(seq)
    return merged.watermark, sorted(merged.above)


def item_answer(
    store_id: str,
    sku: str,
    raw_state: dict[str, Any] | None,
    raw_progress: dict[str, Any] | None,
    now_ms: int,
    *,
    rebalancing: bool = False,
) -> dict[str, Any]:
    """``GET /api/stores/{store_id}/stock/{sku}`` from the key's and the store's records."""
    if rebalancing:
        # Faust is recovering this worker's tables from their changelogs: the
        # stock and progress tables are restored apart, so a key may already
        # be newer, or still older, than the store's progress.
        raise recovering(f"the partition of store {store_id!r}")
    if raw_state is not None and raw_progress is None:
        # The key is here but not yet the store's progress: applied_seq 0
        # would make an outlet add every local event on top of a stock that
        # already has them.
        raise recovering(f"store {store_id!r}")
    state = StockState.from_json(raw_state)
    progress = ProgressState.figures_from_json(raw_progress)
    applied_seq, applied_above = reflected_seqs(state, progress.seqs)
    return {
        "store_id": store_id,
        "sku": sku,
        **stock_figures(state, now_ms),
        # what the outlet view adds its local events to (SPEC "The outlet's own view")
        "applied_seq": applied_seq,
        "applied_above": applied_above,
    }


class StockItem(ApiView):
    """``GET /api/stores/{store_id}/stock/{sku}``: what the outlet's local view reads."""

    async def get(self, request: Request, store_id: str, sku: str) -> Response:
        check_id("store_id", store_id)
        check_id("sku", sku)
        routed = await route(self.central, self, request, store_id)
        if routed is not None:
            return routed
        tables = self.central.tables
        return self.json_ok(
            item_answer(
                store_id,
                sku,
                tables.stock.get(stock_key(store_id, sku)),
                tables.progress.get(store_id),
                int(time.time() * 1000),
                rebalancing=bool(self.central.app.rebalancing),
            )
        )


class StoreStock(ApiView):
    """``GET /api/stores/{store_id}/stock?limit=&cursor=``: a store's SKUs, one page.

    Reads one store's keys with a prefix scan of its partition's RocksDB
    (``app.web.rocks``), so a page costs O(limit), not O(all keys).
    """

    async def get(self, request: Request, store_id: str) -> Response:
        check_id("store_id", store_id)
        limit = int_param(request, "limit", 100, minimum=1, maximum=1000)
        raw_cursor = request.query.get("cursor")
        after_sku = decode_cursor(raw_cursor) if raw_cursor else None
        routed = await route(self.central, self, request, store_id)
        if routed is not None:
            return routed
        from app.web.rocks import scan_prefix

        if self.central.app.rebalancing:  # see item_answer
            raise recovering(f"the partition of store {store_id!r}")
        progress = known_progress(self, store_id)
        table = self.central.tables.stock
        partition = partition_for(store_id, self.central.settings.topic_partitions)
        prefix = stock_key(store_id, "")
        after = stock_key(store_id, after_sku) if after_sku is not None else None
        now_ms = int(time.time() * 1000)
        items: list[dict[str, Any]] = []
        more = False
        for key, value in scan_prefix(table, partition, prefix, after=after):
            if len(items) == limit:
                more = True
                break
            sku = key[len(prefix) :]
            items.append({"sku": sku, **stock_figures(StockState.from_json(value), now_ms)})
        return self.json_ok(
            {
                "store_id": store_id,
                "store_applied_seq": progress.seqs.watermark,
                "limit": limit,
                "items": items,
                "next_cursor": encode_cursor(items[-1]["sku"]) if more else None,
            }
        )


def local_sku_rows(central: Central, sku: str) -> list[dict[str, Any]]:
    """The SKU at each store of this worker's active partitions: one RocksDB read per store.

    The stores are the keys of the ``progress`` table here (one per store that
    ever sent an event), and each store's stock key lives in its partition.
    """
    partitions = central.settings.topic_partitions
    now_ms = int(time.time() * 1000)
    rows = []
    for store_id in list(central.tables.progress.keys()):
        value = read(
            central.tables.stock, stock_key(store_id, sku), partition_for(store_id, partitions)
        )
        if value:
            figures = stock_figures(StockState.from_json(value), now_ms)
            rows.append({"store_id": store_id, **figures})
    return rows


class SkuStock(ApiView):
    """``GET /api/skus/{sku}/stock``: one SKU at every store, gathered from every worker.

    Each worker reads the SKU's stock key of each store it owns (the ``stock``
    table itself, so the answer is as fresh as ``/api/stores/{id}/stock/{sku}``)
    and the parts are merged like ``/api/sync``. A table kept per SKU by a
    repartition topic cost one more changelog write per stock write, ~10 % of a
    worker's CPU, for a view that is read far less often than stock changes.
    """

    async def get(self, request: Request, sku: str) -> Response:
        check_id("sku", sku)
        if is_local_request(request):
            return self.json_ok(local_envelope(stores=local_sku_rows(self.central, sku)))

        async def local() -> dict[str, Any]:
            return {"stores": local_sku_rows(self.central, sku)}

        gathered = await gather(self.central, request, local)
        stores = newest_per_store(
            [part.get("stores", []) for part in gathered.parts], lambda row: row["applied_seq"]
        )
        if not stores and not gathered.partial:
            raise not_found("sku", f"no store has reported stock of SKU {sku!r}")
        return self.json_ok(
            {
                **gathered.envelope(),
                "sku": sku,
                "total_on_hand": sum(s["on_hand"] for s in stores),
                "stores": stores,
            }
        )


def register(api: Api) -> None:
    from app.web import openapi as oa

    api.register(
        "/api/stores/{store_id}/stock/{sku}",
        StockItem,
        {
            "get": oa.op(
                "Stock of one SKU at one store",
                "The centre's stock and the store's applied seqs (the outlet's view adds "
                "its own events after `applied_seq`).",
                params=[oa.path("store_id"), oa.path("sku")],
                ok=oa.ref("StockItem"),
                errors=(400, 503),
            )
        },
    )
    api.register(
        "/api/stores/{store_id}/stock",
        StoreStock,
        {
            "get": oa.op(
                "A store's SKUs, paged",
                "Pass `next_cursor` back as `cursor` for the next page; null means the last.",
                params=[
                    oa.path("store_id"),
                    oa.query_int("limit", 1, 1000, 100, "page size"),
                    oa.query_str("cursor", "opaque cursor from a previous page"),
                ],
                ok=oa.ref("StockPage"),
                errors=(400, 404, 503),
            )
        },
    )
    api.register(
        "/api/skus/{sku}/stock",
        SkuStock,
        {
            "get": oa.op(
                "One SKU across stores",
                "On hand, reserved and available per store, gathered from every worker's "
                "stock table (`partial` names a worker that did not answer).",
                params=[oa.path("sku")],
                ok=oa.ref("SkuStock"),
                errors=(400, 404, 503),
            )
        },
    )
