"""The HTTP routes: validate, call the service, return a schema. Errors become HTTP answers only here (and
in the dependencies: the API key and its scope)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Connection

from serving import __version__
from serving.cases.buyers import BuyerSaltError
from serving.cases.store import CaseBook
from serving.clock import Clock, system_clock
from serving.feedback import is_misroute, resolve_feedback
from serving.keys import OPEN, KeyRing, KeysError, Principal, Scope
from serving.metrics import CONTENT_TYPE, Metrics
from serving.model import ModelError
from serving.predlog import PredictionLog, PredictionLogError
from serving.schemas import (
    MAX_BATCH,
    BatchRequest,
    BatchResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    VersionResponse,
)
from serving.service import ServiceLoader, TriageService, retire

log = logging.getLogger("triage.serving")
router = APIRouter()
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="api_key",
    description="An API key: `Authorization: Bearer <key>` (`triage keys create NAME --scopes ...`). Scopes: "
    "`classify` (/classify, /classify/batch), `feedback` (/feedback), `admin` (/admin/*, /metrics).",
)
CREATE = "an operator creates one with `triage keys create NAME --scopes {scope}`"


# -- access: the API key and its scope --------------------------------------------------------------
def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets a request through with a key holding `scope` (anyone in open mode)."""

    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
    ) -> Principal:
        keys: KeyRing = request.app.state.keys
        if keys.open:
            request.state.key = None
            return OPEN
        metrics: Metrics = request.app.state.metrics
        if credentials is None:
            metrics.auth_failures.labels("missing").inc()
            raise HTTPException(
                status_code=401,
                detail=f"no API key: send one as 'Authorization: Bearer <key>' ({CREATE.format(scope=scope)})",
                headers={"WWW-Authenticate": "Bearer"},
            )
        found = keys.identify(credentials.credentials)
        if found is None:
            metrics.auth_failures.labels("invalid").inc()
            raise HTTPException(
                status_code=401,
                detail="the API key is not valid (mistyped, revoked, or from another service): check the "
                f"'Authorization: Bearer <key>' header ({CREATE.format(scope=scope)})",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        request.state.key = found.name
        if scope not in found.scopes:
            metrics.auth_failures.labels("scope").inc()
            raise HTTPException(
                status_code=403,
                detail=f"key {found.name!r} has scope(s) {', '.join(sorted(found.scopes))} but "
                f"{request.method} {request.url.path} needs {scope!r}: use a key with it "
                f"({CREATE.format(scope=scope)})",
            )
        return Principal(found.name, found.scopes)

    return check


_admin = require("admin")


async def metrics_access(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Principal:
    """GET /metrics: the admin scope, unless TRIAGE_METRICS_PUBLIC=true makes the page public."""
    if request.app.state.metrics_public:
        request.state.key = None
        return OPEN
    return await _admin(request, credentials)


# -- dependencies: what the lifespan loaded (async: no thread-pool hop for a lookup) ----------------
async def get_service(request: Request) -> TriageService:
    service: TriageService = request.app.state.service
    return service


async def get_predlog(request: Request) -> PredictionLog:
    predlog: PredictionLog = request.app.state.predlog
    return predlog


async def get_inference(request: Request) -> CapacityLimiter:
    """At most one inference call per core at a time; other requests wait on the event loop."""
    limiter: CapacityLimiter = request.app.state.inference
    return limiter


async def get_cases(request: Request) -> CaseBook:
    book: CaseBook = request.app.state.cases
    return book


async def get_clock(request: Request) -> Clock:
    """The app's one clock (`create_app(clock=...)`; tests freeze it)."""
    clock: Clock = request.app.state.clock
    return clock


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


Service = Annotated[TriageService, Depends(get_service)]
PredLog = Annotated[PredictionLog, Depends(get_predlog)]
Inference = Annotated[CapacityLimiter, Depends(get_inference)]
Cases = Annotated[CaseBook, Depends(get_cases)]
AppClock = Annotated[Clock, Depends(get_clock)]
Meter = Annotated[Metrics, Depends(get_metrics)]
ClassifyKey = Annotated[Principal, Security(require("classify"))]
FeedbackKey = Annotated[Principal, Security(require("feedback"))]
AdminKey = Annotated[Principal, Security(_admin)]
MetricsKey = Annotated[Principal, Security(metrics_access)]


def json_response(model: BaseModel) -> Response:
    """Serialise an already validated response model once, in pydantic's Rust core.

    Returning a Response skips FastAPI's second validation and encoding pass of the same object;
    `response_model` on the route still documents the schema.
    """
    return Response(content=model.model_dump_json(), media_type="application/json")


def classify_and_record(
    svc: TriageService,
    plog: PredictionLog,
    requests: list[ClassifyRequest],
    request_ids: list[str] | None = None,
    key_name: str | None = None,
    cases: CaseBook | None = None,
    now: datetime | None = None,
) -> list[ClassifyResponse]:
    """The blocking part of a /classify request: classify, route each message through its order's case,
    then commit the answers and the cases in one transaction before returning them."""
    now = now or system_clock()
    results = svc.classify(requests, request_ids, now)
    if cases is None:
        plog.record(requests, results, now, key_name=key_name)
        return results
    routed: list[ClassifyResponse] = []

    def route(conn: Connection) -> None:
        routed[:] = cases.route(conn, requests, results, now)

    plog.record(requests, results, now, key_name=key_name, within=route)
    return routed


async def classify_many(
    request: Request,
    svc: TriageService,
    plog: PredictionLog,
    inference: CapacityLimiter,
    metrics: Metrics,
    principal: Principal,
    requests: list[ClassifyRequest],
    cases: CaseBook | None = None,
    now: datetime | None = None,
) -> list[ClassifyResponse]:
    request.state.model_version = svc.model_version
    # a single message's answer carries the HTTP request's id, so the request log line and the prediction log join
    ids = [request.state.request_id] if len(requests) == 1 and hasattr(request.state, "request_id") else None
    # one explicit worker-thread hop (a sync route would pay a second one to validate the response)
    svc.in_use += 1  # a reload frees the old model only when no request uses it
    try:
        results = await to_thread.run_sync(
            classify_and_record, svc, plog, requests, ids, principal.name, cases, now, limiter=inference
        )
    except PredictionLogError as err:
        metrics.predlog_failures.labels("prediction").inc()
        log.error("prediction log write failed: %s", err)
        raise HTTPException(
            status_code=503,
            detail="the prediction log could not record this classification, so no answer is returned; retry shortly",
        ) from err
    except BuyerSaltError as err:
        log.error("%s", err)
        raise HTTPException(
            status_code=503, detail="buyer ids cannot be hashed right now, so nothing was recorded; retry shortly"
        ) from err
    finally:
        svc.in_use -= 1
    metrics.count_predictions(results)
    return results


# -- routes -----------------------------------------------------------------------------------------
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key, or not a valid one"},
    403: {"model": ErrorResponse, "description": "The key lacks the scope this route needs"},
}


@router.post("/classify", response_model=ClassifyResponse, tags=["classify"], responses=AUTH_ERRORS)
async def classify(
    request: Request,
    req: ClassifyRequest,
    svc: Service,
    plog: PredLog,
    inference: Inference,
    metrics: Meter,
    who: ClassifyKey,
    cases: Cases,
    clock: AppClock,
) -> Response:
    """Risk, claim type, tier, queue, SLA and evidence checklist for one message (scope `classify`); with an
    order_id, its order's case (clocks, sticky Tier-1 escalation); a vetted reply; with a buyer_id, the
    buyer's history."""
    answers = await classify_many(request, svc, plog, inference, metrics, who, [req], cases, clock())
    return json_response(answers[0])


@router.post(
    "/classify/batch",
    response_model=BatchResponse,
    tags=["classify"],
    description=f"Classify 1 to {MAX_BATCH} messages in one model pass (scope `classify`).",
    responses=AUTH_ERRORS,
)
async def classify_batch(
    request: Request,
    req: BatchRequest,
    svc: Service,
    plog: PredLog,
    inference: Inference,
    metrics: Meter,
    who: ClassifyKey,
    cases: Cases,
    clock: AppClock,
) -> Response:
    results = await classify_many(request, svc, plog, inference, metrics, who, req.messages, cases, clock())
    return json_response(BatchResponse(results=results))


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    status_code=201,
    tags=["feedback"],
    responses={**AUTH_ERRORS, 404: {"model": ErrorResponse, "description": "No classification has this id"}},
)
def post_feedback(req: FeedbackRequest, plog: PredLog, metrics: Meter, who: FeedbackKey) -> FeedbackResponse:
    """Report what a classified ticket really was: the misroute signal reviewers see first (scope `feedback`)."""
    pred = plog.get(req.request_id)
    if pred is None:
        raise HTTPException(
            status_code=404,
            detail=f"unknown request_id {req.request_id!r}: no classification with this id was recorded",
        )
    risk, claim_type = resolve_feedback(pred.risk, pred.claim_type, req.risk, req.claim_type)
    try:
        saved = plog.add_feedback(req.request_id, risk, claim_type, req.agent, key_name=who.name)
    except PredictionLogError as err:
        metrics.predlog_failures.labels("feedback").inc()
        log.error("feedback write failed: %s", err)
        raise HTTPException(status_code=503, detail="the feedback could not be recorded; retry shortly") from err
    return FeedbackResponse(
        feedback_id=saved.id,
        request_id=pred.request_id,
        risk=risk,
        claim_type=claim_type,
        agent=saved.agent,
        predicted_risk=pred.risk,
        predicted_claim_type=pred.claim_type,
        misroute=is_misroute(pred.risk, pred.claim_type, risk, claim_type),
        model_version=pred.model_version,
        created_at=saved.created_at,
    )


@router.get("/health", response_model=HealthResponse, tags=["ops"])
def health(svc: Service) -> HealthResponse:
    return HealthResponse(status="ok", model_version=svc.model_version)


def version_of(svc: TriageService) -> VersionResponse:
    cfg = svc.classifier.bundle.config
    return VersionResponse(
        service=__version__,
        model_version=svc.model_version,
        variant=svc.classifier.bundle.variant,
        model_source=svc.source,
        registry_version=svc.registry_version,
        encoder=cfg["encoder"]["id"],
        created_at=cfg["created_at"],
    )


@router.get("/version", response_model=VersionResponse, tags=["ops"])
def version(svc: Service) -> VersionResponse:
    return version_of(svc)


@router.post(
    "/admin/reload",
    response_model=VersionResponse,
    tags=["ops"],
    responses={**AUTH_ERRORS, 409: {"model": ErrorResponse, "description": "The new model or keys could not load"}},
)
async def reload(request: Request, metrics: Meter, who: AdminKey) -> VersionResponse:
    """Load the configured model and the key file again (e.g. the current champion, a new key) and swap
    them in (scope `admin`).

    Requests in flight finish on the model they started with; a failed load keeps the old model and keys.
    """
    load: ServiceLoader = request.app.state.loader
    old: TriageService = request.app.state.service
    keys: KeyRing = request.app.state.keys
    try:
        new_keys = KeyRing.load(keys.source) if keys.source else keys
        start = time.perf_counter()
        new = await run_in_threadpool(load)
        seconds = time.perf_counter() - start
    except (ModelError, KeysError) as err:
        metrics.reloads.labels("refused").inc()
        log.warning("reload refused, still serving %s: %s", old.model_version, err)
        raise HTTPException(
            status_code=409, detail=f"reload failed, still serving the old model ({old.model_version}): {err}"
        ) from err
    request.app.state.service = new
    request.app.state.keys = new_keys
    log.info("reloaded: serving model %s from %s (was %s)", new.model_version, new.source, old.model_version)
    # freed once no request uses it, in its own thread: the answer (and its latency) does not wait for that
    threading.Thread(target=retire, args=(old,), name="retire-model", daemon=True).start()
    metrics.reloads.labels("ok").inc()
    metrics.served(new.model_version, new.classifier.bundle.variant, new.source, seconds)
    return version_of(new)


@router.get(
    "/metrics",
    tags=["ops"],
    response_class=Response,
    responses={**AUTH_ERRORS, 200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics_page(metrics: Meter, who: MetricsKey) -> Response:
    """The service's metrics in the Prometheus text format (scope `admin`, unless TRIAGE_METRICS_PUBLIC=true)."""
    return Response(content=metrics.exposition(), media_type=CONTENT_TYPE)
