"""Faults under load (benchmarks/faults.py): 20,000 requests at concurrency 16 against a real `triage serve`
while the model is reloaded three times (once to a tampered folder), the database is locked and the process
is killed with SIGKILL and restarted. Nothing answered is lost, nothing fails but the 503s of the database
window, and memory does not grow."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.faults import run_faults, table
from tests.conftest import TrainedModel, read_rows


def test_faults_under_load(triage_model: TrainedModel, tmp_path: Path) -> None:
    texts = [r["text"] for r in read_rows(triage_model.data.test)[1]] + [
        r["text"] for r in read_rows(triage_model.data.train)[1]
    ]
    r = run_faults(triage_model.folder, tmp_path, texts, requests=20_000, concurrency=16, max_seconds=300)
    print("\n" + table(r))
    (tmp_path / "faults.json").write_text(json.dumps(r, indent=2, default=str))
    assert r["faults_done"] == sorted(["reload1", "kill", "rss_start", "reload2", "db_lock", "reload3"])
    assert r["requests_sent"] >= 20_000
    assert r["unexpected_5xx"] == 0, r["examples"]
    assert r["answered_5xx"] == r["db_lock_503"] > 0  # the database window answered 503, nothing else did
    assert r["acknowledged_after_db_window"] > 5_000  # and the service recovered
    assert r["reload_failures"] == 0, r["examples"]
    assert r["connection_errors_elsewhere"] == 0
    reloads = {w["name"]: w for w in r["windows"] if w["name"].startswith("reload")}
    good1, bad, good3 = (reloads[n] for n in ("reload 1 (good)", "reload 2 (tampered folder)", "reload 3 (good)"))
    assert good1["status"] == 200 and good1["serving_after"].endswith("-r1")
    assert bad["status"] == 409 and "config.json does not match its sha256" in bad["answer"]["detail"]
    assert bad["serving_after"] == good1["serving_after"]  # the old model keeps serving
    assert good3["status"] == 200 and good3["serving_after"].endswith("-r3")
    assert r["acknowledged_before_kill"] > 0
    assert r["logged_of_those_before_kill"] == r["acknowledged_before_kill"]
    assert r["acknowledged_logged"] == r["acknowledged"] == r["answered_2xx"]
    assert r["rss_growth_pct"] <= 10, r["rss_mb"]
