"""The FastAPI app: thin routes over a TriageService loaded once at startup."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import __version__
from serving.feedback import is_misroute, resolve_feedback
from serving.model import Classifier, ModelError, find_latest, inference_slots
from serving.predlog import PredictionLog, PredictionLogError, safe_url
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
from serving.service import TriageService
from serving.settings import Settings

log = logging.getLogger("triage.serving")
MAX_BODY_BYTES = 8 * 1024 * 1024

ServiceLoader = Callable[[], TriageService]


async def get_service(request: Request) -> TriageService:
    """The TriageService the lifespan loaded (module level, so route annotations resolve; async: no
    thread-pool hop for a lookup)."""
    service: TriageService = request.app.state.service
    return service


Service = Annotated[TriageService, Depends(get_service)]


async def get_predlog(request: Request) -> PredictionLog:
    """The prediction log the lifespan opened (async: no thread-pool hop for a lookup)."""
    predlog: PredictionLog = request.app.state.predlog
    return predlog


PredLog = Annotated[PredictionLog, Depends(get_predlog)]


def record(plog: PredictionLog, requests: list[ClassifyRequest], results: list[ClassifyResponse]) -> None:
    """Commit the answers to the prediction log before they are returned; 503 if it cannot."""
    try:
        plog.record(requests, results)
    except PredictionLogError as err:
        log.error("%s", err)
        raise HTTPException(status_code=503, detail="the prediction log could not record this "
                            "classification, so no answer is returned; retry shortly") from err


def classify_and_record(svc: TriageService, plog: PredictionLog,
                        requests: list[ClassifyRequest]) -> list[ClassifyResponse]:
    """The blocking part of a /classify request, run in one worker-thread hop."""
    results = svc.classify(requests)
    record(plog, requests, results)
    return results


def json_response(model: BaseModel) -> Response:
    """Serialise an already validated response model once, in pydantic's Rust core.

    Returning a Response skips FastAPI's second validation and encoding pass of the same object;
    `response_model` on the route still documents the schema.
    """
    return Response(content=model.model_dump_json(), media_type="application/json")


def folder_loader(settings: Settings) -> ServiceLoader:
    """Load `settings.model` (a folder) or the newest folder under `settings.models_dir`."""

    def load() -> TriageService:
        source = settings.model
        if source and source.startswith("models:/"):
            raise ModelError(f"{source}: registry models need the training install (`triage serve` resolves them)")
        folder = Path(source) if source else find_latest(settings.models_dir)
        return TriageService(Classifier.load(folder, threads=settings.threads), source=str(folder))

    return load


class BodyLimit:
    """Refuse non-JSON bodies (415) and bodies over `limit` bytes (413) before anything parses them.

    A declared Content-Length is checked up front; a body without one (chunked) is read here up to the
    limit and refused as soon as it passes it, so memory stays bounded either way.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    def _refuse(self) -> JSONResponse:
        return JSONResponse(
            {"detail": f"request body over {self.limit // (1024 * 1024)} MB; send smaller messages"},
            status_code=413,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["method"] in ("POST", "PUT", "PATCH") and content_type and not content_type.endswith(b"json"):
            response = JSONResponse({"detail": f"unsupported content type {content_type.decode('latin-1')!r}: "
                                     "send the request as JSON (content-type: application/json)"}, status_code=415)
            await response(scope, receive, send)
            return
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.limit:
                await self._refuse()(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def create_app(settings: Settings | None = None, loader: ServiceLoader | None = None) -> FastAPI:
    settings = settings or Settings()
    load = loader or folder_loader(settings)
    # one inference call per core at a time; the other requests wait on the event loop, not in the CPU
    inference = CapacityLimiter(inference_slots(settings.threads))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.predlog = PredictionLog.open(settings.db_url)
        log.info("prediction log: %s", safe_url(settings.db_url))
        app.state.service = load()
        log.info("serving model %s from %s", app.state.service.model_version, app.state.service.source)
        yield
        app.state.predlog.close()

    app = FastAPI(
        title="triage",
        version=__version__,
        summary="A-to-Z claim risk and claim type for helpdesk messages (fr/it/en).",
        lifespan=lifespan,
        responses={422: {"model": ErrorResponse, "description": "Invalid request: the detail says what to fix"}},
    )
    app.add_middleware(BodyLimit)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.post("/classify", response_model=ClassifyResponse, tags=["classify"])
    async def classify(req: ClassifyRequest, svc: Service, plog: PredLog) -> Response:
        """Risk, claim type, tier, queue, SLA and evidence checklist for one message."""
        # async route + one explicit hop: a sync route would pay a second hop to validate the response
        results = await to_thread.run_sync(classify_and_record, svc, plog, [req], limiter=inference)
        return json_response(results[0])

    @app.post("/classify/batch", response_model=BatchResponse, tags=["classify"],
              description=f"Classify 1 to {MAX_BATCH} messages in one model pass.")
    async def classify_batch(req: BatchRequest, svc: Service, plog: PredLog) -> Response:
        results = await to_thread.run_sync(classify_and_record, svc, plog, req.messages, limiter=inference)
        return json_response(BatchResponse(results=results))

    @app.post("/feedback", response_model=FeedbackResponse, status_code=201, tags=["feedback"],
              responses={404: {"model": ErrorResponse, "description": "No classification has this id"}})
    def post_feedback(req: FeedbackRequest, plog: PredLog) -> FeedbackResponse:
        """Report what a classified ticket really was: the misroute signal reviewers see first."""
        pred = plog.get(req.request_id)
        if pred is None:
            raise HTTPException(status_code=404, detail=f"unknown request_id {req.request_id!r}: no "
                                "classification with this id was recorded")
        risk, claim_type = resolve_feedback(pred.risk, pred.claim_type, req.risk, req.claim_type)
        try:
            saved = plog.add_feedback(req.request_id, risk, claim_type, req.agent)
        except PredictionLogError as err:
            log.error("%s", err)
            raise HTTPException(status_code=503,
                                detail="the feedback could not be recorded; retry shortly") from err
        return FeedbackResponse(
            feedback_id=saved.id, request_id=pred.request_id, risk=risk,  # type: ignore[arg-type]
            claim_type=claim_type, agent=saved.agent,  # type: ignore[arg-type]
            predicted_risk=pred.risk, predicted_claim_type=pred.claim_type,  # type: ignore[arg-type]
            misroute=is_misroute(pred.risk, pred.claim_type, risk, claim_type),
            model_version=pred.model_version, created_at=saved.created_at,
        )

    @app.get("/health", response_model=HealthResponse, tags=["ops"])
    def health(svc: Service) -> HealthResponse:
        return HealthResponse(status="ok", model_version=svc.model_version)

    @app.get("/version", response_model=VersionResponse, tags=["ops"])
    def version(svc: Service) -> VersionResponse:
        cfg = svc.classifier.bundle.config
        return VersionResponse(
            service=__version__, model_version=svc.model_version, variant=svc.classifier.bundle.variant,
            model_source=svc.source, registry_version=svc.registry_version, encoder=cfg["encoder"]["id"],
            created_at=cfg["created_at"],
        )

    @app.post("/admin/reload", response_model=VersionResponse, tags=["ops"])
    async def reload(request: Request) -> VersionResponse:
        """Load the configured model again (e.g. the current champion) and swap it in.

        Requests in flight finish on the model they started with; a failed load keeps the old model.
        """
        try:
            new = await run_in_threadpool(load)
        except ModelError as err:
            raise HTTPException(status_code=409, detail=f"reload failed, still serving the old model: {err}") from err
        request.app.state.service = new
        return version(new)

    return app
