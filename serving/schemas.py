"""Request and response models of the HTTP API (they document the OpenAPI page)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.cases.policy import RoutingReason
from serving.cases.schemas import BuyerHistory, CaseSummary, SuggestedReply
from serving.feedback import check_labels
from serving.labels import ClaimType, Language, Risk, Tier

MAX_TEXT_CHARS = 20_000
MAX_BATCH = 64


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=False,
        json_schema_extra={
            "examples": [
                {
                    "text": "Bonjour, commande 171-2233445-6677889 toujours pas reçue, "
                    "livraison prévue le 12 mars. Je vais ouvrir un litige A à Z.",
                    "channel": "amazon",
                    "order_id": "171-2233445-6677889",
                    "received_at": "2026-11-27T09:30:00Z",
                }
            ]
        },
    )

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="The buyer's or Amazon's message.")
    channel: str | None = Field(default=None, max_length=64, description="amazon, shopify, tiktok, ebay, email...")
    order_id: str | None = Field(default=None, max_length=64)
    received_at: datetime | None = Field(
        default=None, description="When the message arrived (ISO 8601; UTC if no offset). SLA runs from here."
    )
    buyer_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="The buyer's id on the channel (optional): stored only as a salted hash, to count their "
        "earlier cases and claims (`buyer`).",
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank: send the message body")
        return v


class KeywordTriageResult(BaseModel):
    tier: Tier
    risk: Risk
    claim_type: ClaimType


class ClassifyResponse(BaseModel):
    request_id: str
    risk: Risk
    risk_scores: dict[str, float]
    claim_type: ClaimType
    claim_type_scores: dict[str, float]
    tier: Tier
    queue: str
    tags: list[str]
    sla_due_at: datetime
    evidence: list[str] = Field(description="What a Tier-1 agent gathers for this claim type (labeling guide).")
    language: Language
    needs_review: bool
    keyword_triage: KeywordTriageResult
    model_version: str
    routing_reason: RoutingReason = Field(
        default="message",
        description="`escalated_by_case`: the message alone is Tier 2, but its order's case is open and Tier 1.",
    )
    case: CaseSummary | None = Field(
        default=None, description="The order's case (messages sharing channel and order_id); null without order_id."
    )
    suggested_reply: SuggestedReply | None = Field(
        default=None, description="The vetted reply for this message, by risk, claim type and language."
    )
    buyer: BuyerHistory | None = Field(default=None, description="The buyer's earlier cases; null without buyer_id.")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[ClassifyRequest] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} messages."
    )


class BatchResponse(BaseModel):
    results: list[ClassifyResponse]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model_version: str


class VersionResponse(BaseModel):
    service: str
    model_version: str
    variant: str
    model_source: str
    registry_version: str | None = None
    encoder: str
    created_at: str


class FieldError(BaseModel):
    field: str = Field(description="Where: a dotted path in the body (`messages.3.text`), or `body`.")
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="Which kind of problem (pydantic's error type).")


class ErrorResponse(BaseModel):
    """Every error answer: what to fix; for validation errors also the (first) field and every problem."""

    detail: str = Field(description="What went wrong and what to do about it.")
    field: str | None = Field(default=None, description="The first invalid field (validation errors).")
    errors: list[FieldError] | None = Field(default=None, description="Every problem (validation errors).")


class FeedbackRequest(BaseModel):
    """An agent's report of what a classified ticket really was (the misroute signal)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "request_id": "3f2b9c0e8a4d4e1f9b7a6c5d4e3f2a1b",
                    "risk": "at_risk",
                    "claim_type": "not_received",
                    "agent": "marie.dupont",
                }
            ]
        },
    )

    request_id: str = Field(min_length=1, max_length=64, description="The request_id /classify answered.")
    risk: Risk | None = Field(default=None, description="The real risk (optional if claim_type is given).")
    claim_type: ClaimType | None = Field(
        default=None,
        description="The real claim type (optional: `routine` implies `none`; a ground alone "
        "keeps the predicted Tier-1 risk, else `at_risk`).",
    )
    agent: str = Field(min_length=1, max_length=128, description="Who reports it (name or id).")

    @field_validator("agent")
    @classmethod
    def _agent_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("agent is blank: say who reports it")
        return v.strip()

    @model_validator(mode="after")
    def _labels(self) -> FeedbackRequest:
        check_labels(self.risk, self.claim_type)
        return self


class FeedbackResponse(BaseModel):
    feedback_id: int
    request_id: str
    risk: Risk
    claim_type: ClaimType | None = Field(
        description="None when the agent gave a Tier-1 risk but no ground "
        "and the model saw none: the reviewer picks it."
    )
    agent: str
    predicted_risk: Risk
    predicted_claim_type: ClaimType
    misroute: bool = Field(description="The reported labels differ from the prediction.")
    model_version: str
    created_at: datetime
