"""The HTTP routes: validate, call the service, return a schema. Errors become HTTP answers only here."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Connection

from serving import __version__
from serving.cases.buyers import BuyerSaltError
from serving.cases.store import CaseBook
from serving.clock import Clock, system_clock
from serving.feedback import is_misroute, resolve_feedback
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
from serving.service import ServiceLoader, TriageService

log = logging.getLogger("triage.serving")
router = APIRouter()


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


Service = Annotated[TriageService, Depends(get_service)]
PredLog = Annotated[PredictionLog, Depends(get_predlog)]
Inference = Annotated[CapacityLimiter, Depends(get_inference)]
Cases = Annotated[CaseBook, Depends(get_cases)]
AppClock = Annotated[Clock, Depends(get_clock)]


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
    cases: CaseBook | None = None,
    now: datetime | None = None,
) -> list[ClassifyResponse]:
    """The blocking part of a /classify request: classify, route each message through its order's case,
    then commit the answers and the cases in one transaction before returning them."""
    now = now or system_clock()
    results = svc.classify(requests, now=now)
    if cases is None:
        plog.record(requests, results, now)
        return results
    routed: list[ClassifyResponse] = []

    def route(conn: Connection) -> None:
        routed[:] = cases.route(conn, requests, results, now)

    plog.record(requests, results, now, within=route)
    return routed


async def classify_many(
    svc: TriageService,
    plog: PredictionLog,
    inference: CapacityLimiter,
    requests: list[ClassifyRequest],
    cases: CaseBook | None = None,
    now: datetime | None = None,
) -> list[ClassifyResponse]:
    # one explicit worker-thread hop (a sync route would pay a second one to validate the response)
    try:
        return await to_thread.run_sync(classify_and_record, svc, plog, requests, cases, now, limiter=inference)
    except PredictionLogError as err:
        log.error("%s", err)
        raise HTTPException(
            status_code=503,
            detail="the prediction log could not record this classification, so no answer is returned; retry shortly",
        ) from err
    except BuyerSaltError as err:
        log.error("%s", err)
        raise HTTPException(
            status_code=503, detail="buyer ids cannot be hashed right now, so nothing was recorded; retry shortly"
        ) from err


# -- routes -----------------------------------------------------------------------------------------
@router.post("/classify", response_model=ClassifyResponse, tags=["classify"])
async def classify(
    req: ClassifyRequest, svc: Service, plog: PredLog, inference: Inference, cases: Cases, clock: AppClock
) -> Response:
    """Risk, claim type, tier, queue, SLA and evidence checklist for one message; with an order_id, its
    order's case (clocks, sticky Tier-1 escalation); a vetted reply; with a buyer_id, the buyer's history."""
    return json_response((await classify_many(svc, plog, inference, [req], cases, clock()))[0])


@router.post(
    "/classify/batch",
    response_model=BatchResponse,
    tags=["classify"],
    description=f"Classify 1 to {MAX_BATCH} messages in one model pass.",
)
async def classify_batch(
    req: BatchRequest, svc: Service, plog: PredLog, inference: Inference, cases: Cases, clock: AppClock
) -> Response:
    results = await classify_many(svc, plog, inference, req.messages, cases, clock())
    return json_response(BatchResponse(results=results))


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    status_code=201,
    tags=["feedback"],
    responses={404: {"model": ErrorResponse, "description": "No classification has this id"}},
)
def post_feedback(req: FeedbackRequest, plog: PredLog) -> FeedbackResponse:
    """Report what a classified ticket really was: the misroute signal reviewers see first."""
    pred = plog.get(req.request_id)
    if pred is None:
        raise HTTPException(
            status_code=404,
            detail=f"unknown request_id {req.request_id!r}: no classification with this id was recorded",
        )
    risk, claim_type = resolve_feedback(pred.risk, pred.claim_type, req.risk, req.claim_type)
    try:
        saved = plog.add_feedback(req.request_id, risk, claim_type, req.agent)
    except PredictionLogError as err:
        log.error("%s", err)
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
    responses={409: {"model": ErrorResponse, "description": "The new model could not be loaded"}},
)
async def reload(request: Request) -> VersionResponse:
    """Load the configured model again (e.g. the current champion) and swap it in.

    Requests in flight finish on the model they started with; a failed load keeps the old model.
    """
    load: ServiceLoader = request.app.state.loader
    try:
        new = await run_in_threadpool(load)
    except ModelError as err:
        raise HTTPException(status_code=409, detail=f"reload failed, still serving the old model: {err}") from err
    request.app.state.service = new
    return version_of(new)
