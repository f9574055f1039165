"""Fine-tuning (SetFit pairs) and char n-gram features, end to end on a small real model: the pairs, the
cross-fitted thresholds, an ONNX graph that gives the in-memory model's probabilities, and a folder that
`triage export` rebuilds with the fine-tuned weights it carries."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from serving.model import ModelBundle
from tests.conftest import TriageCli, TriageData, train_config
from training.finetune import FinetuneConfig, make_pairs

if TYPE_CHECKING:  # importing training.train pulls torch: only where a test needs it
    from training.train import TrainConfig, Trained


def test_pairs_give_every_message_positives_and_negatives() -> None:
    labels = ["a", "a", "a", "b", "b", "c"]
    pairs = make_pairs(labels, per_message=2, seed=1)
    assert all(i != j for i, j, _ in pairs)
    assert all((labels[i] == labels[j]) == (t == 1.0) for i, j, t in pairs)
    per = Counter(i for i, _, _ in pairs)
    assert per[0] == 4 and per[5] == 2  # "c" has no partner with its label: negatives only
    assert make_pairs(labels, 2, seed=1) == pairs  # seeded


@dataclass(frozen=True)
class Tuned:
    folder: Path
    trained: Trained
    cfg: TrainConfig
    texts: list[str]


@pytest.fixture(scope="module")
def tuned(triage_data: TriageData, tmp_path_factory: pytest.TempPathFactory) -> Tuned:
    from training.train import build_model, fit

    root = tmp_path_factory.mktemp("finetuned")
    cfg = train_config(
        data=triage_data.train,
        test=triage_data.test,
        models_dir=root / "models",
        cache_dir=root / "cache",
        progress=False,
        char_ngrams=True,
        ngram_heads="all",  # the default reads them in the claim-type head only (test_train covers that)
        crossfit_folds=2,
        finetune=FinetuneConfig(pairs_per_message=1, batch_size=16, learning_rate=1e-4),
    )
    trained = fit(cfg)
    return Tuned(build_model(trained, cfg), trained, cfg, [r["text"] for r in triage_data.test_rows])


@pytest.mark.model
def test_the_folder_carries_the_finetuned_weights_the_ngrams_and_crossfitted_thresholds(tuned: Tuned) -> None:
    config = json.loads((tuned.folder / "config.json").read_text())
    assert (tuned.folder / config["encoder"]["weights"]).is_file() and config["encoder"]["finetuned"]["steps"] > 0
    assert config["ngrams"]["size"] > 100 and (tuned.folder / "ngrams.json").is_file()
    assert config["training"]["crossfit_folds"] == 2 and "-ft-" in config["encoder"]["id"]
    metrics = json.loads((tuned.folder / "metrics.json").read_text())
    points = metrics["operating_points"]["all"]
    assert points["0.95"]["recall"] >= 0.95  # chosen on out-of-fold predictions of the training rows
    assert 0 < config["review"]["tier1_threshold"] < 1


@pytest.mark.model
def test_the_onnx_graph_gives_the_in_memory_models_probabilities(tuned: Tuned) -> None:
    from training.features import build_features
    from training.heads import softmax

    trained, cfg = tuned.trained, tuned.cfg
    x = build_features(trained.encoder.encode(tuned.texts), tuned.texts, trained.ngrams, cfg.ngram_weight)
    probs = ModelBundle(tuned.folder, "fp32").predict_proba(tuned.texts)
    for head in trained.heads:
        assert np.abs(softmax(head.logits(x)) - probs[head.name]).max() < 1e-4, head.name


@pytest.mark.model
def test_export_rebuilds_the_finetuned_model_with_the_same_answers(
    tuned: Tuned, triage_cli: TriageCli, tmp_path: Path
) -> None:
    out = tmp_path / "rebuilt"
    run = triage_cli("export", "--model", tuned.folder, "--out", out, "--quiet", timeout=600)
    assert run.returncode == 0, run.stderr
    before = ModelBundle(tuned.folder, "fp32").predict_proba(tuned.texts)
    after = ModelBundle(out, "fp32").predict_proba(tuned.texts)
    assert all(np.abs(before[k] - after[k]).max() < 1e-5 for k in before)
