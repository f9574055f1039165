"""What an agent's feedback means: the labels a ticket really had, completed from the prediction.

Agents often say only half ("this is routine", "it's a customs problem"); the labeling guide's rule
(claim_type is `none` exactly when risk is `routine`) and the model's own answer fill in the rest.
"""

from __future__ import annotations

from serving.labels import TIER1_RISKS, ClaimType, Risk, consistent


def check_labels(risk: Risk | None, claim_type: ClaimType | None) -> None:
    """Raise ValueError unless at least one label is given and a given pair follows the guide."""
    if risk is None and claim_type is None:
        raise ValueError("give risk, claim_type or both: what the ticket really was")
    if risk is not None and claim_type is not None and not consistent(risk, claim_type):
        raise ValueError(
            f"claim_type {claim_type!r} is inconsistent with risk {risk!r}: claim_type is 'none' exactly "
            "when risk is 'routine'"
        )


def resolve_feedback(
    predicted_risk: Risk, predicted_claim_type: ClaimType, risk: Risk | None, claim_type: ClaimType | None
) -> tuple[Risk, ClaimType | None]:
    """The (risk, claim_type) the agent reported, completed by the guide's rule and the prediction.

    - both given: as given (they must be consistent);
    - only risk `routine`: claim_type `none`;
    - only a Tier-1 risk: the predicted ground if the model saw Tier 1, else None (not said: the
      reviewer picks it in Label Studio);
    - only claim_type `none`: risk `routine`;
    - only a ground: the predicted risk if it is Tier 1, else `at_risk`.
    """
    check_labels(risk, claim_type)
    if risk is not None and claim_type is not None:
        return risk, claim_type
    if risk is not None:
        if risk not in TIER1_RISKS:
            return risk, "none"
        return risk, predicted_claim_type if predicted_claim_type != "none" else None
    assert claim_type is not None
    if claim_type == "none":
        return "routine", "none"
    return (predicted_risk if predicted_risk in TIER1_RISKS else "at_risk"), claim_type


def is_misroute(predicted_risk: str, predicted_claim_type: str, risk: str, claim_type: str | None) -> bool:
    """Whether the reported labels differ from the prediction: the misroute signal (a reported risk with no
    ground differs only if the risk does)."""
    return risk != predicted_risk or (claim_type is not None and claim_type != predicted_claim_type)
