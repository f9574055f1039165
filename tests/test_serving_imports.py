"""Serving stays small: building the app and classifying never imports the training stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.processes import clean_env

from .conftest import TrainedModel

FORBIDDEN = ("torch", "sentence_transformers", "sklearn", "mlflow", "training", "transformers", "pandas", "matplotlib")

SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
from serving.app import create_app
from serving.settings import Settings

with TestClient(create_app(Settings(model=sys.argv[1]))) as client:
    r = client.post("/classify", json={"text": "Le colis est arrivé cassé, je veux un remboursement."})
    batch = client.post("/classify/batch",
                        json={"messages": [{"text": "Thanks!"}, {"text": "Dov'è il pacco?"}]})
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
print(json.dumps({"status": [r.status_code, batch.status_code], "body": r.json(), "loaded": loaded}))
"""


def test_serving_never_imports_training_stack(triage_model: TrainedModel, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(triage_model.folder), ",".join(FORBIDDEN)],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["status"] == [200, 200], out
    assert out["body"]["model_version"] == triage_model.folder.name
    assert out["body"]["language"] == "fr"
    assert out["loaded"] == [], f"serving imported {out['loaded']}"
