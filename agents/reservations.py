"""Reservation requests from the web views, answered by the apply agent.

The view (on the worker that owns the store's partition) sends a command to the
reservations topic, co-partitioned with ``retail.events``, and waits for the
apply agent to decide it in order with the store's stock events (SPEC
"Reservations": two requests can never both take the last unit).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any

import orjson

from domain.reservations import ReservationCommand


class ReservationTimeout(RuntimeError):
    """No decision in time (a rebalance moved the store?): retry the request."""

    retriable = True


class Reservations:
    def __init__(self, topic: Any, timeout_s: float = 10.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def reserve(
        self, store_id: str, sku: str, qty: int, order_id: str, ttl_s: float
    ) -> dict[str, Any]:
        return await self._ask(
            ReservationCommand(
                op="reserve",
                request_id=uuid.uuid4().hex,
                store_id=store_id,
                order_id=order_id,
                at_ms=int(time.time() * 1000),
                sku=sku,
                qty=qty,
                # at least 1 ms: a positive TTL must never round to an invalid 0
                ttl_ms=max(1, math.ceil(ttl_s * 1000)),
            )
        )

    async def release(self, store_id: str, order_id: str) -> dict[str, Any]:
        return await self._ask(
            ReservationCommand(
                op="release",
                request_id=uuid.uuid4().hex,
                store_id=store_id,
                order_id=order_id,
                at_ms=int(time.time() * 1000),
            )
        )

    async def expire(self, store_id: str, order_id: str) -> None:
        """Fire-and-forget expiry of a reservation whose time to live ran out."""
        cmd = ReservationCommand(
            op="expire",
            request_id=uuid.uuid4().hex,
            store_id=store_id,
            order_id=order_id,
            at_ms=int(time.time() * 1000),
        )
        await self.topic.send(key=store_id.encode(), value=orjson.dumps(cmd.to_json()))

    async def _ask(self, cmd: ReservationCommand) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cmd.request_id] = future
        try:
            await self.topic.send(key=cmd.store_id.encode(), value=orjson.dumps(cmd.to_json()))
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError as exc:
            raise ReservationTimeout(
                f"no decision on order {cmd.order_id} within {self.timeout_s:.0f}s; retry"
            ) from exc
        finally:
            self._waiting.pop(cmd.request_id, None)

    def answer(self, replies: dict[str, dict[str, Any]]) -> None:
        """Called by the apply agent once a batch is durable."""
        for request_id, reply in replies.items():
            future = self._waiting.get(request_id)
            if future is not None and not future.done():
                future.set_result(reply)
