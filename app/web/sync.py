"""Sync status per store (SPEC "Sync lag"): applied seq, gaps, duplicates, lag, last event age."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response

from app.web import openapi as oa
from app.web.common import Api, ApiView
from app.web.gather import gather, is_local_request, local_envelope, newest_per_store
from app.web.rocks import local_items
from app.web.routing import route
from app.web.stock import check_id, known_progress
from domain.progress import ProgressState

if TYPE_CHECKING:
    from app.faust_app import Central

#: a store is "behind" with a gap, or when its recent p99 sync lag exceeds this
BEHIND_LAG_MS = 2000.0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def sync_row(
    central: Central, store_id: str, progress: ProgressState, now: float
) -> dict[str, Any]:
    """One store's figures; lag percentiles are the owner's recent in-memory window."""
    lags = central.applier.lags
    p50 = _ms(lags.percentile(store_id, 0.5))
    p99 = _ms(lags.percentile(store_id, 0.99))
    missing = progress.seqs.missing_count()
    last_recorded = progress.last_recorded_at or None
    # the store's Postgres side: from the sink of this worker (the applied
    # topic is co-partitioned with retail.events, so it is usually here too),
    # or read from PostgreSQL when the sink runs apart
    committed = central.pg_side.commit_of(store_id)
    return {
        "store_id": store_id,
        "applied_seq": progress.seqs.watermark,
        "highest_seq": progress.seqs.highest,
        "gaps": [list(g) for g in progress.seqs.gaps(limit=20)],
        "missing": missing,
        "duplicates": progress.duplicates,
        "conflicts": progress.conflicts,
        "events": progress.events,
        "lag_p50_ms": p50,
        "lag_p99_ms": p99,
        "last_recorded_at": last_recorded,
        "last_applied_at": progress.last_applied_at or None,
        "last_event_age_s": (
            None if last_recorded is None else round(max(0.0, now - last_recorded), 3)
        ),
        "pg_committed_at": None if committed is None else committed[0],
        "pg_commit_lag_ms": None if committed is None else _ms(committed[1]),
        "pg_behind_s": central.pg_side.behind_s(store_id, progress.seqs.watermark, now),
        "behind": missing > 0 or (p99 is not None and p99 > BEHIND_LAG_MS),
    }


def local_sync_rows(central: Central) -> list[dict[str, Any]]:
    """Every store of this worker's active partitions (one progress key per store)."""
    now = time.time()
    return [
        sync_row(central, str(store_id), ProgressState.figures_from_json(value), now)
        for store_id, value in local_items(central.tables.progress)
    ]


def merge_rows(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per store: the one that has applied more (events, then seq)."""
    return newest_per_store(parts, lambda row: (row["events"], row["applied_seq"]))


class StoreSync(ApiView):
    """``GET /api/stores/{store_id}/sync``, answered by the store's owner."""

    async def get(self, request: Request, store_id: str) -> Response:
        check_id("store_id", store_id)
        routed = await route(self.central, self, request, store_id)
        if routed is not None:
            return routed
        progress = known_progress(self, store_id)
        return self.json_ok(sync_row(self.central, store_id, progress, time.time()))


class AllSync(ApiView):
    """``GET /api/sync``: every worker's stores, merged."""

    async def get(self, request: Request) -> Response:
        if is_local_request(request):
            return self.json_ok(local_envelope(stores=local_sync_rows(self.central)))

        async def local() -> dict[str, Any]:
            return {"stores": local_sync_rows(self.central)}

        gathered = await gather(self.central, request, local)
        stores = merge_rows([part.get("stores", []) for part in gathered.parts])
        return self.json_ok({**gathered.envelope(), "stores": stores})


def register(api: Api) -> None:
    api.register(
        "/api/stores/{store_id}/sync",
        StoreSync,
        {
            "get": oa.op(
                "Sync status of one store",
                "Applied seq (watermark), gaps, duplicates dropped, recent sync lag "
                "p50/p99 (recorded_at at the outlet to applied centrally), last event age.",
                params=[oa.path("store_id")],
                ok=oa.ref("StoreSync"),
                errors=(400, 404, 503),
            )
        },
    )
    api.register(
        "/api/sync",
        AllSync,
        {
            "get": oa.op(
                "Sync status of every store",
                "Gathered from every worker; `partial` is true when one did not answer.",
                params=[oa.scope_param()],
                ok=oa.ref("Sync"),
                errors=(400,),
            )
        },
    )
