"""Cases through the real app on the session model: one order's story on a frozen clock (TestClient on
create_app), bad input, and concurrent creation against real uvicorn processes sharing one database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings
from tests.clock import FrozenClock
from tests.conftest import TrainedModel
from tests.processes import clean_env, triage_server

ORDER = "171-2233445-6677889"
# labels of the session model (checked): at_risk / not_received, routine, claim_filed
ANGRY = "Je n'ai toujours pas reçu ma commande, prévue le 12. Si rien ne bouge je contacte Amazon."
THANKS = "Bonjour, avez-vous des nouvelles ? Merci."
CLAIM = (
    "Objet : Réclamation au titre de la garantie A à Z pour la commande 171-2233445-6677889\n\n"
    "Bonjour,\nL'acheteur a déposé une réclamation au titre de la garantie A à Z pour la commande "
    "171-2233445-6677889. Motif : article non reçu. Répondez à cette réclamation dans un délai de "
    "48 heures depuis la page Réclamations au titre de la garantie A à Z de Seller Central."
)
H = timedelta(hours=1)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture
def app(triage_model: TrainedModel, tmp_path: Path) -> Iterator[tuple[TestClient, FrozenClock]]:
    clock = FrozenClock()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        model=str(triage_model.folder),
        database_url=f"sqlite:///{tmp_path / 'triage.db'}",
        var_dir=tmp_path / "var",
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        yield client, clock


def post(client: TestClient, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    out: dict[str, Any] = r.json()
    return out


def test_one_orders_story(app: tuple[TestClient, FrozenClock]) -> None:
    client, clock = app
    t0 = clock()
    order = {"channel": "amazon", "order_id": ORDER, "buyer_id": "A3KX9QZ0PLM7TW"}

    # 1. the first angry message: Tier 1, the prevention window starts
    first = post(client, "/classify", {"text": ANGRY, "received_at": t0.isoformat(), **order})
    assert (first["risk"], first["tier"], first["routing_reason"]) == ("at_risk", 1, "message")
    case = first["case"]
    assert (case["message_count"], case["tier"], case["highest_risk"], case["status"]) == (1, 1, "at_risk", "open")
    assert at(case["first_contact_at"]) == t0 and at(case["prevention_deadline"]) == t0 + 48 * H
    assert case["response_deadline"] is None and case["claim_types"] == [first["claim_type"]]
    assert first["suggested_reply"]["id"] == f"{first['claim_type']}.fr"
    assert first["buyer"] == {
        "earlier_cases": 0,
        "earlier_tier1_cases": 0,
        "earlier_claims": 0,
        "repeat_claimant": False,
    }
    cid = case["case_id"]

    # a Tier-2 agent sends the vetted acknowledgment inside the SLA
    clock.advance(minutes=20)
    reply = client.get(f"/replies/{first['suggested_reply']['id']}", params={"order_id": ORDER})
    assert reply.status_code == 200 and ORDER in reply.json()["text"]
    sent = post(
        client,
        f"/cases/{cid}/events",
        {"kind": "replied", "agent": "tier2.paul", "reply_id": first["suggested_reply"]["id"]},
        201,
    )
    assert sent["reply_text"] == reply.json()["text"] and at(sent["at"]) == clock()

    # 2. a calm second message: routine for the model, Tier 1 by its case
    clock.advance(hours=5)
    second = post(client, "/classify", {"text": THANKS, **order})
    assert (second["risk"], second["claim_type"]) == ("routine", "none")
    assert (second["tier"], second["queue"], second["routing_reason"]) == (1, "tier1-escalation", "escalated_by_case")
    assert second["case"]["message_count"] == 2 and at(second["sla_due_at"]) == clock() + H

    # 3. Amazon's claim notification: the response deadline replaces the prevention window
    clock.advance(hours=20)
    claim = post(client, "/classify", {"text": CLAIM, "channel": "amazon", "order_id": ORDER})
    assert (claim["risk"], claim["tags"]) == ("claim_filed", ["CRISIS: A-to-Z"])
    assert claim["case"]["prevention_deadline"] is None
    assert at(claim["case"]["response_deadline"]) == clock() + 48 * H
    assert claim["suggested_reply"]["id"] == "claim_filed.fr"

    queue = client.get("/cases", params={"tier": 1, "status": "open"}).json()
    assert [c["case_id"] for c in queue["cases"]] == [cid] and queue["total"] == 1

    # 4. the specialist answers Amazon with evidence, then resolves
    clock.advance(hours=2)
    post(client, f"/cases/{cid}/events", {"kind": "evidence_attached", "agent": "marie", "note": "tracking + POD"}, 201)
    post(client, f"/cases/{cid}/events", {"kind": "resolved", "agent": "marie", "note": "replacement sent"}, 201)
    assert client.get("/cases", params={"tier": 1, "status": "open"}).json()["total"] == 0

    # after the resolution a routine message routes by itself again
    clock.advance(hours=1)
    after = post(client, "/classify", {"text": THANKS, **order})
    assert (after["tier"], after["routing_reason"]) == (2, "message")
    assert after["buyer"]["earlier_cases"] == 0  # the same case is not "earlier"

    # 5. the trail: every message with its prediction, model version and routing; every event
    trail = client.get(f"/cases/{cid}").json()
    version = client.get("/version").json()["model_version"]
    assert [(m["risk"], m["tier"], m["routing_reason"]) for m in trail["messages"]] == [
        ("at_risk", 1, "message"),
        ("routine", 1, "escalated_by_case"),
        ("claim_filed", 1, "message"),
        ("routine", 2, "message"),
    ]
    assert {m["model_version"] for m in trail["messages"]} == {version}
    assert [m["request_id"] for m in trail["messages"]] == [x["request_id"] for x in (first, second, claim, after)]
    assert [(e["kind"], e["agent"]) for e in trail["events"]] == [
        ("replied", "tier2.paul"),
        ("evidence_attached", "marie"),
        ("resolved", "marie"),
    ]
    assert trail["status"] == "resolved" and trail["message_count"] == 4


def test_messages_without_an_order_are_classified_as_before(app: tuple[TestClient, FrozenClock]) -> None:
    client, _ = app
    body = post(client, "/classify", {"text": ANGRY})
    assert body["case"] is None and body["routing_reason"] == "message" and body["buyer"] is None
    assert body["suggested_reply"]["language"] == "fr"
    batch = post(
        client,
        "/classify/batch",
        {"messages": [{"text": ANGRY, "order_id": "B-1"}, {"text": THANKS, "order_id": "B-1"}, {"text": THANKS}]},
    )["results"]
    assert [r["case"]["message_count"] if r["case"] else None for r in batch] == [1, 2, None]
    assert batch[1]["routing_reason"] == "escalated_by_case"
    assert client.get("/cases").json()["total"] == 1


def test_bad_input(app: tuple[TestClient, FrozenClock]) -> None:
    client, clock = app
    cid = post(client, "/classify", {"text": ANGRY, "order_id": ORDER})["case"]["case_id"]
    event = {"kind": "replied", "agent": "marie", "note": "called the buyer"}

    def status(method: str, path: str, **kw: Any) -> tuple[int, str]:
        r = client.request(method, path, **kw)
        return r.status_code, json.dumps(r.json()["detail"]) if r.status_code >= 400 else ""

    assert status("GET", "/cases/999")[0] == 404
    code, detail = status("POST", "/cases/999/events", json=event)
    assert code == 404 and "unknown case 999" in detail
    assert status("GET", "/cases/abc")[0] == 422
    assert status("GET", "/cases", params={"tier": 3})[0] == 422
    assert status("GET", "/cases", params={"status": "closed"})[0] == 422
    assert status("GET", "/cases", params={"limit": 0})[0] == 422
    for bad, says in [
        ({**event, "kind": "deleted"}, "kind"),
        ({**event, "agent": " "}, "agent is blank"),
        ({**event, "extra": 1}, "extra"),
        ({"kind": "resolved", "agent": "marie", "reply_id": "other.fr"}, "kind 'replied' only"),
        ({"kind": "evidence_attached", "agent": "marie"}, "what evidence"),
        ({**event, "at": "yesterday"}, "at"),
        ({**event, "at": (clock() + 2 * H).isoformat()}, "in the future"),
        ({"kind": "replied", "agent": "marie", "reply_id": "nope"}, "unknown reply 'nope'"),
    ]:
        code, detail = status("POST", f"/cases/{cid}/events", json=bad)
        assert (code, says in detail) == (422, True), (bad, detail)
    clock.advance(hours=1)
    assert status("POST", f"/cases/{cid}/events", json=event)[0] == 201
    code, detail = status("POST", f"/cases/{cid}/events", json={**event, "at": (clock() - 0.5 * H).isoformat()})
    assert code == 409 and "last event" in detail
    assert status("POST", f"/cases/{cid}/events", json={"kind": "resolved", "agent": "marie"})[0] == 201
    code, detail = status("POST", f"/cases/{cid}/events", json=event)
    assert code == 409 and "resolved" in detail
    assert [e["kind"] for e in client.get(f"/cases/{cid}").json()["events"]] == ["replied", "resolved"]
    assert status("GET", "/replies/nope")[0] == 404
    code, detail = status("GET", "/replies/not_received.fr")
    assert code == 422 and "order_id" in detail
    assert status("GET", "/replies/ack.routine.it")[0] == 200
    listed = client.get("/replies").json()
    assert len(listed["replies"]) == 24 and listed["fallback_language"] == "en"


def test_concurrent_messages_for_a_new_order_make_one_case(triage_model: TrainedModel, tmp_path: Path) -> None:
    """Two real uvicorn processes on one SQLite database, parallel requests about the same new order."""
    env = clean_env() | {"TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    folder = str(triage_model.folder)
    with (
        triage_server(folder, env, cwd=tmp_path, wait=90) as a,
        triage_server(folder, env, cwd=tmp_path, wait=90) as b,
        httpx.Client(timeout=60) as http,
    ):
        urls = [a, b]
        n = 16

        def send(i: int) -> httpx.Response:
            body = {"text": f"{ANGRY} ({i})", "channel": "amazon", "order_id": "NEW-0001"}
            return http.post(f"{urls[i % 2]}/classify", json=body)

        with ThreadPoolExecutor(max_workers=n) as pool:
            answers = list(pool.map(send, range(n)))
        assert [r.status_code for r in answers] == [200] * n, [r.text for r in answers if r.status_code != 200]
        cases = {r.json()["case"]["case_id"] for r in answers}
        assert len(cases) == 1
        assert sorted(r.json()["case"]["message_count"] for r in answers) == list(range(1, n + 1))
        listed = http.get(f"{a}/cases").json()
        assert listed["total"] == 1 and listed["cases"][0]["message_count"] == n
        trail = http.get(f"{b}/cases/{cases.pop()}").json()
        assert len(trail["messages"]) == n
