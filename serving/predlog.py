"""The prediction log: every classification the service answered, agents' feedback on them, and the
messages already sent to Label Studio. SQLAlchemy Core on any database URL (SQLite by default).

One transaction per request: a classification is committed before its answer leaves the service, so a
crash after the answer never loses it (SQLite runs in WAL mode with synchronous=NORMAL, which keeps every
committed transaction across a process crash).

What is kept of a message is a setting (`TRIAGE_LOG_TEXT`, `TextMode`): the text as sent, the text with
contact and payment data masked (`serving.masking.redact_personal_data`, the default), or no text at all.
Retention: `prune` (older than a date) and `forget` (a buyer's erasure request, by order id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import SQLAlchemyError

from serving.errors import TriageError
from serving.feedback import is_misroute
from serving.labels import ClaimType, Risk, message_key
from serving.masking import mask_text, mask_url, redact_personal_data
from serving.schemas import ClassifyRequest, ClassifyResponse

SQLITE_BUSY_TIMEOUT_S = 10.0
TextMode = Literal["full", "redacted", "hash"]


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps none of its own)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("text_key", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(64)),
    sa.Column("order_id", sa.String(64)),
    sa.Column("received_at", UTCDateTime),
    sa.Column("risk", sa.String(32), nullable=False),
    sa.Column("claim_type", sa.String(32), nullable=False),
    sa.Column("risk_scores", sa.JSON, nullable=False),
    sa.Column("claim_type_scores", sa.JSON, nullable=False),
    sa.Column("needs_review", sa.Boolean, nullable=False),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("keyword_risk", sa.String(32), nullable=False),
    sa.Column("keyword_claim_type", sa.String(32), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    # added later (ALTER TABLE on an older log): what `text` holds (full | redacted | hash: empty; NULL:
    # logged before the setting existed, full) and the name of the API key that asked (NULL: open mode)
    sa.Column("text_kept", sa.String(8)),
    sa.Column("key_name", sa.String(64)),
    sa.Index("ix_predictions_created_at", "created_at"),
    sa.Index("ix_predictions_order_id", "order_id"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), sa.ForeignKey("predictions.request_id"), nullable=False, index=True),
    sa.Column("risk", sa.String(32), nullable=False),
    sa.Column("claim_type", sa.String(32)),  # NULL: the agent said a Tier-1 risk and no ground
    sa.Column("agent", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("key_name", sa.String(64)),  # the API key that sent the report (added later; NULL: open mode)
)

label_tasks = sa.Table(
    "label_tasks",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True),
    sa.Column("text_key", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.Integer, nullable=False),
    sa.Column("request_id", sa.String(64)),
    sa.Column("sent_at", UTCDateTime, nullable=False),
)


class PredictionLogError(TriageError):
    """The prediction log's database cannot be used (its message never contains credentials)."""


@dataclass(frozen=True)
class LoggedPrediction:
    """A logged classification with the latest agent feedback on it, if any."""

    request_id: str
    created_at: datetime
    text: str
    text_key: str  # serving.labels.message_key(text)
    channel: str | None
    order_id: str | None
    received_at: datetime | None
    risk: Risk
    claim_type: ClaimType
    risk_scores: dict[str, float]
    claim_type_scores: dict[str, float]
    needs_review: bool
    language: str
    keyword_risk: str
    keyword_claim_type: str
    model_version: str
    feedback_risk: Risk | None = None
    feedback_claim_type: ClaimType | None = None
    feedback_agent: str | None = None
    feedback_at: datetime | None = None
    text_kept: str | None = None  # full | redacted | hash (no text); None: logged before the setting, full
    key_name: str | None = None

    @property
    def misroute(self) -> bool:
        """An agent reported labels other than the model's."""
        if self.feedback_risk is None:
            return False
        return is_misroute(self.risk, self.claim_type, self.feedback_risk, self.feedback_claim_type)


@dataclass(frozen=True)
class FeedbackRecord:
    id: int
    request_id: str
    risk: Risk
    claim_type: ClaimType | None
    agent: str
    created_at: datetime
    key_name: str | None = None


@dataclass
class Removed:
    """What `prune` or `forget` removed (or, in a dry run, would remove)."""

    predictions: int = 0
    feedback: int = 0
    label_tasks: int = 0
    request_ids: list[str] = field(default_factory=list)
    # Label Studio tasks that were sent these messages: (project id, task id); they still hold the text there
    tasks: list[tuple[int, int]] = field(default_factory=list)


def stored_text(text: str, mode: TextMode) -> tuple[str, str]:
    """(what the log keeps of `text`, its message key) under `mode`. NUL characters become U+FFFD (some
    databases refuse them); in `hash` mode nothing of the text is kept but its key."""
    if mode == "hash":
        return "", message_key(text)
    kept = text if mode == "full" else redact_personal_data(text)
    kept = kept.replace("\x00", "\ufffd")
    return kept, message_key(kept)


def _sqlite_pragmas(busy_timeout_s: float) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process being killed; only a power cut can lose the
        # last commits. It spares one fsync per request on the hot path.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return on_connect


def _reason(err: SQLAlchemyError) -> str:
    """The driver's short reason (never the statement or its parameters: they hold messages)."""
    orig = getattr(err, "orig", None)
    return f"{type(orig).__name__}: {orig}" if orig is not None else type(err).__name__


class PredictionLog:
    """The prediction log on one database. Thread-safe; one instance per process.

    `text`: what `record` keeps of each message (`TextMode`); `timeout`: seconds a write waits for a busy
    database (SQLite) before it fails."""

    def __init__(self, url: str, text: TextMode = "redacted", timeout: float = SQLITE_BUSY_TIMEOUT_S) -> None:
        self.url = url
        self.text_mode: TextMode = text
        try:
            parsed = make_url(url)
        except Exception as err:
            raise PredictionLogError("the database URL (TRIAGE_DATABASE_URL) is not a SQLAlchemy URL") from err
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": timeout, "check_same_thread": False}
        try:
            self.engine: sa.Engine = sa.create_engine(url, **kwargs)
        except Exception as err:
            raise PredictionLogError(
                f"cannot open the prediction log at {mask_url(url)}: {mask_text(str(err))}"
            ) from err
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas(timeout))
        self._insert_predictions = sa.insert(predictions)  # built once: the hot path reuses it

    @classmethod
    def open(cls, url: str, text: TextMode = "redacted", timeout: float = SQLITE_BUSY_TIMEOUT_S) -> PredictionLog:
        """Open the log and create its tables if they are missing (idempotent)."""
        log = cls(url, text=text, timeout=timeout)
        log.create_tables()
        return log

    def create_tables(self) -> None:
        """Create missing tables, and add the columns and indexes a log made by an older version lacks."""
        try:
            metadata.create_all(self.engine)
            with self.engine.begin() as conn:
                inspector = sa.inspect(conn)
                for table in metadata.sorted_tables:
                    have = {c["name"] for c in inspector.get_columns(table.name)}
                    for column in table.columns:
                        if column.name not in have and column.nullable:
                            kind = column.type.compile(dialect=conn.dialect)
                            conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))
                    for index in table.indexes:
                        index.create(conn, checkfirst=True)
        except SQLAlchemyError as err:
            raise PredictionLogError(
                f"cannot create the prediction log tables at {mask_url(self.url)}: {type(err).__name__}"
            ) from err

    def close(self) -> None:
        self.engine.dispose()

    # -- the hot path ------------------------------------------------------------------------------
    def record(
        self,
        requests: Sequence[ClassifyRequest],
        responses: Sequence[ClassifyResponse],
        now: datetime | None = None,
        key_name: str | None = None,
        within: Callable[[sa.Connection], None] | None = None,
    ) -> None:
        """Commit one row per answered request, in one transaction (the text as `text_mode` says);
        `within(conn)` runs in that transaction after the rows are inserted (the case book's
        read-modify-write), and a failure there undoes them."""
        created = now or datetime.now(UTC)
        mode = self.text_mode
        rows = [
            {
                "request_id": res.request_id,
                "created_at": created,
                **dict(zip(("text", "text_key"), stored_text(req.text, mode), strict=True)),
                "channel": req.channel,
                "order_id": req.order_id,
                "received_at": req.received_at,
                "risk": res.risk,
                "claim_type": res.claim_type,
                "risk_scores": res.risk_scores,
                "claim_type_scores": res.claim_type_scores,
                "needs_review": res.needs_review,
                "language": res.language,
                "keyword_risk": res.keyword_triage.risk,
                "keyword_claim_type": res.keyword_triage.claim_type,
                "model_version": res.model_version,
                "text_kept": mode,
                "key_name": key_name,
            }
            for req, res in zip(requests, responses, strict=True)
        ]
        try:
            with self.engine.begin() as conn:
                conn.execute(self._insert_predictions, rows)
                if within is not None:
                    within(conn)
        except SQLAlchemyError as err:
            raise PredictionLogError(f"could not record {len(rows)} prediction(s): {_reason(err)}") from err

    # -- feedback ----------------------------------------------------------------------------------
    def get(self, request_id: str) -> LoggedPrediction | None:
        found = self.list_predictions(request_ids=[request_id])
        return found[0] if found else None

    def add_feedback(
        self,
        request_id: str,
        risk: Risk,
        claim_type: ClaimType | None,
        agent: str,
        now: datetime | None = None,
        key_name: str | None = None,
    ) -> FeedbackRecord:
        created = now or datetime.now(UTC)
        try:
            with self.engine.begin() as conn:
                new_id = conn.execute(
                    sa.insert(feedback).values(
                        request_id=request_id,
                        risk=risk,
                        claim_type=claim_type,
                        agent=agent,
                        created_at=created,
                        key_name=key_name,
                    )
                ).inserted_primary_key
        except SQLAlchemyError as err:
            raise PredictionLogError(f"could not record the feedback: {_reason(err)}") from err
        assert new_id is not None
        return FeedbackRecord(int(new_id[0]), request_id, risk, claim_type, agent, created, key_name)

    def feedback_for(self, request_id: str) -> list[FeedbackRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(feedback).where(feedback.c.request_id == request_id).order_by(feedback.c.id)
            ).mappings()
            return [
                FeedbackRecord(
                    r["id"], r["request_id"], r["risk"], r["claim_type"], r["agent"], r["created_at"], r["key_name"]
                )
                for r in rows
            ]

    # -- the labeling loop -------------------------------------------------------------------------
    def list_predictions(
        self, request_ids: Iterable[str] | None = None, exclude_sent_to: int | None = None
    ) -> list[LoggedPrediction]:
        """Logged predictions with their latest feedback; optionally only `request_ids`, or only those
        whose message was not sent to Label Studio project `exclude_sent_to` yet."""
        latest = (
            sa.select(feedback.c.request_id, sa.func.max(feedback.c.id).label("fid"))
            .group_by(feedback.c.request_id)
            .subquery()
        )
        fb = feedback.alias("fb")
        query = (
            sa.select(
                predictions,
                fb.c.risk.label("feedback_risk"),
                fb.c.claim_type.label("feedback_claim_type"),
                fb.c.agent.label("feedback_agent"),
                fb.c.created_at.label("feedback_at"),
            )
            .select_from(
                predictions.outerjoin(latest, latest.c.request_id == predictions.c.request_id).outerjoin(
                    fb, fb.c.id == latest.c.fid
                )
            )
            .order_by(predictions.c.created_at, predictions.c.request_id)
        )
        if request_ids is not None:
            query = query.where(predictions.c.request_id.in_(list(request_ids)))
        if exclude_sent_to is not None:
            sent = sa.select(label_tasks.c.text_key).where(label_tasks.c.project_id == exclude_sent_to)
            query = query.where(predictions.c.text_key.not_in(sent))
        with self.engine.connect() as conn:
            return [LoggedPrediction(**dict(r)) for r in conn.execute(query).mappings()]

    def sent_keys(self, project_id: int) -> set[str]:
        with self.engine.connect() as conn:
            return set(
                conn.execute(sa.select(label_tasks.c.text_key).where(label_tasks.c.project_id == project_id)).scalars()
            )

    def mark_sent(
        self, project_id: int, sent: Sequence[tuple[str, int, str | None]], now: datetime | None = None
    ) -> None:
        """Remember (text_key, task_id, request_id) as sent to `project_id`, in one transaction."""
        if not sent:
            return
        when = now or datetime.now(UTC)
        known = self.sent_keys(project_id)
        rows = [
            {"project_id": project_id, "text_key": k, "task_id": t, "request_id": r, "sent_at": when}
            for k, t, r in sent
            if k not in known
        ]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(label_tasks), rows)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for t in (predictions, feedback, label_tasks)
            }

    # -- retention -----------------------------------------------------------------------------------
    def prune(self, before: datetime, dry_run: bool = False) -> Removed:
        """Remove the predictions logged before `before`, with their feedback and Label Studio references."""
        return self._remove(predictions.c.created_at < before, dry_run)

    def forget(self, order_id: str, dry_run: bool = False) -> Removed:
        """A buyer's erasure request: every prediction of order `order_id` (its order_id field, or the order
        id written in the kept text), with its feedback and Label Studio references."""
        if not order_id.strip():
            raise PredictionLogError("an empty order id would match every message: give the buyer's order id")
        where = sa.or_(predictions.c.order_id == order_id, predictions.c.text.contains(order_id, autoescape=True))
        return self._remove(where, dry_run)

    def _remove(self, where: sa.ColumnElement[bool], dry_run: bool) -> Removed:
        try:
            with self.engine.connect() as conn, conn.begin() as tx:
                rows = conn.execute(sa.select(predictions.c.request_id, predictions.c.text_key).where(where)).all()
                ids = [r.request_id for r in rows]
                keys = {r.text_key for r in rows}
                out = Removed(request_ids=ids)
                for chunk in _chunks(ids):
                    out.feedback += conn.execute(sa.delete(feedback).where(feedback.c.request_id.in_(chunk))).rowcount
                refs = sa.or_(
                    sa.false(),
                    *(label_tasks.c.request_id.in_(c) for c in _chunks(ids)),
                    *(label_tasks.c.text_key.in_(c) for c in _chunks(sorted(keys))),
                )
                if ids:
                    out.tasks = [
                        (int(r.project_id), int(r.task_id))
                        for r in conn.execute(sa.select(label_tasks.c.project_id, label_tasks.c.task_id).where(refs))
                    ]
                    out.label_tasks = conn.execute(sa.delete(label_tasks).where(refs)).rowcount
                for chunk in _chunks(ids):
                    out.predictions += conn.execute(
                        sa.delete(predictions).where(predictions.c.request_id.in_(chunk))
                    ).rowcount
                if dry_run:
                    tx.rollback()
                return out
        except SQLAlchemyError as err:
            raise PredictionLogError(f"could not remove predictions from {mask_url(self.url)}: {_reason(err)}") from err


def _chunks(items: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    """`items` in slices small enough for one IN (...) of any database."""
    return [items[i : i + size] for i in range(0, len(items), size)]
