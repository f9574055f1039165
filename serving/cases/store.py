"""Cases in the prediction log's database (SQLAlchemy Core; SQLite by default, any URL works).

Tables, created beside the prediction log's at startup:
- `cases`: one per (channel, order_id): status, tier, the clocks' start times and deadlines, highest risk,
  grounds seen, flags, the buyer's salted hash;
- `case_messages`: one per classified message with an order id: its case, the time the clocks use, the tier
  it was routed to and why, its flags;
- `case_events`: the trail's agent actions (replied, evidence attached, resolved) and reopenings; append-only.

The hot path (`CaseBook.route`) runs inside the prediction log's transaction, after the predictions are
inserted: one indexed read of the case, one insert or update, one insert of the message's link, all
committed with the predictions or not at all. On SQLite the predictions' insert already holds the write
lock, so concurrent requests for the same order queue up; on other databases the case row is read `FOR
UPDATE`, and two requests creating the same new case meet at the unique (channel, order_id) constraint:
the loser rolls back to a savepoint and updates the winner's case (`CaseBook.race_possible`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from serving.cases.buyers import BuyerKeys
from serving.cases.policy import (
    REPEAT_CLAIMANT_TAG,
    CaseClocks,
    CaseNotFound,
    CaseState,
    Deadlines,
    Step,
    add_event,
    add_message,
)
from serving.cases.replies import ReplyCatalogue
from serving.cases.schemas import (
    BuyerHistory,
    CaseEvent,
    CaseEventRequest,
    CaseFeedback,
    CaseList,
    CaseMessage,
    CaseResponse,
    CaseSummary,
)
from serving.labels import CRISIS_TAG, QUEUES
from serving.masking import mask_url
from serving.predlog import PredictionLog, PredictionLogError, UTCDateTime, _reason, metadata
from serving.schemas import ClassifyRequest, ClassifyResponse
from serving.service import sla_due
from serving.settings import Settings

cases = sa.Table(
    "cases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(64), nullable=False),  # lower case; '' when the messages gave none
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("tier", sa.SmallInteger, nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),  # when the service created it
    sa.Column("first_contact_at", UTCDateTime, nullable=False),
    sa.Column("last_message_at", UTCDateTime, nullable=False),
    sa.Column("message_count", sa.Integer, nullable=False),
    sa.Column("highest_risk", sa.String(32), nullable=False),
    sa.Column("first_tier1_at", UTCDateTime),
    sa.Column("claim_filed_at", UTCDateTime),
    # the deadlines as computed with the hours in force when the case last changed (the queue sorts on them)
    sa.Column("prevention_deadline", UTCDateTime),
    sa.Column("response_deadline", UTCDateTime),
    sa.Column("next_deadline", UTCDateTime),
    sa.Column("claim_types", sa.JSON, nullable=False),
    sa.Column("flags", sa.JSON, nullable=False),
    sa.Column("buyer_key", sa.String(64)),  # serving.cases.buyers.buyer_key, never the id itself
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("last_event_at", UTCDateTime),
    sa.UniqueConstraint("channel", "order_id", name="uq_cases_channel_order"),
    sa.Index("ix_cases_queue", "status", "tier", "next_deadline"),
    sa.Index(  # only cases with a buyer
        "ix_cases_buyer",
        "buyer_key",
        sqlite_where=sa.text("buyer_key IS NOT NULL"),
        postgresql_where=sa.text("buyer_key IS NOT NULL"),
    ),
)

case_messages = sa.Table(
    "case_messages",
    metadata,
    # keyed by case first, without a rowid on SQLite: a case's messages sit together, one B-tree to write
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), primary_key=True),
    sa.Column("request_id", sa.String(64), sa.ForeignKey("predictions.request_id"), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),  # the time the case's clocks use for it
    sa.Column("tier", sa.SmallInteger, nullable=False),  # the tier it was routed to
    sa.Column("routing_reason", sa.String(32), nullable=False),
    sa.Column("flags", sa.JSON, nullable=False),
    sqlite_with_rowid=False,
)

case_events = sa.Table(
    "case_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("agent", sa.String(128)),  # NULL: recorded by the service itself
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("reply_id", sa.String(64)),
    sa.Column("reply_text", sa.Text),
    sa.Column("catalogue_sha256", sa.String(64)),
    sa.Column("request_id", sa.String(64)),
)

CASE_TABLES = (cases, case_messages, case_events)


def case_key(req: ClassifyRequest) -> tuple[str, str] | None:
    """(channel, order_id) of a message's case, or None: no order id, no case."""
    order_id = (req.order_id or "").strip()
    if not order_id:
        return None
    return (req.channel or "").strip().lower(), order_id


def _state(row: sa.RowMapping) -> CaseState:
    return CaseState(
        status=row["status"],
        message_count=row["message_count"],
        first_contact_at=row["first_contact_at"],
        last_message_at=row["last_message_at"],
        highest_risk=row["highest_risk"],
        first_tier1_at=row["first_tier1_at"],
        claim_filed_at=row["claim_filed_at"],
        claim_types=tuple(row["claim_types"]),
        flags=tuple(row["flags"]),
        resolved_at=row["resolved_at"],
        last_event_at=row["last_event_at"],
    )


# what the hot path reads of a case: its state, its stored deadlines, its id and buyer
_ROUTING_COLUMNS = (
    "id",
    "status",
    "message_count",
    "first_contact_at",
    "last_message_at",
    "highest_risk",
    "first_tier1_at",
    "claim_filed_at",
    "claim_types",
    "flags",
    "resolved_at",
    "last_event_at",
    "prevention_deadline",
    "response_deadline",
    "buyer_key",
)


def _columns(state: CaseState, deadlines: Deadlines) -> dict[str, Any]:
    return {
        "status": state.status,
        "tier": state.tier,
        "first_contact_at": state.first_contact_at,
        "last_message_at": state.last_message_at,
        "message_count": state.message_count,
        "highest_risk": state.highest_risk,
        "first_tier1_at": state.first_tier1_at,
        "claim_filed_at": state.claim_filed_at,
        "prevention_deadline": deadlines.prevention,
        "response_deadline": deadlines.response,
        "next_deadline": deadlines.next,
        "claim_types": list(state.claim_types),
        "flags": list(state.flags),
        "resolved_at": state.resolved_at,
        "last_event_at": state.last_event_at,
    }


def _summary(case_id: int, channel: str, order_id: str, state: CaseState, deadlines: Deadlines) -> CaseSummary:
    return CaseSummary(
        case_id=case_id,
        channel=channel or None,
        order_id=order_id,
        status=state.status,
        message_count=state.message_count,
        first_contact_at=state.first_contact_at,
        last_message_at=state.last_message_at,
        highest_risk=state.highest_risk,
        tier=state.tier,
        prevention_deadline=deadlines.prevention,
        response_deadline=deadlines.response,
        next_deadline=deadlines.next,
        claim_types=list(state.claim_types),
        flags=list(state.flags),
        resolved_at=state.resolved_at,
    )


def _row_summary(row: sa.RowMapping) -> CaseSummary:
    stored = Deadlines(prevention=row["prevention_deadline"], response=row["response_deadline"])
    return _summary(row["id"], row["channel"], row["order_id"], _state(row), stored)


def _event(row: sa.RowMapping) -> CaseEvent:
    return CaseEvent(
        event_id=row["id"],
        case_id=row["case_id"],
        kind=row["kind"],
        agent=row["agent"],
        at=row["at"],
        recorded_at=row["recorded_at"],
        note=row["note"],
        reply_id=row["reply_id"],
        reply_text=row["reply_text"],
        catalogue_sha256=row["catalogue_sha256"],
        request_id=row["request_id"],
    )


def read_case(plog: PredictionLog, case_id: int) -> CaseResponse:
    """A case with every message (time, prediction, model version, routing, agents' feedback) and every
    event, from the prediction log's database; raises CaseNotFound."""
    try:
        with plog.engine.connect() as conn:
            if not sa.inspect(conn).has_table("cases"):
                raise CaseNotFound(f"{mask_url(plog.url)} holds no cases (is it the service's database?)")
            row = conn.execute(sa.select(cases).where(cases.c.id == case_id)).mappings().first()
            if row is None:
                raise CaseNotFound(f"unknown case {case_id} (GET /cases lists the cases)")
            links = conn.execute(sa.select(case_messages).where(case_messages.c.case_id == case_id)).mappings().all()
            events = conn.execute(
                sa.select(case_events).where(case_events.c.case_id == case_id).order_by(case_events.c.id)
            ).mappings()
            trail_events = [_event(e) for e in events]
        logged = {p.request_id: p for p in plog.list_predictions(request_ids=[x["request_id"] for x in links])}
        feedback = {rid: plog.feedback_for(rid) for rid in logged}
    except SQLAlchemyError as err:
        raise PredictionLogError(f"could not read case {case_id}: {_reason(err)}") from err
    messages = []
    for link in sorted(links, key=lambda x: (x["at"], logged[x["request_id"]].created_at)):
        p = logged[link["request_id"]]
        messages.append(
            CaseMessage(
                request_id=p.request_id,
                received_at=p.received_at,
                at=link["at"],
                recorded_at=p.created_at,
                text=p.text,
                risk=p.risk,
                claim_type=p.claim_type,
                needs_review=p.needs_review,
                language=p.language,
                model_version=p.model_version,
                tier=link["tier"],
                routing_reason=link["routing_reason"],
                flags=list(link["flags"]),
                feedback=[
                    CaseFeedback(risk=f.risk, claim_type=f.claim_type, agent=f.agent, created_at=f.created_at)
                    for f in feedback[p.request_id]
                ],
            )
        )
    return CaseResponse(**_row_summary(row).model_dump(), messages=messages, events=trail_events)


@dataclass(frozen=True)
class _Attached:
    case_id: int
    channel: str
    order_id: str
    step: Step


class CaseBook:
    """Cases on the prediction log's database: routing on the hot path, the queue, the trail, agent events."""

    def __init__(
        self,
        plog: PredictionLog,
        clocks: CaseClocks,
        catalogue: ReplyCatalogue,
        buyer_keys: BuyerKeys,
        repeat_claimant_claims: int = 2,
    ) -> None:
        self.plog = plog
        self.engine = plog.engine
        self.clocks = clocks
        self.catalogue = catalogue
        self.buyer_keys = buyer_keys
        self.repeat_claimant_claims = repeat_claimant_claims
        # Can another transaction create a case between our read and our insert? Not on SQLite: the
        # predictions' insert before us already holds the database's only write lock, so the savepoint
        # that catches that race elsewhere would be pure cost on the hot path.
        self.race_possible = self.engine.dialect.name != "sqlite"
        # built once: the hot path reuses them
        self._select_case = (
            sa.select(*(cases.c[name] for name in _ROUTING_COLUMNS))
            .where(cases.c.channel == sa.bindparam("channel"), cases.c.order_id == sa.bindparam("order_id"))
            .with_for_update()
        )
        self._insert_case = sa.insert(cases)
        self._update_case = sa.update(cases).where(cases.c.id == sa.bindparam("case_id"))
        self._insert_link = sa.insert(case_messages)
        self._insert_event = sa.insert(case_events)
        tier1 = sa.func.coalesce(sa.func.sum(sa.case((cases.c.tier == 1, 1), else_=0)), 0)
        claims = sa.func.coalesce(sa.func.sum(sa.case((cases.c.claim_filed_at.is_not(None), 1), else_=0)), 0)
        self._buyer_counts = sa.select(sa.func.count(), tier1, claims).where(
            cases.c.buyer_key == sa.bindparam("buyer_key"), cases.c.id < sa.bindparam("before_case")
        )

    @classmethod
    def open(
        cls, plog: PredictionLog, settings: Settings, catalogue: ReplyCatalogue, buyer_keys: BuyerKeys | None = None
    ) -> CaseBook:
        """The case book on `plog`'s database; its tables are created if they are missing (idempotent)."""
        keys = buyer_keys or BuyerKeys(settings)
        book = cls(plog, CaseClocks.from_settings(settings), catalogue, keys, settings.repeat_claimant_claims)
        book.create_tables()
        return book

    def create_tables(self) -> None:
        try:
            metadata.create_all(self.engine, tables=list(CASE_TABLES))
        except SQLAlchemyError as err:
            raise PredictionLogError(f"cannot create the case tables: {type(err).__name__}") from err

    # -- the hot path: inside the prediction log's transaction ---------------------------------------
    def route(
        self,
        conn: sa.Connection,
        requests: Sequence[ClassifyRequest],
        responses: Sequence[ClassifyResponse],
        now: datetime,
    ) -> list[ClassifyResponse]:
        """Each answer with its case, case routing, suggested reply and buyer history; the cases updated on
        `conn` (the transaction that records the predictions, which must already be inserted)."""
        return [self._route_one(conn, req, res, now) for req, res in zip(requests, responses, strict=True)]

    def _route_one(
        self, conn: sa.Connection, req: ClassifyRequest, res: ClassifyResponse, now: datetime
    ) -> ClassifyResponse:
        update: dict[str, Any] = {}
        tags = list(res.tags)
        reply_risk, reply_claim_type = res.risk, res.claim_type
        bkey = self.buyer_keys.key(req.buyer_id) if req.buyer_id and req.buyer_id.strip() else None
        key = case_key(req)
        attached = self._attach(conn, key, req, res, bkey, now) if key else None
        if attached is not None:
            state, routing = attached.step.state, attached.step.routing
            update["case"] = _summary(
                attached.case_id, attached.channel, attached.order_id, state, state.deadlines(self.clocks)
            )
            if routing.reason == "escalated_by_case":
                update |= {
                    "tier": routing.tier,
                    "queue": QUEUES[routing.tier],
                    "sla_due_at": sla_due(req.received_at, routing.tier, now),
                    "routing_reason": routing.reason,
                }
                if state.claim_filed_at is not None and CRISIS_TAG not in tags:
                    tags.append(CRISIS_TAG)
                # the reply answers the case: its worst risk, its latest ground
                reply_risk = state.highest_risk
                reply_claim_type = state.claim_types[-1] if state.claim_types else "other"
        if bkey is not None:
            before = attached.case_id if attached is not None else None
            buyer = self._buyer_history(conn, bkey, before)
            update["buyer"] = buyer
            if buyer.repeat_claimant:
                tags.append(REPEAT_CLAIMANT_TAG)
        update["suggested_reply"] = self.catalogue.suggest(reply_risk, reply_claim_type, res.language)
        update["tags"] = tags
        return res.model_copy(update=update)

    def _attach(
        self,
        conn: sa.Connection,
        key: tuple[str, str],
        req: ClassifyRequest,
        res: ClassifyResponse,
        bkey: str | None,
        now: datetime,
    ) -> _Attached:
        """One read-modify-write of the message's case (created if new) and the message's link to it."""
        channel, order_id = key
        where = {"channel": channel, "order_id": order_id}
        row = self._find_case(conn, where)
        step: Step | None = None
        case_id = 0
        if row is None:
            step = add_message(None, res.risk, res.claim_type, req.received_at, now, self.clocks)
            values = _columns(step.state, step.state.deadlines(self.clocks))
            new = {**where, **values, "opened_at": now, "buyer_key": bkey}
            if not self.race_possible:
                case_id = int(conn.execute(self._insert_case, new).inserted_primary_key[0])  # type: ignore[index]
            else:
                try:
                    with conn.begin_nested():  # a concurrent request may create the same case first
                        case_id = int(conn.execute(self._insert_case, new).inserted_primary_key[0])  # type: ignore[index]
                except IntegrityError:  # it exists now: update it instead
                    row = self._find_case(conn, where)
                    if row is None:
                        raise
        if row is not None:
            before = _state(row)
            step = add_message(before, res.risk, res.claim_type, req.received_at, now, self.clocks)
            case_id = int(row["id"])
            stored = _columns(before, Deadlines(row["prevention_deadline"], row["response_deadline"]))
            values = _columns(step.state, step.state.deadlines(self.clocks))
            changed = {k: v for k, v in values.items() if v != stored[k]}  # usually the count and the time
            if bkey is not None and row["buyer_key"] is None:
                changed["buyer_key"] = bkey
            conn.execute(self._update_case, {**changed, "case_id": case_id})
        assert step is not None
        conn.execute(
            self._insert_link,
            {
                "request_id": res.request_id,
                "case_id": case_id,
                "at": step.arrival.at,
                "tier": step.routing.tier,
                "routing_reason": step.routing.reason,
                "flags": list(step.arrival.flags),
            },
        )
        if step.routing.reopened:
            conn.execute(
                self._insert_event,
                {"case_id": case_id, "kind": "reopened", "at": now, "recorded_at": now, "request_id": res.request_id},
            )
        return _Attached(case_id, channel, order_id, step)

    def _find_case(self, conn: sa.Connection, where: dict[str, str]) -> sa.RowMapping | None:
        """The case of (channel, order_id), locked for the rest of the transaction where the database can."""
        return conn.execute(self._select_case, where).mappings().first()

    def _buyer_history(self, conn: sa.Connection, bkey: str, case_id: int | None) -> BuyerHistory:
        """The buyer's cases opened before `case_id` (all of them without a case)."""
        before = case_id if case_id is not None else 2**62
        count, tier1, claims = conn.execute(self._buyer_counts, {"buyer_key": bkey, "before_case": before}).one()
        return BuyerHistory(
            earlier_cases=int(count),
            earlier_tier1_cases=int(tier1),
            earlier_claims=int(claims),
            repeat_claimant=int(claims) >= self.repeat_claimant_claims,
        )

    # -- the queue and the trail --------------------------------------------------------------------
    def list_cases(
        self, tier: int | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> CaseList:
        """Cases by nearest deadline (those without one last, then oldest first), one page."""
        filters = []
        if tier is not None:
            filters.append(cases.c.tier == tier)
        if status is not None:
            filters.append(cases.c.status == status)
        query = (
            sa.select(cases)
            .where(*filters)
            .order_by(cases.c.next_deadline.is_(None), cases.c.next_deadline, cases.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(cases).where(*filters)).scalar_one()
            rows = conn.execute(query).mappings().all()
        return CaseList(cases=[_row_summary(r) for r in rows], total=int(total), limit=limit, offset=offset)

    def case(self, case_id: int) -> CaseResponse:
        return read_case(self.plog, case_id)

    # -- agent events -------------------------------------------------------------------------------
    def add_event(self, case_id: int, req: CaseEventRequest, now: datetime) -> CaseEvent:
        """Append an agent's event to the case's trail (a `replied` event keeps the rendered reply).

        Raises CaseNotFound, CaseConflict (resolved case, time before the last event or the first message),
        InvalidCaseEvent (a time in the future), UnknownReply / MissingPlaceholder (a bad reply_id).
        """
        with self.engine.connect() as conn:
            order_id = conn.execute(sa.select(cases.c.order_id).where(cases.c.id == case_id)).scalar_one_or_none()
        if order_id is None:
            raise CaseNotFound(f"unknown case {case_id}: GET /cases lists the cases")
        rendered = self.catalogue.render(req.reply_id, order_id, req.buyer_name) if req.reply_id else None
        at = req.at or now
        values = {
            "case_id": case_id,
            "kind": req.kind,
            "agent": req.agent,
            "at": at,
            "recorded_at": now,
            "note": req.note,
            "reply_id": rendered.reply.id if rendered else None,
            "reply_text": rendered.text if rendered else None,
            "catalogue_sha256": self.catalogue.sha256 if rendered else None,
        }
        try:
            with self.engine.begin() as conn:
                # the insert first: on SQLite it takes the write lock before the case is read
                event_id = conn.execute(self._insert_event, values).inserted_primary_key[0]  # type: ignore[index]
                row = conn.execute(sa.select(cases).where(cases.c.id == case_id).with_for_update()).mappings().one()
                state = add_event(_state(row), case_id, req.kind, at, now, self.clocks)  # raises: rolled back
                conn.execute(
                    sa.update(cases)
                    .where(cases.c.id == case_id)
                    .values(_columns(state, Deadlines(row["prevention_deadline"], row["response_deadline"])))
                )
                stored = conn.execute(sa.select(case_events).where(case_events.c.id == event_id)).mappings().one()
        except SQLAlchemyError as err:
            raise PredictionLogError(f"could not record the case event: {_reason(err)}") from err
        return _event(stored)
