"""The label sets, routing policy and message identity of docs/labeling-guide.md, in one place.

The `Literal` types are the label sets: the API schemas use them, and the tuples below are derived from
them, so the model, the data checks, the prediction log and the service agree on every name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import timedelta
from typing import Final, Literal, get_args

Risk = Literal["claim_filed", "at_risk", "routine"]
ClaimType = Literal[
    "not_received", "damaged_defective", "not_as_described", "return_refund", "customs_fees", "other", "none"
]
Language = Literal["fr", "it", "en", "other"]
Tier = Literal[1, 2]

RISKS: Final[tuple[Risk, ...]] = get_args(Risk)  # most severe first
CLAIM_TYPES: Final[tuple[ClaimType, ...]] = get_args(ClaimType)
# claim types of a Tier-1 message (everything but `none`): what the claim-type head predicts
GROUNDS: Final[tuple[ClaimType, ...]] = CLAIM_TYPES[:-1]
LANGUAGES: Final = ("fr", "it", "en")  # the languages the model is built for

TIER1_RISKS: Final = frozenset({"claim_filed", "at_risk"})
SLA: Final = {1: timedelta(hours=1), 2: timedelta(hours=24)}
QUEUES: Final = {1: "tier1-escalation", 2: "tier2-general"}
CRISIS_TAG: Final = "CRISIS: A-to-Z"

EVIDENCE: Final[dict[str, tuple[str, ...]]] = {
    "not_received": (
        "tracking number",
        "carrier",
        "delivery date and time",
        "proof of delivery / signature",
    ),
    "damaged_defective": ("photos", "inventory/dispatch records", "packaging"),
    "not_as_described": ("listing page", "photos", "inventory records", "supplier invoices"),
    "return_refund": ("return tracking", "refund record", "return policy"),
    "customs_fees": ("shipping terms", "customs documents", "listing's delivery terms"),
    "other": ("full message history",),
    "none": (),
}


def tier_of(risk: str) -> Tier:
    """Tier 1 (escalation, 1-hour SLA) for claim_filed and at_risk, Tier 2 otherwise."""
    return 1 if risk in TIER1_RISKS else 2


def higher_risk(a: Risk, b: Risk) -> Risk:
    """The more severe of two risks, in the order of `RISKS`: claim_filed, then at_risk, then routine."""
    return a if RISKS.index(a) <= RISKS.index(b) else b


def consistent(risk: str, claim_type: str) -> bool:
    """The guide's rule: claim_type is `none` exactly when risk is `routine`."""
    return (claim_type == "none") == (risk == "routine")


def normalize_message(text: str) -> str:
    """The form every copy of one message shares: NFKC, case-folded, runs of whitespace collapsed."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def message_key(text: str) -> str:
    """The identity of a message (sha256 of its normalised form).

    One rule for everything that asks "is this the same message?": the prediction log (never send a
    message to Label Studio twice), retraining (a correction overrides the seed label of the same message;
    corrections of test messages are held out) and training (rows also in the test split are left out).
    """
    return hashlib.sha256(normalize_message(text).encode("utf-8")).hexdigest()
