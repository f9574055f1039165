"""One message identity (serving.labels.message_key) for the prediction log, retraining and training: a
case or Unicode variant of a test message is the same message everywhere, so it is never trained on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from loop.corrections import apply_corrections
from serving.labels import CLAIM_TYPES, GROUNDS, RISKS, consistent, message_key, normalize_message, tier_of
from serving.prediction import Prediction
from serving.predlog import PredictionLog
from serving.schemas import ClassifyRequest
from serving.service import respond
from serving.settings import Settings
from training.train import TrainConfig, drop_overlap

TEST_MESSAGE = "Merci, tout est bien arrivé."
# the same message as a reviewer's correction might carry it: other case, decomposed é, other spacing
VARIANT = "MERCI,  tout est bien arrive\u0301. "


def rows(*texts: str, risk: str = "routine", claim_type: str = "none") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "text": t,
                "language": "fr",
                "risk": risk,
                "claim_type": claim_type,
                "labeled_at": "",
                "source": "",
                "line": i + 2,
            }
            for i, t in enumerate(texts)
        ]
    )


def test_normalised_form_ignores_case_spacing_and_unicode_forms() -> None:
    assert normalize_message("  Colis\tjamais  REÇU \n") == "colis jamais reçu"
    assert message_key("Colis jamais reçu") == message_key("colis  jamais re\u0063\u0327u")
    assert message_key("Colis jamais reçu") != message_key("Colis reçu")
    assert message_key(TEST_MESSAGE) == message_key(VARIANT)


def test_a_correction_of_a_test_message_in_another_case_is_held_out_not_trained_on() -> None:
    seed = rows("Où en est ma commande ?")
    corrections = rows(VARIANT, risk="at_risk", claim_type="other")
    out = apply_corrections(seed, corrections, test=rows(TEST_MESSAGE))
    assert out.held_out["text"].tolist() == [VARIANT]
    assert message_key(TEST_MESSAGE) not in set(out.train["text"].map(message_key))
    assert len(out.train) == 1 and len(out.applied) == 0


def test_training_leaves_out_a_variant_of_a_test_message(tmp_path: Path) -> None:
    cfg = TrainConfig.from_settings(Settings(_env_file=None), test=tmp_path / "test.csv")  # type: ignore[call-arg]
    kept = drop_overlap(rows(VARIANT, "Où en est ma commande ?"), rows(TEST_MESSAGE), tmp_path / "test.csv", cfg)
    assert kept["text"].tolist() == ["Où en est ma commande ?"]
    assert cfg.extra["rows_left_out_in_test"] == 1


def test_the_prediction_log_keys_the_variant_as_the_same_message(tmp_path: Path) -> None:
    plog = PredictionLog.open(f"sqlite:///{tmp_path / 'log.db'}")
    requests = [ClassifyRequest(text=t) for t in (TEST_MESSAGE, VARIANT)]
    now = datetime.now(UTC)
    answers = [respond(r, Prediction("routine", "none"), "m", now, f"r{i}") for i, r in enumerate(requests)]
    plog.record(requests, answers)
    keys = {p.text_key for p in plog.list_predictions()}
    plog.close()
    assert keys == {message_key(TEST_MESSAGE)}


def test_label_sets_and_the_guides_rule() -> None:
    assert RISKS == ("claim_filed", "at_risk", "routine")
    assert CLAIM_TYPES[-1] == "none" and "none" not in GROUNDS and len(GROUNDS) == 6
    assert [tier_of(r) for r in RISKS] == [1, 1, 2]
    assert consistent("routine", "none") and consistent("at_risk", "other")
    assert not consistent("routine", "other") and not consistent("claim_filed", "none")
