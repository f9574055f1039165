"""The training pipeline: data -> embeddings -> heads -> ONNX model folder (parity-checked, evaluated).

Stages are the pure functions of `data`, `embed`, `heads`, `onnx` and `metrics`; this module wires them
together and is the only one that writes a model folder (`triage export` rebuilds one through it).
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from serving.files import sha256_file, write_json
from serving.keywords import KeywordTriage
from serving.labels import GROUNDS, RISKS, TIER1_RISKS, message_key
from serving.model import CONFIG, Classifier, ModelBundle, write_manifest
from serving.settings import Settings
from training import data as data_mod
from training.embed import embed_texts
from training.encoders import Encoder, load_encoder
from training.heads import Head, choose_tier1_threshold, fit_head
from training.metrics import max_language_gap, target_metrics, triage_report
from training.modelcard import write_model_card
from training.onnx import FP32_FILE, INT8_FILE, ExportError, check_parity, export_onnx, quantize_int8
from training.plots import plot_triage

log = logging.getLogger("triage.train")
INT8_MAX_GAP_POINTS = 1.0


@dataclass
class TrainConfig:
    """One training run. Build it with `from_settings`: the knobs' defaults live in `Settings` only."""

    data: Path
    test: Path | None
    target: str | None  # None: the triage schema (risk + claim_type)
    out: Path | None
    models_dir: Path
    encoder: str
    cache_dir: Path | None
    c: float
    seed: int
    risk_threshold: float
    claim_type_threshold: float
    tier1_precision: float  # out-of-fold Tier-1 precision the routing threshold aims for
    class_weight: str | None = "balanced"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in config.json (e.g. data provenance)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainConfig:
        """The settings' knobs, with `overrides` applied as given."""
        values: dict[str, Any] = {
            "data": settings.data_dir / "train.csv",
            "test": settings.data_dir / "test.csv",
            "target": None,
            "out": None,
            "models_dir": settings.models_dir,
            "encoder": settings.encoder,
            "cache_dir": settings.cache_dir,
            "c": settings.head_c,
            "seed": settings.seed,
            "risk_threshold": settings.review_threshold,
            "claim_type_threshold": settings.claim_type_review_threshold,
            "tier1_precision": settings.tier1_precision,
        }
        return cls(**(values | overrides))


@dataclass
class Trained:
    encoder: Encoder
    heads: list[Head]
    train_df: pd.DataFrame


def fit_triage_heads(df: pd.DataFrame, x: np.ndarray, cfg: TrainConfig) -> list[Head]:
    """`risk` on every row; `claim_type` (the ground) on Tier-1 rows only, `none` being implied by routine."""
    tier1 = df["risk"].isin(TIER1_RISKS).to_numpy()
    steps = tqdm(total=2, desc="fitting heads", disable=not cfg.progress)
    risk = fit_head("risk", x, df["risk"], RISKS, cfg.c, cfg.class_weight, cfg.seed)
    risk.info["tier1_threshold"] = choose_tier1_threshold(risk, df["risk"].tolist(), cfg.tier1_precision)
    steps.update()
    ground = fit_head("claim_type", x[tier1], df["claim_type"][tier1], GROUNDS, cfg.c, cfg.class_weight, cfg.seed)
    steps.update()
    steps.close()
    return [risk, ground]


def fit(cfg: TrainConfig) -> Trained:
    df = data_mod.load_dataset(cfg.data, cfg.target)
    if cfg.test:
        df = drop_test_overlap(df, data_mod.load_dataset(cfg.test, cfg.target), cfg)
    encoder = load_encoder(cfg.encoder)
    log.info("embedding %d messages with %s", len(df), encoder.id)
    x = embed_texts(encoder, df["text"].tolist(), cfg.cache_dir, progress=cfg.progress)
    if cfg.target:
        heads = [fit_head(cfg.target, x, df[cfg.target], None, cfg.c, cfg.class_weight, cfg.seed)]
    else:
        heads = fit_triage_heads(df, x, cfg)
    return Trained(encoder, heads, df)


def drop_test_overlap(train: pd.DataFrame, test: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """Training never sees a test message: rows that are the same message as a test row (same
    `message_key`: case, Unicode form and spacing aside) are left out, and said."""
    overlap = train["text"].map(message_key).isin(set(test["text"].map(message_key)))
    if overlap.any():
        lines = ", ".join(str(n) for n in train.loc[overlap, "line"].head(10))
        log.warning(
            "%d training row(s) also in the test split are left out of training (lines %s%s)",
            int(overlap.sum()),
            lines,
            "..." if overlap.sum() > 10 else "",
        )
        cfg.extra["rows_left_out_in_test"] = int(overlap.sum())
    return train.loc[~overlap].reset_index(drop=True)


def target_report(bundle: ModelBundle, test: pd.DataFrame, target: str) -> dict[str, Any]:
    """n, accuracy and macro-F1 of a generic model's `target` head."""
    probs = bundle.predict_proba(test["text"].tolist())[target]
    labels = bundle.heads[target]
    return target_metrics(test[target].tolist(), [labels[i] for i in probs.argmax(1)])


def tier1_threshold(heads: list[Head]) -> float:
    return float(next((h.info.get("tier1_threshold", 0.5) for h in heads if h.name == "risk"), 0.5))


def version_name(encoder: Encoder, now: datetime) -> str:
    kind = encoder.describe()["kind"].replace("sentence-transformers", "st")
    return f"{now:%Y%m%d-%H%M%S}-{kind}"


def build_model(trained: Trained, cfg: TrainConfig) -> Path:
    """Export, check, quantise, evaluate and publish a model folder; return its final path.

    Everything is written in a staging folder next to the destination and moved into place only when
    complete, so a crash leaves no half-written model behind.
    """
    encoder, heads = trained.encoder, trained.heads
    now = datetime.now(UTC)
    version = version_name(encoder, now)
    final = cfg.out or cfg.models_dir / version
    final.parent.mkdir(parents=True, exist_ok=True)
    test = data_mod.load_dataset(cfg.test, cfg.target) if cfg.test else None

    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        steps = tqdm(total=5, desc="exporting", disable=not cfg.progress)
        export_onnx(encoder, heads, staging / FP32_FILE)
        steps.update()
        tokenizer = encoder.write_tokenizer(staging)
        config: dict[str, Any] = {
            "format": 1,
            "version": version,
            "created_at": now.isoformat(timespec="seconds"),
            "task": "generic" if cfg.target else "triage",
            "target": cfg.target,
            "encoder": encoder.describe(),
            "tokenizer": tokenizer,
            "heads": [
                {"name": h.name, "labels": h.labels, "temperature": round(h.temperature, 4), "cv": h.info}
                for h in heads
            ],
            "files": {"fp32": FP32_FILE, "int8": INT8_FILE},
            "default_variant": "fp32",
            "review": {
                "risk_threshold": cfg.risk_threshold,
                "claim_type_threshold": cfg.claim_type_threshold,
                "tier1_threshold": tier1_threshold(heads),
            },
            "training": {
                "data": str(cfg.data),
                "data_sha256": sha256_file(cfg.data),
                "rows": len(trained.train_df),
                "test": str(cfg.test) if cfg.test else None,
                "test_sha256": sha256_file(cfg.test) if cfg.test else None,
                "c": cfg.c,
                "class_weight": cfg.class_weight,
                "seed": cfg.seed,
                "platform": platform.platform(),
            }
            | cfg.extra,
        }
        write_json(staging / CONFIG, config)
        arrays: dict[str, Any] = {f"{h.name}.weight": h.weight for h in heads}
        arrays |= {f"{h.name}.bias": h.bias for h in heads}
        np.savez(staging / "heads.npz", **arrays)
        parity = {"fp32_min_cosine": round(check_parity(encoder, staging, "fp32"), 6)}
        steps.update()
        quantize_int8(staging / FP32_FILE, staging / INT8_FILE)
        steps.update()
        metrics: dict[str, Any] = {"parity": parity, "counts": counts(trained.train_df, cfg.target)}
        if test is not None:
            bundles = {v: ModelBundle(staging, v, verify=False) for v in ("fp32", "int8")}
            preds = {} if cfg.target else {v: Classifier(b).predict(test["text"].tolist()) for v, b in bundles.items()}
            reports = {
                v: target_report(b, test, cfg.target) if cfg.target else triage_report(test, preds[v])
                for v, b in bundles.items()
            }
            steps.update()
            metrics["test"] = reports
            if cfg.target:
                gap = round((reports["fp32"]["accuracy"] - reports["int8"]["accuracy"]) * 100, 2)
            else:
                gap = max_language_gap(reports["fp32"], reports["int8"])
                metrics["keyword_baseline"] = triage_report(test, KeywordTriage().predict(test["text"].tolist()))
            config["default_variant"] = "int8" if gap <= INT8_MAX_GAP_POINTS else "fp32"
            metrics["int8_gap_points"] = gap
            metrics["default_variant_reason"] = (
                f"int8 is within {INT8_MAX_GAP_POINTS} point of fp32 (largest drop {gap})"
                if gap <= INT8_MAX_GAP_POINTS
                else f"int8 drops {gap} points somewhere (> {INT8_MAX_GAP_POINTS})"
            )
            if not cfg.target:
                variant = config["default_variant"]
                plot_triage(
                    staging,
                    test["risk"],
                    test["claim_type"],
                    preds[variant],
                    reports[variant],
                    metrics["keyword_baseline"],
                    "test split",
                )
        else:
            metrics["default_variant_reason"] = "no test split given: fp32"
        steps.update()
        steps.close()
        write_json(staging / CONFIG, config)
        write_json(staging / "metrics.json", metrics)
        write_model_card(staging / "MODEL_CARD.md", config, metrics)
        write_manifest(staging, {"version": version})
        staging.chmod(0o755)
        return publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(staging: Path, final: Path) -> Path:
    """Move a finished staging folder into place atomically (same filesystem)."""
    if final.exists():
        raise ExportError(f"{final} already exists; choose another --out")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)
    return final


def counts(df: pd.DataFrame, target: str | None) -> dict[str, Any]:
    if target:
        return {"rows": len(df), "classes": int(df[target].nunique())}
    return {
        "rows": len(df),
        "per_language": {k: int(v) for k, v in df["language"].value_counts().items()},
        "per_risk": {k: int(v) for k, v in df["risk"].value_counts().items()},
        "per_claim_type": {k: int(v) for k, v in df["claim_type"].value_counts().items()},
    }


def train(cfg: TrainConfig) -> Path:
    """Fit and build a model folder; return where it was published."""
    return build_model(fit(cfg), cfg)
