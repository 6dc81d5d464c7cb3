"""The worker consumer Faust builds, tuned: its fetch wait, and a fast rejoin after a crash.

The one place that wraps Faust's consumer factory (two wrappers stacked on
each other would each have to know the other's order).

How long a fetch may wait at the broker: Faust fixes it at 1.5 s; we make it a setting.

faust-streaming 0.15.3 builds its worker consumer with ``fetch_max_wait_ms=1500``
and no setting to change it. On Tansu that put ~0.5 s of delay between an
event reaching ``retail.events`` and the worker seeing it (measured: 550-650 ms
from produce to applied with 1500, 45-75 ms with 50). We wrap Faust's factory
and set aiokafka's attribute before the consumer starts (aiokafka 0.14 reads it
when ``start()`` builds its fetcher). Both libraries are pinned; the test
``tests/unit/test_consumer_tuning.py`` fails if either moves.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from app.rejoin import leave_first_on_start

_original = AIOKafkaConsumerThread._create_worker_consumer


def set_fetch_max_wait(ms: int, dead_member: str | None = None) -> None:
    """Every worker consumer created from now on waits at most ``ms`` per fetch;
    the first one to start makes ``dead_member`` (our own, before a crash) leave.
    """
    pending = [dead_member] if dead_member else []

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = _original(self, transport)
        assert hasattr(consumer, "_fetch_max_wait_ms"), "aiokafka moved _fetch_max_wait_ms"
        consumer._fetch_max_wait_ms = ms
        if pending:
            leave_first_on_start(consumer, pending.pop())
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
