"""API keys and scopes on the real service: the session server requires keys; a server without keys runs
open on loopback; the key's name (never the key) is recorded with predictions and feedback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.keys import create_key
from serving.predlog import PredictionLog
from serving.settings import Settings
from tests.conftest import ApiKeys, TrainedModel
from tests.processes import clean_env, serve_process

TEXT = {"text": "Bonjour, où en est ma commande ?"}
# route -> (method, body, the scope it needs)
ROUTES: dict[str, tuple[str, Any, str]] = {
    "/classify": ("POST", TEXT, "classify"),
    "/classify/batch": ("POST", {"messages": [TEXT]}, "classify"),
    "/feedback": ("POST", {"request_id": "no-such-id", "risk": "routine", "agent": "ana"}, "feedback"),
    "/metrics": ("GET", None, "admin"),
}
KEY_SCOPES = {
    "all": {"classify", "feedback", "admin"},
    "helpdesk": {"classify"},
    "agents": {"feedback"},
    "ops": {"admin"},
}


def call(url: str, route: str, headers: dict[str, str]) -> httpx.Response:
    method, body, _ = ROUTES[route]
    return httpx.request(method, url + route, json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_route_needs_a_key_with_its_scope(api_url: str, api_keys: ApiKeys, route: str) -> None:
    scope = ROUTES[route][2]
    missing = call(api_url, route, {})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer <key>" in missing.json()["detail"]
    assert f"triage keys create NAME --scopes {scope}" in missing.json()["detail"]
    wrong = call(api_url, route, {"Authorization": "Bearer tk_not-a-key"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
    assert "tk_not-a-key" not in wrong.text
    basic = call(api_url, route, {"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401
    for name, scopes in KEY_SCOPES.items():
        res = call(api_url, route, api_keys.header(name))
        if scope in scopes:
            assert res.status_code in (200, 201, 404), (name, res.text)  # 404: the feedback's unknown request id
        else:
            assert res.status_code == 403, (name, res.text)
            detail = res.json()["detail"]
            assert f"key {name!r}" in detail and f"needs {scope!r}" in detail and api_keys.keys[name] not in detail


def test_health_docs_and_openapi_stay_open_and_show_the_scheme(api_url: str) -> None:
    assert httpx.get(f"{api_url}/health").status_code == 200
    assert httpx.get(f"{api_url}/docs").status_code == 200
    spec = httpx.get(f"{api_url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["api_key"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["api_key"]["description"],
    }
    for path, method in (("/classify", "post"), ("/feedback", "post"), ("/admin/reload", "post"), ("/metrics", "get")):
        op = spec["paths"][path][method]
        assert op["security"] == [{"api_key": []}], path
        assert {"401", "403"} <= set(op["responses"]), path
    assert "security" not in spec["paths"]["/health"]["get"]


def test_a_new_key_works_after_reload_and_a_revoked_one_stops(triage_model: TrainedModel, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    admin, _ = create_key(keys, "ops", ["admin"])
    env = clean_env() | {"TRIAGE_API_KEYS_FILE": str(keys)}
    with serve_process(str(triage_model.folder), env, tmp_path, wait=90) as served:
        helpdesk, _ = create_key(keys, "helpdesk", ["classify"])
        auth = {"Authorization": f"Bearer {helpdesk}"}
        assert httpx.post(f"{served.url}/classify", json=TEXT, headers=auth, timeout=30).status_code == 401
        ops = {"Authorization": f"Bearer {admin}"}
        assert httpx.post(f"{served.url}/admin/reload", headers=ops, timeout=60).status_code == 200
        assert httpx.post(f"{served.url}/classify", json=TEXT, headers=auth, timeout=30).status_code == 200
        keys.write_text("\n".join(line for line in keys.read_text().splitlines() if not line.startswith("helpdesk")))
        assert httpx.post(f"{served.url}/admin/reload", headers=ops, timeout=60).status_code == 200
        assert httpx.post(f"{served.url}/classify", json=TEXT, headers=auth, timeout=30).status_code == 401
        keys.write_text("broken\n")  # a bad key file is refused and the keys in use stay
        res = httpx.post(f"{served.url}/admin/reload", headers=ops, timeout=60)
        assert res.status_code == 409 and "line 1: expected 3 fields" in res.json()["detail"]
        assert httpx.post(f"{served.url}/admin/reload", headers=ops, timeout=60).status_code == 409


def test_without_keys_the_service_is_open_on_loopback_and_says_so(triage_model: TrainedModel, tmp_path: Path) -> None:
    with serve_process(str(triage_model.folder), clean_env(), tmp_path, wait=90) as served:
        assert httpx.post(f"{served.url}/classify", json=TEXT, timeout=30).status_code == 200
        assert httpx.get(f"{served.url}/metrics", timeout=30).status_code == 200
        assert httpx.post(f"{served.url}/admin/reload", timeout=60).status_code == 200
    assert "OPEN: no API keys configured; listening on loopback (127.0.0.1) only" in served.log_text()


def test_the_keys_name_is_recorded_never_the_key(triage_model: TrainedModel, api_keys: ApiKeys, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'triage.db'}"
    settings = Settings(model=str(triage_model.folder), database_url=url, api_keys_file=api_keys.file)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/classify", json=TEXT, headers=api_keys.header("helpdesk")).json()
        batch = client.post("/classify/batch", json={"messages": [TEXT]}, headers=api_keys.header("all")).json()
        fb = {"request_id": answer["request_id"], "risk": "at_risk", "agent": "marie"}
        assert client.post("/feedback", json=fb, headers=api_keys.header("agents")).status_code == 201
    plog = PredictionLog(url)
    assert plog.get(answer["request_id"]).key_name == "helpdesk"  # type: ignore[union-attr]
    assert plog.get(batch["results"][0]["request_id"]).key_name == "all"  # type: ignore[union-attr]
    assert plog.feedback_for(answer["request_id"])[0].key_name == "agents"
    with plog.engine.connect() as conn:
        dump = str(conn.exec_driver_sql("SELECT * FROM predictions").all())
        dump += str(conn.exec_driver_sql("SELECT * FROM feedback").all())
    assert not any(key in dump for key in api_keys.keys.values())


def test_metrics_can_be_made_public(triage_model: TrainedModel, api_keys: ApiKeys, tmp_path: Path) -> None:
    settings = Settings(
        model=str(triage_model.folder),
        database_url=f"sqlite:///{tmp_path / 'triage.db'}",
        api_keys_file=api_keys.file,
        metrics_public=True,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 200
        assert client.post("/classify", json=TEXT).status_code == 401
        assert client.post("/admin/reload").status_code == 401
