"""The retraining gate (loop.gate): what a candidate may lose against the champion, and flat metrics."""

from __future__ import annotations

from loop.gate import GatePolicy, flatten_metrics, gate


def metrics(
    t1: float,
    ap: float,
    langs: tuple[float, float, float] | None = None,
    short: tuple[float, float, float] | None = None,
    n_lang: int = 100,
    n_short: int = 40,
) -> dict[str, float]:
    """Flat run metrics: overall, per language (n_lang Tier-1 messages each) and per language's short
    bucket (n_short each)."""
    fr, it, en = langs or (t1, t1, t1)
    out = {"test.tier1_recall": t1, "test.tier1_average_precision": ap}
    for lang, value, sv in zip(("fr", "it", "en"), (fr, it, en), short or (fr, it, en), strict=True):
        out |= {
            f"test.{lang}.tier1_recall": value,
            f"test.{lang}.tier1_n": n_lang,
            f"test.{lang}.lt80.tier1_recall": sv,
            f"test.{lang}.lt80.tier1_n": n_short,
        }
    return out


def test_the_first_version_passes_the_gate() -> None:
    assert gate(metrics(0.5, 0.5), None).passed


def test_lower_tier1_recall_fails_the_gate_with_the_numbers() -> None:
    d = gate(metrics(0.9514, 0.91), metrics(0.9583, 0.90), champion_version="3")
    assert not d.passed
    assert "test.tier1_recall: 0.9514 vs champion 0.9583 (-0.69 points, allowed -0.00) FAIL" in d.reason
    assert "version 3" in d.reason


def test_tier1_average_precision_may_drop_half_a_point_and_no_more() -> None:
    assert gate(metrics(0.95, 0.8960), metrics(0.95, 0.90)).passed
    d = gate(metrics(0.95, 0.8940), metrics(0.95, 0.90))
    assert not d.passed and "test.tier1_average_precision" in d.reason and "-0.60 points" in d.reason


def test_a_lower_threshold_that_costs_macro_f1_but_ranks_as_well_passes() -> None:
    # new data moved the threshold chosen for the same out-of-fold recall: more recall, less precision
    champion = metrics(0.964, 0.986) | {"test.risk_macro_f1": 0.861, "test.tier1_precision": 0.916}
    candidate = metrics(0.978, 0.987) | {"test.risk_macro_f1": 0.851, "test.tier1_precision": 0.889}
    d = gate(candidate, champion)
    assert d.passed, d.reason
    assert "test.tier1_average_precision: 0.9870 vs champion 0.9860" in d.reason
    assert not any(c.metric == "test.risk_macro_f1" for c in d.checks)


def test_a_champion_registered_before_average_precision_is_judged_on_the_rest() -> None:
    old = {k: v for k, v in metrics(0.95, 0.9).items() if not k.endswith("average_precision")}
    assert gate(metrics(0.95, 0.8), old).passed
    assert not gate(metrics(0.94, 0.99), old).passed
    worse = {k: v for k, v in metrics(0.95, 0.9).items() if not k.endswith("average_precision")}
    assert not gate(worse, metrics(0.95, 0.9)).passed  # a candidate must bring every figure


def test_one_language_may_lose_two_tier1_messages_but_not_three() -> None:
    champion = metrics(0.95, 0.9, (0.95, 0.95, 0.95))
    assert gate(metrics(0.95, 0.9, (0.93, 0.96, 0.96)), champion).passed  # fr: 2 of 100 messages
    d = gate(metrics(0.95, 0.9, (0.92, 0.965, 0.965)), champion)  # fr: 3 of 100, overall the same
    assert not d.passed and "test.fr.tier1_recall" in d.reason and "allowed -2.01" in d.reason
    strict = GatePolicy(language_tier1_messages=0)
    assert not gate(metrics(0.95, 0.9, (0.93, 0.96, 0.96)), champion, policy=strict).passed


def test_a_model_that_gains_overall_but_loses_the_short_messages_does_not_pass() -> None:
    champion = metrics(0.95, 0.9, short=(0.95, 0.95, 0.95))
    one = metrics(0.96, 0.91, short=(0.925, 0.95, 0.95))  # it: one short message of 40 lost: allowed
    assert gate(one, champion).passed
    two = metrics(0.96, 0.91, short=(0.90, 0.95, 0.95))  # two short French messages lost
    d = gate(two, champion)
    assert not d.passed and "test.fr.lt80.tier1_recall" in d.reason


def test_a_candidate_without_test_metrics_never_passes() -> None:
    assert not gate({}, None).passed
    assert not gate({}, metrics(0.9, 0.9)).passed


def test_flatten_metrics_names_the_served_variant_per_language_length_and_real_messages() -> None:
    folder_metrics = {
        "test": {
            "int8": {
                "n": 3,
                "tier1_recall": 0.5,
                "per_language": {"fr": {"tier1_recall": 1.0, "n": 1}},
                "per_language_length": {
                    "fr": {"<80": {"tier1_recall": 0.75, "tier1_n": 4}, ">200": {"tier1_recall": 1.0, "tier1_n": 2}}
                },
                "per_length": {"80-200": {"tier1_recall": 0.5}},
            },
            "fp32": {"n": 3, "tier1_recall": 0.6, "per_language": {"fr": {"tier1_recall": None}}},
        },
        "keyword_baseline": {"n": 3, "tier1_recall": 0.1, "per_language": {}},
        "real": {"data": "dev.csv", "int8": {"n": 9, "tier1_recall": 0.8}},
        "parity": {"fp32_min_cosine": 1.0},
        "int8_flip_rate": 0.004,
    }
    flat = flatten_metrics(folder_metrics, "int8")
    assert flat["test.tier1_recall"] == 0.5 and flat["test.fr.tier1_recall"] == 1.0
    assert flat["test.fr.lt80.tier1_recall"] == 0.75 and flat["test.fr.lt80.tier1_n"] == 4
    assert flat["test.fr.gt200.tier1_recall"] == 1.0 and flat["test.80-200.tier1_recall"] == 0.5
    assert flat["test_fp32.tier1_recall"] == 0.6 and "test_fp32.fr.tier1_recall" not in flat
    assert flat["keywords.tier1_recall"] == 0.1 and flat["parity.fp32_min_cosine"] == 1.0
    assert flat["real.tier1_recall"] == 0.8 and flat["int8_flip_rate"] == 0.004
    assert all(ch not in name for name in flat for ch in "<>")  # MLflow refuses them in metric names
