"""training.train on a small real model: a complete, self-describing, verified folder, or nothing at all."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.files import sha256_file
from serving.keywords import KeywordTriage
from serving.labels import GROUNDS, RISKS, consistent
from serving.model import Classifier, ModelBundle, ModelError
from serving.ngrams import CharNgrams
from serving.settings import MIN_CELL_TIER1
from training.data import load_dataset
from training.encoders import Encoder
from training.export import load_heads
from training.features import build_features
from training.heads import softmax
from training.metrics import TRIAGE_KEYS, language_length_cells, triage_report
from training.onnx import ExportError
from training.train import Trained, build_model, fit, train

from .conftest import DATA, SHARED, TrainedModel, TriageCli, read_rows, stratified_subset, train_config

pytestmark = pytest.mark.model
REAL = SHARED / "benchmarks" / "amazonhelp-tweets" / "dev.csv"

FILES = (
    "model.onnx",
    "model.int8.onnx",
    "sp.model",
    "config.json",
    "heads.npz",
    "metrics.json",
    "MODEL_CARD.md",
    "confusion_risk.png",
    "confusion_claim_type.png",
    "per_language.png",
    "manifest.json",
)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_folder_has_every_file(triage_model: TrainedModel) -> None:
    folder = triage_model.folder
    assert folder.parent == triage_model.models_dir
    for name in FILES:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert (folder / "confusion_risk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # published atomically: no staging folder left next to it
    assert [p.name for p in triage_model.models_dir.iterdir()] == [folder.name]


def test_manifest_lists_every_file_with_its_sha256(triage_model: TrainedModel) -> None:
    folder = triage_model.folder
    manifest = read_json(folder / "manifest.json")
    on_disk = {p.name for p in folder.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert sha256_file(folder / name) == digest, name
    assert manifest["version"] == read_json(folder / "config.json")["version"] == folder.name


def test_config_carries_heads_labels_and_provenance(triage_model: TrainedModel) -> None:
    config = read_json(triage_model.folder / "config.json")
    heads = {h["name"]: h["labels"] for h in config["heads"]}
    assert heads == {"risk": list(RISKS), "claim_type": list(GROUNDS)}
    assert config["task"] == "triage" and config["target"] is None
    assert config["encoder"]["kind"] == "usem3" and config["encoder"]["dim"] == 512
    assert config["tokenizer"] == {"kind": "sentencepiece-use", "file": "sp.model", "max_tokens": 1024}
    assert config["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    assert config["default_variant"] in ("fp32", "int8")
    assert 0 < config["review"]["tier1_threshold"] < 1
    assert config["training"]["rows"] == len(triage_model.data.train_rows)
    assert config["training"]["data_sha256"] == sha256_file(triage_model.data.train)
    assert config["training"]["test_sha256"] == sha256_file(triage_model.data.test)


def test_metrics_cover_both_variants_and_the_keyword_baseline(triage_model: TrainedModel) -> None:
    metrics = read_json(triage_model.folder / "metrics.json")
    n_test = len(triage_model.data.test_rows)
    for report in (metrics["test"]["fp32"], metrics["test"]["int8"], metrics["keyword_baseline"]):
        assert set(TRIAGE_KEYS) <= set(report)
        assert report["n"] == n_test
        assert set(report["per_language"]) == {"fr", "it", "en"}
        assert sum(m["n"] for m in report["per_language"].values()) == n_test
    # the baseline is what keyword triage really scores on the test split
    test = load_dataset(triage_model.data.test)
    assert metrics["keyword_baseline"] == triage_report(test, KeywordTriage().predict(test["text"].tolist()))
    # the served variant follows the documented rule: int8 when it routes at most 1% of all labelled
    # messages (training and test) to another tier than fp32; the recorded rate is the real one
    config = read_json(triage_model.folder / "config.json")
    assert config["default_variant"] == ("int8" if metrics["int8_flip_rate"] <= 0.01 else "fp32")
    texts = load_dataset(triage_model.data.train)["text"].tolist() + test["text"].tolist()
    fp32, int8 = (Classifier.load(triage_model.folder, variant=v).predict(texts) for v in ("fp32", "int8"))
    flips = sum(a.tier != b.tier for a, b in zip(fp32, int8, strict=True))
    assert metrics["int8_flip_rate"] == round(flips / len(texts), 5)
    # the routing threshold is the operating point for the recall target, on out-of-fold predictions, or
    # lower where a language x length cell with enough Tier-1 rows needs it (tests/test_heads.py has the rule)
    target = config["training"]["tier1_recall_target"]
    point = metrics["operating_points"]["all"][f"{target:.2f}"]
    assert point["recall"] >= target and config["training"]["tier1_cell_recall_target"] == 0.95
    train = load_dataset(triage_model.data.train)
    tier1_per_cell = Counter(
        c for c, r in zip(language_length_cells(train), train["risk"], strict=True) if r != "routine"
    )
    if max(tier1_per_cell.values()) < MIN_CELL_TIER1:
        assert config["review"]["tier1_threshold"] == point["threshold"]
    else:
        assert config["review"]["tier1_threshold"] <= point["threshold"]
    assert set(metrics["operating_points"]) == {"all", "fr", "it", "en"}
    if REAL.is_file():  # the real messages are in every evaluation
        assert metrics["real"][config["default_variant"]]["n"] == len(load_dataset(REAL))
    # the served variant's figures carry their bootstrap intervals, around the figure the report gives
    served = metrics["test"][config["default_variant"]]
    assert served["intervals"]["tier1_recall"]["value"] == served["tier1_recall"]
    assert all(row["low"] <= row["value"] <= row["high"] for row in served["intervals"].values())
    card = (triage_model.folder / "MODEL_CARD.md").read_text()
    assert config["version"] in card and "confusion_risk.png" in card and "keywords" in card
    assert "| tier1_average_precision |" in card


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_predictions_are_consistent_on_the_whole_test_file(triage_model: TrainedModel, variant: str) -> None:
    texts = load_dataset(DATA / "test.csv")["text"].tolist()
    classifier = Classifier.load(triage_model.folder, variant=variant)
    threshold = classifier.policy.tier1_threshold
    preds = classifier.predict(texts)
    assert len(preds) == len(texts)
    bad = [(t, p.risk, p.claim_type) for t, p in zip(texts, preds, strict=True) if not consistent(p.risk, p.claim_type)]
    assert not bad
    for p in preds:
        assert set(p.risk_scores) == set(RISKS) and sum(p.risk_scores.values()) == pytest.approx(1, abs=1e-4)
        assert sum(p.claim_type_scores.values()) == pytest.approx(1, abs=1e-4)
        # Tier 1 exactly when P(claim_filed) + P(at_risk) reaches the threshold, then the likelier of the two
        p_tier1 = 1 - p.risk_scores["routine"]
        assert (p.risk != "routine") == (p_tier1 >= threshold)
        if abs(p_tier1 - threshold) < classifier.policy.tier1_band:  # too close to call: a human looks
            assert p.needs_review
        if p.risk != "routine":
            assert p.risk == max(("claim_filed", "at_risk"), key=p.risk_scores.__getitem__)


def test_ngrams_for_the_claim_type_leave_the_routing_to_the_embedding(
    triage_model: TrainedModel, use_encoder: Encoder
) -> None:
    """The default heads: char n-grams beside the embedding in the claim-type head only. The risk head (with
    its hidden layer), and so the tier, is what the embedding alone gives; the served graph gives both heads
    as they were fitted."""
    cfg = train_config(data=triage_model.data.train, test=None, cache_dir=triage_model.cache_dir, progress=False)
    assert cfg.char_ngrams and cfg.ngram_heads == "claim_type"
    with_ngrams, without = fit(cfg), fit(replace(cfg, char_ngrams=False))
    assert with_ngrams.ngrams is not None and without.ngrams is None
    (risk, ground), (risk_alone, ground_alone) = with_ngrams.heads, without.heads
    dim = use_encoder.dim
    assert risk.input_dim == risk_alone.input_dim == dim and risk.hidden is not None and risk_alone.hidden is not None
    assert risk.hidden[0].shape == (dim, cfg.risk_hidden) and ground.hidden is None
    assert np.allclose(risk.hidden[0], risk_alone.hidden[0], atol=1e-4)
    assert np.allclose(risk.weight, risk_alone.weight, atol=1e-4)
    assert ground.weight.shape[0] == dim + with_ngrams.ngrams.size > ground_alone.weight.shape[0]

    config = read_json(triage_model.folder / "config.json")
    assert config["training"]["ngram_heads"] == "claim_type" and config["ngrams"]["size"] > 100
    assert [h["hidden_units"] for h in config["heads"]] == [cfg.risk_hidden, 0]
    texts = [r["text"] for r in triage_model.data.test_rows]
    heads = load_heads(triage_model.folder, config)
    ngrams = CharNgrams.load(triage_model.folder, config["ngrams"])
    x = build_features(use_encoder.encode(texts), texts, ngrams, config["training"]["ngram_weight"])
    probs = ModelBundle(triage_model.folder, "fp32").predict_proba(texts)
    for head in heads:
        assert np.abs(softmax(head.logits(x)) - probs[head.name]).max() < 1e-4, head.name


def test_model_overfits_its_training_messages(triage_model: TrainedModel) -> None:
    train_df = load_dataset(triage_model.data.train)
    preds = Classifier.load(triage_model.folder).predict(train_df["text"].tolist())
    risk_acc = np.mean([p.risk == r for p, r in zip(preds, train_df["risk"], strict=True)])
    claim_acc = np.mean([p.claim_type == c for p, c in zip(preds, train_df["claim_type"], strict=True)])
    assert risk_acc >= 0.9, risk_acc
    assert claim_acc >= 0.85, claim_acc


def test_bundle_refuses_a_tampered_folder_and_one_without_manifest(triage_model: TrainedModel, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(triage_model.folder, copy)
    onnx = copy / "model.onnx"
    with onnx.open("r+b") as f:
        f.seek(onnx.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match=r"model\.onnx does not match its sha256"):
        ModelBundle(copy)
    with onnx.open("r+b") as f:  # put the byte back: the folder loads again
        f.seek(onnx.stat().st_size // 2)
        f.write(byte)
    assert ModelBundle(copy).version == triage_model.folder.name

    (copy / "MODEL_CARD.md").unlink()
    with pytest.raises(ModelError, match=r"MODEL_CARD\.md is listed in manifest\.json but missing"):
        ModelBundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        ModelBundle(copy)


class DriftingEncoder:
    """The real USE encoder whose in-memory `encode` disagrees with its exported graph: parity must fail.

    A fake is needed here: a real encoder whose export silently diverges cannot be produced on purpose.
    """

    def __init__(self, real: Encoder) -> None:
        self.real = real
        self.id, self.dim, self.model, self.prefix = real.id, real.dim, real.model, real.prefix
        self.float_weights = real.float_weights

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        v = np.random.default_rng(0).normal(size=(len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def graph(self) -> torch.nn.Module:
        return self.real.graph()

    def write_tokenizer(self, folder: Path) -> dict:
        return self.real.write_tokenizer(folder)

    def describe(self) -> dict:
        return self.real.describe()

    def trainable(self) -> list[torch.nn.Parameter]:
        return self.real.trainable()


def test_failed_build_leaves_no_model_folder(triage_model: TrainedModel, use_encoder: Encoder, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "README.md").write_text("models\n")
    config = read_json(triage_model.folder / "config.json")
    trained = Trained(
        DriftingEncoder(use_encoder), load_heads(triage_model.folder, config), load_dataset(triage_model.data.train)
    )
    cfg = train_config(data=triage_model.data.train, test=None, models_dir=models_dir, cache_dir=None, progress=False)
    with pytest.raises(ExportError, match="disagrees with the in-memory encoder"):
        build_model(trained, cfg)
    assert [p.name for p in models_dir.iterdir()] == ["README.md"]  # no folder, no hidden staging leftovers


@pytest.fixture(scope="module")
def banking(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A banking77-style generic dataset: 10 categories x 8 training rows, x 2 test rows."""
    source = SHARED / "benchmarks" / "banking77"
    if not (source / "train.csv").is_file():
        pytest.skip(f"{source} is not there (../shared beside the repository)")
    folder = tmp_path_factory.mktemp("banking77")
    categories = list(dict.fromkeys((row["category"],) for row in read_rows(source / "train.csv")[1]))[:10]
    stratified_subset(source / "train.csv", folder / "train.csv", 8, key=("category",), groups=categories)
    stratified_subset(source / "test.csv", folder / "test.csv", 2, key=("category",), groups=categories)
    return {"train": folder / "train.csv", "test": folder / "test.csv", "root": folder}


def test_generic_target_training_and_cli_evaluate(
    banking: dict[str, Path], triage_cli: TriageCli, triage_model: TrainedModel
) -> None:
    train_df = load_dataset(banking["train"], "category")
    test_df = load_dataset(banking["test"], "category")
    assert len(train_df) == 80 and train_df["category"].nunique() == 10
    assert set(test_df["category"]) == set(train_df["category"])

    folder = train(
        train_config(
            data=banking["train"],
            test=banking["test"],
            target="category",
            models_dir=banking["root"] / "models",
            cache_dir=triage_model.cache_dir,
            progress=False,
        )
    )
    config = read_json(folder / "config.json")
    assert config["task"] == "generic" and config["target"] == "category"
    assert [h["name"] for h in config["heads"]] == ["category"]
    assert sorted(config["heads"][0]["labels"]) == sorted(set(train_df["category"]))
    metrics = read_json(folder / "metrics.json")
    assert set(metrics["test"]) == {"fp32", "int8"} and metrics["test"]["fp32"]["n"] == 20
    # it learned its training messages
    bundle = ModelBundle(folder)
    probs = bundle.predict_proba(train_df["text"].tolist())["category"]
    labels = bundle.heads["category"]
    predicted = [labels[i] for i in probs.argmax(1)]
    assert np.mean(np.array(predicted) == train_df["category"].to_numpy()) >= 0.9
    # a generic model is not a triage model
    with pytest.raises(ModelError, match="not a triage model"):
        Classifier(bundle)

    run = triage_cli("evaluate", "--data", banking["test"], "--model", folder, "--target", "category", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert set(result) == {"n", "accuracy", "macro_f1"}
    assert result == metrics["test"][config["default_variant"]]
    # the accuracy is what the served graph really scores on the test file
    test_probs = ModelBundle(folder).predict_proba(test_df["text"].tolist())["category"]
    test_pred = np.array([labels[i] for i in test_probs.argmax(1)])
    assert result["n"] == 20 and result["accuracy"] == round(float(np.mean(test_pred == test_df["category"])), 4)
