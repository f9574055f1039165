"""What every predictor returns, the model and keyword triage alike, so evaluations compare them 1:1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from serving.labels import tier_of


@dataclass(frozen=True, slots=True)
class Prediction:
    risk: str
    claim_type: str
    risk_scores: dict[str, float] = field(default_factory=dict)
    claim_type_scores: dict[str, float] = field(default_factory=dict)
    needs_review: bool = False

    @property
    def tier(self) -> int:
        return tier_of(self.risk)


class Predictor(Protocol):
    name: str

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...
