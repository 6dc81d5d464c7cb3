"""A worker takes a partition over only once it holds the partition's tables.

Faust's assignor moves a partition to a joining worker at once, and the
joining worker then restores that partition's tables from their changelogs
before it applies a single event: meanwhile the partition's stores wait. On
Tansu, which never compacts, that was a million records at 2-3k a second in
benchmark run 42 (estimated 8 minutes), so every store of the moved partitions
waited until the joining worker was killed a minute later (p50 lag 46 s in the
rebalance window). Real Kafka compacts, but a chain's keys alone are hundreds
of thousands of records.

Kafka Streams answers this with warm-up replicas and probing rebalances
(KIP-441). This is that, in its simplest form:

- The assignor (the group leader) lets Faust's own assignment run, then keeps
  each partition it would move on the member that had it, unless the new
  member reported it *warm*; the new member gets the partition's changelogs as
  a standby instead, which Faust restores in the background while the old
  owner goes on applying (:func:`hold_until_warm`).
- A member reports as warm, in its join metadata, each partition it was told
  to warm whose standby changelogs it has read to the end they had when it
  started reading (:func:`warm_partitions`).
- A member whose partitions are all warm asks for a rebalance once
  (:class:`WarmupAssignor.request_handover_if_warm`), and the leader moves them:
  the new owner then reads only what was written since, from its own RocksDB's
  offsets.

A partition whose previous owner has left the group goes where Faust puts it:
nobody holds it warm, so someone must restore it. A worker restarted after a
crash reports no previous assignment, so its partitions, if nobody else took
them over, come back to it at once, with its local RocksDB.

All workers must run this assignor (its protocol name is Faust's own, and a
Faust member without it simply never reports anything warm).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import orjson
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment
from faust.types.tuples import TP

from app import metrics

log = logging.getLogger(__name__)

#: the join metadata field: partitions this member has read to the end as a standby
WARM_FIELD = "retail_warm"
#: the assignment field: partitions this member holds as a standby until it is warm
WARMING_FIELD = "retail_warming"
#: how often a warming worker logs how far it has to go
PROGRESS_EVERY_S = 10.0


def previous_owners(previous: Mapping[str, ClientAssignment], topic: str) -> dict[int, str]:
    """Partition -> the member whose last assignment had it active (the first by member id)."""
    owners: dict[int, str] = {}
    for member in sorted(previous):
        for partition in previous[member].actives.get(topic, ()):
            owners.setdefault(partition, member)
    return owners


def _owner(assignments: Mapping[str, ClientAssignment], topic: str, partition: int) -> str | None:
    for member, assignment in assignments.items():
        if partition in assignment.actives.get(topic, ()):
            return member
    return None


def _move(
    assignments: MutableMapping[str, ClientAssignment],
    topics: Iterable[str],
    partition: int,
    source: str,
    target: str,
) -> None:
    for topic in topics:
        if partition in assignments[source].actives.get(topic, ()):
            assignments[source].actives[topic].remove(partition)
        actives = assignments[target].actives.setdefault(topic, [])
        if partition not in actives:
            actives.append(partition)
        standbys = assignments[target].standbys.get(topic, [])
        if partition in standbys:
            standbys.remove(partition)  # active now


def hold_until_warm(
    assignments: MutableMapping[str, ClientAssignment],
    previous: Mapping[str, ClientAssignment],
    warm: Mapping[str, set[int]],
    anchor: str,
    group_topics: set[str],
    changelogs: set[str],
) -> dict[str, list[int]]:
    """Keep each partition Faust would move to a member that is not warm on it
    with its previous owner; that member gets its changelogs as standbys.

    ``assignments`` (Faust's result, changed in place) and ``previous`` (each
    member's last assignment, from its join metadata) map member ids to
    assignments; ``anchor`` is a changelog topic of the co-partitioned group
    ``group_topics``, whose partitions move together. Returns, per member, the
    partitions it is to warm up.
    """
    owners_before = previous_owners(previous, anchor)
    partitions = sorted({p for a in assignments.values() for p in a.actives.get(anchor, ())})
    warming: dict[str, list[int]] = {}
    for partition in partitions:
        owner = _owner(assignments, anchor, partition)
        before = owners_before.get(partition)
        if owner is None or before is None or before == owner:
            continue  # staying put, or nobody in the group holds it warm
        if partition in warm.get(owner, set()):
            continue  # the new owner has read its changelogs: hand it over
        # a partition the new owner *is* warm on, that Faust left with the
        # previous owner, is swapped in: the same load, and no cold start
        swap = sorted(
            warm.get(owner, set())
            & set(assignments[before].actives.get(anchor, ()))
            & {p for p, m in owners_before.items() if m == before}
        )
        if swap:
            _move(assignments, group_topics, swap[0], before, owner)
        _move(assignments, group_topics, partition, owner, before)
        if not swap:
            for topic in group_topics & changelogs:
                standbys = assignments[owner].standbys.setdefault(topic, [])
                if partition not in standbys:
                    standbys.append(partition)
            warming.setdefault(owner, []).append(partition)
    return warming


def _standby_tps_of(recovery: Any, partition: int) -> list[TP]:
    return [tp for tp in recovery.standby_tps if tp.partition == partition]


def _read_to(recovery: Any, tp: TP) -> int:
    """The last offset read of a standby changelog partition (-1: none; Faust starts at None)."""
    offset = recovery.standby_offsets.get(tp)
    return -1 if offset is None else int(offset)


def warm_partitions(recovery: Any, partitions: Iterable[int]) -> set[int]:
    """Of ``partitions``, those whose standby changelogs are read to their end.

    The end is the one Faust's recovery measured when it started reading the
    standbys (``standby_highwaters``, built only then: a partition without it
    is not warm yet). What the owner wrote since is read after the handover.
    """
    highwaters = recovery.standby_highwaters
    warm: set[int] = set()
    for partition in partitions:
        tps = _standby_tps_of(recovery, partition)
        if tps and all(tp in highwaters and _read_to(recovery, tp) >= highwaters[tp] for tp in tps):
            warm.add(partition)
    return warm


def records_to_go(recovery: Any, partitions: Iterable[int]) -> int:
    """Changelog records still to read before ``partitions`` are warm (for the log)."""
    highwaters = recovery.standby_highwaters
    return sum(
        max(0, int(highwaters.get(tp) or 0) - _read_to(recovery, tp))
        for p in partitions
        for tp in _standby_tps_of(recovery, p)
    )


class WarmupAssignor(PartitionAssignor):
    """Faust's assignor, but a partition moves only to a member that holds it warm."""

    #: partitions this member was told to warm up in its last assignment
    warming: list[int]
    #: a handover was asked for since the last assignment
    _asked: bool

    def __init__(self, app: Any, replicas: int = 0) -> None:
        super().__init__(app, replicas=replicas)
        self.warming = []
        self._asked = False
        self._logged_at = 0.0
        self._previous: dict[str, ClientAssignment] = {}
        self._warm: dict[str, set[int]] = {}
        self._warming_by_member: dict[str, list[int]] = {}

    # -- which topics move together ------------------------------------------

    def _recovery(self) -> Any:
        tables: Any = self.app.tables
        return tables.recovery

    def _changelog_topics(self) -> set[str]:
        return set(self._table_manager.changelog_topics)

    def _anchor(self) -> str | None:
        """One changelog topic of the tables (the stores' partitions move with it)."""
        changelogs = sorted(self._changelog_topics())
        return changelogs[0] if changelogs else None

    # -- the member's side -----------------------------------------------------

    def metadata(self, topics: set[str]) -> ConsumerProtocolMemberMetadata:
        raw = orjson.loads(self._metadata.dumps())
        raw[WARM_FIELD] = sorted(self.warm_now())
        return ConsumerProtocolMemberMetadata(self.version, list(topics), orjson.dumps(raw))

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        super().on_assignment(assignment)
        raw = orjson.loads(self._decompress(assignment.user_data))
        self.warming = sorted(int(p) for p in raw.get(WARMING_FIELD) or [])
        self._asked = False
        metrics.PARTITIONS_WARMING.set(len(self.warming))
        if self.warming:
            log.info(
                "warming up partitions %s as a standby: their owner keeps them "
                "until this worker has read their changelogs",
                self.warming,
            )

    def warm_now(self) -> set[int]:
        """Every standby partition read to its end: the ones this member warms,
        and any standby replica (``RETAIL_TABLE_STANDBY_REPLICAS``) that is current."""
        recovery = self._recovery()
        return warm_partitions(recovery, {tp.partition for tp in recovery.standby_tps})

    def request_handover_if_warm(self) -> bool:
        """Ask for a rebalance once every partition this member warms is warm.

        Called from a timer in the worker; the consumer runs in its own thread,
        so the request is handed to that thread's loop.
        """
        if not self.warming or self._asked:
            return False
        recovery = self._recovery()
        to_go = records_to_go(recovery, self.warming)
        metrics.WARMUP_RECORDS_TO_GO.set(to_go)
        if warm_partitions(recovery, self.warming) != set(self.warming):
            if time.monotonic() - self._logged_at >= PROGRESS_EVERY_S:
                self._logged_at = time.monotonic()
                log.info("warming up partitions %s: %d changelog records to go",
                         self.warming, to_go)  # fmt: skip
            return False
        self._asked = True
        metrics.WARM_HANDOVERS.inc()
        log.info("partitions %s are warm: asking for a rebalance to take them over", self.warming)
        delegate: Any = self.app.consumer
        thread = delegate._thread
        consumer = thread._ensure_consumer()
        loop: asyncio.AbstractEventLoop = thread.thread_loop
        loop.call_soon_threadsafe(consumer._coordinator.request_rejoin)
        return True

    # -- the leader's side ---------------------------------------------------

    def _perform_assignment(
        self, cluster: ClusterMetadata, member_metadata: MutableMapping[str, Any]
    ) -> MutableMapping[str, ConsumerProtocolMemberAssignment]:
        self._previous = {}
        self._warm = {}
        for member, metadata in member_metadata.items():
            self._previous[member] = self._get_client_metadata(metadata).assignment
            raw = orjson.loads(metadata.user_data)
            self._warm[member] = {int(p) for p in raw.get(WARM_FIELD) or []}
        self._warming_by_member = {}
        result: MutableMapping[str, ConsumerProtocolMemberAssignment] = super()._perform_assignment(
            cluster, member_metadata
        )
        return result

    def _global_table_standby_assignments(
        self,
        assignments: MutableMapping[str, ClientAssignment],
        partitions_by_topic: Mapping[str, int],
    ) -> MutableMapping[str, ClientAssignment]:
        # Faust's one hook between its assignment and the routing tables it
        # derives from it (changelog_distribution): held-back partitions must
        # be in both, so they are held back here.
        anchor = self._anchor()
        if anchor is not None and anchor in partitions_by_topic and len(assignments) > 1:
            count = partitions_by_topic[anchor]
            group = {t for t, n in partitions_by_topic.items() if n == count}
            log.info(
                "assigning %s: previous %s, warm %s, Faust's answer %s",
                anchor,
                {m: sorted(a.actives.get(anchor, ())) for m, a in self._previous.items()},
                {m: sorted(w) for m, w in self._warm.items()},
                {m: sorted(a.actives.get(anchor, ())) for m, a in assignments.items()},
            )
            self._warming_by_member = hold_until_warm(
                assignments,
                self._previous,
                self._warm,
                anchor,
                group,
                self._changelog_topics(),
            )
            for member, partitions in self._warming_by_member.items():
                log.info("member %s warms partitions %s before it takes them", member, partitions)
        result: MutableMapping[str, ClientAssignment] = super()._global_table_standby_assignments(
            assignments, partitions_by_topic
        )
        return result

    def _protocol_assignments(
        self,
        assignments: MutableMapping[str, ClientAssignment],
        cl_distribution: Any,
        tp_distribution: Any,
        topic_groups: Mapping[str, int],
    ) -> MutableMapping[str, ConsumerProtocolMemberAssignment]:
        """Faust's answers, each member's with the partitions it is to warm up added."""
        out: MutableMapping[str, ConsumerProtocolMemberAssignment] = super()._protocol_assignments(
            assignments, cl_distribution, tp_distribution, topic_groups
        )
        for client, answer in out.items():
            raw = orjson.loads(self._decompress(answer.user_data))
            raw[WARMING_FIELD] = self._warming_by_member.get(client, [])
            out[client] = ConsumerProtocolMemberAssignment(
                answer.version, answer.assignment, self._compress(orjson.dumps(raw))
            )
        return out
