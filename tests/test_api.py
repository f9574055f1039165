"""The HTTP API through a real `triage serve` (uvicorn) process on the session model."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from serving.keywords import keyword_triage
from serving.language import detect_language

from .conftest import TrainedModel

RISKS = {"claim_filed", "at_risk", "routine"}
CLAIM_TYPES = {
    "not_received",
    "damaged_defective",
    "not_as_described",
    "return_refund",
    "customs_fees",
    "other",
    "none",
}
# the labeling guide's evidence checklist, copied from docs/labeling-guide.md
EVIDENCE = {
    "not_received": ["tracking number", "carrier", "delivery date and time", "proof of delivery / signature"],
    "damaged_defective": ["photos", "inventory/dispatch records", "packaging"],
    "not_as_described": ["listing page", "photos", "inventory records", "supplier invoices"],
    "return_refund": ["return tracking", "refund record", "return policy"],
    "customs_fees": ["shipping terms", "customs documents", "listing's delivery terms"],
    "other": ["full message history"],
    "none": [],
}
FIELDS = {
    "request_id",
    "risk",
    "risk_scores",
    "claim_type",
    "claim_type_scores",
    "tier",
    "queue",
    "tags",
    "sla_due_at",
    "evidence",
    "language",
    "needs_review",
    "keyword_triage",
    "model_version",
    "routing_reason",
    "case",
    "suggested_reply",
    "buyer",
}

MESSAGES = [
    "Bonjour, je n'ai toujours pas reçu ma commande 171-2233445-6677889, livraison prévue le 12 mars. "
    "Je vais ouvrir un litige A à Z.",
    "Merci beaucoup, tout est parfait !",
    "Buongiorno, il pacco risulta consegnato ma non ho ricevuto nulla. Ordine 402-9988776-5544332.",
    "Ciao, posso avere la fattura?",
    "The headphones arrived broken, I want a refund of £89.90.",
    "Can I change the delivery address before you ship?",
    "Hallo, wo ist mein Paket?",
]

# Amazon's A-to-Z claim notification, as sellers receive it in each language (not in the training data)
NOTIFICATIONS = {
    "fr": "Objet : Réclamation au titre de la garantie A à Z pour la commande 402-7781234-5566778\n\n"
    "Bonjour,\nL'acheteur a déposé une réclamation au titre de la garantie A à Z pour la commande "
    "402-7781234-5566778. Motif : article non reçu. Répondez à cette réclamation dans un délai de "
    "48 heures depuis la page Réclamations au titre de la garantie A à Z de Seller Central.",
    "it": "Oggetto: Reclamo nell'ambito della Garanzia dalla A alla Z per l'ordine 405-1122334-4455667\n\n"
    "Gentile venditore,\nl'acquirente ha presentato un reclamo nell'ambito della Garanzia dalla A "
    "alla Z per l'ordine 405-1122334-4455667. Motivo: articolo danneggiato. Rispondi entro 48 ore "
    "dalla pagina Reclami Garanzia dalla A alla Z di Seller Central.",
    "en": "Subject: A-to-z Guarantee claim for order 203-9988776-1122334\n\n"
    "Hello,\nThe buyer has filed an A-to-z Guarantee claim for order 203-9988776-1122334. "
    "Reason: item not as described. Please respond within 48 hours from the A-to-z Guarantee "
    "Claims page in Seller Central.",
}

RECEIVED = "2026-11-27T09:30:00Z"


def classify(api: httpx.Client, text: str, **extra: object) -> dict:
    r = api.post("/classify", json={"text": text, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def due(body: dict) -> datetime:
    return datetime.fromisoformat(body["sla_due_at"])


@pytest.fixture(scope="module")
def tier1_threshold(triage_model: TrainedModel) -> float:
    return float(json.loads((triage_model.folder / "config.json").read_text())["review"]["tier1_threshold"])


def check_answer(body: dict, text: str, tier1_threshold: float) -> None:
    """Every documented field, consistent with itself and with the routing policy of the guide."""
    assert set(body) == FIELDS
    scores = body["risk_scores"]
    assert set(scores) == RISKS
    assert sum(scores.values()) == pytest.approx(1, abs=2e-3)
    # Tier 1 when P(claim_filed) + P(at_risk) reaches the model's threshold, then the likelier of the two
    p_tier1 = scores["claim_filed"] + scores["at_risk"]
    if abs(p_tier1 - tier1_threshold) > 2e-3:  # the scores are rounded to 4 decimals
        assert (body["risk"] != "routine") == (p_tier1 >= tier1_threshold)
    if body["risk"] != "routine":
        assert body["risk"] == max(("claim_filed", "at_risk"), key=scores.__getitem__)
    assert set(body["claim_type_scores"]) == CLAIM_TYPES
    assert sum(body["claim_type_scores"].values()) == pytest.approx(1, abs=2e-3)
    assert (body["claim_type"] == "none") == (body["risk"] == "routine")
    tier = 2 if body["risk"] == "routine" else 1
    crisis = body["risk"] == "claim_filed"
    if body["routing_reason"] == "escalated_by_case":  # a routine message about an open Tier-1 order
        assert tier == 2 and body["case"]["tier"] == 1 and body["case"]["status"] == "open"
        tier, crisis = 1, body["case"]["response_deadline"] is not None
    else:
        assert body["routing_reason"] == "message"
    assert body["tier"] == tier
    assert body["queue"] == {1: "tier1-escalation", 2: "tier2-general"}[tier]
    assert body["tags"] == (["CRISIS: A-to-Z"] if crisis else [])
    assert body["suggested_reply"]["language"] == (body["language"] if body["language"] != "other" else "en")
    assert body["buyer"] is None  # no buyer_id given here
    assert body["evidence"] == EVIDENCE[body["claim_type"]]
    assert body["language"] == detect_language(text)
    if body["language"] == "other":
        assert body["needs_review"] is True
    kw = keyword_triage(text)
    assert body["keyword_triage"] == {"tier": kw.tier, "risk": kw.risk, "claim_type": kw.claim_type}
    assert len(body["request_id"]) >= 16


@pytest.mark.parametrize("text", MESSAGES)
def test_classify_returns_every_field(api: httpx.Client, tier1_threshold: float, text: str) -> None:
    order_id = f"171-2233445-{MESSAGES.index(text):07d}"  # one order each: no case routing between them
    body = classify(api, text, channel="amazon", order_id=order_id, received_at=RECEIVED)
    check_answer(body, text, tier1_threshold)
    assert body["routing_reason"] == "message"
    assert body["case"]["order_id"] == order_id and body["case"]["message_count"] == 1
    hours = 1 if body["tier"] == 1 else 24
    assert due(body) == datetime.fromisoformat(RECEIVED) + timedelta(hours=hours)
    assert body["model_version"] == api.get("/health").json()["model_version"]


def test_sla_runs_from_received_at_with_or_without_offset(api: httpx.Client) -> None:
    claim = NOTIFICATIONS["en"]
    body = classify(api, claim, received_at="2026-03-01T23:30:00+01:00")
    assert body["tier"] == 1
    assert due(body) == datetime.fromisoformat("2026-03-02T00:30:00+01:00")
    body = classify(api, claim, received_at="2026-03-01T10:00:00")  # no offset: UTC
    assert due(body) == datetime.fromisoformat("2026-03-01T11:00:00+00:00")
    routine = classify(api, "Merci beaucoup, tout est parfait !", received_at="2026-03-01T10:00:00Z")
    assert routine["tier"] == 2
    assert due(routine) == datetime.fromisoformat("2026-03-02T10:00:00+00:00")
    # without received_at the SLA runs from now
    before = datetime.now(UTC)
    body = classify(api, claim)
    after = datetime.now(UTC)
    assert before - timedelta(seconds=5) <= due(body) - timedelta(hours=1) <= after


@pytest.mark.parametrize("language", ["fr", "it", "en"])
def test_a_to_z_notification_is_claim_filed(api: httpx.Client, tier1_threshold: float, language: str) -> None:
    text = NOTIFICATIONS[language]
    body = classify(api, text, channel="amazon", received_at=RECEIVED)
    check_answer(body, text, tier1_threshold)
    assert body["language"] == language
    assert (body["risk"], body["tier"], body["queue"]) == ("claim_filed", 1, "tier1-escalation")
    assert body["tags"] == ["CRISIS: A-to-Z"]
    assert due(body) == datetime.fromisoformat(RECEIVED) + timedelta(hours=1)


def test_request_ids_are_unique(api: httpx.Client) -> None:
    ids = [classify(api, "Ciao, posso avere la fattura?")["request_id"] for _ in range(5)]
    batch = api.post("/classify/batch", json={"messages": [{"text": "Thanks!"}] * 5}).json()["results"]
    ids += [r["request_id"] for r in batch]
    assert len(set(ids)) == len(ids) == 10


def test_batch_keeps_order_and_equals_single_calls(api: httpx.Client, tier1_threshold: float) -> None:
    # clear-cut messages only: a near tie may flip with the few-thousandths noise of int8 (see below)
    texts = [t for t in MESSAGES if detect_language(t) != "other"] + list(NOTIFICATIONS.values())
    r = api.post("/classify/batch", json={"messages": [{"text": t, "received_at": RECEIVED} for t in texts]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(texts)
    for text, got in zip(texts, results, strict=True):
        check_answer(got, text, tier1_threshold)
        single = classify(api, text, received_at=RECEIVED)
        same = (
            "risk",
            "claim_type",
            "tier",
            "queue",
            "tags",
            "sla_due_at",
            "evidence",
            "language",
            "keyword_triage",
            "model_version",
        )
        assert {k: got[k] for k in same} == {k: single[k] for k in same}, text
        # int8 graphs quantise activations per call, so scores move slightly with the batch's other messages
        for key in ("risk_scores", "claim_type_scores"):
            assert got[key] == pytest.approx(single[key], abs=0.05), text


def test_batch_limit(api: httpx.Client) -> None:
    assert api.post("/classify/batch", json={"messages": [{"text": "hi"}] * 64}).status_code == 200
    r = api.post("/classify/batch", json={"messages": [{"text": "hi"}] * 65})
    assert r.status_code == 422
    assert "64" in json.dumps(r.json()["detail"])
    r = api.post("/classify/batch", json={"messages": []})
    assert r.status_code == 422


def test_health_version_and_docs(api: httpx.Client, triage_model: TrainedModel) -> None:
    config = json.loads((triage_model.folder / "config.json").read_text())
    assert api.get("/health").json() == {"status": "ok", "model_version": config["version"]}
    version = api.get("/version").json()
    assert version["model_version"] == config["version"]
    assert version["variant"] == config["default_variant"]
    assert version["encoder"] == config["encoder"]["id"]
    assert version["created_at"] == config["created_at"]
    assert version["model_source"] == str(triage_model.folder)
    spec = api.get("/openapi.json").json()
    assert {"/classify", "/classify/batch", "/health", "/version"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert set(schemas["ClassifyResponse"]["properties"]) >= FIELDS
    # the route parameters are the request body only (no stray query parameters)
    assert "parameters" not in spec["paths"]["/classify"]["post"]
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


JSON = {"content-type": "application/json"}
BAD_REQUESTS: dict[str, tuple[dict, int, str]] = {
    "empty text": ({"json": {"text": ""}}, 422, "text"),
    "blank text": ({"json": {"text": " \n\t "}}, 422, "blank"),
    "1 MB of text": ({"json": {"text": "a" * 1_000_000}}, 422, "at most 20000 characters"),
    "text is a number": ({"json": {"text": 123}}, 422, "valid string"),
    "received_at is not a date": ({"json": {"text": "hi", "received_at": "yesterday"}}, 422, "received_at"),
    "unknown field": ({"json": {"text": "hi", "priority": "high"}}, 422, "priority"),
    "no text": ({"json": {"channel": "amazon"}}, 422, "text"),
    "not an object": ({"json": ["hi"]}, 422, "object"),
    "invalid JSON": ({"content": b'{"text": "hi"', "headers": JSON}, 422, "JSON"),
    "missing body": ({}, 422, "body"),
    "form body": ({"data": {"text": "hi"}}, 415, "application/json"),
    "plain-text body": ({"content": b"hi", "headers": {"content-type": "text/plain"}}, 415, "application/json"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx(api: httpx.Client, case: str) -> None:
    kwargs, status, hint = BAD_REQUESTS[case]
    r = api.post("/classify", **kwargs)
    assert r.status_code == status, r.text
    detail = json.dumps(r.json()["detail"])
    assert hint.lower() in detail.lower()
    assert len(r.content) < 2000  # the message does not echo a huge input back


def test_oversize_body_is_refused_with_413(api: httpx.Client) -> None:
    body = b'{"text": "' + b"a" * (8 * 1024 * 1024) + b'"}'
    r = api.post("/classify", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "8 MB" in r.json()["detail"]
    # the server is still fine
    assert api.get("/health").status_code == 200


def test_oversize_chunked_body_is_refused_with_413(api: httpx.Client) -> None:
    def chunks():  # no Content-Length: Transfer-Encoding chunked
        yield b'{"text": "'
        for _ in range(9 * 1024):
            yield b"a" * 1024
        yield b'"}'

    r = api.post("/classify", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_method(api: httpx.Client) -> None:
    assert api.post("/nope", json={}).status_code == 404
    assert api.get("/classify").status_code == 405
