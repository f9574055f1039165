"""GET /metrics on a real server: scraped after known traffic, every count as sent."""

from __future__ import annotations

from pathlib import Path

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ApiKeys, TrainedModel
from tests.processes import clean_env, serve_process

TEXTS = [
    "Bonjour, je n'ai toujours pas reçu ma commande, je vais ouvrir un litige A à Z.",
    "Merci beaucoup, tout est parfait !",
    "Il pacco è arrivato rotto, voglio un rimborso.",
    "Can I change the delivery address?",
    "Hallo, wo ist mein Paket?",
]


def scrape(url: str, headers: dict[str, str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    res = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(res.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_metrics_count_the_traffic_sent(triage_model: TrainedModel, api_keys: ApiKeys, tmp_path: Path) -> None:
    db = tmp_path / "triage.db"
    env = clean_env() | {"TRIAGE_API_KEYS_FILE": str(api_keys.file), "TRIAGE_DATABASE_URL": f"sqlite:///{db}"}
    admin = api_keys.header("ops")
    with (
        serve_process(str(triage_model.folder), env, tmp_path, wait=90) as served,
        httpx.Client(base_url=served.url, headers=api_keys.header("all"), timeout=60) as client,
    ):
        answers = [client.post("/classify", json={"text": t}).json() for t in TEXTS * 4]  # 20
        answers += client.post("/classify/batch", json={"messages": [{"text": t} for t in TEXTS]}).json()["results"]
        for _ in range(3):
            assert client.post("/classify", json={"text": ""}).status_code == 422
        assert httpx.post(f"{served.url}/classify", json={"text": "hi"}).status_code == 401
        assert (
            client.post(
                "/feedback", json={"request_id": answers[0]["request_id"], "risk": "routine", "agent": "a"}
            ).status_code
            == 201
        )
        assert client.post("/admin/reload").status_code == 200
        engine = sa.create_engine(f"sqlite:///{db}")  # the log's database fails: 2 answers are refused
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE feedback"))
            conn.execute(sa.text("DROP TABLE predictions"))
        engine.dispose()
        assert [client.post("/classify", json={"text": t}).status_code for t in TEXTS[:2]] == [503, 503]
        m = scrape(served.url, admin)
        version = answers[0]["model_version"]

    assert value(m, "triage_http_requests_total", route="/classify", method="POST", status="200") == 20
    assert value(m, "triage_http_requests_total", route="/classify/batch", status="200") == 1
    assert value(m, "triage_http_requests_total", route="/classify", status="422") == 3
    assert value(m, "triage_http_requests_total", route="/classify", status="401") == 1
    assert value(m, "triage_http_requests_total", route="/classify", status="503") == 2
    assert value(m, "triage_http_requests_total", route="/feedback", status="201") == 1
    assert value(m, "triage_http_requests_total", route="/admin/reload", status="200") == 1
    assert value(m, "triage_http_request_duration_seconds_count", route="/classify", status="200") == 20
    assert value(m, "triage_http_request_duration_seconds_sum", route="/classify", status="200") > 0
    # predictions: 25 answered, by risk, tier and language as answered
    assert value(m, "triage_predictions_total") == 25
    for risk in ("claim_filed", "at_risk", "routine"):
        assert value(m, "triage_predictions_total", risk=risk) == sum(a["risk"] == risk for a in answers)
    for lang in ("fr", "it", "en", "other"):
        assert value(m, "triage_predictions_total", language=lang) == sum(a["language"] == lang for a in answers)
    assert value(m, "triage_predictions_total", tier="1") == sum(a["tier"] == 1 for a in answers)
    assert value(m, "triage_predictions_total", model_version=version) == 25
    assert value(m, "triage_needs_review_total", model_version=version) == sum(a["needs_review"] for a in answers)
    assert value(m, "triage_predlog_write_failures_total", kind="prediction") == 2
    assert value(m, "triage_model_info", version=version) == 1
    assert value(m, "triage_model_load_seconds") > 0
    assert value(m, "triage_model_reloads_total", outcome="ok") == 1
    assert value(m, "triage_auth_failures_total", reason="missing") == 1
    assert all(name.startswith("triage_") for name, _ in m)
