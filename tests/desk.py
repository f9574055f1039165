"""Cases without a model: the prediction log and the case book on one database, and messages recorded
through the same path as /classify (serving.routes.classify_and_record) with known labels for the model's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr

from serving.cases.replies import load_catalogue
from serving.cases.schemas import CaseEvent, CaseEventRequest
from serving.cases.store import CaseBook
from serving.labels import ClaimType, Risk
from serving.prediction import Prediction
from serving.predlog import PredictionLog
from serving.schemas import ClassifyRequest, ClassifyResponse
from serving.service import respond
from serving.settings import Settings
from tests.clock import FrozenClock

ORDER = "171-2233445-6677889"
H = timedelta(hours=1)
SALT = b"test-salt"
ANGRY = "Commande toujours pas reçue, livraison prévue le 12. Je vais ouvrir un litige A à Z."
FOLLOW_UP = "Bonjour, avez-vous des nouvelles ? Merci."
CLAIM = "L'acheteur a déposé une réclamation au titre de la garantie A à Z pour la commande."
THANKS = "Merci, tout est bien arrivé."


@dataclass
class Desk:
    """The prediction log and the case book on one database, on a frozen clock."""

    plog: PredictionLog
    book: CaseBook
    clock: FrozenClock

    def classify_many(
        self, messages: Sequence[tuple[ClassifyRequest, Risk, ClaimType]], book: CaseBook | None = None
    ) -> list[ClassifyResponse]:
        """What serving.routes.classify_and_record does, with these labels for the model's."""
        book = book or self.book
        now = self.clock()
        reqs = [m[0] for m in messages]
        results = [respond(req, Prediction(risk, claim), "v-test", now) for req, risk, claim in messages]
        routed: list[ClassifyResponse] = []
        book.plog.record(reqs, results, now, within=lambda conn: routed.extend(book.route(conn, reqs, results, now)))
        return routed

    def classify(
        self,
        text: str,
        risk: Risk,
        claim_type: ClaimType,
        order_id: str | None = ORDER,
        channel: str | None = "amazon",
        received_at: datetime | None = None,
        buyer_id: str | None = None,
    ) -> ClassifyResponse:
        req = ClassifyRequest(text=text, channel=channel, order_id=order_id, received_at=received_at, buyer_id=buyer_id)
        return self.classify_many([(req, risk, claim_type)])[0]

    def event(self, case_id: int, kind: str, agent: str = "marie", **extra: object) -> CaseEvent:
        req = CaseEventRequest.model_validate({"kind": kind, "agent": agent, **extra})
        return self.book.add_event(case_id, req, self.clock())


def open_desk(url: str, clock: FrozenClock, **settings: Any) -> Desk:
    s = Settings(_env_file=None, database_url=url, buyer_salt=SecretStr(SALT.decode()), **settings)  # type: ignore[call-arg]
    plog = PredictionLog.open(url)
    return Desk(plog, CaseBook.open(plog, s, load_catalogue()), clock)
