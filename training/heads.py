"""Classification heads on frozen sentence embeddings: logistic regression + temperature scaling.

A head stays a single linear layer (so it exports to ONNX as one MatMul + Softmax): the temperature,
fitted on out-of-fold logits, is folded into the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

_TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))


@dataclass
class Head:
    name: str
    labels: list[str]
    weight: np.ndarray  # (dim, k), temperature folded in
    bias: np.ndarray  # (k,)
    temperature: float = 1.0
    info: dict[str, float] = field(default_factory=dict)
    # calibrated out-of-fold probabilities on the training rows (not saved), for choosing thresholds
    oof_proba: np.ndarray | None = field(default=None, repr=False)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x @ self.weight + self.bias, dtype=np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)


def _linear(model: LogisticRegression) -> tuple[np.ndarray, np.ndarray]:
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # binary: softmax over [0, z] is sigmoid(z)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    return coef.T.astype(np.float32), intercept.astype(np.float32)


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    p = softmax(logits)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of held-out logits."""
    losses = [_nll(logits / t, y) for t in _TEMPERATURES]
    return float(_TEMPERATURES[int(np.argmin(losses))])


def fit_head(
    name: str,
    x: np.ndarray,
    y: Sequence[str],
    label_order: Sequence[str] | None,
    c: float,
    class_weight: str | None,
    seed: int,
) -> Head:
    """Fit a calibrated logistic-regression head. Labels keep `label_order` (those present in `y`)."""
    y_arr = np.asarray(list(y))
    present = set(y_arr.tolist())
    labels = [lab for lab in label_order if lab in present] if label_order else sorted(present)
    if len(labels) < 2:
        raise ValueError(f"head {name!r} needs at least two classes in the data, found {labels}")
    index = {lab: i for i, lab in enumerate(labels)}
    y_idx = np.array([index[v] for v in y_arr])

    def make() -> LogisticRegression:
        return LogisticRegression(C=c, class_weight=class_weight, max_iter=3000, random_state=seed)

    model = make().fit(x, y_idx)
    weight, bias = _linear(model)
    temperature, info, oof_proba = 1.0, {}, None
    folds = min(5, int(np.bincount(y_idx).min()))
    if folds >= 2:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        oof = cross_val_predict(make(), x, y_idx, cv=cv, method="decision_function")
        if oof.ndim == 1:
            oof = np.stack([np.zeros_like(oof), oof], axis=1)
        temperature = fit_temperature(oof, y_idx)
        oof_proba = softmax(oof / temperature)
        info = {
            "cv_accuracy": float((oof.argmax(1) == y_idx).mean()),
            "cv_nll_before": _nll(oof, y_idx),
            "cv_nll_after": _nll(oof / temperature, y_idx),
        }
    return Head(name, labels, weight / temperature, bias / temperature, temperature, info, oof_proba)


def choose_tier1_threshold(
    head: Head,
    y: Sequence[str],
    target_precision: float,
    grid: Sequence[float] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8),
) -> float:
    """The lowest P(Tier 1) threshold whose out-of-fold Tier-1 precision reaches `target_precision`.

    Routing a message to Tier 1 when P(claim_filed) + P(at_risk) >= threshold trades recall for precision
    on training data only (out-of-fold), never on the test split. 0.5 (plain argmax) when unavailable.
    """
    if head.oof_proba is None or "routine" not in head.labels:
        return 0.5
    p_tier1 = 1.0 - head.oof_proba[:, head.labels.index("routine")]
    truth = np.array([v != "routine" for v in y])
    for t in grid:
        routed = p_tier1 >= t
        if routed.any() and (routed & truth).sum() / routed.sum() >= target_precision:
            return float(t)
    return float(grid[-1])
