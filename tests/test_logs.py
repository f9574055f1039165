"""The service's own logs: one JSON line per request with the documented fields, plain text on request, and
never a message text, a key or a token, even at debug level."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from serving.logs import REQUEST_FIELDS
from tests.conftest import ApiKeys, TrainedModel
from tests.processes import clean_env, serve_process

SECRET_TEXT = "Zanzibar-marker parcel never came, call me on 06 12 34 56 78 or zanzi@example.com"
TOKEN = "ls-token-that-must-never-show"


def test_json_logs_one_line_per_request_and_no_text_key_or_token(
    triage_model: TrainedModel, api_keys: ApiKeys, tmp_path: Path
) -> None:
    env = clean_env() | {
        "TRIAGE_API_KEYS_FILE": str(api_keys.file),
        "TRIAGE_LOG_LEVEL": "debug",
        "TRIAGE_LOG_TEXT": "full",  # even when the database keeps the text, the logs do not
        "TRIAGE_LABEL_STUDIO_TOKEN": TOKEN,
        "TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path / 'triage.db'}",
    }
    # the access log on (serve_process turns it off by default)
    with (
        serve_process(str(triage_model.folder), env, tmp_path, wait=90, args=()) as served,
        httpx.Client(base_url=served.url, headers=api_keys.header("all"), timeout=60) as client,
    ):
        answer = client.post("/classify", json={"text": SECRET_TEXT, "order_id": "171-2233445-6677889"}).json()
        client.post("/classify/batch", json={"messages": [{"text": SECRET_TEXT}] * 2})
        client.post("/classify", json={"text": SECRET_TEXT * 2000})  # 422: too long
        client.post("/classify", content=SECRET_TEXT.encode(), headers={"content-type": "text/plain"})  # 415
        client.post(
            "/classify",
            content=b'{"text": "' + SECRET_TEXT.encode() + b'"',
            headers={"content-type": "application/json"},
        )
        httpx.post(
            f"{served.url}/classify", json={"text": SECRET_TEXT}, headers={"Authorization": f"Bearer {SECRET_TEXT}"}
        )
        client.post(
            "/feedback", json={"request_id": answer["request_id"], "risk": "routine", "agent": "Zanzibar-agent"}
        )
        client.get(f"/nope/{SECRET_TEXT}")
        client.post("/admin/reload")
    log = served.log_text()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is one JSON object
    requests = [line for line in lines if line["logger"] == "triage.requests" and line["route"] != "/health"]
    assert len(requests) == 9
    first = requests[0]
    assert set(REQUEST_FIELDS) <= set(first) and first["request_id"] == answer["request_id"]
    assert (first["route"], first["status"], first["key"], first["model_version"]) == (
        "/classify",
        200,
        "all",
        answer["model_version"],
    )
    assert first["latency_ms"] > 0 and first["level"] == "info" and first["time"]
    assert [r["status"] for r in requests] == [200, 200, 422, 415, 422, 401, 201, 404, 200]
    assert requests[7]["route"] == "unmatched"
    for secret in ("Zanzibar", "06 12 34 56 78", "zanzi@example.com", TOKEN, *api_keys.keys.values()):
        assert secret not in log, secret


def test_plain_text_logs_for_local_use(triage_model: TrainedModel, tmp_path: Path) -> None:
    env = clean_env() | {"TRIAGE_LOG_FORMAT": "text"}
    with serve_process(str(triage_model.folder), env, tmp_path, wait=90, args=()) as served:
        httpx.post(f"{served.url}/classify", json={"text": SECRET_TEXT}, timeout=30)
    request = next(line for line in served.log_text().splitlines() if "route=/classify" in line)
    assert not request.startswith("{") and "route=/classify" in request and "status=200" in request
    assert "Zanzibar" not in served.log_text()
