"""The topics of the central worker. Records are raw bytes (orjson on the wire)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from app.settings import Settings


@dataclass
class Topics:
    #: outlet events, key = store_id (SPEC "Public interfaces")
    events: Any
    #: reservation commands from the web views, key = store_id (co-partitioned with events)
    reservations: Any
    #: invalid and conflicting events with their reasons
    dead_letters: Any
    #: per batch and store: ledger rows and stock snapshots for the Postgres sink
    applied: Any
    #: transfer legs, key = transfer_id (repartition: a transfer spans two stores)
    transfers: Any
    #: stock snapshots, key = sku (repartition for the SKU-across-stores view)
    sku_stock: Any


def define_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(name: str) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    return Topics(
        events=topic(settings.events_topic),
        reservations=topic(f"{settings.app_id}.reservations"),
        dead_letters=topic(settings.dead_letters_topic),
        applied=topic(f"{settings.app_id}.applied"),
        transfers=topic(f"{settings.app_id}.transfers"),
        sku_stock=topic(f"{settings.app_id}.sku-stock"),
    )
