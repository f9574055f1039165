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
from serving.labels import CLAIM_TYPES, RISKS, message_key
from serving.prediction import Prediction
from serving.predlog import PredictionLog, PredictionLogError, TextMode
from serving.schemas import ClassifyRequest, ClassifyResponse
from serving.service import respond
from serving.settings import Settings
from tests.conftest import TrainedModel
from tests.processes import clean_env, free_port, run_triage

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


# -- what is kept of a message, and retention (no model: rows recorded as the service records them) -------
PERSONAL = (
    "Commande 171-2233445-6677889 pas reçue. Rappelez-moi au 06 12 34 56 78 ou marie.dupont@gmail.com, "
    "remboursez sur FR76 3000 6000 0112 3456 7890 189 (carte 4970 1012 3456 7890)."
)


def answer(rid: str) -> ClassifyResponse:
    scores: dict[str, float] = {r: 1 / 3 for r in RISKS}
    pred = Prediction("at_risk", "not_received", scores, {c: 1 / 7 for c in CLAIM_TYPES})
    return respond(ClassifyRequest(text="x"), pred, "v-test", datetime.now(UTC), rid)


def record(plog: PredictionLog, rid: str, text: str, order_id: str | None = None, **kw: object) -> str:
    plog.record([ClassifyRequest(text=text, order_id=order_id)], [answer(rid)], **kw)  # type: ignore[arg-type]
    return rid


@pytest.mark.parametrize("mode", ["full", "redacted", "hash"])
def test_the_log_keeps_what_the_setting_says(db_url: str, mode: TextMode) -> None:
    plog = PredictionLog.open(db_url, text=mode)
    record(plog, "r1", PERSONAL + "\x00", key_name="helpdesk")
    row = plog.get("r1")
    assert row is not None and row.text_kept == mode and row.key_name == "helpdesk"
    if mode == "full":
        assert row.text == PERSONAL + "\ufffd"  # NUL, refused by some databases, becomes U+FFFD
    elif mode == "redacted":
        assert row.text == (
            "Commande 171-2233445-6677889 pas reçue. Rappelez-moi au <phone> ou <email>, "
            "remboursez sur <iban> (carte <card>).\ufffd"
        )
        assert row.text_key == message_key(row.text)
    else:
        assert row.text == "" and row.text_key == message_key(PERSONAL + "\x00")
    with plog.engine.connect() as conn:  # nothing of the contact data anywhere in the row
        raw = " ".join(map(str, conn.execute(sa.text("SELECT * FROM predictions")).one()))
    assert ("06 12 34 56 78" in raw) == (mode == "full")


OLD_SCHEMA = (
    "CREATE TABLE predictions (request_id VARCHAR(64) PRIMARY KEY, created_at DATETIME NOT NULL, text TEXT NOT NULL, "
    "text_key VARCHAR(64) NOT NULL, channel VARCHAR(64), order_id VARCHAR(64), received_at DATETIME, "
    "risk VARCHAR(32) NOT NULL, claim_type VARCHAR(32) NOT NULL, risk_scores JSON NOT NULL, "
    "claim_type_scores JSON NOT NULL, needs_review BOOLEAN NOT NULL, language VARCHAR(8) NOT NULL, "
    "keyword_risk VARCHAR(32) NOT NULL, keyword_claim_type VARCHAR(32) NOT NULL, model_version VARCHAR(128) NOT NULL)",
    "CREATE TABLE feedback (id INTEGER PRIMARY KEY, request_id VARCHAR(64) NOT NULL, risk VARCHAR(32) NOT NULL, "
    "claim_type VARCHAR(32), agent VARCHAR(128) NOT NULL, created_at DATETIME NOT NULL)",
    "INSERT INTO predictions VALUES ('old', '2026-01-01 00:00:00', 'hello', 'k', NULL, NULL, NULL, 'routine', "
    "'none', '{}', '{}', 0, 'en', 'routine', 'none', 'v0')",
)


OLD_SCHEMA = (
    "CREATE TABLE predictions (request_id VARCHAR(64) PRIMARY KEY, created_at DATETIME NOT NULL, text TEXT NOT NULL, "
    "text_key VARCHAR(64) NOT NULL, channel VARCHAR(64), order_id VARCHAR(64), received_at DATETIME, "
    "risk VARCHAR(32) NOT NULL, claim_type VARCHAR(32) NOT NULL, risk_scores JSON NOT NULL, "
    "claim_type_scores JSON NOT NULL, needs_review BOOLEAN NOT NULL, language VARCHAR(8) NOT NULL, "
    "keyword_risk VARCHAR(32) NOT NULL, keyword_claim_type VARCHAR(32) NOT NULL, model_version VARCHAR(128) NOT NULL)",
    "CREATE TABLE feedback (id INTEGER PRIMARY KEY, request_id VARCHAR(64) NOT NULL, risk VARCHAR(32) NOT NULL, "
    "claim_type VARCHAR(32), agent VARCHAR(128) NOT NULL, created_at DATETIME NOT NULL)",
    "INSERT INTO predictions VALUES ('old', '2026-01-01 00:00:00', 'hello', 'k', NULL, NULL, NULL, 'routine', "
    "'none', '{}', '{}', 0, 'en', 'routine', 'none', 'v0')",
)


def test_an_older_log_gets_the_new_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the tables as the previous version made them, with one row
        for statement in OLD_SCHEMA:
            conn.execute(sa.text(statement))
    engine.dispose()
    plog = PredictionLog.open(url)
    old = plog.get("old")
    assert old is not None and old.text == "hello" and old.text_kept is None and old.key_name is None
    record(plog, "new", "Where is my parcel?", key_name="helpdesk")
    assert plog.add_feedback("new", "routine", "none", "ana", key_name="agents").key_name == "agents"
    assert plog.feedback_for("new")[0].key_name == "agents"


def test_prune_and_forget_remove_predictions_feedback_and_label_studio_references(db_url: str) -> None:
    plog = PredictionLog.open(db_url, text="full")
    now = datetime.now(UTC)
    old = [record(plog, f"old{i}", f"old message {i}", now=now - timedelta(days=100)) for i in range(3)]
    record(plog, "buyer1", "Where is my parcel?", order_id="171-2233445-6677889")
    record(plog, "buyer2", "Toujours rien pour la commande 171-2233445-6677889 !")  # the id only in the text
    record(plog, "other", "Order 402-9988776-5544332 arrived broken", order_id="402-9988776-5544332")
    plog.add_feedback("old0", "routine", "none", "ana")
    plog.add_feedback("buyer1", "at_risk", "not_received", "ana")
    rows = {p.request_id: p for p in plog.list_predictions()}
    plog.mark_sent(7, [(rows["old1"].text_key, 101, "old1"), (rows["buyer2"].text_key, 102, "buyer2")])

    dry = plog.prune(now - timedelta(days=90), dry_run=True)
    assert (dry.predictions, dry.feedback, dry.label_tasks) == (3, 1, 1) and plog.counts()["predictions"] == 6
    pruned = plog.prune(now - timedelta(days=90))
    assert sorted(pruned.request_ids) == old and pruned.tasks == [(7, 101)]
    assert (pruned.predictions, pruned.feedback, pruned.label_tasks) == (3, 1, 1)

    forgotten = plog.forget("171-2233445-6677889")
    assert sorted(forgotten.request_ids) == ["buyer1", "buyer2"] and forgotten.tasks == [(7, 102)]
    assert (forgotten.predictions, forgotten.feedback, forgotten.label_tasks) == (2, 1, 1)
    assert [p.request_id for p in plog.list_predictions()] == ["other"]
    assert plog.counts() == {"predictions": 1, "feedback": 0, "label_tasks": 0}
    assert plog.forget("no-such-order").predictions == 0
    with pytest.raises(PredictionLogError, match="empty order id"):
        plog.forget(" ")


def test_log_forget_reports_corrections_already_in_the_training_data(db_url: str, tmp_path: Path) -> None:
    plog = PredictionLog.open(db_url, text="full")
    record(plog, "buyer1", "Where is my parcel?", order_id="171-2233445-6677889")
    data = tmp_path / "data"
    data.mkdir()
    fields = ["text", "language", "risk", "claim_type", "order_id", "request_id", "ls_annotation_id"]
    corrections = data / "corrections.csv"
    corrections.write_text(
        ",".join(fields) + "\n"
        "Where is my parcel?,en,at_risk,not_received,,buyer1,1\n"
        "Unrelated,en,routine,none,,r9,2\n"
        "Commande 171-2233445-6677889 perdue,fr,at_risk,not_received,,r8,3\n",
        encoding="utf-8",
    )
    env = clean_env() | {"TRIAGE_DATABASE_URL": db_url, "TRIAGE_DATA_DIR": str(data)}
    forget = ("log", "forget", "--order-id", "171-2233445-6677889")
    run = run_triage(*forget, "--dry-run", env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "order 171-2233445-6677889: would remove 1 prediction(s), 0 feedback report(s)" in run.stdout
    assert "2 correction(s) (lines 2, 4) came from these predictions and are training data now" in run.stdout
    assert corrections.read_text().count("\n") == 4  # reported, not removed
    run = run_triage(*forget, "--purge-corrections", env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0 and "removed 1 prediction(s)" in run.stdout, run.stderr
    assert "removed 2 correction(s) (lines 2, 4)" in run.stdout
    assert "Unrelated" in corrections.read_text() and "171-2233445" not in corrections.read_text()
    run = run_triage("log", "prune", "--older-than", "90d", env=env, cwd=tmp_path)
    assert run.returncode == 0 and "removed 0 prediction(s)" in run.stdout, run.stderr
    run = run_triage("log", "prune", "--older-than", "soon", env=env, cwd=tmp_path)
    assert run.returncode == 2 and "e.g. 90d" in run.stderr
