"""The pure Label Studio shapes (loop.tasks): labeling config, tasks, priority order, annotation -> row."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loop.corrections import COLUMNS as CORRECTION_COLUMNS
from loop.corrections import add_pulled
from loop.tasks import (
    Rejection,
    annotation_to_row,
    export_to_rows,
    instructions,
    label_config,
    prioritize,
    reason,
    to_task,
)
from serving.labels import CLAIM_TYPES, RISKS, ClaimType, Risk, message_key
from serving.predlog import LoggedPrediction

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def logged(
    rid: str,
    text: str,
    risk: Risk = "at_risk",
    claim_type: ClaimType = "not_received",
    top: float = 0.9,
    needs_review: bool = False,
    keyword: tuple[str, str] | None = None,
    minutes: int = 0,
    feedback: tuple[Risk, ClaimType | None] | None = None,
) -> LoggedPrediction:
    rest = (1 - top) / 2
    scores: dict[str, float] = {r: (top if r == risk else rest) for r in RISKS}
    kw = keyword or (risk, claim_type)
    return LoggedPrediction(
        request_id=rid,
        created_at=T0 + timedelta(minutes=minutes),
        text=text,
        text_key=message_key(text),
        channel="amazon",
        order_id="171-2233445-6677889",
        received_at=T0,
        risk=risk,
        claim_type=claim_type,
        risk_scores=scores,
        claim_type_scores={c: 0.1 for c in CLAIM_TYPES},
        needs_review=needs_review,
        language="fr",
        keyword_risk=kw[0],
        keyword_claim_type=kw[1],
        model_version="v1",
        feedback_risk=feedback[0] if feedback else None,
        feedback_claim_type=feedback[1] if feedback else None,
        feedback_agent="marie" if feedback else None,
        feedback_at=T0 if feedback else None,
    )


# -- labeling config ----------------------------------------------------------------------------------
def test_label_config_has_the_guides_two_choice_groups_a_note_and_the_message() -> None:
    root = ET.fromstring(label_config())
    groups = {c.get("name"): [x.get("value") for x in c.iter("Choice")] for c in root.iter("Choices")}
    assert groups == {"risk": list(RISKS), "claim_type": list(CLAIM_TYPES)}
    assert all(c.get("toName") == "text" and c.get("choice") == "single-radio" for c in root.iter("Choices"))
    assert [(t.get("name"), t.get("value")) for t in root.iter("Text")] == [("text", "$text")]
    assert [t.get("name") for t in root.iter("TextArea")] == ["note"]


# -- tasks --------------------------------------------------------------------------------------------
def test_task_carries_the_models_prediction_as_a_pre_annotation() -> None:
    p = logged("r1", "Colis jamais reçu", risk="at_risk", claim_type="not_received", top=0.72)
    task = to_task(p)
    assert task["data"]["text"] == "Colis jamais reçu"
    assert task["data"]["request_id"] == "r1" and task["data"]["text_key"] == p.text_key
    assert task["data"]["model_risk"] == "at_risk" and task["data"]["language"] == "fr"
    [pred] = task["predictions"]
    assert pred["model_version"] == "v1" and pred["score"] == pytest.approx(0.72)
    chosen = {r["from_name"]: r["value"]["choices"] for r in pred["result"]}
    assert chosen == {"risk": ["at_risk"], "claim_type": ["not_received"]}
    assert all(r["to_name"] == "text" and r["type"] == "choices" for r in pred["result"])


def test_priority_misroutes_then_needs_review_then_disagreement_then_lowest_confidence() -> None:
    confident = logged("confident", "merci, bien reçu", risk="routine", claim_type="none", top=0.95)
    unsure = logged("unsure", "où est ma facture ?", risk="routine", claim_type="none", top=0.62)
    disagree = logged(
        "disagree",
        "not delivered yet but it is early",
        risk="routine",
        claim_type="none",
        top=0.97,
        keyword=("at_risk", "not_received"),
    )
    review = logged("review", "bof", risk="at_risk", top=0.55, needs_review=True)
    misroute = logged(
        "misroute",
        "il pacco non è mai arrivato",
        risk="routine",
        claim_type="none",
        top=0.99,
        feedback=("at_risk", "not_received"),
    )
    agreed = logged(
        "agreed",
        "I opened an A-to-Z claim",
        risk="claim_filed",
        claim_type="other",
        top=0.5,
        feedback=("claim_filed", "other"),
    )  # feedback that confirms the model: not a misroute
    order = prioritize([confident, unsure, disagree, review, misroute, agreed])
    assert [p.request_id for p in order] == ["misroute", "review", "disagree", "agreed", "unsure", "confident"]
    assert [reason(p) for p in order][:3] == ["misroute", "needs_review", "disagreement"]


def test_priority_sends_a_message_once_in_its_most_urgent_occurrence_and_skips_sent_ones() -> None:
    first = logged("a1", "Colis  jamais REÇU", top=0.9, minutes=0)
    again = logged("a2", "colis jamais reçu", top=0.9, minutes=5, feedback=("claim_filed", "not_received"))
    other = logged("b", "Where is my invoice?", risk="routine", claim_type="none", top=0.8)
    assert first.text_key == again.text_key
    assert [p.request_id for p in prioritize([first, again, other])] == ["a2", "b"]
    assert [p.request_id for p in prioritize([first, again, other], exclude_keys={first.text_key})] == ["b"]


# -- annotations -> rows ------------------------------------------------------------------------------
def choice(name: str, *values: str) -> dict[str, object]:
    return {"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": list(values)}}


def exported(
    task_id: int,
    result: list[dict[str, object]],
    cancelled: bool = False,
    ann_id: int = 0,
    data: dict[str, str] | None = None,
) -> tuple[dict[str, object], dict[str, object]]:
    p = logged(f"req{task_id}", f"Le colis {task_id} est arrivé cassé", risk="routine", claim_type="none")
    task = to_task(p) | {"id": task_id}
    if data:
        task["data"] = task["data"] | data
    ann = {
        "id": ann_id or task_id * 10,
        "completed_by": 7,
        "result": result,
        "was_cancelled": cancelled,
        "created_at": "2026-11-27T10:00:00Z",
        "updated_at": "2026-11-27T10:05:00Z",
    }
    task["annotations"] = [ann]
    return task, ann


def test_a_valid_annotation_becomes_a_data_row_with_provenance() -> None:
    task, ann = exported(
        3,
        [
            choice("risk", "at_risk"),
            choice("claim_type", "damaged_defective"),
            {
                "from_name": "note",
                "to_name": "text",
                "type": "textarea",
                "value": {"text": ["photo shows a broken box"]},
            },
        ],
    )
    row = annotation_to_row(task, ann, annotators={7: "reviewer@shop.example"})
    assert isinstance(row, dict)
    assert list(row) == list(CORRECTION_COLUMNS)
    assert {k: row[k] for k in ("text", "language", "risk", "claim_type")} == {
        "text": "Le colis 3 est arrivé cassé",
        "language": "fr",
        "risk": "at_risk",
        "claim_type": "damaged_defective",
    }
    assert row["source"] == "label-studio" and row["annotator"] == "reviewer@shop.example"
    assert row["labeled_at"] == "2026-11-27T10:05:00Z"
    assert (row["ls_task_id"], row["ls_annotation_id"], row["request_id"]) == ("3", "30", "req3")
    assert (row["model_risk"], row["model_claim_type"], row["model_version"]) == ("routine", "none", "v1")
    assert row["note"] == "photo shows a broken box"
    assert row["channel"] == "amazon" and row["order_id"] == "171-2233445-6677889"


@pytest.mark.parametrize(
    ("result", "cancelled", "why"),
    [
        ([choice("risk", "routine"), choice("claim_type", "none")], True, "skipped"),
        ([choice("risk", "at_risk"), choice("claim_type", "refund_maybe")], False, "unknown claim_type 'refund_maybe'"),
        ([choice("risk", "urgent"), choice("claim_type", "other")], False, "unknown risk 'urgent'"),
        ([choice("risk", "at_risk")], False, "missing claim_type choice"),
        ([], False, "missing risk choice"),
        ([choice("risk", "routine"), choice("claim_type", "not_received")], False, "inconsistent"),
        ([choice("risk", "at_risk", "routine"), choice("claim_type", "other")], False, "several risk choices"),
    ],
)
def test_unusable_annotations_are_rejected_with_their_reason(
    result: list[dict[str, object]], cancelled: bool, why: str
) -> None:
    task, ann = exported(4, result, cancelled=cancelled)
    out = annotation_to_row(task, ann)
    assert isinstance(out, Rejection)
    assert why in out.reason and (out.task_id, out.annotation_id) == (4, 40)
    assert "task 4, annotation 40" in str(out)


def test_language_comes_from_the_prediction_log_else_the_task_else_detection() -> None:
    result = [choice("risk", "routine"), choice("claim_type", "none")]
    task, ann = exported(5, result)
    assert annotation_to_row(task, ann, language="it")["language"] == "it"  # type: ignore[index]
    assert annotation_to_row(task, ann)["language"] == "fr"  # type: ignore[index]
    task, ann = exported(6, result, data={"language": "", "text": "Where is my parcel? It has not arrived yet."})
    assert annotation_to_row(task, ann)["language"] == "en"  # type: ignore[index]


def test_export_to_rows_and_merge_are_idempotent_and_keep_edits() -> None:
    good, _ = exported(1, [choice("risk", "routine"), choice("claim_type", "none")])
    skipped, _ = exported(2, [], cancelled=True)
    rows, rejected = export_to_rows([good, skipped, {"id": 9, "data": {"text": "x"}, "annotations": []}])
    assert len(rows) == 1 and [r.task_id for r in rejected] == [2]
    first = add_pulled([], rows)
    assert (first.added, first.updated, first.unchanged) == (1, 0, 0)
    again = add_pulled(first.rows, rows)
    assert (again.added, again.updated, again.unchanged, again.rows) == (0, 0, 1, first.rows)
    edited = [dict(rows[0], risk="at_risk", claim_type="other", labeled_at="2026-11-28T08:00:00Z")]
    after = add_pulled(first.rows, edited)
    assert (after.added, after.updated) == (0, 1) and after.rows[0]["risk"] == "at_risk"


def test_reviewers_get_the_labeling_guide_as_instructions(tmp_path: Path) -> None:
    html = instructions()
    assert "A-to-Z" in html and "claim_type" in html and html.startswith("<pre")
    guide = tmp_path / "guide.md"
    guide.write_text("Tier 1 <b>first</b> & fast")
    assert "Tier 1 &lt;b&gt;first&lt;/b&gt; &amp; fast" in instructions(guide)
    assert "docs/labeling-guide.md" in instructions(tmp_path / "missing.md")
