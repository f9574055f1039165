"""The label sets and routing policy of ../shared/labeling-guide.md, in one place.

Training imports these too, so the model, the data checks and the service agree on every name.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

RISKS: Final = ("claim_filed", "at_risk", "routine")
CLAIM_TYPES: Final = (
    "not_received",
    "damaged_defective",
    "not_as_described",
    "return_refund",
    "customs_fees",
    "other",
    "none",
)
# claim types of a Tier-1 message (everything but `none`): what the claim-type head predicts
GROUNDS: Final = CLAIM_TYPES[:-1]
LANGUAGES: Final = ("fr", "it", "en")
CHANNELS: Final = ("amazon", "shopify", "tiktok", "ebay", "email", "other")

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


def tier_of(risk: str) -> int:
    """Tier 1 (escalation, 1-hour SLA) for claim_filed and at_risk, Tier 2 otherwise."""
    return 1 if risk in TIER1_RISKS else 2


def consistent(risk: str, claim_type: str) -> bool:
    """The guide's rule: claim_type is `none` exactly when risk is `routine`."""
    return (claim_type == "none") == (risk == "routine")
