"""SIGTERM on a real server: requests in flight finish, are answered, recorded and logged; new ones get 503."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from serving.predlog import PredictionLog
from tests.conftest import ApiKeys, TrainedModel
from tests.processes import clean_env, serve_process

LONG = "Bonjour, le colis n'est jamais arrivé et personne ne répond à mes messages. " * 200


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(
    triage_model: TrainedModel, api_keys: ApiKeys, tmp_path: Path
) -> None:
    db = tmp_path / "triage.db"
    env = clean_env() | {"TRIAGE_API_KEYS_FILE": str(api_keys.file), "TRIAGE_DATABASE_URL": f"sqlite:///{db}"}
    auth = api_keys.header("all")
    slow: dict[str, httpx.Response] = {}

    def send_slow_batch() -> None:  # 64 long messages: seconds of inference (in flight: it and the scrape)
        slow["res"] = httpx.post(
            f"{served.url}/classify/batch", json={"messages": [{"text": LONG}] * 64}, headers=auth, timeout=120
        )

    with serve_process(str(triage_model.folder), env, tmp_path, wait=90, args=()) as served:
        sender = threading.Thread(target=send_slow_batch)
        sender.start()
        deadline = time.monotonic() + 30
        while b"triage_http_requests_in_flight 2.0" not in httpx.get(f"{served.url}/metrics", headers=auth).content:
            assert time.monotonic() < deadline, "the batch never got in flight"
            time.sleep(0.05)
        served.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        new = httpx.post(f"{served.url}/classify", json={"text": "hi"}, headers=auth, timeout=30)
        assert new.status_code == 503 and "shutting down" in new.json()["detail"]
        assert new.headers["connection"] == "close"
        assert httpx.get(f"{served.url}/health", timeout=30).status_code == 503  # load balancers stop sending
        assert served.proc.poll() is None  # still draining
        sender.join(timeout=120)
        assert served.proc.wait(timeout=60) == 0
    res = slow["res"]
    assert res.status_code == 200, res.text
    ids = [r["request_id"] for r in res.json()["results"]]
    assert len(ids) == 64
    assert {p.request_id for p in PredictionLog(f"sqlite:///{db}").list_predictions(request_ids=ids)} == set(ids)
    lines = [json.loads(line) for line in served.log_text().splitlines() if line.startswith("{")]
    batch = [x for x in lines if x.get("route") == "/classify/batch"]
    assert [x["status"] for x in batch] == [200]
    assert any(x["message"] == "drained" for x in lines)
    # the two refused while draining (not routed: they never reach the app)
    assert [(x["route"], x["status"]) for x in lines if x.get("status") == 503] == [("unmatched", 503)] * 2
