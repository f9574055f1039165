"""POST /feedback: agents report what a ticket really was; bad reports get a clear 4xx and store nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.feedback import resolve_feedback
from serving.labels import CLAIM_TYPES, RISKS, ClaimType, Risk
from serving.prediction import Prediction
from serving.predlog import PredictionLog
from serving.schemas import ClassifyRequest
from serving.service import respond
from serving.settings import Settings
from tests.conftest import TrainedModel


@pytest.fixture
def app_and_log(triage_model: TrainedModel, tmp_path: Path) -> Iterator[tuple[TestClient, PredictionLog]]:
    from serving.app import create_app

    url = f"sqlite:///{tmp_path / 'triage.db'}"
    with TestClient(create_app(Settings(model=str(triage_model.folder), database_url=url))) as client:
        yield client, PredictionLog(url)


def logged(plog: PredictionLog, rid: str, risk: Risk, claim_type: ClaimType) -> str:
    """A prediction with known labels, recorded as the service records one."""
    pred = Prediction(
        risk, claim_type, {r: float(r == risk) for r in RISKS}, {c: float(c == claim_type) for c in CLAIM_TYPES}
    )
    res = respond(ClassifyRequest(text=f"message {rid}"), pred, "v-test", datetime.now(UTC), rid)
    plog.record([ClassifyRequest(text=f"message {rid}")], [res])
    return rid


def test_feedback_on_a_real_classification_is_stored_as_a_misroute(
    app_and_log: tuple[TestClient, PredictionLog],
) -> None:
    client, plog = app_and_log
    answer = client.post("/classify", json={"text": "Merci pour la facture, tout est parfait."}).json()
    real = ("claim_filed", "not_received") if answer["risk"] != "claim_filed" else ("routine", "none")
    res = client.post(
        "/feedback",
        json={"request_id": answer["request_id"], "risk": real[0], "claim_type": real[1], "agent": " marie.dupont "},
    )
    assert res.status_code == 201, res.text
    body = res.json()
    assert (body["risk"], body["claim_type"], body["agent"]) == (*real, "marie.dupont")
    assert (body["predicted_risk"], body["predicted_claim_type"]) == (answer["risk"], answer["claim_type"])
    assert body["misroute"] is True and body["model_version"] == answer["model_version"]
    [stored] = plog.feedback_for(answer["request_id"])
    assert (stored.id, stored.risk, stored.claim_type, stored.agent) == (body["feedback_id"], *real, "marie.dupont")
    row = plog.get(answer["request_id"])
    assert row is not None and (row.feedback_risk, row.feedback_claim_type) == real


@pytest.mark.parametrize(
    ("predicted", "given", "expected"),
    [
        (("at_risk", "not_received"), {"risk": "routine"}, ("routine", "none")),
        (("at_risk", "not_received"), {"risk": "claim_filed"}, ("claim_filed", "not_received")),
        (("routine", "none"), {"risk": "at_risk"}, ("at_risk", None)),
        (("routine", "none"), {"claim_type": "customs_fees"}, ("at_risk", "customs_fees")),
        (("claim_filed", "other"), {"claim_type": "damaged_defective"}, ("claim_filed", "damaged_defective")),
        (("at_risk", "other"), {"claim_type": "none"}, ("routine", "none")),
    ],
)
def test_half_a_report_is_completed_by_the_guide_and_the_prediction(
    app_and_log: tuple[TestClient, PredictionLog],
    predicted: tuple[Risk, ClaimType],
    given: dict[str, str],
    expected: tuple[str, str | None],
) -> None:
    client, plog = app_and_log
    rid = logged(plog, "r-half", *predicted)
    res = client.post("/feedback", json={"request_id": rid, "agent": "luca"} | given)
    assert res.status_code == 201, res.text
    assert (res.json()["risk"], res.json()["claim_type"]) == expected
    [stored] = plog.feedback_for(rid)
    assert (stored.risk, stored.claim_type) == expected


def test_a_report_that_agrees_with_the_model_is_not_a_misroute(app_and_log: tuple[TestClient, PredictionLog]) -> None:
    client, plog = app_and_log
    rid = logged(plog, "r-ok", "at_risk", "not_received")
    res = client.post("/feedback", json={"request_id": rid, "risk": "at_risk", "agent": "luca"})
    assert res.status_code == 201 and res.json()["misroute"] is False


def test_the_latest_report_wins(app_and_log: tuple[TestClient, PredictionLog]) -> None:
    client, plog = app_and_log
    rid = logged(plog, "r-twice", "routine", "none")
    for risk, claim in (("at_risk", "other"), ("claim_filed", "not_received")):
        assert (
            client.post(
                "/feedback", json={"request_id": rid, "risk": risk, "claim_type": claim, "agent": "ana"}
            ).status_code
            == 201
        )
    row = plog.get(rid)
    assert row is not None and (row.feedback_risk, row.feedback_claim_type) == ("claim_filed", "not_received")
    assert len(plog.feedback_for(rid)) == 2


def test_an_unknown_request_id_is_404(app_and_log: tuple[TestClient, PredictionLog]) -> None:
    client, plog = app_and_log
    res = client.post("/feedback", json={"request_id": "no-such-id", "risk": "routine", "agent": "ana"})
    assert res.status_code == 404
    assert "no-such-id" in res.json()["detail"]
    assert plog.counts()["feedback"] == 0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"risk": "urgent"}, "'claim_filed', 'at_risk' or 'routine'"),
        ({"claim_type": "refund"}, "not_received"),
        ({}, "give risk, claim_type or both"),
        ({"risk": "routine", "claim_type": "not_received"}, "inconsistent"),
        ({"risk": "at_risk", "claim_type": "none"}, "inconsistent"),
        ({"risk": "routine", "agent": ""}, "agent"),
        ({"risk": "routine", "agent": "   "}, "agent is blank"),
        ({"risk": "routine", "agent": None}, "agent"),
        ({"risk": "routine", "tier": 1}, "tier"),
    ],
)
def test_bad_reports_are_422_and_store_nothing(
    app_and_log: tuple[TestClient, PredictionLog], body: dict[str, object], says: str
) -> None:
    client, plog = app_and_log
    rid = logged(plog, "r-bad", "at_risk", "not_received")
    res = client.post("/feedback", json={"request_id": rid, "agent": "ana"} | body)
    assert res.status_code == 422, res.text
    assert says in res.text
    assert plog.counts()["feedback"] == 0


def test_a_missing_request_id_is_422(app_and_log: tuple[TestClient, PredictionLog]) -> None:
    client, _ = app_and_log
    res = client.post("/feedback", json={"risk": "routine", "agent": "ana"})
    assert res.status_code == 422 and "request_id" in res.text


@pytest.mark.parametrize(
    ("predicted", "given", "expected"),
    [
        (("routine", "none"), ("at_risk", "customs_fees"), ("at_risk", "customs_fees")),
        (("at_risk", "not_received"), ("routine", None), ("routine", "none")),
        (("at_risk", "not_received"), ("claim_filed", None), ("claim_filed", "not_received")),
        (("routine", "none"), ("at_risk", None), ("at_risk", None)),
        (("at_risk", "not_received"), (None, "none"), ("routine", "none")),
        (("claim_filed", "other"), (None, "damaged_defective"), ("claim_filed", "damaged_defective")),
        (("routine", "none"), (None, "damaged_defective"), ("at_risk", "damaged_defective")),
    ],
)
def test_feedback_is_completed_by_the_guides_rule_and_the_prediction(
    predicted: tuple[Risk, ClaimType],
    given: tuple[Risk | None, ClaimType | None],
    expected: tuple[Risk, ClaimType | None],
) -> None:
    assert resolve_feedback(*predicted, *given) == expected
