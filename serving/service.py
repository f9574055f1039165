"""From a classifier's prediction to the helpdesk's answer: tier, queue, tags, SLA, evidence."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from serving.clock import as_utc, system_clock
from serving.keywords import keyword_triage
from serving.labels import CRISIS_TAG, EVIDENCE, QUEUES, SLA
from serving.language import detect_language
from serving.model import Classifier, ModelError, find_latest, release_memory
from serving.prediction import Prediction
from serving.schemas import ClassifyRequest, ClassifyResponse, KeywordTriageResult
from serving.settings import Settings


def sla_due(received_at: datetime | None, tier: int, now: datetime) -> datetime:
    return as_utc(received_at or now) + SLA[tier]


def respond(
    req: ClassifyRequest, pred: Prediction, model_version: str, now: datetime, request_id: str | None = None
) -> ClassifyResponse:
    kw = keyword_triage(req.text)
    language = detect_language(req.text)
    tier = pred.tier
    return ClassifyResponse(
        request_id=request_id or uuid.uuid4().hex,
        risk=pred.risk,
        risk_scores={k: round(v, 4) for k, v in pred.risk_scores.items()},
        claim_type=pred.claim_type,
        claim_type_scores={k: round(v, 4) for k, v in pred.claim_type_scores.items()},
        tier=tier,
        queue=QUEUES[tier],
        tags=[CRISIS_TAG] if pred.risk == "claim_filed" else [],
        sla_due_at=sla_due(req.received_at, tier, now),
        evidence=list(EVIDENCE[pred.claim_type]),
        language=language,
        # messages in a language the model was not built for always go to a human
        needs_review=pred.needs_review or language == "other",
        keyword_triage=KeywordTriageResult(tier=kw.tier, risk=kw.risk, claim_type=kw.claim_type),
        model_version=model_version,
    )


class TriageService:
    """The classifier plus the routing policy; one instance per loaded model."""

    def __init__(self, classifier: Classifier, source: str, registry_version: str | None = None) -> None:
        self.classifier = classifier
        self.source = source
        self.registry_version = registry_version
        self.in_use = 0  # requests classifying with it now (counted on the event loop)

    @property
    def model_version(self) -> str:
        return self.classifier.version

    def classify(
        self,
        requests: Sequence[ClassifyRequest],
        request_ids: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[ClassifyResponse]:
        """One onnxruntime pass for all `requests` (grouped by length), one answer each (with `request_ids`
        if given, else new ones); SLAs run from `now` (default: the system clock) for requests without
        `received_at`."""
        preds = self.classifier.predict([r.text for r in requests])
        now = now or system_clock()
        ids: Sequence[str | None] = request_ids or [None] * len(requests)
        return [respond(r, p, self.model_version, now, rid) for r, p, rid in zip(requests, preds, ids, strict=True)]


def retire(old: TriageService, grace: float = 2.0, poll: float = 0.1) -> None:
    """Free a swapped-out model: once no request uses it (and at least `grace` seconds after the swap, so a
    request that picked it just before is counted), drop its onnxruntime session and give the memory back.

    Measured without it: RSS +110 MB after the first reload and staying there (something kept the previous
    service alive); with it, a reload costs nothing once done (benchmarks/faults.py)."""
    time.sleep(grace)
    while old.in_use:
        time.sleep(poll)
    old.classifier.bundle.close()
    release_memory()


# What the app calls to (re)load its model: at start and at every POST /admin/reload.
ServiceLoader = Callable[[], TriageService]


def folder_loader(settings: Settings) -> ServiceLoader:
    """Load `settings.model` (a folder) or the newest folder under `settings.models_dir`."""

    def load() -> TriageService:
        source = settings.model
        if source and source.startswith("models:/"):
            raise ModelError(f"{source}: registry models need the training install (`triage serve` resolves them)")
        folder = Path(source) if source else find_latest(settings.models_dir)
        return TriageService(Classifier.load(folder, threads=settings.threads), source=str(folder))

    return load
