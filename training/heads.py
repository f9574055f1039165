"""Classification heads on frozen sentence embeddings: logistic regression, or a one-hidden-layer
perceptron, + temperature scaling.

A head exports to ONNX as MatMul + Softmax (a hidden layer adds one MatMul + Relu before it): the
temperature, fitted on out-of-fold logits, is folded into the output layer.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import torch
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.utils.class_weight import compute_sample_weight

from serving.settings import MIN_CELL_TIER1
from training.metrics import THRESHOLD_GRID, threshold_for_recall

# what a head reads: sentence embeddings, optionally with char n-gram TF-IDF columns (sparse)
Features: TypeAlias = np.ndarray | sparse.csr_matrix

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
    # a hidden layer (weight (dim, units), bias (units,)) with ReLU before the output layer, or none
    hidden: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def input_dim(self) -> int:
        return int((self.hidden[0] if self.hidden is not None else self.weight).shape[0])

    def logits(self, x: Features) -> np.ndarray:
        if x.shape[1] != self.input_dim:  # a head fitted on the embedding alone: its first columns
            x = x[:, : self.input_dim]
        if self.hidden is not None:
            x = np.maximum(x @ self.hidden[0] + self.hidden[1], 0.0)
        return np.asarray(x @ self.weight + self.bias, dtype=np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)


Model: TypeAlias = LogisticRegression | MLPClassifier


def _output_layer(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """(weight (inputs, k), bias (k,)) of the layer that gives the logits."""
    if isinstance(model, MLPClassifier):
        coef, intercept = model.coefs_[-1].T, model.intercepts_[-1]
    else:
        coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # binary: softmax over [0, z] is sigmoid(z)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    return coef.T.astype(np.float32), intercept.astype(np.float32)


def _hidden_layer(model: Model) -> tuple[np.ndarray, np.ndarray] | None:
    if not isinstance(model, MLPClassifier):
        return None
    return model.coefs_[0].astype(np.float32), model.intercepts_[0].astype(np.float32)


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    p = softmax(logits)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of held-out logits."""
    losses = [_nll(logits / t, y) for t in _TEMPERATURES]
    return float(_TEMPERATURES[int(np.argmin(losses))])


def fit_head(
    name: str,
    x: Features,
    y: Sequence[str],
    label_order: Sequence[str] | None,
    c: float,
    class_weight: str | None,
    seed: int,
    oof_logits: np.ndarray | None = None,
    hidden: HiddenLayer | None = None,
) -> Head:
    """Fit a calibrated head: logistic regression, or a perceptron with one hidden layer when `hidden`
    says so. Labels keep `label_order` (those present in `y`).

    The temperature (and the out-of-fold probabilities thresholds are chosen on) come from held-out
    logits: `oof_logits` when the caller cross-fitted them (a fine-tuned encoder has seen every training
    label, so only logits of encoders that never saw the fold are honest), else a 5-fold cross-validation
    of the head itself on these features.
    """
    y_arr = np.asarray(list(y))
    present = set(y_arr.tolist())
    labels = [lab for lab in label_order if lab in present] if label_order else sorted(present)
    if len(labels) < 2:
        raise ValueError(f"head {name!r} needs at least two classes in the data, found {labels}")
    index = {lab: i for i, lab in enumerate(labels)}
    y_idx = np.array([index[v] for v in y_arr])

    model = fit_model(x, y_idx, c, class_weight, seed, hidden)
    weight, bias = _output_layer(model)
    temperature, info, oof_proba = 1.0, {}, None
    if oof_logits is None:
        oof_logits = cross_fitted_logits(x, y_idx, c, class_weight, seed, hidden)
    if oof_logits is not None:
        temperature = fit_temperature(oof_logits, y_idx)
        oof_proba = softmax(oof_logits / temperature)
        info = {
            "cv_accuracy": float((oof_logits.argmax(1) == y_idx).mean()),
            "cv_nll_before": _nll(oof_logits, y_idx),
            "cv_nll_after": _nll(oof_logits / temperature, y_idx),
        }
    hidden_layer = _hidden_layer(model)
    return Head(name, labels, weight / temperature, bias / temperature, temperature, info, oof_proba, hidden_layer)


@dataclass(frozen=True)
class HiddenLayer:
    """A head's hidden layer: ReLU units and their L2 penalty (sklearn's `alpha`)."""

    units: int
    l2: float
    max_iter: int = 200


def fit_model(
    x: Features, y_idx: np.ndarray, c: float, class_weight: str | None, seed: int, hidden: HiddenLayer | None = None
) -> Model:
    """A fitted head model: logistic regression (C=`c`), or a perceptron when `hidden` is given.
    `class_weight="balanced"` is applied as sample weights: the same for both kinds of head."""
    model: Model = (
        MLPClassifier((hidden.units,), alpha=hidden.l2, max_iter=hidden.max_iter, random_state=seed)
        if hidden is not None
        else LogisticRegression(C=c, max_iter=3000, random_state=seed)
    )
    weights = compute_sample_weight(class_weight, y_idx) if class_weight else None
    with warnings.catch_warnings(), subnormals_flushed():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped number of epochs is the regularisation
        return model.fit(x, y_idx, sample_weight=weights)


@contextmanager
def subnormals_flushed() -> Iterator[None]:
    """Floats below float32's normal range read and written as zero while a head fits.

    As a perceptron grows confident, its float32 softmax probabilities underflow into subnormal numbers,
    which the CPU computes in microcode: from about epoch 40 each epoch took 10x longer. Flushed, the default
    risk head on the training data fits 4.5x faster (43 s against 193 s, 6 fits per training) and ends at the
    same loss (`python -m benchmarks.heads`). The flag belongs to the CPU thread; it is turned off again on
    the way out."""
    supported = torch.set_flush_denormal(True)  # False where the CPU has no such mode: nothing changes
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


def model_logits(model: Model, x: Features) -> np.ndarray:
    """(n, k) logits over `model.classes_`: the decision function, or log-probabilities for a perceptron."""
    if isinstance(model, MLPClassifier):
        return np.log(np.clip(model.predict_proba(x), 1e-12, None))
    return as_logits(model.decision_function(x))


def cross_fitted_logits(
    x: Features,
    y_idx: np.ndarray,
    c: float,
    class_weight: str | None,
    seed: int,
    hidden: HiddenLayer | None = None,
    folds: int = 5,
) -> np.ndarray | None:
    """(n, k) logits of each row from a head that never saw it (None when a class has < 2 rows)."""
    folds = min(folds, int(np.bincount(y_idx).min()))
    if folds < 2:
        return None
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    oof = np.zeros((len(y_idx), int(y_idx.max()) + 1))
    for fit_rows, held_rows in cv.split(np.zeros(len(y_idx)), y_idx):
        model = fit_model(x[fit_rows], y_idx[fit_rows], c, class_weight, seed, hidden)
        oof[held_rows] = model_logits(model, x[held_rows])
    return oof


def as_logits(decision: np.ndarray) -> np.ndarray:
    """sklearn's decision function as (n, k) logits (binary: [0, z], so softmax gives sigmoid(z))."""
    decision = np.asarray(decision, dtype=np.float64)
    return np.stack([np.zeros_like(decision), decision], axis=1) if decision.ndim == 1 else decision


def tier1_scores(head: Head) -> np.ndarray | None:
    """Out-of-fold P(Tier 1) = 1 - P(routine) of a risk head, or None when it has none."""
    if head.oof_proba is None or "routine" not in head.labels:
        return None
    return np.asarray(1.0 - head.oof_proba[:, head.labels.index("routine")])


def choose_tier1_threshold(
    head: Head,
    y: Sequence[str],
    recall_target: float,
    cells: Sequence[str] | None = None,
    cell_target: float = 0.0,
) -> float:
    """The P(Tier 1) threshold for routing: on the out-of-fold predictions of the training data (never the
    test split), the highest threshold of a fine grid whose Tier-1 recall reaches `recall_target` overall and
    `cell_target` in every cell of `cells` (a row's group, such as its language and length bucket) that has at
    least MIN_CELL_TIER1 Tier-1 rows, so the best precision those recalls allow. Missing a claim costs far more
    than an extra escalation, and an average must not hide a group of messages it misses.
    0.5 (plain argmax) when the head has no out-of-fold predictions."""
    scores = tier1_scores(head)
    if scores is None:
        return 0.5
    truth = np.array([v != "routine" for v in y])

    def highest(rows: np.ndarray, target: float) -> float:
        found = threshold_for_recall(scores[rows], truth[rows], target)
        return found if found is not None else float(THRESHOLD_GRID[0])

    threshold = highest(np.ones(len(truth), dtype=bool), recall_target)
    if cells is not None and cell_target > 0:
        groups = np.asarray(cells)
        for cell in set(groups[truth]):
            in_cell = groups == cell
            if (truth & in_cell).sum() >= MIN_CELL_TIER1:
                threshold = min(threshold, highest(in_cell, cell_target))
    return threshold
