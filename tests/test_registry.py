"""Serving from the registry of the REAL MLflow server (TRIAGE_TEST_MLFLOW_URI): `triage retrain` registers,
`triage serve --model models:/NAME@champion` answers in a real uvicorn process, /version names the registry
version, POST /admin/reload swaps models without failing a request in flight, and rollback works."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from loop import registry
from loop.promote import promote
from loop.registry import VersionInfo
from loop.retrain import RetrainResult, retrain
from serving.settings import Settings
from tests.conftest import TriageData
from tests.processes import Traffic, free_port, run_triage, triage_env, triage_server

pytestmark = [pytest.mark.services, pytest.mark.model]


@dataclass
class Registry:
    settings: Settings
    env: dict[str, str]
    root: Path
    first: RetrainResult
    second: VersionInfo


@pytest.fixture(scope="module")
def served_registry(
    mlflow_uri: str, triage_data: TriageData, embedding_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Registry:
    """Two versions of a fresh registered model on the real server, both passing the gate."""
    root = tmp_path_factory.mktemp("registry")
    name = f"triage-test-{uuid.uuid4().hex[:8]}"  # reruns against the same server never collide
    s = Settings(
        _env_file=None,
        var_dir=root / "var",
        data_dir=triage_data.train.parent,  # type: ignore[call-arg]
        cache_dir=embedding_cache,
        mlflow_tracking_uri=mlflow_uri,
        mlflow_experiment="triage-tests",
        registered_model=name,
    )
    first = retrain(s)
    # the CLI, as a user runs it, registers the second version
    env = triage_env(
        {
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "TRIAGE_VAR_DIR": root / "var",
            "TRIAGE_DATA_DIR": triage_data.train.parent,
            "TRIAGE_CACHE_DIR": embedding_cache,
            "TRIAGE_MLFLOW_EXPERIMENT": "triage-tests",
            "TRIAGE_REGISTERED_MODEL": name,
        }
    )
    done = run_triage("retrain", "--quiet", env=env, cwd=root)
    assert done.returncode == 0, done.stderr
    assert f"registered models:/{name}/2" in done.stdout and "version 2 is now `champion`" in done.stdout
    assert "| tier1_recall |" in done.stdout and "gate: PASSED" in done.stdout
    second = registry.get_version(s, f"models:/{name}/2")
    assert second is not None and second.aliases == ("champion",)
    # back to version 1 as champion, so serving starts there
    promote(s, "1")
    return Registry(s, env, root, first, second)


def test_retrain_logs_to_the_server_and_proxies_the_model_folder(served_registry: Registry) -> None:
    from mlflow import MlflowClient

    r = served_registry.first
    client = MlflowClient(tracking_uri=served_registry.settings.tracking_uri)
    run = client.get_run(r.run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert "test.it.tier1_recall" in run.data.metrics and "data.test_sha256" in run.data.params
    assert r.registered.source.startswith("mlflow-artifacts:/") and r.registered.source.endswith("/model")
    assert r.run_url and r.run_url.startswith(served_registry.settings.tracking_uri)


def test_serve_from_the_registry_reload_without_failed_requests_and_rollback(served_registry: Registry) -> None:
    reg = served_registry
    name = reg.settings.registered_model
    with (
        triage_server(f"models:/{name}@champion", reg.env, reg.root) as url,
        httpx.Client(base_url=url, timeout=120) as api,
    ):
        v = api.get("/version").json()
        assert v["registry_version"] == "1" and v["model_version"] == reg.first.model_version
        assert v["model_source"].startswith(f"models:/{name}@champion")
        answer = api.post("/classify", json={"text": "J'ai ouvert une réclamation A à Z hier."})
        assert answer.status_code == 200 and answer.json()["model_version"] == reg.first.model_version
        cached = reg.root / "var" / "registry" / name / "1" / "manifest.json"
        assert cached.is_file()

        # promote version 2, reload while a stream of requests is in flight: none fails
        promoted = run_triage("promote", "--version", "2", env=reg.env, cwd=reg.root)
        assert promoted.returncode == 0, promoted.stderr
        with Traffic(url) as traffic:
            deadline = time.monotonic() + 60
            while traffic.ok < 5 and not traffic.failures and time.monotonic() < deadline:
                time.sleep(0.05)
            before = traffic.ok
            reloaded = api.post("/admin/reload")
            time.sleep(0.5)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["registry_version"] == "2"
        assert traffic.failures == [] and traffic.ok > before  # requests kept flowing during the reload
        second_model = reg.second.tags["model_version"]
        assert second_model != reg.first.model_version
        assert traffic.versions == {reg.first.model_version, second_model}  # the swap happened mid-stream
        assert api.get("/version").json()["model_version"] == second_model
        assert api.post("/classify", json={"text": "hello"}).json()["model_version"] == second_model

        # rollback: move the alias back, reload
        back = run_triage("promote", "--version", "1", env=reg.env, cwd=reg.root)
        assert back.returncode == 0 and "(was version 2)" in back.stdout, back.stderr
        assert api.post("/admin/reload").json()["registry_version"] == "1"
        assert api.get("/version").json()["model_version"] == reg.first.model_version

        # an alias that points nowhere: the reload fails clearly, the old model keeps serving
        registry.delete_alias(reg.settings, "champion")
        try:
            failed = api.post("/admin/reload")
            assert failed.status_code == 409
            assert "still serving the old model" in failed.json()["detail"]
            assert "has no alias 'champion'" in failed.json()["detail"]
            assert api.get("/version").json()["registry_version"] == "1"
            assert api.post("/classify", json={"text": "hello"}).status_code == 200
        finally:
            promote(reg.settings, "1")


def test_serving_an_unknown_registered_model_fails_clearly(served_registry: Registry) -> None:
    done = run_triage(
        "classify",
        "--model",
        "models:/no-such-model-xyz@champion",
        "hello",
        env=served_registry.env,
        cwd=served_registry.root,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "registered model 'no-such-model-xyz' has no alias 'champion'" in done.stderr
    bad = run_triage(
        "classify", "--model", "models:/bad uri/", "hello", env=served_registry.env, cwd=served_registry.root
    )
    assert bad.returncode == 2 and "not a registry model URI" in bad.stderr
    # the server does not start on a model it cannot get, and says why
    serve = run_triage(
        "serve",
        "--model",
        "models:/no-such-model-xyz@champion",
        "--port",
        str(free_port()),
        env=served_registry.env,
        cwd=served_registry.root,
        timeout=120,
    )
    assert serve.returncode == 2 and "Traceback" not in serve.stderr
    assert "has no alias 'champion'" in serve.stderr
