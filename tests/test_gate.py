"""The retraining gate (loop.gate): what a candidate may lose against the champion, and flat metrics."""

from __future__ import annotations

import json

from loop.gate import GatePolicy, flatten_metrics, gate


def metrics(t1: float, f1: float, langs: tuple[float, float, float] | None = None) -> dict[str, float]:
    fr, it, en = langs or (t1, t1, t1)
    return {
        "test.tier1_recall": t1,
        "test.risk_macro_f1": f1,
        "test.fr.tier1_recall": fr,
        "test.it.tier1_recall": it,
        "test.en.tier1_recall": en,
    }


def test_the_first_version_passes_the_gate() -> None:
    assert gate(metrics(0.5, 0.5), None).passed


def test_lower_tier1_recall_fails_the_gate_with_the_numbers() -> None:
    d = gate(metrics(0.9514, 0.91), metrics(0.9583, 0.90), champion_version="3")
    assert not d.passed
    assert "test.tier1_recall: 0.9514 vs champion 0.9583 (-0.69 points, allowed -0.00) FAIL" in d.reason
    assert "version 3" in d.reason


def test_risk_macro_f1_may_drop_half_a_point_and_no_more() -> None:
    assert gate(metrics(0.95, 0.8960), metrics(0.95, 0.90)).passed
    d = gate(metrics(0.95, 0.8940), metrics(0.95, 0.90))
    assert not d.passed and "test.risk_macro_f1" in d.reason and "-0.60 points" in d.reason


def test_one_language_may_lose_one_tier1_message_but_not_two() -> None:
    champion = metrics(0.95, 0.9, (0.95, 0.95, 0.95))
    assert gate(metrics(0.95, 0.9, (0.93, 0.96, 0.96)), champion).passed  # -2 points in fr
    d = gate(metrics(0.95, 0.9, (0.91, 0.97, 0.97)), champion)  # -4 points in fr, overall the same
    assert not d.passed and "test.fr.tier1_recall" in d.reason
    strict = GatePolicy(language_tier1_recall_drop=0.0)
    assert not gate(metrics(0.95, 0.9, (0.93, 0.96, 0.96)), champion, policy=strict).passed


def test_a_candidate_without_test_metrics_never_passes() -> None:
    assert not gate({}, None).passed
    assert not gate({}, metrics(0.9, 0.9)).passed


def test_flatten_metrics_names_the_served_variant_per_language() -> None:
    folder_metrics = json.loads(
        json.dumps(
            {
                "test": {
                    "int8": {"n": 3, "tier1_recall": 0.5, "per_language": {"fr": {"tier1_recall": 1.0, "n": 1}}},
                    "fp32": {"n": 3, "tier1_recall": 0.6, "per_language": {"fr": {"tier1_recall": None}}},
                },
                "keyword_baseline": {"n": 3, "tier1_recall": 0.1, "per_language": {}},
                "parity": {"fp32_min_cosine": 1.0},
                "int8_gap_points": 0.5,
            }
        )
    )
    flat = flatten_metrics(folder_metrics, "int8")
    assert flat["test.tier1_recall"] == 0.5 and flat["test.fr.tier1_recall"] == 1.0
    assert flat["test_fp32.tier1_recall"] == 0.6 and "test_fp32.fr.tier1_recall" not in flat
    assert flat["keywords.tier1_recall"] == 0.1 and flat["parity.fp32_min_cosine"] == 1.0
