"""Keyword triage: the rule baseline catches each listed form in en/fr/it, with the model's interface."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from serving.keywords import KeywordTriage, keyword_triage
from serving.model import Classifier
from serving.prediction import Prediction

from .conftest import TrainedModel

# (message, risk, claim_type) for every form the rules list, inside a real sentence
CAUGHT = [
    ("I will open an A-to-Z claim tomorrow.", "claim_filed", "other"),
    ("Amazon: an A-to-z claim was filed on order 204-5518273-9910342.", "claim_filed", "other"),
    ("J'ai ouvert une réclamation A à Z ce matin.", "claim_filed", "other"),
    ("Ho aperto un reclamo dalla A alla Z.", "claim_filed", "other"),
    ("My order was not delivered, 3 weeks now.", "at_risk", "not_received"),
    ("Colis non livré depuis le 12 mars.", "at_risk", "not_received"),
    ("Pacco non consegnato, ordine 402-9988776-5544332.", "at_risk", "not_received"),
    ("The jacket is not as described on the listing.", "at_risk", "not_as_described"),
    ("Article non conforme à la description, je veux le retourner.", "at_risk", "not_as_described"),
    ("L'articolo non come descritto nell'annuncio.", "at_risk", "not_as_described"),
]

ROUTINE = [
    "Thanks, arrived fine!",
    "Can I get an invoice for order 171-2233445-6677889?",
    "Bonjour, pouvez-vous changer l'adresse de livraison ?",
    "Ciao, posso avere la fattura?",
    "A to Z of our catalogue",  # no hyphens: not the rule's form
    "Colis non livre",  # the rules do not fold accents, like the helpdesk rules they reproduce
    "",
]


@pytest.mark.parametrize(("text", "risk", "claim_type"), CAUGHT)
@pytest.mark.parametrize("case", [str, str.upper, str.lower, str.swapcase], ids=["as-is", "upper", "lower", "swap"])
def test_each_listed_form_is_caught_case_insensitively(
    text: str, risk: str, claim_type: str, case: Callable[[str], str]
) -> None:
    pred = keyword_triage(case(text))
    assert (pred.risk, pred.claim_type, pred.tier) == (risk, claim_type, 1)


@pytest.mark.parametrize("text", ROUTINE)
def test_no_keyword_gives_tier_2(text: str) -> None:
    pred = keyword_triage(text)
    assert (pred.risk, pred.claim_type, pred.tier) == ("routine", "none", 2)


def test_first_matching_rule_wins() -> None:
    # a claim mention outranks the ground it names
    pred = keyword_triage("Not delivered, so I opened an A-to-z claim")
    assert (pred.risk, pred.claim_type) == ("claim_filed", "other")


def test_same_predict_interface_as_the_model(triage_model: TrainedModel) -> None:
    texts = [t for t, _, _ in CAUGHT[:3]] + ROUTINE[:2]
    keywords, model = KeywordTriage(), Classifier.load(triage_model.folder)
    assert inspect.signature(KeywordTriage.predict) == inspect.signature(Classifier.predict)
    for predictor in (keywords, model):
        assert isinstance(predictor.name, str)
        preds = predictor.predict(texts)
        assert isinstance(preds, list) and len(preds) == len(texts)
        assert all(isinstance(p, Prediction) for p in preds)
        assert predictor.predict([]) == []
    assert keywords.predict(texts) == [keyword_triage(t) for t in texts]
