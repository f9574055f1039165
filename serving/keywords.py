"""Keyword triage: the rule system `triage` replaces, kept as a baseline and shown in every answer."""

from __future__ import annotations

import re
from collections.abc import Sequence

from serving.labels import ClaimType, Risk
from serving.prediction import Prediction

# (pattern, risk, claim_type): the first match wins. Matching is case-insensitive, on the raw text,
# exactly like the helpdesk rules it reproduces (no accent folding, no stemming).
RULES: tuple[tuple[str, Risk, ClaimType], ...] = (
    (r"a-to-z|a à z|dalla a alla z", "claim_filed", "other"),
    (r"not delivered|non livré|non consegnato", "at_risk", "not_received"),
    (r"not as described|non conforme à la description|non come descritto", "at_risk", "not_as_described"),
)
_COMPILED = tuple((re.compile(p, re.IGNORECASE), r, c) for p, r, c in RULES)


def keyword_triage(text: str) -> Prediction:
    """Tier 1 when a keyword matches, else Tier 2 (routine)."""
    for pattern, risk, claim_type in _COMPILED:
        if pattern.search(text):
            return Prediction(risk=risk, claim_type=claim_type)
    return Prediction(risk="routine", claim_type="none")


class KeywordTriage:
    """Keyword rules behind the same interface as the model."""

    name = "keywords"

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return [keyword_triage(t) for t in texts]
