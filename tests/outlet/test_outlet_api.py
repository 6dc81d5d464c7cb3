"""The terminals' API in process (httpx ASGI transport) against a temp SQLite log."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3

import orjson

from app.schema import decode_record, encode_packed, parse_event
from outlet_agent.forwarder import pack_records, within_bytes
from outlet_agent.log import CHECKPOINT_EVENTS, CHECKPOINT_TRICKLE_S, LogRecord, checkpoint_due

from .conftest import STORE, Agent, AgentFactory, make_event


async def test_sale_is_durable_and_numbered(agent: Agent) -> None:
    r = await agent.post(make_event(qty=2))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["outlet_seq"] == 1
    assert set(body) == {"event_id", "outlet_seq", "recorded_at"}
    with agent.db() as db:
        (raw,) = db.execute("SELECT body FROM events WHERE seq = 1").fetchone()
    event = parse_event(orjson.loads(raw))
    assert event.store_id == STORE and event.terminal_id == "T1"
    assert event.event_id == body["event_id"]


async def test_same_key_same_content_gives_first_answer(agent: Agent) -> None:
    event = make_event()
    first = await agent.post(event)
    again = await agent.post(event)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    other = await agent.post({**event, "lines": [{"sku": "SKU-1", "qty": 5}]})
    assert other.status_code == 409
    assert other.json()["outlet_seq"] == first.json()["outlet_seq"]


async def test_auth(agent: Agent) -> None:
    event = make_event()
    assert (await agent.client.post("/v1/events", json=event)).status_code == 401
    bad = {"Authorization": "Bearer rt_nope"}
    assert (await agent.client.post("/v1/events", json=event, headers=bad)).status_code == 401
    basic = {"Authorization": "Basic abc"}
    assert (await agent.client.post("/v1/events", json=event, headers=basic)).status_code == 401


async def test_tokens_are_stored_hashed_and_revocable(agent: Agent) -> None:
    with agent.db() as db:
        rows = db.execute("SELECT token_hash, terminal_id FROM tokens").fetchall()
    assert rows == [(hashlib.sha256(agent.token.encode()).hexdigest(), "T1")]
    assert agent.token not in agent.settings.outlet_db_path.read_bytes().decode("latin-1")
    from outlet_agent.log import open_sync
    from outlet_agent.tokens import revoke_tokens

    db2 = open_sync(agent.settings.outlet_db_path)
    assert revoke_tokens(db2, terminal_id="T1") == 1
    db2.close()
    assert (await agent.post(make_event())).status_code == 401


async def test_other_store_is_forbidden(agent: Agent) -> None:
    r = await agent.post(make_event(store_id="S2"))
    assert r.status_code == 403
    assert (await agent.post(make_event(store_id=STORE))).status_code == 201


async def test_too_large(agent: Agent) -> None:
    big = make_event(reason="x" * (agent.settings.max_event_bytes + 10))
    assert (await agent.post(big)).status_code == 413
    huge = b"x" * (agent.settings.outlet_max_body_bytes + 10)
    r = await agent.client.post("/v1/events", content=huge, headers=agent.auth)
    assert r.status_code == 413


async def test_invalid_lists_every_reason(agent: Agent) -> None:
    r = await agent.post({"type": "sael", "lines": [{"sku": "", "qty": -1}]})
    assert r.status_code == 422
    reasons = r.json()["reasons"]
    assert any(x.startswith("type") for x in reasons)
    assert any(x.startswith("client_txn_id") for x in reasons)
    assert any(x.startswith("occurred_at") for x in reasons)
    assert any("lines[0].sku" in x for x in reasons)
    assert any("lines[0].qty" in x for x in reasons)
    for junk in (b"not json", b"[]", b"null", b'"x"', b"{}"):
        r = await agent.client.post("/v1/events", content=junk, headers=agent.auth)
        assert r.status_code == 422, junk
        assert r.json()["reasons"]
    # before year 1 once in UTC: a reason, not a 500
    early = {"type": "sale", "client_txn_id": "early", "occurred_at": "0001-01-01T00:30:00+01:00",
             "lines": [{"sku": "A", "qty": 1}]}  # fmt: skip
    r = await agent.post(early)
    assert r.status_code == 422 and any("occurred_at" in x for x in r.json()["reasons"])


async def test_batch_answers_each_item(agent: Agent) -> None:
    dup = make_event()
    assert (await agent.post(dup)).status_code == 201
    events = [make_event(), dup, {"type": "sale"}, make_event(store_id="S9"), make_event()]
    r = await agent.post({"events": events})
    assert r.status_code == 201
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 200, 422, 403, 201]
    assert results[0]["outlet_seq"] == 2 and results[4]["outlet_seq"] == 3
    r = await agent.post({"events": [dup]})
    assert r.status_code == 200
    r = await agent.post({"events": [{"type": "x"}]})
    assert r.status_code == 422
    # every item refused alike: the batch says so; refused in different ways: 422
    r = await agent.post({"events": [make_event(store_id="S9"), make_event(store_id="S8")]})
    assert (r.status_code, [x["status"] for x in r.json()["results"]]) == (403, [403, 403])
    other = dict(dup, lines=[{"sku": "SKU-OTHER", "qty": 1}])
    r = await agent.post({"events": [other]})
    assert (r.status_code, [x["status"] for x in r.json()["results"]]) == (409, [409])
    r = await agent.post({"events": [other, make_event(store_id="S9")]})
    assert (r.status_code, [x["status"] for x in r.json()["results"]]) == (422, [409, 403])
    for bad in ({"events": []}, {"events": "x"}, {"events": [make_event()] * 5000}):
        assert (await agent.post(bad)).status_code in (413, 422)


async def test_concurrent_posts_share_group_commits_gap_free(agent: Agent) -> None:
    events = [make_event() for _ in range(300)]
    answers = await asyncio.gather(*(agent.post(e) for e in events))
    assert all(a.status_code == 201 for a in answers)
    seqs = sorted(a.json()["outlet_seq"] for a in answers)
    assert seqs == list(range(1, 301))
    log = agent.app.state.outlet.log
    assert log.groups_committed < 300  # many requests shared a commit


async def test_void_takes_the_sale_lines(agent: Agent) -> None:
    sale = make_event(
        lines=[{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1, "unit_price_cents": 99}]
    )
    created = (await agent.post(sale)).json()
    r = await agent.post(make_event("void", ref=created["event_id"], lines=None))
    assert r.status_code == 201, r.text
    with agent.db() as db:
        (raw,) = db.execute("SELECT body FROM events WHERE seq = 2").fetchone()
    void = parse_event(orjson.loads(raw))
    assert [(x.sku, x.qty, x.unit_price_cents) for x in void.lines] == [
        ("A", 2, None),
        ("B", 1, 99),
    ]
    again = await agent.post(make_event("void", ref=sale["client_txn_id"], lines=None))
    assert again.status_code == 422
    assert "already voided" in again.json()["reasons"][0]
    unknown = await agent.post(make_event("void", ref="no-such-sale", lines=None))
    assert unknown.status_code == 422
    assert "no sale" in unknown.json()["reasons"][0]


async def test_void_in_the_same_batch_as_its_sale(agent: Agent) -> None:
    sale = make_event(sku="C", qty=3)
    void = make_event("void", ref=sale["client_txn_id"], lines=None)
    void2 = make_event("void", ref=sale["client_txn_id"], lines=None)
    r = await agent.post({"events": [sale, void, void2]})
    assert [x["status"] for x in r.json()["results"]] == [201, 201, 422]
    assert (await agent.client.get("/v1/stock/C")).json()["on_hand"] == 0


async def test_disk_full_is_503_and_nothing_half_written(agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory()
    assert (await agent.post(make_event())).status_code == 201
    log = agent.app.state.outlet.log
    writer = log._writer  # simulate a full disk: cap the file at its current size

    def pragma(sql: str) -> list[tuple[int]]:
        return writer.execute(sql).fetchall()  # type: ignore[no-any-return]

    ((pages,),) = await log._in_writer(pragma, "PRAGMA page_count")
    await log._in_writer(pragma, f"PRAGMA max_page_count = {pages}")
    big = [
        make_event(lines=[{"sku": f"S{i}-{j}", "qty": 1} for j in range(400)]) for i in range(20)
    ]
    r = await agent.post({"events": big})
    assert r.status_code == 503
    assert r.headers["Retry-After"]
    with agent.db() as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM event_lines").fetchone() == (1,)
    await log._in_writer(pragma, "PRAGMA max_page_count = 1073741823")
    r = await agent.post(make_event())
    assert r.status_code == 201
    assert r.json()["outlet_seq"] == 2  # no gap after the failed group


async def test_full_write_queue_is_503(agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory(outlet_write_queue_max=5)
    answers = await asyncio.gather(
        *(agent.post({"events": [make_event() for _ in range(4)]}) for _ in range(10))
    )
    codes = [a.status_code for a in answers]
    assert 503 in codes and 201 in codes
    assert all(a.headers.get("Retry-After") for a in answers if a.status_code == 503)


async def test_seq_survives_restart_and_prune(agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory(retention_s=0)
    for _ in range(3):
        assert (await agent.post(make_event(sku="P", qty=1))).status_code == 201
    log = agent.app.state.outlet.log
    await log.mark_forwarded(3)
    assert await log.prune(0) == 3
    assert (await agent.client.get("/v1/stock/P")).json()["on_hand"] == -3
    r = await agent.post(make_event())
    assert r.json()["outlet_seq"] == 4


def _stored_forwarded_seq(agent: Agent) -> int:
    db = sqlite3.connect(agent.settings.outlet_db_path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'forwarded_seq'").fetchone()
    finally:
        db.close()
    return int(row[0]) if row else 0


async def test_the_forwarded_cursor_rides_in_the_next_group_commit(agent: Agent) -> None:
    for _ in range(2):
        assert (await agent.post(make_event())).status_code == 201
    log = agent.app.state.outlet.log
    await log.mark_forwarded(2, persist=False)
    assert _stored_forwarded_seq(agent) == 0  # only in memory so far
    written_at = log.persisted_at
    assert (await agent.post(make_event())).status_code == 201
    # the next sale's transaction wrote it: no commit of its own
    assert _stored_forwarded_seq(agent) == 2
    assert log.persisted_forwarded_seq == 2 and log.persisted_at > written_at
    assert (await agent.post(make_event())).status_code == 201
    assert _stored_forwarded_seq(agent) == 2  # unchanged cursor: not written again


def test_a_checkpoint_is_due_after_a_burst_or_a_while_of_trickle() -> None:
    assert not checkpoint_due(0, 3600.0)  # nothing written: an idle agent never checkpoints
    assert checkpoint_due(CHECKPOINT_EVENTS, 0.0)  # a burst: at once
    assert not checkpoint_due(20, CHECKPOINT_TRICKLE_S / 2)
    assert checkpoint_due(20, CHECKPOINT_TRICKLE_S)


async def test_status_and_metrics(agent: Agent) -> None:
    await agent.post(make_event())
    await agent.post(make_event())
    status = (await agent.client.get("/v1/status")).json()
    assert status == {
        "store_id": STORE,
        "last_seq": 2,
        "forwarded_seq": 0,
        "backlog": 2,
        "oldest_unsent_age_s": status["oldest_unsent_age_s"],
        "broker_connected": False,
    }
    text = (await agent.client.get("/metrics")).text
    assert 'outlet_events_accepted_total{store_id="S1"} 2.0' in text
    assert 'outlet_backlog_events{store_id="S1"} 2.0' in text
    assert (await agent.client.get("/health")).status_code == 200
    doc = (await agent.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")


def test_packed_records_equal_encode_packed() -> None:
    from datetime import UTC, datetime

    from app.schema import Event, Line, encode_event

    now = datetime(2025, 1, 1, tzinfo=UTC)
    events = [
        Event(
            f"00000000-0000-0000-0000-00000000000{i}",
            "sale",
            STORE,
            "T1",
            i,
            f"t{i}",
            now,
            now,
            (Line("A", i),),
        )
        for i in range(1, 6)
    ]
    page = [LogRecord(e.outlet_seq, e.event_id, 0.0, encode_event(e)) for e in events]
    records = pack_records(page, 3)
    assert [n for _, n in records] == [3, 2]
    assert records[0][0] == encode_packed(events[:3])
    decoded = [e for value, _ in records for e in decode_record(value)]
    assert [e.outlet_seq for e in decoded] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    assert pack_records(page[:1], 3) == [(page[0].body, 1)]


def test_a_page_stops_at_its_byte_budget_but_never_empty() -> None:
    page = [LogRecord(i, f"e{i}", 0.0, b"x" * 100) for i in range(1, 11)]
    assert [r.seq for r in within_bytes(page, 350)] == [1, 2, 3]
    assert within_bytes(page, 1000) == page
    assert [r.seq for r in within_bytes(page, 10)] == [1]  # one event bigger than the budget
    assert within_bytes([], 10) == []


async def test_logged_body_is_encode_event_of_the_event(agent: Agent) -> None:
    from app.schema import encode_event

    sale = make_event(
        lines=[{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1, "unit_price_cents": 5}],
        occurred_at="2025-01-02T12:00:00.123456+02:00",
    )
    await agent.post(sale)
    await agent.post(make_event("adjustment", qty=-3, reason="theft"))
    with agent.db() as db:
        bodies = [bytes(r[0]) for r in db.execute("SELECT body FROM events ORDER BY seq")]
    for raw in bodies:
        assert encode_event(parse_event(orjson.loads(raw))) == raw


async def test_event_ids_are_unique_time_ordered_uuids(agent: Agent) -> None:
    import time
    import uuid

    before = int(time.time() * 1000)
    first = (await agent.post({"events": [make_event() for _ in range(50)]})).json()["results"]
    second = (await agent.post({"events": [make_event() for _ in range(50)]})).json()["results"]
    after = int(time.time() * 1000)
    ids = [uuid.UUID(x["event_id"]) for x in first + second]
    assert len(set(ids)) == 100
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    stamps = [u.int >> 80 for u in ids]  # RFC 9562: the first 48 bits are Unix ms
    assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= after
    assert len(set(stamps[:50])) == 1  # one group, one recorded_at
