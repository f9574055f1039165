"""Heads on their own: a hidden layer learns what a linear head cannot."""

from __future__ import annotations

import numpy as np

from training.heads import HiddenLayer, fit_head, softmax


def xor_data(n: int = 400) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return x, np.where((x[:, 0] > 0) ^ (x[:, 1] > 0), "apart", "together").tolist()


def accuracy(labels: list[str], proba: np.ndarray, y: list[str]) -> float:
    return float((np.array(labels)[proba.argmax(1)] == np.array(y)).mean())


def test_a_hidden_layer_learns_what_a_linear_head_cannot() -> None:
    x, y = xor_data()
    linear = fit_head("t", x, y, None, 1.0, "balanced", 0)
    deep = fit_head("t", x, y, None, 1.0, "balanced", 0, hidden=HiddenLayer(32, 1e-3, max_iter=500))
    assert linear.hidden is None and deep.hidden is not None and deep.input_dim == 2
    assert accuracy(linear.labels, softmax(linear.logits(x)), y) < 0.7
    assert accuracy(deep.labels, softmax(deep.logits(x)), y) > 0.9
    # the thresholds are chosen on out-of-fold predictions, which a hidden layer gets too
    assert deep.oof_proba is not None and accuracy(deep.labels, deep.oof_proba, y) > 0.85
