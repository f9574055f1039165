"""What every predictor returns, the model and keyword triage alike, so evaluations compare them 1:1."""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.labels import ClaimType, Risk, Tier, tier_of


@dataclass(frozen=True, slots=True)
class Prediction:
    risk: Risk
    claim_type: ClaimType
    risk_scores: dict[str, float] = field(default_factory=dict)
    claim_type_scores: dict[str, float] = field(default_factory=dict)
    needs_review: bool = False

    @property
    def tier(self) -> Tier:
        return tier_of(self.risk)
