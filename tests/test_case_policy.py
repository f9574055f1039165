"""The case policy, pure: the two 48-hour clocks, sticky Tier-1 escalation and its end, odd times, events.

Time is frozen: every `now` is given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from serving.cases.policy import (
    AgentEventKind,
    CaseClocks,
    CaseConflict,
    CaseState,
    InvalidCaseEvent,
    add_event,
    add_message,
)
from serving.labels import ClaimType, Risk, higher_risk
from serving.settings import Settings

T0 = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
H = timedelta(hours=1)
CLOCKS = CaseClocks.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]


def thread(
    *messages: tuple[Risk, ClaimType, datetime | None], now: datetime = T0 + 100 * H, clocks: CaseClocks = CLOCKS
) -> CaseState:
    state: CaseState | None = None
    for risk, claim_type, received_at in messages:
        state = add_message(state, risk, claim_type, received_at, now, clocks).state
    assert state is not None
    return state


def test_the_defaults_are_48_hours_each() -> None:
    assert (CLOCKS.prevention, CLOCKS.response) == (48 * H, 48 * H)


def test_the_first_tier1_contact_starts_the_prevention_window() -> None:
    state = thread(("routine", "none", T0), ("at_risk", "not_received", T0 + 3 * H), ("at_risk", "other", T0 + 5 * H))
    d = state.deadlines(CLOCKS)
    assert state.first_contact_at == T0  # the routine message opened the case...
    assert d.prevention == T0 + 3 * H + 48 * H  # ...the first at-risk one started the clock
    assert d.response is None and d.next == d.prevention
    assert (state.tier, state.highest_risk, state.message_count) == (1, "at_risk", 3)
    assert state.claim_types == ("not_received", "other")


def test_a_routine_case_has_no_clock() -> None:
    state = thread(("routine", "none", T0), ("routine", "none", T0 + H))
    assert state.tier == 2 and state.deadlines(CLOCKS).next is None and state.claim_types == ()


def test_a_filed_claim_starts_the_response_deadline_and_ends_the_prevention_window() -> None:
    state = thread(("at_risk", "damaged_defective", T0), ("claim_filed", "damaged_defective", T0 + 30 * H))
    d = state.deadlines(CLOCKS)
    assert d.prevention is None
    assert d.response == T0 + 30 * H + 48 * H == d.next
    assert state.highest_risk == "claim_filed" and state.claim_types == ("damaged_defective",)


def test_a_claim_notification_first_has_only_a_response_deadline() -> None:
    state = thread(("claim_filed", "not_received", T0))
    assert state.deadlines(CLOCKS).prevention is None
    assert state.deadlines(CLOCKS).response == T0 + 48 * H


def test_the_earliest_claim_message_counts_even_if_it_arrives_late() -> None:
    state = thread(("claim_filed", "other", T0 + 10 * H), ("claim_filed", "other", T0 + 2 * H))
    assert state.deadlines(CLOCKS).response == T0 + 2 * H + 48 * H


def test_the_hours_are_settings() -> None:
    clocks = CaseClocks.from_settings(
        Settings(_env_file=None, case_prevention_hours=24, case_response_hours=72)  # type: ignore[call-arg]
    )
    state = thread(("at_risk", "other", T0), clocks=clocks)
    assert state.deadlines(clocks).prevention == T0 + 24 * H
    state = thread(("at_risk", "other", T0), ("claim_filed", "other", T0 + H), clocks=clocks)
    assert state.deadlines(clocks).response == T0 + H + 72 * H


def test_a_message_without_received_at_counts_now() -> None:
    step = add_message(None, "at_risk", "not_received", None, T0, CLOCKS)
    assert step.arrival.at == T0 == step.state.first_tier1_at and step.arrival.flags == ()


def test_received_at_without_an_offset_is_utc() -> None:
    step = add_message(None, "at_risk", "not_received", datetime(2026, 11, 27, 9, 30), T0, CLOCKS)
    assert step.state.first_contact_at == T0


# -- sticky escalation --------------------------------------------------------------------------------
def test_once_tier1_later_routine_messages_route_to_tier1_until_resolved() -> None:
    first = add_message(None, "at_risk", "not_received", T0, T0, CLOCKS)
    assert (first.routing.tier, first.routing.reason) == (1, "message")
    second = add_message(first.state, "routine", "none", T0 + H, T0 + H, CLOCKS)
    assert (second.routing.tier, second.routing.reason) == (1, "escalated_by_case")
    # the message keeps its own label: the case records the model's routine, not an at-risk
    assert second.state.highest_risk == "at_risk" and second.state.claim_types == ("not_received",)
    resolved = add_event(second.state, 1, "resolved", T0 + 2 * H, T0 + 2 * H, CLOCKS)
    assert resolved.status == "resolved" and resolved.resolved_at == T0 + 2 * H
    third = add_message(resolved, "routine", "none", T0 + 3 * H, T0 + 3 * H, CLOCKS)
    assert (third.routing.tier, third.routing.reason, third.routing.reopened) == (2, "message", False)
    assert third.state.status == "resolved"


def test_a_routine_case_does_not_escalate() -> None:
    first = add_message(None, "routine", "none", T0, T0, CLOCKS)
    second = add_message(first.state, "routine", "none", T0 + H, T0 + H, CLOCKS)
    assert (second.routing.tier, second.routing.reason) == (2, "message")


@pytest.mark.parametrize("risk", ["claim_filed", "at_risk"])
def test_a_tier1_message_reopens_a_resolved_case_and_a_claim_always_wins(risk: Risk) -> None:
    state = thread(("at_risk", "not_received", T0))
    state = add_event(state, 1, "resolved", T0 + H, T0 + H, CLOCKS)
    step = add_message(state, risk, "not_received", T0 + 20 * H, T0 + 20 * H, CLOCKS)
    assert step.routing == type(step.routing)(tier=1, reason="message", reopened=True)
    assert step.state.status == "open" and step.state.resolved_at is None
    if risk == "claim_filed":
        assert step.state.deadlines(CLOCKS).response == T0 + 20 * H + 48 * H
        assert step.state.deadlines(CLOCKS).prevention is None
    # open and Tier 1 again: sticky again
    after = add_message(step.state, "routine", "none", T0 + 21 * H, T0 + 21 * H, CLOCKS)
    assert after.routing.reason == "escalated_by_case"


def test_a_claim_on_an_escalated_case_routes_by_the_message() -> None:
    state = thread(("at_risk", "not_received", T0))
    step = add_message(state, "claim_filed", "not_received", T0 + H, T0 + H, CLOCKS)
    assert (step.routing.tier, step.routing.reason) == (1, "message")


# -- odd times ----------------------------------------------------------------------------------------
def test_a_received_at_in_the_future_is_flagged_and_counts_now() -> None:
    now = T0
    step = add_message(None, "at_risk", "other", now + 3 * H, now, CLOCKS)
    assert step.arrival.flags == ("received_in_future",)
    assert step.state.first_contact_at == now and step.state.deadlines(CLOCKS).prevention == now + 48 * H
    assert step.state.flags == ("received_in_future",)
    # within the tolerance (clock skew): taken as given, not flagged
    near = add_message(None, "at_risk", "other", now + timedelta(minutes=4), now, CLOCKS)
    assert near.arrival.flags == () and near.arrival.at == now + timedelta(minutes=4)


def test_a_received_at_before_the_first_message_is_accepted_and_flagged() -> None:
    state = thread(("at_risk", "not_received", T0))
    step = add_message(state, "routine", "none", T0 - 5 * H, T0 + H, CLOCKS)
    assert step.arrival == type(step.arrival)(T0 - 5 * H, ("received_before_first_message",))
    assert step.state.first_contact_at == T0 - 5 * H  # the thread starts earlier than thought
    assert step.state.last_message_at == T0
    assert step.state.flags == ("received_before_first_message",)
    again = add_message(step.state, "routine", "none", T0 - 9 * H, T0 + H, CLOCKS)
    assert again.state.flags == ("received_before_first_message",)  # each flag once on the case


# -- agents' events -----------------------------------------------------------------------------------
def test_events_must_come_in_time_order() -> None:
    state = thread(("at_risk", "not_received", T0))
    state = add_event(state, 7, "replied", T0 + 2 * H, T0 + 3 * H, CLOCKS)
    assert state.last_event_at == T0 + 2 * H and state.status == "open"
    state = add_event(state, 7, "evidence_attached", T0 + 2 * H, T0 + 3 * H, CLOCKS)  # same time is fine
    with pytest.raises(CaseConflict, match="before case 7's last event"):
        add_event(state, 7, "replied", T0 + H, T0 + 3 * H, CLOCKS)
    with pytest.raises(CaseConflict, match="before case 7's first message"):
        add_event(thread(("at_risk", "other", T0)), 7, "replied", T0 - H, T0 + H, CLOCKS)


def test_a_resolved_case_takes_no_more_events() -> None:
    state = add_event(thread(("at_risk", "other", T0)), 3, "resolved", T0 + H, T0 + H, CLOCKS)
    kinds: tuple[AgentEventKind, ...] = ("replied", "evidence_attached", "resolved")
    for kind in kinds:
        with pytest.raises(CaseConflict, match="case 3 was resolved at 2026-11-27T10:30:00"):
            add_event(state, 3, kind, T0 + 2 * H, T0 + 2 * H, CLOCKS)


def test_an_event_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidCaseEvent, match="in the future"):
        add_event(thread(("at_risk", "other", T0)), 1, "replied", T0 + 2 * H, T0 + H, CLOCKS)


def test_higher_risk_follows_the_guide_order() -> None:
    assert higher_risk("routine", "at_risk") == "at_risk"
    assert higher_risk("claim_filed", "at_risk") == "claim_filed"
    assert higher_risk("routine", "routine") == "routine"
