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


def partition_counts(settings: Settings) -> dict[str, int]:
    """Topics the worker creates with a count of their own, not ``RETAIL_TOPIC_PARTITIONS``."""
    return {f"{settings.app_id}.applied": settings.applied_topic_partitions}


def raw_topic(app: faust.App, settings: Settings, *names: str, internal: bool) -> Any:
    """A topic (or several read as one channel) of raw bytes.

    ``internal`` topics are the worker's own: Faust creates them, with
    ``RETAIL_TOPIC_PARTITIONS`` partitions (or their own count,
    :func:`partition_counts`), before it subscribes. That matters: a topic a
    client merely asks about is auto-created by the broker with its default
    partition count, and the reservations topic must be co-partitioned with
    ``retail.events``. Faust creates every topic of a channel with one count,
    so a topic with a count of its own is read alone.
    """
    counts = partition_counts(settings)
    own = [n for n in names if n in counts]
    if own and len(names) > 1:
        raise ValueError(f"{own[0]} has a partition count of its own: read it alone")
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=counts.get(names[0], settings.topic_partitions),
        internal=internal,
    )


def define_topics(app: faust.App, settings: Settings) -> Topics:
    def own(name: str) -> Any:
        return raw_topic(app, settings, f"{settings.app_id}.{name}", internal=True)

    return Topics(
        events=raw_topic(app, settings, settings.events_topic, internal=False),
        reservations=own("reservations"),
        dead_letters=raw_topic(app, settings, settings.dead_letters_topic, internal=False),
        applied=own("applied"),
        transfers=own("transfers"),
    )
