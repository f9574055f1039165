"""Evaluation metrics: pure functions of labels and predictions.

A triage report answers, overall and per language, per length bucket and per slice: how many Tier-1
messages are caught (recall), how many escalations are real (precision, raw and at a stated real-world
Tier-1 share), and how well the claim type is named.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, f1_score

from serving.labels import LANGUAGES, TIER1_RISKS
from serving.prediction import Prediction

TRIAGE_KEYS = (
    "n",
    "tier1_n",
    "risk_macro_f1",
    "claim_type_macro_f1",
    "claim_type_accuracy",
    "tier1_recall",
    "tier1_precision",
    "tier1_precision_at_prevalence",
    "tier1_average_precision",
    "tier1_routed",
    "claim_filed_recall",
    "risk_accuracy",
    "needs_review_rate",
)
# (name, shortest, longest) in characters: the buckets every report and the gate split by
LENGTH_BUCKETS: tuple[tuple[str, int, float], ...] = (("<80", 0, 79), ("80-200", 80, 200), (">200", 201, np.inf))
RECALL_POINTS = (0.90, 0.95, 0.97)
DEFAULT_PREVALENCE = 0.10
INTERVAL_RESAMPLES = 1000
INTERVAL_LEVEL = 0.95


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def length_bucket(text: str) -> str:
    n = len(text)
    return next(name for name, lo, hi in LENGTH_BUCKETS if lo <= n <= hi)


def language_length_cells(df: pd.DataFrame) -> list[str]:
    """Each row's language x length bucket ("fr <80"): the groups the routing threshold's recall floor reads."""
    return [f"{lang} {length_bucket(text)}" for lang, text in zip(df["language"], df["text"], strict=True)]


def precision_at_prevalence(recall: float | None, fpr: float | None, prevalence: float) -> float | None:
    """The Tier-1 precision the same error rates give when `prevalence` of the traffic is Tier 1:
    pi*R / (pi*R + (1 - pi)*FPR). A test set with half its messages in Tier 1 flatters raw precision."""
    if recall is None or fpr is None:
        return None
    caught, false = prevalence * recall, (1 - prevalence) * fpr
    return _ratio(caught, caught + false)


def tier1_score(pred: Prediction) -> float:
    """P(Tier 1) = P(claim_filed) + P(at_risk) = 1 - P(routine): what the routing threshold cuts."""
    return 1.0 - pred.risk_scores.get("routine", 0.0) if pred.risk_scores else float(pred.tier == 1)


def triage_metrics(
    risk_true: Sequence[str],
    claim_true: Sequence[str],
    preds: Sequence[Prediction],
    prevalence: float = DEFAULT_PREVALENCE,
) -> dict[str, Any]:
    """Risk / claim-type macro-F1 (over the labels present in truth or prediction), claim-type accuracy,
    Tier-1 recall and precision (raw and at `prevalence`), claim_filed recall, needs_review rate, and the
    average precision of P(Tier 1): how well the scores rank, whatever the threshold (None without both tiers).

    Claim-type accuracy is the figure to read for a group with one true claim type (a slice such as
    `lateness`): there macro-F1 averages in a zero for every other label predicted even once, so 35 of 36
    named right can read 0.5."""
    rt, ct = list(risk_true), list(claim_true)
    rp, cp = [p.risk for p in preds], [p.claim_type for p in preds]
    t1_true = np.array([r in TIER1_RISKS for r in rt], dtype=bool)
    t1_pred = np.array([r in TIER1_RISKS for r in rp], dtype=bool)
    filed = np.array([r == "claim_filed" for r in rt], dtype=bool)
    filed_pred = np.array([r == "claim_filed" for r in rp], dtype=bool)
    n = len(rt)
    recall = _ratio(int((t1_true & t1_pred).sum()), int(t1_true.sum()))
    fpr = _ratio(int((~t1_true & t1_pred).sum()), int((~t1_true).sum()))
    both_tiers = bool(t1_true.any() and not t1_true.all())
    scores = [tier1_score(p) for p in preds]
    return {
        "n": n,
        "tier1_n": int(t1_true.sum()),
        "risk_macro_f1": round(float(f1_score(rt, rp, average="macro", zero_division=0)), 4) if n else None,
        "claim_type_macro_f1": round(float(f1_score(ct, cp, average="macro", zero_division=0)), 4) if n else None,
        "claim_type_accuracy": round(float(accuracy_score(ct, cp)), 4) if n else None,
        "tier1_recall": recall,
        "tier1_precision": _ratio(int((t1_true & t1_pred).sum()), int(t1_pred.sum())),
        "tier1_precision_at_prevalence": precision_at_prevalence(recall, fpr, prevalence),
        "tier1_average_precision": round(float(average_precision_score(t1_true, scores)), 4) if both_tiers else None,
        "tier1_routed": _ratio(int(t1_pred.sum()), n),  # share sent to Tier 1 (for routine slices: false alarms)
        "claim_filed_recall": _ratio(int((filed & filed_pred).sum()), int(filed.sum())),
        "risk_accuracy": round(float(accuracy_score(rt, rp)), 4) if n else None,
        "needs_review_rate": _ratio(sum(p.needs_review for p in preds), n),
    }


def _groups(
    df: pd.DataFrame,
    preds: Sequence[Prediction],
    keys: np.ndarray,
    names: Sequence[str],
    prevalence: float,
    keep_empty: bool = False,
) -> dict[str, dict[str, Any]]:
    """Metrics per group (`keys == name`); groups with no row are left out unless `keep_empty`."""
    return {
        name: triage_metrics(
            df["risk"][keys == name],
            df["claim_type"][keys == name],
            [p for p, k in zip(preds, keys, strict=True) if k == name],
            prevalence,
        )
        for name in names
        if keep_empty or (keys == name).any()
    }


def triage_report(
    df: pd.DataFrame, preds: Sequence[Prediction], prevalence: float = DEFAULT_PREVALENCE
) -> dict[str, Any]:
    """Overall metrics plus `per_language` (fr, it, en), `per_length` (LENGTH_BUCKETS) and, when the frame
    has a filled `slice` column, `per_slice`, for one predictor on a labeled frame."""
    report = triage_metrics(df["risk"], df["claim_type"], preds, prevalence)
    report["prevalence"] = prevalence
    langs = df["language"].to_numpy()
    report["per_language"] = _groups(df, preds, langs, LANGUAGES, prevalence, keep_empty=True)
    buckets = np.array([length_bucket(t) for t in df["text"]])
    report["per_length"] = _groups(df, preds, buckets, [b for b, _, _ in LENGTH_BUCKETS], prevalence)
    report["per_language_length"] = {
        lang: _groups(
            df[langs == lang],
            [p for p, lg in zip(preds, langs, strict=True) if lg == lang],
            buckets[langs == lang],
            [b for b, _, _ in LENGTH_BUCKETS],
            prevalence,
        )
        for lang in LANGUAGES
        if (langs == lang).any()
    }
    if "slice" in df and (df["slice"].fillna("") != "").all():
        slices = df["slice"].to_numpy()
        report["per_slice"] = _groups(df, preds, slices, sorted(set(slices)), prevalence)
    return report


INTERVAL_FIGURES = ("tier1_recall", "tier1_precision", "tier1_average_precision", "claim_type_macro_f1")


def _figures(
    risk_true: Sequence[str], claim_true: Sequence[str], preds: Sequence[Prediction]
) -> Callable[[np.ndarray], np.ndarray]:
    """The INTERVAL_FIGURES of the rows `idx` (a resample), NaN where a figure cannot be computed."""
    t1_true = np.array([r in TIER1_RISKS for r in risk_true], dtype=bool)
    t1_pred = np.array([p.risk in TIER1_RISKS for p in preds], dtype=bool)
    scores = np.array([tier1_score(p) for p in preds], dtype=float)
    names = sorted(set(claim_true) | {p.claim_type for p in preds})
    k = len(names)
    code = {name: i for i, name in enumerate(names)}
    pair = np.array([code[t] * k + code[p.claim_type] for t, p in zip(claim_true, preds, strict=True)], dtype=int)

    def figures(idx: np.ndarray) -> np.ndarray:
        t, r = t1_true[idx], t1_pred[idx]
        hit = float((t & r).sum())
        # sklearn's macro-F1 (labels present in truth or prediction, zero_division=0), from one bincount
        cm = np.bincount(pair[idx], minlength=k * k).reshape(k, k)
        tp, truth, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
        present = (truth + predicted) > 0
        return np.array(
            [
                hit / t.sum() if t.any() else np.nan,
                hit / r.sum() if r.any() else np.nan,
                float(average_precision_score(t, scores[idx])) if t.any() and not t.all() else np.nan,
                float((2 * tp[present] / (truth + predicted)[present]).mean()),
            ]
        )

    return figures


def _resampled(figures: Callable[[np.ndarray], np.ndarray], n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, figures) array: `figures` of `resamples` seeded draws of n rows with replacement."""
    rng = np.random.default_rng(seed)
    return np.array([figures(rng.integers(0, n, n)) for _ in range(resamples)])


def _percentiles(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if not len(values):
        return None, None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return round(float(low), 4), round(float(high), 4)


def _value(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 4)


def bootstrap_intervals(
    risk_true: Sequence[str],
    claim_true: Sequence[str],
    preds: Sequence[Prediction],
    resamples: int = INTERVAL_RESAMPLES,
    level: float = INTERVAL_LEVEL,
    seed: int = 0,
) -> dict[str, dict[str, float | None]]:
    """How far the headline figures of one file can be trusted: each with its percentile-bootstrap interval
    at `level` over `resamples` resamples of the messages (drawn with replacement, the same draws for every
    figure). 320 messages cannot tell a precision of 0.62 from 0.66; the interval says so.

    Figures: Tier-1 recall and precision at the model's threshold, Tier-1 average precision (threshold-free,
    on P(Tier 1)) and claim-type macro-F1. A figure a resample cannot compute (no Tier-1 message drawn) is
    left out of that resample; `low` / `high` are None when no resample could compute it."""
    n = len(preds)
    if n == 0:
        return {name: {"value": None, "low": None, "high": None} for name in INTERVAL_FIGURES}
    figures = _figures(risk_true, claim_true, preds)
    point = figures(np.arange(n))
    draws = _resampled(figures, n, resamples, seed)
    out: dict[str, dict[str, float | None]] = {}
    for i, name in enumerate(INTERVAL_FIGURES):
        low, high = _percentiles(draws[:, i], level)
        out[name] = {"value": _value(point[i]), "low": low, "high": high}
    return out


def paired_differences(
    risk_true: Sequence[str],
    claim_true: Sequence[str],
    preds: Sequence[Prediction],
    baseline: Sequence[Prediction],
    resamples: int = INTERVAL_RESAMPLES,
    level: float = INTERVAL_LEVEL,
    seed: int = 0,
) -> dict[str, dict[str, float | None]]:
    """Is `preds` better than `baseline` on this file, beyond the luck of which messages it holds? Each
    INTERVAL_FIGURE of both, their difference, its percentile-bootstrap interval with both predictors scored
    on the same resamples (pairing removes the messages both get right or wrong from the doubt), and the
    share of resamples where `preds` is ahead (`ahead`)."""
    n = len(preds)
    if n != len(baseline):
        raise ValueError(f"{n} predictions against {len(baseline)} baseline predictions")
    empty = {"value": None, "baseline": None, "difference": None, "low": None, "high": None, "ahead": None}
    if n == 0:
        return {name: dict(empty) for name in INTERVAL_FIGURES}
    new, old = _figures(risk_true, claim_true, preds), _figures(risk_true, claim_true, baseline)
    everything = np.arange(n)
    point_new, point_old = new(everything), old(everything)
    draws = _resampled(lambda idx: new(idx) - old(idx), n, resamples, seed)
    out: dict[str, dict[str, float | None]] = {}
    for i, name in enumerate(INTERVAL_FIGURES):
        col = draws[:, i][~np.isnan(draws[:, i])]
        low, high = _percentiles(col, level)
        out[name] = {
            "value": _value(point_new[i]),
            "baseline": _value(point_old[i]),
            "difference": _value(point_new[i] - point_old[i]),
            "low": low,
            "high": high,
            "ahead": round(float((col > 0).mean()), 4) if len(col) else None,
        }
    return out


def operating_points(
    scores: np.ndarray,
    truth: np.ndarray,
    languages: Sequence[str] | None = None,
    recalls: Sequence[float] = RECALL_POINTS,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """For each recall target, the highest threshold on `scores` (P(Tier 1)) that reaches it and the
    precision there: overall (`all`) and per language. What the helpdesk trades: each point of recall
    costs this much precision."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    groups = {"all": np.ones(len(scores), dtype=bool)}
    if languages is not None:
        langs = np.asarray(languages)
        groups |= {lang: langs == lang for lang in LANGUAGES if (langs == lang).any()}
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, mask in groups.items():
        s, t = scores[mask], truth[mask]
        out[name] = {}
        for target in recalls:
            th = threshold_for_recall(s, t, target)
            routed = s >= th if th is not None else np.zeros(len(s), dtype=bool)
            out[name][f"{target:.2f}"] = {
                "threshold": th,
                "precision": _ratio(int((routed & t).sum()), int(routed.sum())),
                "recall": _ratio(int((routed & t).sum()), int(t.sum())),
            }
    return out


THRESHOLD_GRID: tuple[float, ...] = tuple(round(float(x), 3) for x in np.arange(0.01, 0.991, 0.005))


def threshold_for_recall(
    scores: np.ndarray, truth: np.ndarray, target: float, grid: Sequence[float] = THRESHOLD_GRID
) -> float | None:
    """The highest threshold of `grid` at which `scores >= threshold` still finds `target` of the true
    Tier-1 messages (so the best precision that recall allows); None when no threshold of the grid does."""
    if not truth.any():
        return None
    best = None
    for th in grid:
        if (scores[truth] >= th).mean() >= target:
            best = float(th)
    return best


def target_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    return {
        "n": len(y_true),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 4),
    }


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    return np.asarray(confusion_matrix(list(y_true), list(y_pred), labels=list(labels)))


def tier_flip_rate(a: Sequence[Prediction], b: Sequence[Prediction]) -> float:
    """Share of messages whose tier differs between two predictors (the int8 graph against fp32)."""
    if not a:
        return 0.0
    return round(sum(x.tier != y.tier for x, y in zip(a, b, strict=True)) / len(a), 5)
