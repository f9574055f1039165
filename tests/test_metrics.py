"""training.metrics: the figures every evaluation reports, on hand-made predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from serving.prediction import Prediction
from training.metrics import (
    bootstrap_intervals,
    length_bucket,
    operating_points,
    paired_differences,
    precision_at_prevalence,
    threshold_for_recall,
    tier_flip_rate,
    triage_report,
)
from training.modelcard import group_table


def pred(risk: str, p_tier1: float = 0.9) -> Prediction:
    claim = "none" if risk == "routine" else "other"
    scores = {"claim_filed": 0.0, "at_risk": p_tier1, "routine": 1 - p_tier1}
    return Prediction(risk, claim, scores, {}, False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "bucket"), [(1, "<80"), (79, "<80"), (80, "80-200"), (200, "80-200"), (201, ">200")])
def test_length_buckets_have_no_gap(n: int, bucket: str) -> None:
    assert length_bucket("x" * n) == bucket


def test_precision_at_prevalence_restates_the_error_rates_at_a_real_tier1_share() -> None:
    # recall 0.9, false-positive rate 0.1: at 50% Tier 1 precision is 0.9, at 10% only 0.5
    assert precision_at_prevalence(0.9, 0.1, 0.5) == 0.9
    assert precision_at_prevalence(0.9, 0.1, 0.1) == 0.5
    assert precision_at_prevalence(0.9, 0.0, 0.1) == 1.0
    assert precision_at_prevalence(None, 0.1, 0.1) is None


def test_threshold_for_recall_is_the_highest_that_still_finds_the_target() -> None:
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1])
    truth = np.array([True, True, True, True, False, True, False, False])
    assert threshold_for_recall(scores, truth, 0.8) == 0.7  # 4 of 5 at >= 0.7
    assert threshold_for_recall(scores, truth, 1.0) == 0.3  # the last one sits at 0.3
    assert threshold_for_recall(scores, np.zeros(8, dtype=bool), 0.9) is None


def test_operating_points_per_language() -> None:
    scores = np.array([0.9, 0.8, 0.4, 0.2, 0.9, 0.1])
    truth = np.array([True, True, False, False, True, True])
    points = operating_points(scores, truth, ["fr", "fr", "fr", "fr", "it", "it"], recalls=(0.5, 1.0))
    assert points["fr"]["1.00"] == {"threshold": 0.8, "precision": 1.0, "recall": 1.0}
    assert points["it"]["1.00"]["precision"] == 1.0 and points["it"]["1.00"]["threshold"] == 0.1
    assert points["all"]["1.00"]["precision"] == 0.6667  # everything is routed at 0.1: 4 of 6 are Tier 1
    assert set(points) == {"all", "fr", "it"}


def test_report_splits_by_language_length_and_slice() -> None:
    df = pd.DataFrame(
        {
            "text": ["short broken", "x" * 150 + " broken", "x" * 250, "thanks"],
            "language": ["en", "en", "fr", "fr"],
            "risk": ["at_risk", "at_risk", "at_risk", "routine"],
            "claim_type": ["damaged_defective", "damaged_defective", "other", "none"],
            "slice": ["complaint_short_calm", "complaint", "complaint", "routine_short"],
        }
    )
    preds = [pred("at_risk"), pred("routine", 0.2), pred("at_risk"), pred("at_risk")]
    report = triage_report(df, preds, prevalence=0.1)
    assert report["tier1_recall"] == round(2 / 3, 4) and report["tier1_precision"] == round(2 / 3, 4)
    assert report["per_length"]["<80"]["tier1_recall"] == 1.0 and report["per_length"]["80-200"]["tier1_recall"] == 0.0
    assert report["per_language_length"]["en"]["80-200"]["tier1_n"] == 1
    assert report["per_slice"]["routine_short"]["n"] == 1
    # recall 2/3, false-positive rate 1/1: at 10% Tier 1 precision is low
    assert report["tier1_precision_at_prevalence"] == precision_at_prevalence(round(2 / 3, 4), 1.0, 0.1)
    # ranking: P(Tier 1) 0.9, 0.2, 0.9, 0.9 -> the routine message ties the top: AP = 3 Tier-1 rows among
    # the top three (2/3 precision at 2/3 recall), then the last at precision 3/4
    assert report["tier1_average_precision"] == round(2 / 3 * 2 / 3 + 1 / 3 * 3 / 4, 4)
    assert report["per_language"]["en"]["tier1_average_precision"] is None  # one tier only: no ranking to judge


def test_average_precision_reads_the_scores_not_the_threshold() -> None:
    df = pd.DataFrame(
        {
            "text": ["a", "b", "c", "d"],
            "language": ["en"] * 4,
            "risk": ["at_risk", "routine", "at_risk", "routine"],
            "claim_type": ["other", "none", "other", "none"],
        }
    )
    strict = [pred("routine", 0.4), pred("routine", 0.1), pred("routine", 0.3), pred("routine", 0.2)]
    loose = [pred("at_risk", 0.4), pred("at_risk", 0.1), pred("at_risk", 0.3), pred("at_risk", 0.2)]
    a, b = triage_report(df, strict), triage_report(df, loose)
    assert a["tier1_average_precision"] == b["tier1_average_precision"] == 1.0  # Tier 1 ranked first in both
    assert (a["tier1_recall"], b["tier1_recall"]) == (0.0, 1.0)


def test_a_one_claim_type_slice_reads_its_claim_type_accuracy() -> None:
    n = 10
    df = pd.DataFrame(
        {
            "text": ["still nothing, two weeks late"] * n,
            "language": ["en"] * n,
            "risk": ["at_risk"] * n,
            "claim_type": ["not_received"] * n,
            "slice": ["lateness"] * n,
        }
    )
    preds = [Prediction("at_risk", "not_received", {}, {}, False) for _ in range(n - 2)]
    preds += [Prediction("at_risk", "other", {}, {}, False), Prediction("routine", "none", {}, {}, False)]
    lateness = triage_report(df, preds)["per_slice"]["lateness"]
    assert lateness["claim_type_accuracy"] == 0.8
    # macro-F1 averages in a zero for each of the two labels predicted once: it says 0.30, not what happened
    assert lateness["claim_type_macro_f1"] == pytest.approx((2 * 8 / 18) / 3, abs=1e-4)
    table = group_table({"lateness": lateness}, "slice")
    assert "claim_type_accuracy" in table.splitlines()[0] and "| 0.800 |" in table


def test_tier_flip_rate() -> None:
    a = [pred("at_risk"), pred("routine"), pred("claim_filed")]
    b = [pred("claim_filed"), pred("at_risk"), pred("claim_filed")]
    assert tier_flip_rate(a, b) == round(1 / 3, 5)  # at_risk -> claim_filed stays Tier 1


def _forty() -> tuple[list[str], list[str], list[Prediction]]:
    """20 Tier-1 messages (16 caught) and 20 routine ones (4 sent to Tier 1): recall and precision 0.8."""
    risk = ["at_risk"] * 20 + ["routine"] * 20
    claim = ["other"] * 20 + ["none"] * 20
    caught, missed = [pred("at_risk", 0.9)] * 16, [pred("routine", 0.2)] * 4
    false_alarms, quiet = [pred("at_risk", 0.7)] * 4, [pred("routine", 0.1)] * 16
    preds = caught + missed + false_alarms + quiet
    return risk, claim, preds


def test_bootstrap_intervals_hold_the_figure_and_narrow_with_more_messages() -> None:
    risk, claim, preds = _forty()
    small = bootstrap_intervals(risk, claim, preds, resamples=200)
    assert small["tier1_recall"]["value"] == 0.8 and small["tier1_precision"]["value"] == 0.8
    for row in small.values():
        assert row["low"] is not None and row["high"] is not None and row["value"] is not None
        assert row["low"] <= row["value"] <= row["high"]
    low, high = small["tier1_recall"]["low"], small["tier1_recall"]["high"]
    assert low is not None and high is not None and low < 0.8 < high  # 40 messages leave doubt
    large = bootstrap_intervals(risk * 9, claim * 9, preds * 9, resamples=200)
    for name in ("tier1_recall", "tier1_precision", "claim_type_macro_f1"):
        wide = small[name]["high"] - small[name]["low"]  # type: ignore[operator]
        narrow = large[name]["high"] - large[name]["low"]  # type: ignore[operator]
        assert narrow < 0.6 * wide, (name, wide, narrow)  # 9x the messages: about a third of the width
    assert bootstrap_intervals(risk, claim, preds, resamples=200) == small  # seeded: the same file reads the same


def test_the_interval_claim_type_f1_is_sklearns_macro_f1() -> None:
    risk = ["at_risk", "at_risk", "at_risk", "routine", "routine", "at_risk"]
    claim = ["not_received", "other", "damaged_defective", "none", "none", "other"]
    preds = [
        Prediction("at_risk", "not_received", {"routine": 0.1}, {}, False),
        Prediction("at_risk", "not_received", {"routine": 0.2}, {}, False),
        Prediction("at_risk", "return_refund", {"routine": 0.3}, {}, False),
        Prediction("routine", "none", {"routine": 0.9}, {}, False),
        Prediction("at_risk", "other", {"routine": 0.4}, {}, False),
        Prediction("at_risk", "other", {"routine": 0.2}, {}, False),
    ]
    expected = f1_score(claim, [p.claim_type for p in preds], average="macro", zero_division=0)
    assert bootstrap_intervals(risk, claim, preds, resamples=10)["claim_type_macro_f1"]["value"] == round(expected, 4)


def test_a_perfect_predictor_has_no_doubt_and_an_empty_file_no_figure() -> None:
    risk = ["at_risk"] * 5 + ["routine"] * 5
    claim = ["other"] * 5 + ["none"] * 5
    preds = [pred("at_risk", 0.9)] * 5 + [pred("routine", 0.1)] * 5
    iv = bootstrap_intervals(risk, claim, preds, resamples=200)
    assert iv["tier1_recall"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert iv["tier1_average_precision"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert all(row == {"value": None, "low": None, "high": None} for row in bootstrap_intervals([], [], []).values())


def test_paired_differences_tell_a_better_model_from_luck() -> None:
    risk, claim, preds = _forty()
    same = paired_differences(risk, claim, preds, preds, resamples=200)
    for row in same.values():
        assert row["difference"] == 0.0 and row["low"] == 0.0 and row["high"] == 0.0 and row["ahead"] == 0.0
    # the better model catches the 4 missed Tier-1 messages: ahead in recall whatever the draw
    better = [pred("at_risk", 0.9)] * 20 + preds[20:]
    diff = paired_differences(risk, claim, better, preds, resamples=200)
    recall = diff["tier1_recall"]
    assert recall["value"] == 1.0 and recall["baseline"] == 0.8 and recall["difference"] == 0.2
    assert recall["low"] is not None and recall["low"] > 0 and recall["ahead"] is not None and recall["ahead"] > 0.95
    # one message of difference in 40 is within the file's luck: the interval holds 0
    one = [pred("at_risk", 0.9)] * 17 + preds[17:]
    close = paired_differences(risk, claim, one, preds, resamples=200)["tier1_recall"]
    assert close["low"] is not None and close["high"] is not None and close["low"] <= 0 < close["high"]
    with pytest.raises(ValueError, match="39 baseline"):
        paired_differences(risk, claim, preds, preds[:-1])
