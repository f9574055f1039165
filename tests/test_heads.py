"""Heads on their own: a hidden layer learns what a linear head cannot."""

from __future__ import annotations

import numpy as np
import torch

from training.heads import HiddenLayer, fit_head, softmax, subnormals_flushed


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


def test_subnormals_are_flushed_while_a_head_fits_and_only_then() -> None:
    subnormal = np.float32(1e-39)  # below float32's smallest normal number (1.2e-38)
    has_the_mode = torch.set_flush_denormal(False)  # x86 with SSE3 (this machine, CI); else a no-op
    assert subnormal * np.float32(1.0) != 0
    with subnormals_flushed():
        flushed = subnormal * np.float32(1.0)
    assert flushed == 0 or not has_the_mode
    # left on, every later computation in the process (the ONNX parity checks among them) would change
    assert subnormal * np.float32(1.0) != 0
