"""Request and response models of the HTTP API (they document the OpenAPI page)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Risk = Literal["claim_filed", "at_risk", "routine"]
ClaimType = Literal[
    "not_received", "damaged_defective", "not_as_described", "return_refund", "customs_fees", "other", "none"
]
Language = Literal["fr", "it", "en", "other"]

MAX_TEXT_CHARS = 20_000
MAX_BATCH = 64


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False,
                              json_schema_extra={"examples": [{
                                  "text": "Bonjour, commande 171-2233445-6677889 toujours pas reçue, "
                                          "livraison prévue le 12 mars. Je vais ouvrir un litige A à Z.",
                                  "channel": "amazon", "order_id": "171-2233445-6677889",
                                  "received_at": "2026-11-27T09:30:00Z"}]})

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="The buyer's or Amazon's message.")
    channel: str | None = Field(default=None, max_length=64, description="amazon, shopify, tiktok, ebay, email...")
    order_id: str | None = Field(default=None, max_length=64)
    received_at: datetime | None = Field(
        default=None, description="When the message arrived (ISO 8601; UTC if no offset). SLA runs from here."
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank: send the message body")
        return v


class KeywordTriageResult(BaseModel):
    tier: Literal[1, 2]
    risk: Risk
    claim_type: ClaimType


class ClassifyResponse(BaseModel):
    request_id: str
    risk: Risk
    risk_scores: dict[str, float]
    claim_type: ClaimType
    claim_type_scores: dict[str, float]
    tier: Literal[1, 2]
    queue: str
    tags: list[str]
    sla_due_at: datetime
    evidence: list[str] = Field(description="What a Tier-1 agent gathers for this claim type (labeling guide).")
    language: Language
    needs_review: bool
    keyword_triage: KeywordTriageResult
    model_version: str


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[ClassifyRequest] = Field(min_length=1, max_length=MAX_BATCH,
                                            description=f"1 to {MAX_BATCH} messages.")


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


class ErrorResponse(BaseModel):
    detail: str | list[dict[str, object]]
