"""Request and response models of cases, replies and buyers (the `case`, `suggested_reply` and `buyer`
blocks of /classify, and the /cases and /replies routes)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.cases.policy import AgentEventKind, CaseFlag, CaseStatus, EventKind, RoutingReason
from serving.labels import ClaimType, Risk, Tier


class CaseSummary(BaseModel):
    """An order's case as it stands: the `case` block of /classify and a row of the queue."""

    case_id: int
    channel: str | None = Field(description="As the messages gave it (lower case); null if none did.")
    order_id: str
    status: CaseStatus
    message_count: int = Field(description="Messages about the order so far.")
    first_contact_at: datetime = Field(description="When the first message about the order was received.")
    last_message_at: datetime
    highest_risk: Risk = Field(description="The most severe risk the model gave any message of the case.")
    tier: Tier = Field(description="1 once any message was Tier 1.")
    prevention_deadline: datetime | None = Field(
        description="First Tier-1 contact + the prevention window: the buyer may file an A-to-Z claim from "
        "then. Null before any Tier-1 message and once a claim is filed."
    )
    response_deadline: datetime | None = Field(
        description="The first claim_filed message + the response window: answer Amazon with evidence by then."
    )
    next_deadline: datetime | None = Field(
        description="The response deadline if a claim is filed, else the prevention one."
    )
    claim_types: list[ClaimType] = Field(description="Grounds seen, in order of first appearance.")
    flags: list[CaseFlag] = Field(description="Odd message times seen (each kind once; the messages say which).")
    resolved_at: datetime | None = None


class CaseList(BaseModel):
    cases: list[CaseSummary]
    total: int = Field(description="Cases matching the filter, all pages.")
    limit: int
    offset: int


class CaseFeedback(BaseModel):
    risk: Risk
    claim_type: ClaimType | None
    agent: str
    created_at: datetime


class CaseMessage(BaseModel):
    """One message of the case's trail: what arrived, what the model said, how it was routed."""

    request_id: str
    received_at: datetime | None = Field(description="As the request gave it (UTC).")
    at: datetime = Field(description="The time the case's clocks use for it.")
    recorded_at: datetime = Field(description="When the service classified and recorded it.")
    text: str
    risk: Risk
    claim_type: ClaimType
    needs_review: bool
    language: str
    model_version: str
    tier: Tier = Field(description="The tier it was routed to.")
    routing_reason: RoutingReason
    flags: list[CaseFlag]
    feedback: list[CaseFeedback] = Field(description="Agents' reports on it (POST /feedback), oldest first.")


class CaseEventRequest(BaseModel):
    """An agent's action on a case: appended to its trail, never changed."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "replied", "agent": "marie.dupont", "reply_id": "not_received.fr"},
                {"kind": "evidence_attached", "agent": "luca", "note": "tracking + signed proof of delivery"},
                {"kind": "resolved", "agent": "marie.dupont", "note": "replacement shipped, buyer confirmed"},
            ]
        },
    )

    kind: AgentEventKind
    agent: str = Field(min_length=1, max_length=128, description="Who acted (name or id).")
    at: datetime | None = Field(
        default=None,
        description="When the agent acted (ISO 8601, UTC if no offset); default now. Not before the case's last event.",
    )
    note: str | None = Field(default=None, max_length=4000, description="What was done, attached or decided.")
    reply_id: str | None = Field(
        default=None, max_length=64, description="replied: the vetted reply sent (GET /replies); its text is kept."
    )
    buyer_name: str | None = Field(default=None, max_length=100, description="replied: the name in the reply.")

    @field_validator("agent")
    @classmethod
    def _agent_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("agent is blank: say who acted")
        return v.strip()

    @model_validator(mode="after")
    def _what_was_done(self) -> CaseEventRequest:
        if self.kind != "replied" and (self.reply_id is not None or self.buyer_name is not None):
            raise ValueError("reply_id and buyer_name go with kind 'replied' only")
        if self.kind == "replied" and not self.reply_id and not (self.note or "").strip():
            raise ValueError("a reply needs reply_id (a vetted reply) or a note saying what was sent")
        if self.kind == "evidence_attached" and not (self.note or "").strip():
            raise ValueError("say in note what evidence was attached")
        return self


class CaseEvent(BaseModel):
    event_id: int
    case_id: int
    kind: EventKind
    agent: str | None = Field(description="Null for what the service records itself (`reopened`).")
    at: datetime
    recorded_at: datetime
    note: str | None = None
    reply_id: str | None = None
    reply_text: str | None = Field(default=None, description="The reply as rendered when the event was recorded.")
    catalogue_sha256: str | None = None
    request_id: str | None = Field(default=None, description="`reopened`: the message that reopened the case.")


class CaseResponse(CaseSummary):
    """A case with its whole trail: every message and every event, in time order."""

    messages: list[CaseMessage]
    events: list[CaseEvent]


class SuggestedReply(BaseModel):
    """The vetted reply for this message (GET /replies/{id}?order_id=... renders it)."""

    id: str
    language: Literal["fr", "it", "en"]
    title: str


class ReplyResponse(BaseModel):
    id: str
    language: Literal["fr", "it", "en"]
    claim_types: list[ClaimType]
    risks: list[Risk]
    suggested_for: list[str] = Field(
        description="The `risk / claim_type` pairs /classify suggests it for, in its language (a reply that "
        "names its risk wins over one that does not)."
    )
    title: str
    text: str | None = Field(default=None, description="Rendered for the order given; null in the list.")
    catalogue_sha256: str


class ReplyList(BaseModel):
    replies: list[ReplyResponse]
    catalogue_sha256: str
    fallback_language: Literal["fr", "it", "en"]


class BuyerHistory(BaseModel):
    """What the service knows of the buyer (by the salted hash of buyer_id), this case left out."""

    earlier_cases: int
    earlier_tier1_cases: int
    earlier_claims: int = Field(description="Earlier cases with a claim_filed message.")
    repeat_claimant: bool = Field(description="earlier_claims reached TRIAGE_REPEAT_CLAIMANT_CLAIMS.")
