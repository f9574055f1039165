"""Cases on a real SQLite database, through the same path as /classify (the prediction log's transaction)
with known labels instead of a model: case blocks, routing, the queue, events, buyers, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.cases.buyers import buyer_key
from serving.cases.policy import CaseConflict, CaseNotFound
from serving.cases.replies import UnknownReply
from serving.cases.store import case_messages, cases, read_case
from serving.predlog import PredictionLogError
from serving.schemas import ClassifyRequest, ClassifyResponse
from tests.clock import FrozenClock
from tests.desk import ANGRY, CLAIM, FOLLOW_UP, ORDER, SALT, THANKS, Desk, H, open_desk


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'triage.db'}"


@pytest.fixture
def desk(db_url: str) -> Iterator[Desk]:
    d = open_desk(db_url, FrozenClock())
    yield d
    d.plog.close()


def case_count(desk: Desk) -> int:
    with desk.plog.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(cases)).scalar_one())


# -- one order, one case -----------------------------------------------------------------------------
def test_the_messages_of_one_order_form_one_case(desk: Desk) -> None:
    t0 = desk.clock()
    first = desk.classify(ANGRY, "at_risk", "not_received", received_at=t0)
    assert first.case is not None
    assert (first.case.message_count, first.case.first_contact_at, first.case.highest_risk) == (1, t0, "at_risk")
    assert (first.case.tier, first.case.status, first.case.channel, first.case.order_id) == (1, "open", "amazon", ORDER)
    assert first.case.prevention_deadline == t0 + 48 * H and first.case.response_deadline is None
    assert first.case.claim_types == ["not_received"] and first.routing_reason == "message"
    assert first.suggested_reply is not None and first.suggested_reply.id == "not_received.fr"

    desk.clock.advance(hours=5)
    second = desk.classify(FOLLOW_UP, "routine", "none")  # no received_at: it counts now
    assert second.case is not None and second.case.case_id == first.case.case_id
    assert second.case.message_count == 2 and second.case.last_message_at == t0 + 5 * H
    # sticky escalation: routed like the case, labelled like the message
    assert (second.risk, second.claim_type) == ("routine", "none")
    assert (second.tier, second.queue, second.routing_reason) == (1, "tier1-escalation", "escalated_by_case")
    assert second.sla_due_at == t0 + 6 * H
    assert second.suggested_reply is not None and second.suggested_reply.id == "not_received.fr"
    logged = desk.plog.get(second.request_id)
    assert logged is not None and (logged.risk, logged.claim_type) == ("routine", "none")

    desk.clock.advance(hours=20)
    claim = desk.classify(CLAIM, "claim_filed", "not_received", received_at=t0 + 24 * H)
    assert claim.case is not None and claim.case.highest_risk == "claim_filed"
    assert claim.case.prevention_deadline is None and claim.case.response_deadline == t0 + 72 * H
    assert claim.case.next_deadline == claim.case.response_deadline
    assert claim.tags == ["CRISIS: A-to-Z"] and claim.suggested_reply is not None
    assert claim.suggested_reply.id == "claim_filed.fr"
    again = desk.classify(FOLLOW_UP, "routine", "none")
    assert again.tags == ["CRISIS: A-to-Z"] and again.routing_reason == "escalated_by_case"
    assert case_count(desk) == 1


def test_messages_without_an_order_form_no_case(desk: Desk) -> None:
    for order_id in (None, "", "   "):
        res = desk.classify(ANGRY, "at_risk", "not_received", order_id=order_id)
        assert res.case is None and res.routing_reason == "message" and res.buyer is None
        assert res.suggested_reply is not None and res.suggested_reply.id == "not_received.fr"
    assert case_count(desk) == 0 and desk.plog.counts()["predictions"] == 3


def test_the_case_key_is_the_channel_and_the_order(desk: Desk) -> None:
    a = desk.classify(ANGRY, "at_risk", "not_received", channel="Amazon ")
    b = desk.classify(THANKS, "routine", "none", channel="amazon", order_id=f" {ORDER} ")
    c = desk.classify(THANKS, "routine", "none", channel="ebay")
    d = desk.classify(THANKS, "routine", "none", channel=None)
    assert a.case and b.case and c.case and d.case
    assert a.case.case_id == b.case.case_id != c.case.case_id != d.case.case_id
    assert d.case.channel is None and c.case.tier == 2


def test_a_batch_with_two_messages_of_one_new_order_makes_one_case(desk: Desk) -> None:
    reqs = [ClassifyRequest(text=t, channel="amazon", order_id=ORDER) for t in (ANGRY, FOLLOW_UP)]
    out = desk.classify_many([(reqs[0], "at_risk", "not_received"), (reqs[1], "routine", "none")])
    assert [r.case.message_count for r in out if r.case] == [1, 2]
    assert out[1].routing_reason == "escalated_by_case" and case_count(desk) == 1


def test_a_language_without_replies_gets_the_fallback(desk: Desk) -> None:
    res = desk.classify("Hallo, wo ist mein Paket? Es ist drei Wochen zu spät.", "at_risk", "not_received")
    assert res.language == "other" and res.suggested_reply is not None
    assert (res.suggested_reply.id, res.suggested_reply.language) == ("not_received.en", "en")


def test_odd_times_are_accepted_and_flagged(desk: Desk) -> None:
    now = desk.clock()
    first = desk.classify(ANGRY, "at_risk", "not_received", received_at=now + 30 * 24 * H)
    assert first.case is not None and first.case.flags == ["received_in_future"]
    assert first.case.first_contact_at == now  # the clocks use the arrival time instead
    early = desk.classify(FOLLOW_UP, "routine", "none", received_at=now - 2 * H)
    assert early.case is not None and early.case.flags == ["received_in_future", "received_before_first_message"]
    assert early.case.first_contact_at == now - 2 * H
    trail = read_case(desk.plog, early.case.case_id)
    assert [m.flags for m in trail.messages] == [["received_before_first_message"], ["received_in_future"]]


# -- the queue ----------------------------------------------------------------------------------------
def test_the_queue_is_sorted_by_the_nearest_deadline_and_paginated(desk: Desk) -> None:
    t0 = desk.clock()
    desk.clock.advance(hours=2)  # every received_at below is in the past
    ids = {}
    for name, risk, claim, at in [
        ("prevention+48", "at_risk", "not_received", t0),
        ("response+49", "claim_filed", "other", t0 + H),
        ("prevention+38", "at_risk", "damaged_defective", t0 - 10 * H),
        ("routine", "routine", "none", t0),
        ("resolved", "at_risk", "other", t0 - 20 * H),
        ("response+30", "claim_filed", "customs_fees", t0 - 18 * H),
    ]:
        res = desk.classify(ANGRY, risk, claim, order_id=name, received_at=at)  # type: ignore[arg-type]
        assert res.case is not None
        ids[name] = res.case.case_id
    desk.event(ids["resolved"], "resolved")
    queue = desk.book.list_cases(tier=1, status="open")
    assert [c.order_id for c in queue.cases] == ["response+30", "prevention+38", "prevention+48", "response+49"]
    assert queue.total == 4
    assert [c.next_deadline for c in queue.cases] == [t0 + 30 * H, t0 + 38 * H, t0 + 48 * H, t0 + 49 * H]
    page = desk.book.list_cases(tier=1, status="open", limit=3, offset=3)
    assert [c.order_id for c in page.cases] == ["response+49"] and (page.total, page.offset) == (4, 3)
    everything = desk.book.list_cases()
    assert everything.total == 6 and everything.cases[-1].order_id == "routine"  # no deadline: last
    assert [c.order_id for c in desk.book.list_cases(status="resolved").cases] == ["resolved"]
    assert [c.order_id for c in desk.book.list_cases(tier=2).cases] == ["routine"]


# -- agents' events -----------------------------------------------------------------------------------
def test_events_are_appended_in_order_and_end_the_escalation(desk: Desk) -> None:
    res = desk.classify(ANGRY, "at_risk", "not_received", received_at=desk.clock())
    assert res.case is not None
    cid = res.case.case_id
    desk.clock.advance(minutes=20)
    replied = desk.event(cid, "replied", reply_id="not_received.fr", buyer_name="Marie")
    assert replied.reply_text is not None
    assert replied.reply_text.startswith("Bonjour Marie,") and ORDER in replied.reply_text
    assert replied.catalogue_sha256 == desk.book.catalogue.sha256
    desk.clock.advance(hours=2)
    desk.event(cid, "evidence_attached", note="tracking + proof of delivery")
    with pytest.raises(CaseConflict, match="before case .* last event"):
        desk.event(cid, "replied", note="late entry", at=(desk.clock() - H).isoformat())
    resolved = desk.event(cid, "resolved", note="replacement shipped")
    assert resolved.kind == "resolved"
    with pytest.raises(CaseConflict, match="resolved"):
        desk.event(cid, "replied", note="one more")
    after = desk.classify(FOLLOW_UP, "routine", "none")
    assert (after.tier, after.routing_reason) == (2, "message")
    assert after.case is not None and after.case.status == "resolved"
    trail = read_case(desk.plog, cid)
    assert [e.kind for e in trail.events] == ["replied", "evidence_attached", "resolved"]  # the refused ones: none
    assert trail.status == "resolved" and trail.resolved_at == desk.clock()


def test_a_tier1_message_reopens_a_resolved_case(desk: Desk) -> None:
    res = desk.classify(ANGRY, "at_risk", "not_received")
    assert res.case is not None
    desk.event(res.case.case_id, "resolved")
    desk.clock.advance(days=2)
    claim = desk.classify(CLAIM, "claim_filed", "not_received")
    assert claim.case is not None and claim.case.status == "open"
    assert claim.case.response_deadline == desk.clock() + 48 * H
    trail = read_case(desk.plog, res.case.case_id)
    assert [(e.kind, e.agent, e.request_id) for e in trail.events] == [
        ("resolved", "marie", None),
        ("reopened", None, claim.request_id),
    ]
    desk.event(res.case.case_id, "replied", reply_id="claim_filed.fr")  # open again: events are taken


def test_bad_events(desk: Desk) -> None:
    with pytest.raises(CaseNotFound, match="unknown case 999"):
        desk.event(999, "replied", note="x")
    res = desk.classify(ANGRY, "at_risk", "not_received")
    assert res.case is not None
    with pytest.raises(UnknownReply):
        desk.event(res.case.case_id, "replied", reply_id="no-such-reply")
    with pytest.raises(CaseNotFound):
        read_case(desk.plog, 999)
    assert read_case(desk.plog, res.case.case_id).events == []


# -- buyers -------------------------------------------------------------------------------------------
def test_repeat_buyers_are_counted_by_a_salted_hash_only(desk: Desk, db_url: str, tmp_path: Path) -> None:
    buyer = "A3KX9QZ0PLM7TW"
    for i, (risk, claim) in enumerate([("claim_filed", "other"), ("at_risk", "not_received"), ("routine", "none")]):
        res = desk.classify(ANGRY, risk, claim, order_id=f"order-{i}", buyer_id=buyer)  # type: ignore[arg-type]
        assert res.buyer is not None and res.buyer.earlier_cases == i
    res = desk.classify(CLAIM, "claim_filed", "not_received", order_id="order-3", buyer_id=buyer.lower() + " ")
    assert res.buyer is not None
    assert (res.buyer.earlier_cases, res.buyer.earlier_tier1_cases, res.buyer.earlier_claims) == (3, 2, 1)
    assert not res.buyer.repeat_claimant and "repeat_claimant" not in res.tags
    # the second earlier claim makes a repeat claimant (TRIAGE_REPEAT_CLAIMANT_CLAIMS, default 2)
    res = desk.classify(ANGRY, "at_risk", "other", order_id="order-4", buyer_id=buyer)
    assert res.buyer is not None and res.buyer.earlier_claims == 2 and res.buyer.repeat_claimant
    assert "repeat_claimant" in res.tags
    # a message about an earlier order counts only the cases before that one
    res = desk.classify(FOLLOW_UP, "routine", "none", order_id="order-1", buyer_id=buyer)
    assert res.buyer is not None and res.buyer.earlier_cases == 1
    # without an order, all of the buyer's cases are earlier
    res = desk.classify(THANKS, "routine", "none", order_id=None, buyer_id=buyer)
    assert res.buyer is not None and (res.buyer.earlier_cases, res.buyer.earlier_claims) == (5, 2)
    # a blank buyer id is no buyer
    blank = desk.classify(THANKS, "routine", "none", order_id="order-8", buyer_id="  ")
    assert blank.buyer is None
    # another buyer knows nothing of them
    other = desk.classify(THANKS, "routine", "none", order_id="order-9", buyer_id="someone-else")
    assert other.buyer is not None and other.buyer.earlier_cases == 0
    # stored as the HMAC only: the id is nowhere in the database files
    with desk.plog.engine.connect() as conn:
        keys = set(conn.execute(sa.select(cases.c.buyer_key)).scalars()) - {None}
    assert keys == {buyer_key(buyer, SALT), buyer_key("someone-else", SALT)}
    desk.plog.close()
    for f in tmp_path.glob("triage.db*"):
        data = f.read_bytes().lower()
        assert buyer.lower().encode() not in data and b"someone-else" not in data, f


def test_the_threshold_is_a_setting(db_url: str) -> None:
    desk = open_desk(db_url, FrozenClock(), repeat_claimant_claims=1)
    desk.classify(CLAIM, "claim_filed", "other", order_id="o1", buyer_id="b")
    res = desk.classify(ANGRY, "at_risk", "other", order_id="o2", buyer_id="b")
    assert res.buyer is not None and res.buyer.repeat_claimant and "repeat_claimant" in res.tags


# -- one transaction, concurrency --------------------------------------------------------------------
def test_a_failing_case_step_records_nothing(desk: Desk) -> None:
    desk.classify(ANGRY, "at_risk", "not_received")
    with desk.plog.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE case_messages"))
    with pytest.raises(PredictionLogError):
        desk.classify(FOLLOW_UP, "routine", "none")
    assert desk.plog.counts()["predictions"] == 1
    with desk.plog.engine.connect() as conn:
        assert conn.execute(sa.select(cases.c.message_count)).scalar_one() == 1


def test_concurrent_messages_about_one_new_order_make_one_case(db_url: str) -> None:
    """Threads on two case books (as two processes would be) on one SQLite file, released at once."""
    clock = FrozenClock()
    desks = [open_desk(db_url, clock), open_desk(db_url, clock)]
    n = 16
    barrier = threading.Barrier(n)
    results: list[ClassifyResponse] = []
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            barrier.wait()
            results.append(desks[i % 2].classify(f"{ANGRY} ({i})", "at_risk", "not_received", order_id="new-order"))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert {r.case.case_id for r in results if r.case} == {1}
    assert sorted(r.case.message_count for r in results if r.case) == list(range(1, n + 1))
    with desks[0].plog.engine.connect() as conn:
        assert conn.execute(sa.select(cases.c.message_count)).scalar_one() == n
        assert conn.execute(sa.select(sa.func.count()).select_from(case_messages)).scalar_one() == n
    for d in desks:
        d.plog.close()


def test_a_lost_creation_race_updates_the_winners_case(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    """What other databases allow: the read misses a case another transaction is committing; the insert
    then meets the unique constraint, rolls back to its savepoint and updates that case instead."""
    first = desk.classify(ANGRY, "at_risk", "not_received")
    find = desk.book._find_case
    calls: list[int] = []

    def miss_once(conn: sa.Connection, where: dict[str, str]) -> sa.RowMapping | None:
        calls.append(1)
        return None if len(calls) == 1 else find(conn, where)

    monkeypatch.setattr(desk.book, "_find_case", miss_once)
    monkeypatch.setattr(desk.book, "race_possible", True)  # SQLite's write lock rules the race out
    second = desk.classify(FOLLOW_UP, "routine", "none")
    assert len(calls) == 2
    assert first.case and second.case and second.case.case_id == first.case.case_id
    assert second.case.message_count == 2 and second.routing_reason == "escalated_by_case"
    assert case_count(desk) == 1


def test_tables_are_created_beside_the_prediction_log(desk: Desk) -> None:
    names = set(sa.inspect(desk.plog.engine).get_table_names())
    assert {"predictions", "feedback", "cases", "case_messages", "case_events"} <= names
    desk.book.create_tables()  # idempotent


def test_times_are_utc(desk: Desk) -> None:
    res = desk.classify(ANGRY, "at_risk", "other", received_at=datetime(2026, 11, 27, 10, 30, tzinfo=UTC) + H)
    assert res.case is not None and res.case.first_contact_at.utcoffset() == timedelta(0)
