"""Quarantined events with their reasons (SPEC rule 6), from every worker's table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.web import Request, Response

from app.web import openapi as oa
from app.web.common import Api, ApiView, choice_param, int_param
from app.web.gather import gather, is_local_request, local_envelope
from app.web.rocks import local_items
from domain.apply import DEAD_LETTER_KINDS

if TYPE_CHECKING:
    from app.faust_app import Central


def local_dead_letters(
    central: Central, *, kind: str | None, store_id: str | None, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """How many match, and the newest ``limit`` of them."""
    matched = []
    for _key, letter in local_items(central.tables.dead_letters):
        if not isinstance(letter, dict):
            continue
        if kind is not None and letter.get("kind") != kind:
            continue
        if store_id is not None and letter.get("store_id") != store_id:
            continue
        matched.append(letter)
    return len(matched), newest(matched, limit)


def newest(letters: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return sorted(letters, key=lambda d: (-float(d.get("at") or 0), str(d.get("key"))))[:limit]


class DeadLetters(ApiView):
    """``GET /api/dead-letters?kind=&store_id=&limit=``: newest first, with the total."""

    async def get(self, request: Request) -> Response:
        limit = int_param(request, "limit", 100, minimum=1, maximum=1000)
        kind = choice_param(request, "kind", DEAD_LETTER_KINDS)
        store_id = request.query.get("store_id") or None

        async def local() -> dict[str, Any]:
            total, letters = local_dead_letters(
                self.central, kind=kind, store_id=store_id, limit=limit
            )
            return local_envelope(total=total, dead_letters=letters)

        if is_local_request(request):
            return self.json_ok(await local())
        gathered = await gather(self.central, request, local)
        letters = [d for part in gathered.parts for d in part.get("dead_letters", [])]
        total = sum(int(part.get("total", 0)) for part in gathered.parts)
        return self.json_ok(
            {**gathered.envelope(), "total": total, "dead_letters": newest(letters, limit)}
        )


def register(api: Api) -> None:
    api.register(
        "/api/dead-letters",
        DeadLetters,
        {
            "get": oa.op(
                "Quarantined events",
                "Events that failed validation or conflicted, with every reason; newest first.",
                params=[
                    oa.query_str("kind", "only this kind", list(DEAD_LETTER_KINDS)),
                    oa.query_str("store_id", "only this store"),
                    oa.query_int("limit", 1, 1000, 100, "at most this many"),
                    oa.scope_param(),
                ],
                ok=oa.ref("DeadLetters"),
                errors=(400,),
            )
        },
    )
