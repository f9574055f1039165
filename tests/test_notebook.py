"""notebooks/retrain.ipynb end to end (nbclient) on the real stack: the real Label Studio (a project with
reviewed tasks) and the real MLflow server, with tmp paths given through the environment."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import nbformat
import pytest
from fastapi.testclient import TestClient
from nbclient import NotebookClient

from serving.settings import Settings
from tests.conftest import REPO, TrainedModel, TriageData

pytestmark = [pytest.mark.services, pytest.mark.model]

NOTEBOOK = REPO / "notebooks" / "retrain.ipynb"
URL_VAR, TOKEN_VAR = "TRIAGE_LABEL_STUDIO_URL", "TRIAGE_LABEL_STUDIO_TOKEN"
REVIEWED = {
    "The package arrived soaked and the book inside is ruined.": ("at_risk", "damaged_defective"),
    "Il pacco è arrivato tutto bagnato e il libro dentro è rovinato.": ("at_risk", "damaged_defective"),
    "Merci, tout est bien arrivé.": ("routine", "none"),
}


def choice(name: str, value: str) -> dict[str, object]:
    return {"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": [value]}}


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(str((out.get("data") or {}).get("text/plain", "")))
    return "\n".join(parts)


def test_the_retrain_notebook_runs_end_to_end(
    mlflow_uri: str,
    triage_model: TrainedModel,
    triage_data: TriageData,
    embedding_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not (os.environ.get(URL_VAR) and os.environ.get(TOKEN_VAR)):
        pytest.skip(
            f"{URL_VAR} / {TOKEN_VAR} are not set: scripts/label-studio start, then source "
            "var/label-studio/env (`make test` does both)"
        )
    from loop import registry
    from loop.labelstudio import LabelStudioClient
    from loop.push import push
    from serving.app import create_app

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(triage_data.train, data / "train.csv")
    shutil.copy(triage_data.test, data / "test.csv")
    session = uuid.uuid4().hex[:8]
    env = {
        "TRIAGE_DATA_DIR": str(data),
        "TRIAGE_VAR_DIR": str(tmp_path / "var"),
        "TRIAGE_CACHE_DIR": str(embedding_cache),
        "TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path / 'triage.db'}",
        "TRIAGE_MODEL": str(triage_model.folder),
        "TRIAGE_MLFLOW_EXPERIMENT": "triage-tests",
        "TRIAGE_REGISTERED_MODEL": f"triage-notebook-{session}",
        "TRIAGE_LABEL_STUDIO_PROJECT": f"triage notebook {session}",
        URL_VAR: os.environ[URL_VAR],
        TOKEN_VAR: os.environ[TOKEN_VAR],
        "MLFLOW_TRACKING_URI": mlflow_uri,
    }
    for key in [k for k in os.environ if k.startswith("TRIAGE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    # a reviewer's work to pull: classified messages, pushed, annotated through the API
    with TestClient(create_app(settings)) as api:
        for text in REVIEWED:
            assert api.post("/classify", json={"text": text}).status_code == 200
    ls = LabelStudioClient.from_settings(settings)
    pushed = push(settings)
    try:
        tasks = {t["data"]["text"]: int(t["id"]) for t in ls.export(pushed.project_id, all_tasks=True)}
        for text, (risk, claim_type) in REVIEWED.items():
            ls.sdk.annotations.create(id=tasks[text], result=[choice("risk", risk), choice("claim_type", claim_type)])

        nb = nbformat.read(NOTEBOOK, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
        assert nb.cells[0].cell_type == "code" and "Settings()" in nb.cells[0].source
        NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
        ).execute()
    finally:
        ls.delete_project(pushed.project_id)

    text = outputs_text(nb)
    assert "3 added, 0 updated" in text  # pulled
    assert "3 in the file, 3 applied (3 new messages" in text
    assert "The package arrived soaked" in text  # the corrected examples table
    assert "gate: PASSED" in text and "no champion yet" in text
    assert f"models:/triage-notebook-{session}@champion -> version 1" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in (o.get("data") or {})]
    assert len(images) >= 3  # metric bars, two confusion-matrix figures
    champion = registry.champion(settings)
    assert champion is not None and champion.version == "1"
    assert (data / "corrections.csv").is_file()
