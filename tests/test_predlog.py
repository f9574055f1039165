"""The prediction log: every classification is recorded before it is answered, and survives a crash."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.labels import message_key
from serving.predlog import PredictionLog
from serving.settings import Settings
from tests.conftest import TrainedModel
from tests.processes import clean_env, free_port

MESSAGE = {
    "text": "Bonjour, commande 171-2233445-6677889 toujours pas reçue, livraison prévue le 12 mars. "
    "Je vais ouvrir un litige A à Z.",
    "channel": "amazon",
    "order_id": "171-2233445-6677889",
    "received_at": "2026-11-27T10:30:00+01:00",
}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'triage.db'}"


@pytest.fixture
def client(triage_model: TrainedModel, db_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(model=str(triage_model.folder), database_url=db_url))
    with TestClient(app) as c:
        yield c


def test_every_classification_is_recorded_with_its_fields(client: TestClient, db_url: str) -> None:
    before = datetime.now(UTC)
    res = client.post("/classify", json=MESSAGE)
    assert res.status_code == 200
    answer = res.json()
    row = PredictionLog(db_url).get(answer["request_id"])
    assert row is not None
    assert row.text == MESSAGE["text"] and row.text_key == message_key(MESSAGE["text"])
    assert (row.channel, row.order_id) == ("amazon", "171-2233445-6677889")
    assert row.received_at == datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    assert before - timedelta(seconds=1) <= row.created_at <= datetime.now(UTC)
    assert (row.risk, row.claim_type) == (answer["risk"], answer["claim_type"])
    assert row.risk_scores == answer["risk_scores"] and row.claim_type_scores == answer["claim_type_scores"]
    assert row.needs_review == answer["needs_review"] and row.language == answer["language"] == "fr"
    assert (row.keyword_risk, row.keyword_claim_type) == (
        answer["keyword_triage"]["risk"],
        answer["keyword_triage"]["claim_type"],
    )
    assert row.model_version == answer["model_version"]
    assert row.feedback_risk is None


def test_a_batch_is_recorded_whole(client: TestClient, db_url: str) -> None:
    texts = [
        "Where is my parcel? Ordered 3 weeks ago, still nothing.",
        "Posso avere la fattura?",
        "Merci, tout est bien arrivé !",
    ]
    res = client.post("/classify/batch", json={"messages": [{"text": t} for t in texts]})
    assert res.status_code == 200
    ids = [r["request_id"] for r in res.json()["results"]]
    rows = PredictionLog(db_url).list_predictions(request_ids=ids)
    assert sorted(r.request_id for r in rows) == sorted(ids)
    assert {r.request_id: r.text for r in rows} == dict(zip(ids, texts, strict=True))
    assert len({r.created_at for r in rows}) == 1  # one transaction, one time
    assert all(r.channel is None and r.order_id is None and r.received_at is None for r in rows)


def test_invalid_requests_record_nothing(client: TestClient, db_url: str) -> None:
    assert client.post("/classify", json={"text": "   "}).status_code == 422
    assert client.post("/classify/batch", json={"messages": []}).status_code == 422
    assert PredictionLog(db_url).counts()["predictions"] == 0


def test_an_answer_that_cannot_be_recorded_is_not_returned(client: TestClient, db_url: str) -> None:
    """A real fault: the table vanishes under the running service. 503, never an unrecorded answer."""
    assert client.post("/classify", json=MESSAGE).status_code == 200
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE feedback"))
        conn.execute(sa.text("DROP TABLE predictions"))
    engine.dispose()
    res = client.post("/classify", json=MESSAGE)
    assert res.status_code == 503
    assert "prediction log" in res.json()["detail"] and "request_id" not in res.text


def test_tables_are_created_once_and_kept(db_url: str, client: TestClient) -> None:
    rid = client.post("/classify", json=MESSAGE).json()["request_id"]
    again = PredictionLog.open(db_url)  # a second process starting on the same database
    assert again.get(rid) is not None and again.counts()["predictions"] == 1
    with again.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"


def test_the_log_survives_the_service_being_killed(triage_model: TrainedModel, tmp_path: Path) -> None:
    """A real uvicorn process, SIGKILLed right after answering: every answered request is in the database."""
    db = tmp_path / "crash" / "triage.db"
    env = clean_env() | {"TRIAGE_DATABASE_URL": f"sqlite:///{db}"}
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "triage",
                "serve",
                "--model",
                str(triage_model.folder),
                "--port",
                str(port),
                "--no-access-log",
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        answered = {}
        for i in range(5):
            res = httpx.post(f"{url}/classify", json={"text": f"{MESSAGE['text']} (relance {i})"}, timeout=30)
            answered[res.json()["request_id"]] = res.json()
        batch = httpx.post(
            f"{url}/classify/batch", json={"messages": [{"text": "Where is my refund?"}] * 3}, timeout=30
        ).json()["results"]
        answered |= {r["request_id"]: r for r in batch}
    finally:
        proc.kill()  # SIGKILL: no shutdown hook, no flush, no checkpoint
        proc.wait(timeout=15)
    assert proc.returncode == -9
    rows = {r.request_id: r for r in PredictionLog(f"sqlite:///{db}").list_predictions()}
    assert set(rows) == set(answered)
    for rid, ans in answered.items():
        assert (rows[rid].risk, rows[rid].claim_type, rows[rid].model_version) == (
            ans["risk"],
            ans["claim_type"],
            ans["model_version"],
        )
