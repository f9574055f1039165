"""The `triage` command line, run as a user runs it: `python -m triage ...` in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import clean_env, run_triage

from .conftest import TrainedModel, TriageCli
from .test_api import FIELDS

TRIAGE_KEYS = {"n", "risk_macro_f1", "claim_type_macro_f1", "tier1_recall", "tier1_precision", "claim_filed_recall"}


@pytest.mark.parametrize(
    "command",
    [[], ["train"], ["evaluate"], ["export"], ["serve"], ["classify"], ["case", "export"], ["replies", "check"]],
)
def test_help(triage_cli: TriageCli, command: list[str]) -> None:
    run = triage_cli(*command, "--help")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: triage")
    assert " ".join(["usage: triage", *command]) in run.stdout


def test_classify_prints_the_answer(triage_cli: TriageCli, triage_model: TrainedModel) -> None:
    run = triage_cli(
        "classify",
        "Ho aperto un reclamo dalla A alla Z per l'ordine 405-8831207-4416352.",
        "--model",
        triage_model.folder,
        "--channel",
        "amazon",
    )
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert set(body) == FIELDS
    assert body["language"] == "it"
    assert body["keyword_triage"] == {"tier": 1, "risk": "claim_filed", "claim_type": "other"}
    assert body["model_version"] == triage_model.folder.name
    assert (body["claim_type"] == "none") == (body["risk"] == "routine")
    assert body["case"] is None and body["routing_reason"] == "message"  # no case on the command line
    assert body["suggested_reply"]["language"] == "it"


def test_classify_reads_stdin_one_message_per_line(triage_model: TrainedModel, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "triage", "classify", "--model", str(triage_model.folder)],
        input="Thanks, arrived fine!\n\nMerci, colis bien reçu\n",
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [json.loads(line)["language"] for line in lines] == ["en", "fr"]


def test_classify_without_a_model_folder_exits_2(triage_cli: TriageCli, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    run = triage_cli("classify", "Where is my parcel?", "--model", missing)
    assert run.returncode == 2
    assert str(missing) in run.stderr and "not a model folder" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""


def test_evaluate_json(triage_cli: TriageCli, triage_model: TrainedModel) -> None:
    run = triage_cli("evaluate", "--data", triage_model.data.test, "--model", triage_model.folder, "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)  # one JSON object, nothing else on stdout
    assert set(result) >= TRIAGE_KEYS
    assert result["n"] == len(triage_model.data.test_rows)
    assert set(result["per_language"]) == {"fr", "it", "en"}
    for lang in ("fr", "it", "en"):
        assert set(result["per_language"][lang]) >= TRIAGE_KEYS
        assert result["keyword_baseline"]["per_language"][lang]["n"] == result["per_language"][lang]["n"]
    assert set(result["keyword_baseline"]) >= TRIAGE_KEYS
    # the same numbers the build wrote into the model folder for its served variant
    metrics = json.loads((triage_model.folder / "metrics.json").read_text())
    served = metrics["test"][result["variant"]]
    assert {k: result[k] for k in TRIAGE_KEYS} == {k: served[k] for k in TRIAGE_KEYS}
    assert result["keyword_baseline"] == metrics["keyword_baseline"]
    # every headline figure with its bootstrap interval, the point being the figure the report gives
    intervals = result["intervals"]
    assert intervals["tier1_recall"]["value"] == result["tier1_recall"]
    assert intervals["claim_type_macro_f1"]["value"] == result["claim_type_macro_f1"]
    for row in intervals.values():
        assert row["low"] <= row["value"] <= row["high"]


def test_evaluate_against_a_model_pairs_them_and_refuses_a_missing_one(
    triage_cli: TriageCli, triage_model: TrainedModel, tmp_path: Path
) -> None:
    args = ("evaluate", "--data", triage_model.data.test, "--model", triage_model.folder, "--no-real")
    run = triage_cli(*args, "--against", triage_model.folder, "--json")
    assert run.returncode == 0, run.stderr
    against = json.loads(run.stdout)["against"]
    assert against["model_version"] == json.loads((triage_model.folder / "config.json").read_text())["version"]
    for row in against["figures"].values():  # a model against itself: no difference on any draw
        assert row["difference"] == 0.0 and row["low"] == 0.0 and row["high"] == 0.0
    run = triage_cli(*args, "--against", tmp_path / "nowhere")
    assert run.returncode == 2 and "not a model folder" in run.stderr and "Traceback" not in run.stderr


def test_evaluate_tables_and_plots(triage_cli: TriageCli, triage_model: TrainedModel, tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    run = triage_cli("evaluate", "--data", triage_model.data.test, "--model", triage_model.folder, "--plots", plots)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert f"{len(triage_model.data.test_rows)} messages" in out
    assert "| metric | model fr | keywords fr |" in out
    for key in TRIAGE_KEYS - {"n"}:
        assert f"| {key} |" in out
    for name in ("confusion_risk.png", "confusion_claim_type.png", "per_language.png"):
        assert (plots / name).read_bytes()[:4] == b"\x89PNG"
        assert str(plots / name) in out


def test_evaluate_bad_rows_exit_2_with_line_numbers(
    triage_cli: TriageCli, triage_model: TrainedModel, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "text,language,risk,claim_type\n"
        "Where is my parcel?,en,routine,none\n"
        "Never arrived,en,routine,not_received\n"
        '"two\nlines",en,routine,none\n'
        "Hello,en,unknown,none\n",
        encoding="utf-8",
    )
    run = triage_cli("evaluate", "--data", bad, "--model", triage_model.folder, "--json")
    assert run.returncode == 2
    assert "line 3: claim_type 'not_received' inconsistent with risk 'routine'" in run.stderr
    assert "line 6: unknown risk 'unknown'" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""


def test_a_bad_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = clean_env() | {"TRIAGE_NGRAM_HEADS": "risk", "TRIAGE_HEAD_C": "-1"}
    run = run_triage("train", "--quiet", env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 2
    assert "TRIAGE_NGRAM_HEADS='risk': Input should be 'claim_type' or 'all'" in run.stderr
    assert "TRIAGE_HEAD_C='-1': Input should be greater than 0" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "models").exists()


def test_train_with_an_unreachable_encoder_exits_2(
    triage_cli: TriageCli, triage_model: TrainedModel, tmp_path: Path
) -> None:
    run = triage_cli(
        "train",
        "--data",
        triage_model.data.train,
        "--no-test",
        "--out",
        tmp_path / "m",
        "--encoder",
        "no-such-org/no-such-model",
        "--quiet",
    )
    assert run.returncode == 2
    assert "cannot load sentence-transformers model 'no-such-org/no-such-model'" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "m").exists()


def test_classify_command_does_not_import_training(triage_model: TrainedModel, tmp_path: Path) -> None:
    """`triage classify` (like `serve`) runs on the serving install: no torch, pandas or training."""
    code = (
        "import sys\n"
        "from triage.cli import main\n"
        f"assert main(['classify', 'Where is my parcel?', '--model', {str(triage_model.folder)!r}]) == 0\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}\n"
        "               & {'torch', 'sentence_transformers', 'sklearn', 'pandas', 'mlflow', 'training'})\n"
        "print(heavy, file=sys.stderr)\n"
        "assert not heavy, heavy\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=120
    )
    assert run.returncode == 0, run.stderr
