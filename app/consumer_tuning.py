"""How long a fetch may wait at the broker: Faust fixes it at 1.5 s; we make it a setting.

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

_original = AIOKafkaConsumerThread._create_worker_consumer


def set_fetch_max_wait(ms: int) -> None:
    """Every worker consumer created from now on waits at most ``ms`` per fetch."""

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = _original(self, transport)
        assert hasattr(consumer, "_fetch_max_wait_ms"), "aiokafka moved _fetch_max_wait_ms"
        consumer._fetch_max_wait_ms = ms
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
