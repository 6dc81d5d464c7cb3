"""The warm-up rule of the assignor (app/warmup.py), on Faust's own assignment types."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from faust.assignor.client_assignment import ClientAssignment
from faust.types.tuples import TP
from yarl import URL

from app.warmup import WarmupAssignor, hold_until_warm, records_to_go, warm_partitions

EVENTS = "retail.events"
STOCK = "retail-stock-changelog"
SALES = "retail-sales-changelog"
GROUP = {EVENTS, STOCK, SALES}
CHANGELOGS = {STOCK, SALES}


def assignment(actives: list[int], standbys: list[int] = ()) -> ClientAssignment:  # type: ignore[assignment]
    return ClientAssignment(
        actives={t: list(actives) for t in GROUP},
        standbys={t: list(standbys) for t in CHANGELOGS} if standbys else {},
    )


def actives(a: ClientAssignment) -> dict[str, list[int]]:
    return {t: sorted(p) for t, p in a.actives.items()}


def test_a_cold_member_warms_what_faust_would_move_and_the_owner_keeps_it() -> None:
    previous = {"old": assignment([0, 1, 2, 3]), "new": assignment([])}
    # Faust's balanced answer moves 0 and 1 to the new member
    result = {"old": assignment([2, 3]), "new": assignment([0, 1])}
    warming = hold_until_warm(result, previous, {}, STOCK, GROUP, CHANGELOGS)
    assert warming == {"new": [0, 1]}
    assert actives(result["old"]) == {t: [0, 1, 2, 3] for t in GROUP}
    assert actives(result["new"]) == {t: [] for t in GROUP}
    # the changelogs only: a standby of the source topic means nothing to Faust
    assert {t: sorted(p) for t, p in result["new"].standbys.items()} == {
        STOCK: [0, 1],
        SALES: [0, 1],
    }


def test_a_warm_member_takes_the_partitions_over() -> None:
    previous = {"old": assignment([0, 1, 2, 3]), "new": assignment([], standbys=[0, 1])}
    result = {"old": assignment([2, 3]), "new": assignment([0, 1])}
    warming = hold_until_warm(result, previous, {"new": {0, 1}}, STOCK, GROUP, CHANGELOGS)
    assert warming == {}
    assert actives(result["new"]) == {t: [0, 1] for t in GROUP}
    assert actives(result["old"]) == {t: [2, 3] for t in GROUP}


def test_a_partition_whose_owner_left_goes_where_faust_puts_it() -> None:
    # "gone" owned 2 and 3 and is no longer in the group: nobody holds them warm
    previous = {"old": assignment([0, 1]), "new": assignment([])}
    result = {"old": assignment([0, 1]), "new": assignment([2, 3])}
    warming = hold_until_warm(result, previous, {}, STOCK, GROUP, CHANGELOGS)
    assert warming == {}
    assert actives(result["new"]) == {t: [2, 3] for t in GROUP}


def test_faust_giving_a_cold_partition_while_a_warm_one_stays_behind_is_swapped() -> None:
    previous = {"old": assignment([0, 1, 2, 3]), "new": assignment([], standbys=[2])}
    result = {"old": assignment([1, 2, 3]), "new": assignment([0])}  # but "new" is warm on 2
    warming = hold_until_warm(result, previous, {"new": {2}}, STOCK, GROUP, CHANGELOGS)
    assert warming == {}
    assert actives(result["new"]) == {t: [2] for t in GROUP}
    assert actives(result["old"]) == {t: [0, 1, 3] for t in GROUP}


def test_a_partition_that_stays_put_is_untouched() -> None:
    previous = {"a": assignment([0, 1]), "b": assignment([2, 3])}
    result = {"a": assignment([0, 1]), "b": assignment([2, 3])}
    assert hold_until_warm(result, previous, {}, STOCK, GROUP, CHANGELOGS) == {}
    assert actives(result["a"]) == {t: [0, 1] for t in GROUP}
    assert actives(result["b"]) == {t: [2, 3] for t in GROUP}


def recovery(offsets: dict[TP, int], highwaters: dict[TP, int]) -> SimpleNamespace:
    return SimpleNamespace(
        standby_tps=set(offsets) | set(highwaters),
        standby_offsets=offsets,
        standby_highwaters=highwaters,
    )


def test_warm_means_every_standby_changelog_read_to_the_end_it_had() -> None:
    s0, l0, s1, l1 = TP(STOCK, 0), TP(SALES, 0), TP(STOCK, 1), TP(SALES, 1)
    r = recovery({s0: 99, l0: -1, s1: 40, l1: 7}, {s0: 99, l0: -1, s1: 50, l1: 7})
    assert warm_partitions(r, [0, 1]) == {0}
    assert records_to_go(r, [0, 1]) == 10


def test_not_warm_before_recovery_has_measured_the_ends() -> None:
    tp = TP(STOCK, 0)
    r = recovery({tp: -1}, {})  # standby_highwaters are built only when standbys start
    assert warm_partitions(r, [0]) == set()
    # and a partition without any standby changelog is never warm
    assert warm_partitions(recovery({}, {}), [0]) == set()


def test_faust_starts_a_standby_offset_at_none() -> None:
    tp = TP(STOCK, 0)
    r = recovery({tp: None}, {tp: -1})  # type: ignore[dict-item]
    assert warm_partitions(r, [0]) == {0}, "an empty changelog partition is read to its end"
    r = recovery({tp: None}, {tp: 4})  # type: ignore[dict-item]
    assert warm_partitions(r, [0]) == set()
    assert records_to_go(r, [0]) == 5


# -- the assignor itself, through Faust's own assign() and the wire format --

TOPICS = {EVENTS, STOCK, SALES}


def fake_app(url: str) -> SimpleNamespace:
    recovery = SimpleNamespace(standby_tps=set(), standby_offsets={}, standby_highwaters={})
    return SimpleNamespace(
        tables=SimpleNamespace(changelog_topics=CHANGELOGS, data={}, recovery=recovery),
        conf=SimpleNamespace(canonical_url=URL(url)),
        sensors=SimpleNamespace(
            on_assignment_start=lambda *a: None,
            on_assignment_completed=lambda *a: None,
            on_assignment_error=lambda *a: None,
        ),
        tracer=None,
    )


CLUSTER = SimpleNamespace(partitions_for_topic=lambda topic: set(range(4)))


def rebalance(members: dict[str, WarmupAssignor]) -> None:
    """One group round: every member's join metadata to the first member (the
    leader), its answer through the wire format to every member."""
    joined = {
        m: ConsumerProtocolMemberMetadata.decode(a.metadata(TOPICS).encode())
        for m, a in members.items()
    }
    leader = next(iter(members.values()))
    answer = leader.assign(CLUSTER, joined)  # type: ignore[arg-type]
    for m, a in members.items():
        a.on_assignment(ConsumerProtocolMemberAssignment.decode(answer[m].encode()))


def partitions(tps: set[TP], topic: str) -> list[int]:
    return sorted(tp.partition for tp in tps if tp.topic == topic)


def test_the_assignor_holds_back_then_hands_over_through_the_group_protocol() -> None:
    old = WarmupAssignor(fake_app("http://old:1"))  # type: ignore[arg-type]
    new = WarmupAssignor(fake_app("http://new:2"))  # type: ignore[arg-type]
    rebalance({"old": old})
    assert partitions(old.assigned_actives(), EVENTS) == [0, 1, 2, 3]

    rebalance({"old": old, "new": new})  # "new" joins cold
    assert partitions(old.assigned_actives(), EVENTS) == [0, 1, 2, 3], "nothing moved"
    assert new.assigned_actives() == set()
    warming = new.warming
    assert len(warming) == 2
    assert partitions(new.assigned_standbys(), STOCK) == warming
    assert partitions(new.assigned_standbys(), EVENTS) == [], "standbys are changelogs only"
    assert not new.request_handover_if_warm(), "not read yet"

    # Faust's recovery has read the standbys to their ends
    recovery = new.app.tables.recovery  # type: ignore[attr-defined]
    recovery.standby_tps = set(new.assigned_standbys())
    recovery.standby_highwaters = dict.fromkeys(recovery.standby_tps, 10)
    recovery.standby_offsets = dict.fromkeys(recovery.standby_tps, 10)
    assert new.warm_now() == set(warming)

    rebalance({"old": old, "new": new})  # the handover
    assert partitions(new.assigned_actives(), EVENTS) == warming
    assert partitions(new.assigned_actives(), SALES) == warming
    assert partitions(old.assigned_actives(), EVENTS) == sorted({0, 1, 2, 3} - set(warming))
    assert new.warming == [] and new.assigned_standbys() == set()
