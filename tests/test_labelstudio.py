"""The Label Studio loop against the REAL server (scripts/label-studio start; `make test` starts it).

Push logged classifications, annotate them through the API as a reviewer would, pull the corrections;
Label Studio down and a wrong token give clear errors and change nothing.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loop.corrections import COLUMNS as CORRECTION_COLUMNS
from loop.labelstudio import LabelStudioClient, LabelStudioError
from loop.pull import pull
from loop.push import push
from loop.tasks import REASONS, prioritize
from serving.labels import message_key
from serving.predlog import PredictionLog
from serving.schemas import ClassifyRequest, ClassifyResponse
from serving.settings import Settings
from tests.conftest import TrainedModel
from tests.processes import clean_env, free_port
from training.data import load_dataset

pytestmark = pytest.mark.services

URL_VAR, TOKEN_VAR = "TRIAGE_LABEL_STUDIO_URL", "TRIAGE_LABEL_STUDIO_TOKEN"
SESSION = uuid.uuid4().hex[:8]

MESSAGES = [
    "Bonjour, commande 171-2233445-6677889 toujours pas reçue, livraison prévue le 12 mars. Je vais ouvrir "
    "un litige A à Z.",
    "I opened an A-to-Z claim because the blender arrived broken.",
    "Il pacco è arrivato ma la taglia è sbagliata, ho ordinato una M e mi è arrivata una XL.",
    "Can I get an invoice for order 028-2553121-4086896? Thanks!",
    "Merci, tout est bien arrivé.",
    "Ho restituito il prodotto tre settimane fa e non ho ancora ricevuto il rimborso.",
    "Where is my parcel? The tracking has not moved in ten days.",
    "Les frais de douane de 35 € ne sont pas normaux, remboursez-les.",
]
DUPLICATE = "  merci, TOUT est bien arrivé. "  # the same message as MESSAGES[4], typed differently
MISROUTED = 3  # the agent says MESSAGES[3] is really a customs-fees threat


@dataclass
class Loop:
    settings: Settings
    client: LabelStudioClient
    plog: PredictionLog
    app: TestClient
    request_ids: list[str]
    misroute_id: str


def real_settings(tmp: Path, **overrides: Any) -> Settings:
    return Settings(
        var_dir=tmp / "var",
        data_dir=tmp / "data",
        database_url=f"sqlite:///{tmp / 'var/triage.db'}",
        label_studio_project=f"triage tests {SESSION}",
        **overrides,
    )


@pytest.fixture(scope="session")
def label_studio_env() -> None:
    """Skip (before any model is trained) when no Label Studio is configured."""
    if not (os.environ.get(URL_VAR) and os.environ.get(TOKEN_VAR)):
        pytest.skip(
            f"{URL_VAR} / {TOKEN_VAR} are not set: start Label Studio with `scripts/label-studio start` "
            "and source var/label-studio/env (`make test` does both)"
        )


@pytest.fixture(scope="module")
def loop(
    label_studio_env: None, triage_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loop]:
    from serving.app import create_app

    tmp = tmp_path_factory.mktemp("label-loop")
    settings = real_settings(tmp, model=str(triage_model.folder))
    client = LabelStudioClient.from_settings(settings)
    with TestClient(create_app(settings)) as app:
        ids = [
            app.post("/classify", json={"text": t, "channel": "amazon"}).json()["request_id"]
            for t in [*MESSAGES, DUPLICATE]
        ]
        res = app.post(
            "/feedback",
            json={"request_id": ids[MISROUTED], "risk": "at_risk", "claim_type": "customs_fees", "agent": "marie"},
        )
        assert res.status_code == 201 and res.json()["misroute"], res.text
        yield Loop(settings, client, PredictionLog(settings.db_url), app, ids, ids[MISROUTED])
    project = client.find_project(settings.label_studio_project)
    if project is not None:
        client.delete_project(project)


def project_tasks(loop: Loop) -> list[dict[str, Any]]:
    project = loop.client.find_project(loop.settings.label_studio_project)
    assert project is not None
    return sorted(loop.client.export(project, all_tasks=True), key=lambda t: int(t["id"]))


def test_push_creates_the_project_once_and_sends_in_priority_order(loop: Loop) -> None:
    first = push(loop.settings, limit=3)
    assert first.project_created and first.sent == 3 and first.by_reason.get("misroute") == 1
    rest = push(loop.settings, limit=100)
    assert not rest.project_created and rest.project_id == first.project_id
    assert rest.sent == len(MESSAGES) - 3  # the duplicate message is not a task of its own
    assert rest.already_sent == 3 and rest.waiting == 0
    listed: list[Any] = list(loop.client.sdk.projects.list(title=loop.settings.label_studio_project))
    same_title = [p.id for p in listed if p.title == loop.settings.label_studio_project]
    assert len(same_title) == 1
    # reviewers see the labeling guide before each task
    project = loop.client.sdk.projects.get(id=first.project_id)
    assert project.show_instruction and "A-to-Z" in (project.expert_instruction or "")

    tasks = project_tasks(loop)
    assert [t["id"] for t in tasks] == first.task_ids + rest.task_ids
    assert len({t["data"]["text_key"] for t in tasks}) == len(tasks) == len(MESSAGES)
    # the order is the priority of what the log knows: the agent's misroute first
    expected = prioritize(loop.plog.list_predictions())
    assert [t["data"]["text_key"] for t in tasks] == [p.text_key for p in expected]
    assert tasks[0]["data"]["request_id"] == loop.misroute_id
    reasons = [REASONS.index(t["data"]["reason"]) for t in tasks]
    assert reasons == sorted(reasons)


def test_tasks_carry_the_models_answer_as_a_pre_annotation(loop: Loop) -> None:
    tasks = project_tasks(loop)
    assert tasks, "push first"
    project = loop.client.find_project(loop.settings.label_studio_project)
    for task in tasks:
        data = task["data"]
        logged = loop.plog.get(data["request_id"])
        assert logged is not None and data["text_key"] == message_key(logged.text)
        preds = loop.client.sdk.predictions.list(task=int(task["id"]))
        assert len(preds) == 1
        pred = preds[0]
        assert pred.model_version == logged.model_version and pred.project == project
        assert pred.score == pytest.approx(max(logged.risk_scores.values()), abs=1e-4)
        chosen = {r["from_name"]: r["value"]["choices"] for r in pred.result}
        assert chosen == {"risk": [logged.risk], "claim_type": [logged.claim_type]}


def test_pushing_again_sends_nothing_new(loop: Loop) -> None:
    before = len(project_tasks(loop))
    again = push(loop.settings)
    assert (again.sent, again.task_ids, again.already_sent) == (0, [], len(MESSAGES))
    assert len(project_tasks(loop)) == before


def test_messages_logged_without_text_are_not_sent_and_the_push_says_so(loop: Loop) -> None:
    hashed = PredictionLog(loop.settings.db_url, text="hash")  # TRIAGE_LOG_TEXT=hash
    answer = loop.app.post("/classify", json={"text": "Où est mon colis ?"}).json()
    req = ClassifyRequest(text="Le colis n'est jamais arrivé, je vais ouvrir un litige.")
    hashed.record([req], [ClassifyResponse(**(answer | {"request_id": uuid.uuid4().hex}))])
    hashed.close()
    before = len(project_tasks(loop))
    result = push(loop.settings)
    assert result.no_text == 1 and "1 logged message(s) have no text" in result.report()
    sent = project_tasks(loop)[before:]
    assert all(t["data"]["text"] for t in sent) and len(sent) == result.sent <= 1  # the /classify one, not the hash one


def choice(name: str, value: str) -> dict[str, object]:
    return {"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": [value]}}


def test_pull_keeps_valid_annotations_with_provenance_and_rejects_the_rest(loop: Loop) -> None:
    tasks = {t["data"]["request_id"]: int(t["id"]) for t in project_tasks(loop)}
    ids = loop.request_ids
    annotate = loop.client.annotate
    note = {"from_name": "note", "to_name": "text", "type": "textarea", "value": {"text": ["threatens A-to-Z"]}}
    kept = {
        annotate(tasks[ids[MISROUTED]], [choice("risk", "at_risk"), choice("claim_type", "customs_fees"), note]): (
            ids[MISROUTED],
            "at_risk",
            "customs_fees",
            "threatens A-to-Z",
        ),
        annotate(tasks[ids[1]], [choice("risk", "claim_filed"), choice("claim_type", "damaged_defective")]): (
            ids[1],
            "claim_filed",
            "damaged_defective",
            "",
        ),
    }
    skipped = annotate(tasks[ids[6]], [], cancelled=True)
    unknown = annotate(tasks[ids[2]], [choice("risk", "at_risk"), choice("claim_type", "wrong_size")])
    inconsistent = annotate(tasks[ids[5]], [choice("risk", "routine"), choice("claim_type", "return_refund")])

    result = pull(loop.settings)
    assert (result.added, result.updated, result.already_present) == (2, 0, 0)
    why = {r.annotation_id: r.reason for r in result.rejected}
    assert set(why) == {skipped, unknown, inconsistent}
    assert "skipped" in why[skipped]
    assert "unknown claim_type 'wrong_size'" in why[unknown]
    assert "inconsistent" in why[inconsistent]

    path = loop.settings.data_dir / "corrections.csv"
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(CORRECTION_COLUMNS)
    df = load_dataset(path)  # the training loader takes it as it is
    assert len(df) == 2
    reviewer = loop.client.whoami()
    for _, row in df.iterrows():
        rid, risk, claim_type, text_note = kept[int(row["ls_annotation_id"])]
        logged = loop.plog.get(rid)
        assert logged is not None
        assert (row["text"], row["risk"], row["claim_type"], row["note"]) == (logged.text, risk, claim_type, text_note)
        assert row["request_id"] == rid and row["ls_task_id"] == str(tasks[rid])
        assert (row["model_risk"], row["model_claim_type"], row["model_version"]) == (
            logged.risk,
            logged.claim_type,
            logged.model_version,
        )
        assert row["language"] == logged.language and row["source"] == "label-studio"
        assert row["annotator"] == reviewer and row["labeled_at"].startswith("20")
        assert row["channel"] == "amazon"


def test_a_second_pull_changes_nothing(loop: Loop) -> None:
    path = loop.settings.data_dir / "corrections.csv"
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    again = pull(loop.settings)
    assert (again.added, again.updated, again.already_present, again.total) == (0, 0, 2, 2)
    assert len(again.rejected) == 3
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_label_studio_down_is_a_clear_error_that_changes_nothing_and_a_retry_works(loop: Loop) -> None:
    project = push(loop.settings).project_id  # everything logged so far is in the project
    text = "Le colis est arrivé ouvert et vide, je veux un remboursement."
    assert loop.app.post("/classify", json={"text": text}).status_code == 200
    path = loop.settings.data_dir / "corrections.csv"
    before = (path.read_bytes(), loop.plog.counts(), loop.plog.sent_keys(project))
    down = real_settings(Path(loop.settings.var_dir).parent, label_studio_url=f"http://127.0.0.1:{free_port()}")
    for action in (lambda: push(down), lambda: pull(down)):
        with pytest.raises(LabelStudioError) as err:
            action()
        message = str(err.value)
        assert "not reachable" in message and down.label_studio_url in message
        assert "nothing was changed" in message and "retry" in message
    assert (path.read_bytes(), loop.plog.counts(), loop.plog.sent_keys(project)) == before
    retry = push(loop.settings)  # against the real server: the new message goes, and only it
    assert retry.sent == 1
    assert loop.plog.sent_keys(project) - before[2] == {message_key(text)}
    assert pull(loop.settings).total == 2


def test_a_wrong_token_is_a_clear_error_without_the_token(loop: Loop) -> None:
    wrong = "wrong" + secrets.token_hex(16)
    bad = real_settings(Path(loop.settings.var_dir).parent, label_studio_token=wrong)
    path = loop.settings.data_dir / "corrections.csv"
    before = (path.read_bytes(), loop.plog.counts())
    for action in (lambda: push(bad), lambda: pull(bad)):
        with pytest.raises(LabelStudioError) as err:
            action()
        assert "refused the token (HTTP 401)" in str(err.value) and "TRIAGE_LABEL_STUDIO_TOKEN" in str(err.value)
        assert wrong not in str(err.value)
    assert (path.read_bytes(), loop.plog.counts()) == before


def run_cli(loop: Loop, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    s = loop.settings
    base = clean_env() | {
        URL_VAR: os.environ[URL_VAR],
        TOKEN_VAR: os.environ[TOKEN_VAR],
        "TRIAGE_DATABASE_URL": s.db_url,
        "TRIAGE_DATA_DIR": str(s.data_dir),
        "TRIAGE_VAR_DIR": str(s.var_dir),
        "TRIAGE_LABEL_STUDIO_PROJECT": s.label_studio_project,
    }
    return subprocess.run(
        [sys.executable, "-m", "triage", "label", *args],
        env=base | env,
        cwd=s.var_dir,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_cli_push_and_pull(loop: Loop) -> None:
    pushed = run_cli(loop, "push", "--limit", "5")
    assert pushed.returncode == 0, pushed.stderr
    assert "(reused): sent 0 new task(s)" in pushed.stdout
    pulled = run_cli(loop, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert "0 added, 0 updated, 2 already present, 3 rejected" in pulled.stdout
    assert "unknown claim_type 'wrong_size'" in pulled.stdout


def test_cli_errors_exit_2_without_traceback_or_token(loop: Loop) -> None:
    wrong = "wrong" + secrets.token_hex(16)
    for args, env, says in [
        (("push",), {TOKEN_VAR: wrong}, "refused the token"),
        (("pull",), {URL_VAR: f"http://127.0.0.1:{free_port()}"}, "not reachable"),
        (("push",), {TOKEN_VAR: ""}, "no Label Studio token"),
        (("push", "--limit", "0"), {}, "not a positive whole number"),
    ]:
        done = run_cli(loop, *args, **env)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr and "Traceback" not in done.stderr
        assert wrong not in done.stderr + done.stdout
        assert os.environ[TOKEN_VAR] not in done.stderr + done.stdout
