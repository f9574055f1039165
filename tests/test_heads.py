"""Heads on their own: a hidden layer learns what a linear head cannot; the routing threshold's rule."""

from __future__ import annotations

import numpy as np
import torch

from serving.settings import MIN_CELL_TIER1
from training.heads import (
    Head,
    HiddenLayer,
    choose_tier1_threshold,
    fit_head,
    softmax,
    subnormals_flushed,
)


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


def routing_head(scores: np.ndarray) -> Head:
    """A risk head whose out-of-fold P(Tier 1) is `scores` (only the threshold rule reads it)."""
    oof = np.stack([scores / 2, scores / 2, 1 - scores], axis=1)
    return Head("risk", ["claim_filed", "at_risk", "routine"], np.zeros((1, 3)), np.zeros(3), oof_proba=oof)


def test_the_routing_threshold_reaches_the_recall_floor_in_every_cell_with_enough_tier1_rows() -> None:
    # cell "a": 80 Tier-1 rows scored 0.9, 80 routine at 0.1; cell "b": 40 Tier-1 rows, 36 at 0.6 and 4 at 0.3
    scores = np.r_[np.full(80, 0.9), np.full(80, 0.1), np.full(36, 0.6), np.full(4, 0.3)]
    y = ["at_risk"] * 80 + ["routine"] * 80 + ["at_risk"] * 40
    cells = ["a"] * 160 + ["b"] * 40
    head = routing_head(scores)
    # overall, 116 of 120 Tier-1 rows (0.967) are found at 0.6: the average hides that "b" loses 1 in 10
    assert choose_tier1_threshold(head, y, 0.95) == 0.6
    assert choose_tier1_threshold(head, y, 0.95, cells, 0.0) == 0.6  # no floor
    assert choose_tier1_threshold(head, y, 0.95, cells, 0.95) == 0.3  # "b" needs its last 4 too
    # a cell with fewer Tier-1 rows than MIN_CELL_TIER1 is too small to move the threshold
    n = MIN_CELL_TIER1 - 1  # "b" with n Tier-1 rows, 4 of them at 0.3
    small = np.r_[scores[:160], np.full(n - 4, 0.6), np.full(4, 0.3)]
    y_small, cells_small = y[: 160 + n], ["a"] * 160 + ["b"] * n
    assert choose_tier1_threshold(routing_head(small), y_small, 0.95, cells_small, 0.95) == 0.6
