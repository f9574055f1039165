"""Evaluation metrics: pure functions of labels and predictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from serving.labels import LANGUAGES, TIER1_RISKS
from serving.prediction import Prediction

TRIAGE_KEYS = (
    "n",
    "risk_macro_f1",
    "claim_type_macro_f1",
    "tier1_recall",
    "tier1_precision",
    "claim_filed_recall",
    "risk_accuracy",
    "needs_review_rate",
)


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def triage_metrics(risk_true: Sequence[str], claim_true: Sequence[str], preds: Sequence[Prediction]) -> dict[str, Any]:
    """Risk / claim-type macro-F1 (over the labels present in truth or prediction), Tier-1 recall and
    precision, claim_filed recall."""
    rt, ct = list(risk_true), list(claim_true)
    rp, cp = [p.risk for p in preds], [p.claim_type for p in preds]
    t1_true = np.array([r in TIER1_RISKS for r in rt], dtype=bool)
    t1_pred = np.array([r in TIER1_RISKS for r in rp], dtype=bool)
    filed = np.array([r == "claim_filed" for r in rt], dtype=bool)
    filed_pred = np.array([r == "claim_filed" for r in rp], dtype=bool)
    n = len(rt)
    return {
        "n": n,
        "risk_macro_f1": round(float(f1_score(rt, rp, average="macro", zero_division=0)), 4) if n else None,
        "claim_type_macro_f1": round(float(f1_score(ct, cp, average="macro", zero_division=0)), 4) if n else None,
        "tier1_recall": _ratio(int((t1_true & t1_pred).sum()), int(t1_true.sum())),
        "tier1_precision": _ratio(int((t1_true & t1_pred).sum()), int(t1_pred.sum())),
        "claim_filed_recall": _ratio(int((filed & filed_pred).sum()), int(filed.sum())),
        "risk_accuracy": round(float(accuracy_score(rt, rp)), 4) if n else None,
        "needs_review_rate": _ratio(sum(p.needs_review for p in preds), n),
    }


def triage_report(df: pd.DataFrame, preds: Sequence[Prediction]) -> dict[str, Any]:
    """Overall metrics plus `per_language` (fr, it, en) for one predictor on a labeled frame."""
    report = triage_metrics(df["risk"], df["claim_type"], preds)
    langs = df["language"].to_numpy()
    report["per_language"] = {
        lang: triage_metrics(
            df["risk"][langs == lang],
            df["claim_type"][langs == lang],
            [p for p, lg in zip(preds, langs, strict=True) if lg == lang],
        )
        for lang in LANGUAGES
    }
    return report


def target_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    return {
        "n": len(y_true),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 4),
    }


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    return np.asarray(confusion_matrix(list(y_true), list(y_pred), labels=list(labels)))


GATE_KEYS = ("risk_macro_f1", "claim_type_macro_f1", "tier1_recall", "tier1_precision")


def max_language_gap(a: dict[str, Any], b: dict[str, Any], keys: Sequence[str] = GATE_KEYS) -> float:
    """Largest drop from report `a` to report `b` over languages and keys, in points (0-100)."""
    gaps = [0.0]
    for lang in LANGUAGES:
        for k in keys:
            va, vb = a["per_language"][lang].get(k), b["per_language"][lang].get(k)
            if va is not None and vb is not None:
                gaps.append((va - vb) * 100)
    return round(max(gaps), 2)
