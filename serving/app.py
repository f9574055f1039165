"""The FastAPI app: the routes of `serving.routes` over a TriageService loaded once at startup, and the case
routes of `serving.cases.routes` over the case book on the prediction log's database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CapacityLimiter
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import __version__
from serving.cases import routes as case_routes
from serving.cases.buyers import BuyerKeys
from serving.cases.replies import load_catalogue
from serving.cases.store import CaseBook
from serving.clock import Clock, system_clock
from serving.masking import mask_url
from serving.model import inference_slots
from serving.predlog import PredictionLog
from serving.routes import router
from serving.schemas import ErrorResponse
from serving.service import ServiceLoader, folder_loader
from serving.settings import Settings

log = logging.getLogger("triage.serving")
MAX_BODY_BYTES = 8 * 1024 * 1024


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
            response = JSONResponse(
                {
                    "detail": f"unsupported content type {content_type.decode('latin-1')!r}: "
                    "send the request as JSON (content-type: application/json)"
                },
                status_code=415,
            )
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


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with every problem: where (`loc`), what (`msg`), which kind (`type`); never the input itself."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(
    settings: Settings | None = None, loader: ServiceLoader | None = None, clock: Clock | None = None
) -> FastAPI:
    """The service: `loader` (default: a model folder from `settings`) runs at start and at every reload;
    `clock` (default: the system's) is the one source of the current time.

    The reply catalogue and an existing buyer-id salt are checked here, so a bad one stops `triage serve`
    with its reason before it binds its port.
    """
    settings = settings or Settings()
    load = loader or folder_loader(settings)
    catalogue = load_catalogue(settings.replies_file)
    buyer_keys = BuyerKeys(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.clock = clock or system_clock
        app.state.predlog = PredictionLog.open(settings.db_url)
        log.info("prediction log: %s", mask_url(settings.db_url))
        app.state.cases = CaseBook.open(app.state.predlog, settings, catalogue, buyer_keys)
        log.info("reply catalogue: %s (%d replies)", catalogue.path, len(catalogue.replies))
        app.state.loader = load
        app.state.service = load()
        app.state.inference = CapacityLimiter(inference_slots(settings.threads))
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
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(router)
    # cases: reading (queue, trail, replies) and writing (agents' events), each a router of its own so an
    # access rule attaches in one line: include_router(..., dependencies=[Depends(...)])
    app.include_router(case_routes.read_router)
    app.include_router(case_routes.write_router)
    return app
