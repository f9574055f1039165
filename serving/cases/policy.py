"""The case policy, pure: what one more message or one agent event does to an order's case.

A case is every message that shares (channel, order_id). Its two clocks (docs/cases.md):
- the **prevention window**: the first Tier-1 message (by the model's label) starts it; the buyer may file an
  A-to-Z claim from `first_tier1_at + prevention`. It no longer applies once a claim is filed.
- the **response deadline**: the first `claim_filed` message (Amazon's notification, or the buyer saying they
  filed) starts it; the seller must answer Amazon by `claim_filed_at + response`.

Routing: while a case is open and Tier 1, every later message about the order goes to Tier 1 too
(`escalated_by_case`), until an agent resolves the case. A Tier-1 message on a resolved case reopens it, so
a later claim always wins. Message labels stay what the model said: only the routing changes.

Times: a message counts at its `received_at` (UTC if it has no offset), or at arrival if it has none. A
`received_at` in the future (beyond a tolerance) counts at arrival instead; one before the case's first
message is accepted as given. Both are flagged on the case.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Literal

from serving.clock import as_utc
from serving.errors import TriageError
from serving.labels import ClaimType, Risk, Tier, higher_risk, tier_of
from serving.settings import Settings

CaseStatus = Literal["open", "resolved"]
CaseFlag = Literal["received_in_future", "received_before_first_message"]
RoutingReason = Literal["message", "escalated_by_case"]
AgentEventKind = Literal["replied", "evidence_attached", "resolved"]  # what agents record
EventKind = Literal["replied", "evidence_attached", "resolved", "reopened"]  # + what the service records

REPEAT_CLAIMANT_TAG: Final = "repeat_claimant"


class CaseNotFound(TriageError):
    """No case has this id."""


class CaseConflict(TriageError):
    """An event the case's history does not allow (out of order, or on a resolved case)."""


class InvalidCaseEvent(TriageError):
    """An event that cannot be right whatever the case (a time in the future)."""


@dataclass(frozen=True)
class CaseClocks:
    """How long each clock runs, and how far in the future a time may be before it is flagged."""

    prevention: timedelta
    response: timedelta
    future_tolerance: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> CaseClocks:
        return cls(
            prevention=timedelta(hours=settings.case_prevention_hours),
            response=timedelta(hours=settings.case_response_hours),
            future_tolerance=timedelta(seconds=settings.case_future_tolerance_s),
        )


@dataclass(frozen=True)
class Deadlines:
    prevention: datetime | None  # the buyer may file an A-to-Z claim from here (no claim filed yet)
    response: datetime | None  # answer Amazon by here (a claim is filed)

    @property
    def next(self) -> datetime | None:
        """The deadline the queue sorts by: the response deadline once a claim is filed, else the prevention one."""
        return self.response or self.prevention


@dataclass(frozen=True)
class CaseState:
    """What the service keeps about a case between messages."""

    status: CaseStatus
    message_count: int
    first_contact_at: datetime
    last_message_at: datetime
    highest_risk: Risk
    first_tier1_at: datetime | None  # the first message the model put in Tier 1
    claim_filed_at: datetime | None  # the first `claim_filed` message
    claim_types: tuple[ClaimType, ...]  # grounds seen, in order of first appearance
    flags: tuple[CaseFlag, ...]  # each flag once
    resolved_at: datetime | None = None
    last_event_at: datetime | None = None

    @property
    def tier(self) -> Tier:
        """Tier 1 once any message of the case was Tier 1."""
        return tier_of(self.highest_risk)

    @property
    def escalated(self) -> bool:
        """Later messages route to Tier 1 whatever they say."""
        return self.status == "open" and self.tier == 1

    def deadlines(self, clocks: CaseClocks) -> Deadlines:
        response = self.claim_filed_at + clocks.response if self.claim_filed_at else None
        prevention = (
            self.first_tier1_at + clocks.prevention if self.first_tier1_at and self.claim_filed_at is None else None
        )
        return Deadlines(prevention=prevention, response=response)


@dataclass(frozen=True)
class Arrival:
    at: datetime  # the time the clocks use for this message
    flags: tuple[CaseFlag, ...]


@dataclass(frozen=True)
class Routing:
    tier: Tier
    reason: RoutingReason
    reopened: bool  # the message reopened a resolved case


@dataclass(frozen=True)
class Step:
    """What one message did: the case after it, how the message is routed, when it counts."""

    state: CaseState
    routing: Routing
    arrival: Arrival


def arrival_of(
    received_at: datetime | None, now: datetime, first_contact_at: datetime | None, clocks: CaseClocks
) -> Arrival:
    """When a message counts for the clocks, and what is odd about its time."""
    if received_at is None:
        return Arrival(now, ())
    received = as_utc(received_at)
    if received > now + clocks.future_tolerance:
        return Arrival(now, ("received_in_future",))
    if first_contact_at is not None and received < first_contact_at:
        return Arrival(received, ("received_before_first_message",))
    return Arrival(received, ())


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return min(a, b)


def add_message(
    state: CaseState | None,
    risk: Risk,
    claim_type: ClaimType,
    received_at: datetime | None,
    now: datetime,
    clocks: CaseClocks,
) -> Step:
    """The case after one more message with the model's `risk` and `claim_type` (None: the first message)."""
    arrival = arrival_of(received_at, now, state.first_contact_at if state else None, clocks)
    at, tier = arrival.at, tier_of(risk)
    grounds: tuple[ClaimType, ...] = () if claim_type == "none" else (claim_type,)
    if state is None:
        first = CaseState(
            status="open",
            message_count=1,
            first_contact_at=at,
            last_message_at=at,
            highest_risk=risk,
            first_tier1_at=at if tier == 1 else None,
            claim_filed_at=at if risk == "claim_filed" else None,
            claim_types=grounds,
            flags=arrival.flags,
        )
        return Step(first, Routing(tier, "message", reopened=False), arrival)
    reopened = state.status == "resolved" and tier == 1
    escalated = state.escalated and tier == 2
    after = replace(
        state,
        status="open" if reopened else state.status,
        message_count=state.message_count + 1,
        first_contact_at=min(state.first_contact_at, at),
        last_message_at=max(state.last_message_at, at),
        highest_risk=higher_risk(state.highest_risk, risk),
        first_tier1_at=_earliest(state.first_tier1_at, at if tier == 1 else None),
        claim_filed_at=_earliest(state.claim_filed_at, at if risk == "claim_filed" else None),
        claim_types=state.claim_types + tuple(g for g in grounds if g not in state.claim_types),
        flags=state.flags + tuple(f for f in arrival.flags if f not in state.flags),
        resolved_at=None if reopened else state.resolved_at,
    )
    routing = Routing(1 if escalated else tier, "escalated_by_case" if escalated else "message", reopened)
    return Step(after, routing, arrival)


def add_event(
    state: CaseState, case_id: int, kind: AgentEventKind, at: datetime, now: datetime, clocks: CaseClocks
) -> CaseState:
    """The case after an agent's event at `at`; raises if the case's history does not allow it."""
    at = as_utc(at)
    if at > now + clocks.future_tolerance:
        raise InvalidCaseEvent(
            f"the event time {at.isoformat()} is in the future (now {now.isoformat()}): give when the agent acted"
        )
    if state.status == "resolved":
        when = state.resolved_at.isoformat() if state.resolved_at else "earlier"
        raise CaseConflict(
            f"case {case_id} was resolved at {when}: it takes no more events (a new Tier-1 message about the "
            "order reopens it)"
        )
    if at < state.first_contact_at:
        raise CaseConflict(
            f"the event time {at.isoformat()} is before case {case_id}'s first message "
            f"({state.first_contact_at.isoformat()})"
        )
    if state.last_event_at is not None and at < state.last_event_at:
        raise CaseConflict(
            f"the event time {at.isoformat()} is before case {case_id}'s last event "
            f"({state.last_event_at.isoformat()}): events are appended in time order"
        )
    resolved = kind == "resolved"
    return replace(
        state,
        status="resolved" if resolved else state.status,
        resolved_at=at if resolved else state.resolved_at,
        last_event_at=at,
    )
