"""The case routes: the Tier-1 queue, a case's trail, agents' events, the vetted replies.

Two routers, so access control attaches in one line each where `serving/app.py` includes them:
`read_router` reads cases and replies (scope `classify`), `write_router` appends agents' events (scope
`feedback`). Errors become HTTP answers only here.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from serving.cases.policy import CaseConflict, CaseNotFound, CaseStatus, InvalidCaseEvent
from serving.cases.replies import MissingPlaceholder, Reply, ReplyCatalogue, UnknownReply
from serving.cases.schemas import CaseEvent, CaseEventRequest, CaseList, CaseResponse, ReplyList, ReplyResponse
from serving.predlog import PredictionLogError
from serving.routes import AppClock, Cases
from serving.schemas import ErrorResponse

log = logging.getLogger("triage.serving")

read_router = APIRouter()  # scope `classify`
write_router = APIRouter()  # scope `feedback`

CaseId = Annotated[int, Path(ge=1, le=2**53, description="The case id (/classify's case.case_id).")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No case has this id"}}


@read_router.get("/cases", response_model=CaseList, tags=["cases"])
def list_cases(
    book: Cases,
    tier: Annotated[int | None, Query(ge=1, le=2, description="1: the escalation queue; 2: the others.")] = None,
    status: Annotated[CaseStatus | None, Query(description="open or resolved")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> CaseList:
    """Cases by nearest deadline (the response deadline once a claim is filed, else the prevention one);
    cases without a deadline last. `?tier=1&status=open` is the Tier-1 queue."""
    return book.list_cases(tier=tier, status=status, limit=limit, offset=offset)


@read_router.get("/cases/{case_id}", response_model=CaseResponse, tags=["cases"], responses=NOT_FOUND)
def get_case(case_id: CaseId, book: Cases) -> CaseResponse:
    """The case's audit trail: every message (time, prediction, model version, routing, agents' feedback)
    and every event (replies sent, evidence attached, resolution, reopening), in time order."""
    try:
        return book.case(case_id)
    except CaseNotFound as err:
        raise HTTPException(status_code=404, detail=str(err)) from err


@write_router.post(
    "/cases/{case_id}/events",
    response_model=CaseEvent,
    status_code=201,
    tags=["cases"],
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "The case is resolved, or the event is out of order"},
    },
)
def post_event(case_id: CaseId, req: CaseEventRequest, book: Cases, clock: AppClock) -> CaseEvent:
    """Append an agent's action to the case's trail: `replied` (with the vetted reply's id: its rendered
    text is kept), `evidence_attached`, `resolved` (ends the case's sticky Tier-1 routing). Append-only."""
    try:
        return book.add_event(case_id, req, clock())
    except CaseNotFound as err:
        raise HTTPException(status_code=404, detail=str(err)) from err
    except CaseConflict as err:
        raise HTTPException(status_code=409, detail=str(err)) from err
    except (InvalidCaseEvent, UnknownReply, MissingPlaceholder) as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    except PredictionLogError as err:
        log.error("%s", err)
        raise HTTPException(status_code=503, detail="the event could not be recorded; retry shortly") from err


def reply_response(
    cat: ReplyCatalogue, reply: Reply, text: str | None = None, title: str | None = None
) -> ReplyResponse:
    return ReplyResponse(
        id=reply.id,
        language=reply.language,
        claim_types=list(reply.claim_types),
        risks=list(reply.risks),
        suggested_for=[f"{risk} / {claim_type}" for risk, claim_type in cat.chosen_for[reply.id]],
        title=title or reply.title,
        text=text,
        catalogue_sha256=cat.sha256,
    )


@read_router.get("/replies", response_model=ReplyList, tags=["replies"])
def list_replies(book: Cases) -> ReplyList:
    """The vetted reply catalogue (titles, what each reply is for; GET /replies/{id} renders one)."""
    cat = book.catalogue
    return ReplyList(
        replies=[reply_response(cat, r) for r in cat.replies.values()],
        catalogue_sha256=cat.sha256,
        fallback_language=cat.fallback_language,
    )


@read_router.get(
    "/replies/{reply_id}",
    response_model=ReplyResponse,
    tags=["replies"],
    responses={
        404: {"model": ErrorResponse, "description": "No reply has this id"},
        422: {"model": ErrorResponse, "description": "The reply needs a value that was not given"},
    },
)
def get_reply(
    reply_id: str,
    book: Cases,
    order_id: Annotated[str | None, Query(max_length=64, description="Fills {order_id}.")] = None,
    buyer_name: Annotated[
        str | None, Query(max_length=100, description="Fills {buyer_name} (default greeting).")
    ] = None,
) -> ReplyResponse:
    """A vetted reply rendered for one order, ready to send."""
    cat = book.catalogue
    try:
        rendered = cat.render(reply_id, order_id=order_id, buyer_name=buyer_name)
    except UnknownReply as err:
        raise HTTPException(status_code=404, detail=str(err)) from err
    except MissingPlaceholder as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    return reply_response(cat, rendered.reply, text=rendered.text, title=rendered.title)
