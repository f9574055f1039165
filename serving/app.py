"""The FastAPI app: the routes of `serving.routes` over a TriageService loaded once at startup, the case
routes of `serving.cases.routes` over the case book on the prediction log's database, the middleware every
request passes (request id, metrics, one log line, body limits, drain on SIGTERM), the one shape of every
error answer, and `serve` (uvicorn with a graceful drain).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from anyio import CapacityLimiter
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import __version__
from serving.cases import routes as case_routes
from serving.cases.buyers import BuyerKeys
from serving.cases.replies import load_catalogue
from serving.cases.store import CaseBook
from serving.clock import Clock, system_clock
from serving.keys import KeyRing, access_mode
from serving.logs import configure_logging, exception_summary
from serving.masking import mask_url
from serving.metrics import Metrics
from serving.model import inference_slots
from serving.predlog import PredictionLog
from serving.routes import AUTH_ERRORS, require, router
from serving.schemas import ErrorResponse
from serving.service import ServiceLoader, folder_loader
from serving.settings import Settings

log = logging.getLogger("triage.serving")
requests_log = logging.getLogger("triage.requests")
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_ECHO = 80  # characters of a path or field name an error answer quotes back


class BodyLimit:
    """Refuse non-JSON bodies (415) and bodies over `limit` bytes (413) before anything parses them.

    A declared Content-Length is checked up front; a body without one (chunked) is read here up to the
    limit and refused as soon as it passes it, so memory stays bounded either way.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    def _refuse(self) -> JSONResponse:
        return error_response(413, f"request body over {self.limit // (1024 * 1024)} MB; send smaller messages")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["method"] in ("POST", "PUT", "PATCH") and content_type and not content_type.endswith(b"json"):
            response = error_response(
                415,
                f"unsupported content type {_echo(content_type.decode('latin-1'))!r}: "
                "send the request as JSON (content-type: application/json)",
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


# -- one shape for every error answer: {"detail": what to fix, "field": where (validation), "errors": [...]} --
def _echo(text: str) -> str:
    """User-controlled text quoted in an answer, cut short (an error never echoes a huge input back)."""
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = ErrorResponse(detail=detail, **extra).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def field_of(loc: Sequence[Any]) -> str:
    """`("body", "messages", 3, "text")` -> `messages.3.text`; the body itself -> `body`."""
    parts = [str(p) for p in loc[1:]] if loc and loc[0] == "body" else [str(p) for p in loc]
    return _echo(".".join(parts)) if parts else "body"


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming every problem: the field, what is wrong, which kind; never the input itself."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for e in exc.errors():
        loc = list(e.get("loc", ()))
        kind = str(e.get("type", ""))
        msg = str(e.get("msg", ""))
        if kind == "json_invalid":  # loc is ("body", character position)
            loc = ["body"]
            msg = f"{msg} ({(e.get('ctx') or {}).get('error', 'invalid JSON')}): send a valid JSON object"
        errors.append({"field": field_of(loc), "msg": msg, "type": kind})
    shown = "; ".join(f"{e['field']}: {e['msg']}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more problems)" if len(errors) > 3 else ""
    return error_response(422, f"{shown}{more}", field=errors[0]["field"] if errors else "body", errors=errors)


def _parse_failure(cause: BaseException | None) -> str:
    """Why the body could not be parsed as JSON (FastAPI says only "There was an error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        byte = cause.object[cause.start]
        return f"the body is not valid UTF-8 (byte {byte:#04x} at position {cause.start}): send JSON encoded as UTF-8"
    if isinstance(cause, RecursionError):
        return "the JSON body is nested too deeply: send the documented object (see /docs)"
    if isinstance(cause, ValueError):  # e.g. an integer of more than 4300 digits
        return "the JSON body has a value that cannot be read (a number too long?): send the documented fields"
    return "the body could not be read as JSON: send a JSON object (see /docs)"


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Every HTTPException (ours, FastAPI's, Starlette's) in the one error shape, with a detail that says what
    to do instead of Starlette's bare reason phrases."""
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    path = _echo(request.url.path)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {path}: the routes are listed at /docs"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {path}: use {allowed or 'the method in /docs'}"
    elif exc.status_code == 400 and detail == "There was an error parsing the body":
        return error_response(400, _parse_failure(exc.__cause__), field="body")
    return error_response(exc.status_code, detail, headers=exc.headers)


# -- every request: id, drain, metrics, one log line, no unhandled exception -------------------------------
class Drain:
    """SIGTERM received: new requests get 503 while those in flight finish (at most `timeout` seconds)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.draining = False
        self.since = 0.0
        self.in_flight = 0

    def start(self) -> None:
        if not self.draining:
            self.since = time.monotonic()
            self.draining = True

    def finished(self) -> bool:
        return self.draining and (self.in_flight == 0 or time.monotonic() - self.since > self.timeout)


DRAINING = json.dumps(
    {"detail": "the service is shutting down: retry on another instance, or in a few seconds"}
).encode()


class RequestObserver:
    """The outermost middleware: gives each request an id (`X-Request-ID`), answers 503 while draining,
    counts and times every answer by route template and status, logs one line per request (never a body,
    header or query: `serving.logs.REQUEST_FIELDS`), and turns an unexpected exception into a 500 in the
    one error shape, logged without its message."""

    def __init__(self, app: ASGIApp, metrics: Metrics, drain: Drain, access_log: bool = True) -> None:
        self.app, self.metrics, self.drain, self.access_log = app, metrics, drain, access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = False

        async def send_observed(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        if self.drain.draining:
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"), (b"retry-after", b"2")]
            await send_observed({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": DRAINING})
            self._done(scope, state, request_id, status, start)
            return
        self.drain.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_observed)
        except Exception as err:  # a bug: answer in the one shape, log where it happened but not its message
            log.error("unhandled error", extra={"request_id": request_id, "error": exception_summary(err)})
            if not started:
                detail = f"internal error (request id {request_id}): the service logged it; retry, and report the id"
                await error_response(500, detail)(scope, receive, send_observed)
            status = 500
        finally:
            self.drain.in_flight -= 1
            self.metrics.in_flight.dec()
            self._done(scope, state, request_id, status, start)

    def _done(self, scope: Scope, state: dict[str, Any], request_id: str, status: int, start: float) -> None:
        seconds = time.perf_counter() - start
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.metrics.observe_request(template, scope["method"], status, seconds)
        if self.access_log:
            requests_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": template,
                    "status": status,
                    "latency_ms": round(seconds * 1000, 2),
                    "model_version": state.get("model_version"),
                    "key": state.get("key"),
                },
            )


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
    metrics = Metrics()
    drain = Drain(settings.drain_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = KeyRing.load(settings.api_keys_file)
        mode = access_mode(settings.host, keys, settings.allow_open)  # refuses an unintended open service
        (log.warning if keys.open else log.info)("access: %s", mode)
        app.state.keys = keys
        app.state.metrics_public = settings.metrics_public
        app.state.clock = clock or system_clock
        app.state.predlog = PredictionLog.open(
            settings.db_url, text=settings.log_text, timeout=settings.database_timeout
        )
        log.info("prediction log: %s (message text kept: %s)", mask_url(settings.db_url), settings.log_text)
        app.state.cases = CaseBook.open(app.state.predlog, settings, catalogue, buyer_keys)
        log.info("reply catalogue: %s (%d replies)", catalogue.path, len(catalogue.replies))
        app.state.loader = load
        started = time.perf_counter()
        app.state.service = load()
        svc = app.state.service
        metrics.served(svc.model_version, svc.classifier.bundle.variant, svc.source, time.perf_counter() - started)
        app.state.inference = CapacityLimiter(inference_slots(settings.threads))
        log.info("serving model %s from %s", svc.model_version, svc.source)
        yield
        app.state.predlog.close()

    app = FastAPI(
        title="triage",
        version=__version__,
        summary="A-to-Z claim risk and claim type for helpdesk messages (fr/it/en).",
        lifespan=lifespan,
        responses={422: {"model": ErrorResponse, "description": "Invalid request: the detail says what to fix"}},
    )
    app.state.metrics = metrics
    app.state.drain = drain
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestObserver, metrics=metrics, drain=drain, access_log=settings.access_log)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.include_router(router)
    # cases: reading (queue, trail, replies) needs the `classify` scope, agents' events `feedback`
    app.include_router(case_routes.read_router, dependencies=[Security(require("classify"))], responses=AUTH_ERRORS)
    app.include_router(case_routes.write_router, dependencies=[Security(require("feedback"))], responses=AUTH_ERRORS)
    return app


# -- serving it ------------------------------------------------------------------------------------------
class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM (or Ctrl-C) drains: the port stays open and new requests get 503 while
    those in flight finish (they are answered, recorded and logged); then the usual shutdown. A second
    signal stops at once."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain.draining:
            super().handle_exit(sig, frame)
            return
        self.drain.start()
        log.info("shutdown requested: draining %d request(s) in flight; new requests get 503", self.drain.in_flight)

    async def on_tick(self, counter: int) -> bool:
        if self.drain.finished() and not self.should_exit:
            left = self.drain.in_flight
            log.info("drained" if not left else f"drain timeout: {left} request(s) still in flight")
            self.should_exit = True
        return await super().on_tick(counter)


def serve(app: FastAPI, settings: Settings) -> None:
    """Run `app` under uvicorn on settings.host:port with the logging of `serving.logs` and a graceful drain."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=configure_logging(settings),
        access_log=False,  # RequestObserver logs one line per request instead
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
    )
    DrainingServer(config, app.state.drain).run()
