"""Label Studio shapes, in pure functions (no I/O): the labeling config, logged prediction -> task with a
pre-annotation, which tasks a human sees first, and exported annotation -> corrections row (or a rejection).

`loop.labelstudio` moves these shapes over HTTP; `loop.push` and `loop.pull` wire them to the prediction log
and data/corrections.csv (`loop.corrections`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from serving.labels import CLAIM_TYPES, RISKS, consistent, message_key
from serving.language import detect_language
from serving.predlog import LoggedPrediction

SOURCE = "label-studio"
TEXT, RISK, CLAIM_TYPE, NOTE, HINT = "text", "risk", "claim_type", "note", "hint"

RISK_HINTS = {
    "claim_filed": "An A-to-Z claim already exists (Amazon's notice, or the buyer says they opened one).",
    "at_risk": "No claim yet, but grounds for one (late past the promised date, damaged, wrong item, "
    "no refund, customs fees) or a threat to go to Amazon.",
    "routine": "Everything else: tracking before the promised date, invoices, product questions, thanks.",
}
CLAIM_TYPE_HINTS = {
    "not_received": "Not delivered, late past the promised window, delivered but missing.",
    "damaged_defective": "Broken in transit, defective, stopped working.",
    "not_as_described": "Wrong item, size or colour, materially different, counterfeit.",
    "return_refund": "Returned and no refund; return-label or return-cost disputes.",
    "customs_fees": "Buyer charged import duties or customs fees.",
    "other": "A claim or threat whose ground is none of the above or not stated.",
    "none": "Routine message (always and only with risk = routine).",
}

# why a task is sent, most urgent first
REASONS = ("misroute", "needs_review", "disagreement", "low_confidence")


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "labeling-guide.md"


def instructions(guide: Path = GUIDE) -> str:
    """The labeling guide as the project's reviewer instructions (HTML, shown before each task), so reviewers
    label by the same contract as the data; a pointer to it when the guide is not beside the code."""
    if not guide.is_file():
        return "<p>Label by the labeling guide: docs/labeling-guide.md in the triage repository.</p>"
    return f'<pre style="white-space: pre-wrap">{escape(guide.read_text(encoding="utf-8"))}</pre>'


def label_config() -> str:
    """The project's labeling config: the message, the two label groups of the guide, a reviewer note."""

    def choices(name: str, labels: Sequence[str], hints: Mapping[str, str], title: str) -> str:
        items = "\n".join(f"    <Choice value={quoteattr(v)} hint={quoteattr(hints[v])}/>" for v in labels)
        return (
            f'  <Header value={quoteattr(title)} size="5"/>\n'
            f'  <Choices name="{name}" toName="{TEXT}" choice="single-radio" required="true" '
            f'showInline="true">\n{items}\n  </Choices>'
        )

    return "\n".join(
        [
            "<View>",
            f'  <Header value="${HINT}" size="6"/>',
            f'  <Text name="{TEXT}" value="${TEXT}"/>',
            choices(RISK, RISKS, RISK_HINTS, "Risk (A-to-Z): see the labeling guide"),
            choices(CLAIM_TYPE, CLAIM_TYPES, CLAIM_TYPE_HINTS, "Claim type: none exactly when the risk is routine"),
            '  <Header value="Note for the data team (optional)" size="5"/>',
            f'  <TextArea name="{NOTE}" toName="{TEXT}" rows="2" maxSubmissions="1" editable="true" '
            'placeholder="Why this label, or what is unclear"/>',
            "</View>",
        ]
    )


# -- push: which messages, in which order, as which tasks ------------------------------------------
def confidence(p: LoggedPrediction) -> float:
    """The model's confidence in its answer: the top risk probability."""
    return max(p.risk_scores.values()) if p.risk_scores else 0.0


def reason(p: LoggedPrediction) -> str:
    """Why this message needs a human (the first of REASONS that applies)."""
    if p.misroute:
        return "misroute"
    if p.needs_review:
        return "needs_review"
    if p.keyword_risk != p.risk:
        return "disagreement"
    return "low_confidence"


def prioritize(preds: Iterable[LoggedPrediction], exclude_keys: Iterable[str] = ()) -> list[LoggedPrediction]:
    """One prediction per message (its most urgent occurrence), most urgent first: misroutes reported by
    agents, then needs_review, then model vs keyword disagreement, then the rest by lowest confidence.

    Within a group, lower confidence first, then older first. Messages whose key is in `exclude_keys`
    (already sent) are left out.
    """
    skip = set(exclude_keys)

    def urgency(p: LoggedPrediction) -> tuple[int, float, str, str]:
        return REASONS.index(reason(p)), confidence(p), p.created_at.isoformat(), p.request_id

    best: dict[str, LoggedPrediction] = {}
    for p in preds:
        key = p.text_key or message_key(p.text)
        if key in skip:
            continue
        if key not in best or urgency(p) < urgency(best[key]):
            best[key] = p
    return sorted(best.values(), key=urgency)


def _choice(from_name: str, value: str) -> dict[str, Any]:
    return {"from_name": from_name, "to_name": TEXT, "type": "choices", "value": {"choices": [value]}}


def hint(p: LoggedPrediction) -> str:
    """One line above the message telling the reviewer why it is here and what was said about it."""
    parts = [
        f"why: {reason(p).replace('_', ' ')}",
        f"model: {p.risk} / {p.claim_type} ({confidence(p):.2f})",
        f"keywords: {p.keyword_risk} / {p.keyword_claim_type}",
    ]
    if p.feedback_risk is not None:
        parts.append(f"agent {p.feedback_agent}: {p.feedback_risk} / {p.feedback_claim_type or '?'}")
    return " | ".join(parts)


def to_task(p: LoggedPrediction) -> dict[str, Any]:
    """A Label Studio task for a logged prediction, the model's answer as its pre-annotation."""
    data = {
        TEXT: p.text,
        HINT: hint(p),
        "text_key": p.text_key or message_key(p.text),
        "request_id": p.request_id,
        "language": p.language,
        "channel": p.channel or "",
        "order_id": p.order_id or "",
        "received_at": p.received_at.isoformat() if p.received_at else "",
        "reason": reason(p),
        "model_risk": p.risk,
        "model_claim_type": p.claim_type,
        "model_version": p.model_version,
        "agent_risk": p.feedback_risk or "",
        "agent_claim_type": p.feedback_claim_type or "",
        "agent": p.feedback_agent or "",
    }
    return {
        "data": data,
        "predictions": [
            {
                "model_version": p.model_version,
                "score": round(confidence(p), 4),
                "result": [_choice(RISK, p.risk), _choice(CLAIM_TYPE, p.claim_type)],
            }
        ],
    }


# -- pull: exported annotations -> rows --------------------------------------------------------------
@dataclass(frozen=True)
class Rejection:
    task_id: int | None
    annotation_id: int | None
    reason: str

    def __str__(self) -> str:
        return f"task {self.task_id}, annotation {self.annotation_id}: {self.reason}"


def _chosen(result: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    values: list[str] = []
    for item in result:
        if item.get("from_name") == name and item.get("type") == "choices":
            values.extend(str(v) for v in (item.get("value") or {}).get("choices") or [])
    return values


def _note(result: Sequence[Mapping[str, Any]]) -> str:
    for item in result:
        if item.get("from_name") == NOTE and item.get("type") == "textarea":
            return " ".join(str(t) for t in (item.get("value") or {}).get("text") or []).strip()
    return ""


def _single(result: Sequence[Mapping[str, Any]], name: str, allowed: Sequence[str]) -> tuple[str | None, str]:
    """(label, "") or (None, why it is not usable)."""
    values = _chosen(result, name)
    if not values:
        return None, f"missing {name} choice"
    if len(values) > 1:
        return None, f"several {name} choices {values}"
    if values[0] not in allowed:
        return None, f"unknown {name} {values[0]!r} (expected one of {', '.join(allowed)})"
    return values[0], ""


def annotation_to_row(
    task: Mapping[str, Any],
    annotation: Mapping[str, Any],
    annotators: Mapping[int, str] | None = None,
    language: str | None = None,
) -> dict[str, str] | Rejection:
    """A corrections row (`loop.corrections.COLUMNS`) for one exported annotation, or why it is not usable.

    `annotators` maps Label Studio user ids to e-mails; `language` overrides the task's (the prediction
    log's); without either the message's language is detected.
    """
    task_id, ann_id = task.get("id"), annotation.get("id")
    data: Mapping[str, Any] = task.get("data") or {}

    def reject(why: str) -> Rejection:
        return Rejection(task_id, ann_id, why)

    if annotation.get("was_cancelled"):
        return reject("skipped (cancelled) by the reviewer")
    text = str(data.get(TEXT) or "").strip()
    if not text:
        return reject("the task has no text")
    result = annotation.get("result") or []
    risk, why_risk = _single(result, RISK, RISKS)
    claim_type, why_claim = _single(result, CLAIM_TYPE, CLAIM_TYPES)
    problems = [w for w in (why_risk, why_claim) if w]
    if problems:
        return reject("; ".join(problems))
    assert risk is not None and claim_type is not None
    if not consistent(risk, claim_type):
        return reject(
            f"claim_type {claim_type!r} inconsistent with risk {risk!r} "
            "(claim_type is 'none' exactly when risk is 'routine')"
        )
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):
        annotator = str(who.get("email") or who.get("id") or "")
    else:
        annotator = (annotators or {}).get(who, str(who)) if who is not None else ""
    lang = language or str(data.get("language") or "") or detect_language(text)
    model = _model_prediction(task, data)
    return {
        "text": text,
        "language": lang,
        "risk": risk,
        "claim_type": claim_type,
        "channel": str(data.get("channel") or ""),
        "order_id": str(data.get("order_id") or ""),
        "received_at": str(data.get("received_at") or ""),
        "source": SOURCE,
        "annotator": annotator,
        "labeled_at": str(annotation.get("updated_at") or annotation.get("created_at") or ""),
        "ls_task_id": str(task_id),
        "ls_annotation_id": str(ann_id),
        "request_id": str(data.get("request_id") or ""),
        "model_risk": model[0],
        "model_claim_type": model[1],
        "model_version": model[2],
        "note": _note(result),
    }


def _model_prediction(task: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[str, str, str]:
    """(risk, claim_type, model_version) the model had said: from the task data, else its prediction."""
    if data.get("model_risk"):
        return (str(data["model_risk"]), str(data.get("model_claim_type") or ""), str(data.get("model_version") or ""))
    for pred in task.get("predictions") or []:
        if isinstance(pred, Mapping) and pred.get("result"):
            r, c = _chosen(pred["result"], RISK), _chosen(pred["result"], CLAIM_TYPE)
            return (r[0] if r else "", c[0] if c else "", str(pred.get("model_version") or ""))
    return "", "", ""


def export_to_rows(
    tasks: Iterable[Mapping[str, Any]],
    annotators: Mapping[int, str] | None = None,
    languages: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, str]], list[Rejection]]:
    """Every annotation of an exported project as a row or a rejection (tasks without any are ignored).

    `languages` maps request ids to the language the prediction log recorded.
    """
    rows: list[dict[str, str]] = []
    rejected: list[Rejection] = []
    for task in tasks:
        request_id = str((task.get("data") or {}).get("request_id") or "")
        for ann in task.get("annotations") or []:
            out = annotation_to_row(task, ann, annotators, (languages or {}).get(request_id))
            if isinstance(out, Rejection):
                rejected.append(out)
            else:
                rows.append(out)
    return rows, rejected
