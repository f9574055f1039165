"""The training pipeline: data -> (fine-tuned) encoder -> features -> heads -> ONNX model folder.

Stages are the pure functions of `data`, `embed`, `finetune`, `features`, `heads`, `onnx` and `metrics`;
this module wires them together and is the only one that writes a model folder (`triage export`
rebuilds one through it). Thresholds are chosen on cross-fitted out-of-fold predictions of the training
data, never on the test split; the test split and the real-message set are only measured.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.model_selection import StratifiedKFold
from tqdm.auto import tqdm

from serving.files import sha256_file, write_json
from serving.keywords import KeywordTriage
from serving.labels import GROUNDS, RISKS, TIER1_RISKS, message_key
from serving.model import CONFIG, Classifier, ModelBundle, write_manifest
from serving.ngrams import CharNgrams
from serving.settings import NgramHeads, Settings
from training import data as data_mod
from training.embed import embed_texts
from training.encoders import Encoder, load_encoder
from training.features import build_features
from training.finetune import FinetuneConfig, finetune
from training.heads import (
    Features,
    Head,
    HiddenLayer,
    choose_tier1_threshold,
    fit_head,
    fit_model,
    model_logits,
    tier1_scores,
)
from training.metrics import (
    bootstrap_intervals,
    language_length_cells,
    operating_points,
    target_metrics,
    tier_flip_rate,
    triage_report,
)
from training.modelcard import write_model_card
from training.onnx import FP32_FILE, INT8_FILE, ExportError, check_parity, export_onnx, quantize_int8
from training.plots import plot_triage

log = logging.getLogger("triage.train")
ENCODER_WEIGHTS = "encoder.safetensors"


@dataclass
class TrainConfig:
    """One training run. Build it with `from_settings`: the knobs' defaults live in `Settings` only."""

    data: Path
    test: Path | None
    real: Path | None  # real messages: measured in every evaluation, never trained on
    target: str | None  # None: the triage schema (risk + claim_type)
    out: Path | None
    models_dir: Path
    encoder: str
    cache_dir: Path | None
    c: float
    seed: int
    risk_threshold: float
    claim_type_threshold: float
    tier1_recall: float  # out-of-fold Tier-1 recall the routing threshold is chosen for
    tier1_cell_recall: float  # ... and the out-of-fold recall it must reach in every language x length bucket
    tier1_band: float
    char_ngrams: bool
    ngram_weight: float
    ngram_heads: NgramHeads  # which heads read the n-grams (the others: the embedding alone)
    risk_hidden: int  # hidden ReLU units of the risk head (0: logistic regression)
    hidden_l2: float
    finetune: FinetuneConfig | None
    crossfit_folds: int
    int8_max_flip_rate: float
    prevalence: float
    class_weight: str | None = "balanced"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in config.json (e.g. data provenance)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainConfig:
        """The settings' knobs, with `overrides` applied as given."""
        real = settings.real_eval if settings.real_eval and settings.real_eval.is_file() else None
        values: dict[str, Any] = {
            "data": settings.data_dir / "train.csv",
            "test": settings.data_dir / "test.csv",
            "real": real,
            "target": None,
            "out": None,
            "models_dir": settings.models_dir,
            "encoder": settings.encoder,
            "cache_dir": settings.cache_dir,
            "c": settings.head_c,
            "seed": settings.seed,
            "risk_threshold": settings.review_threshold,
            "claim_type_threshold": settings.claim_type_review_threshold,
            "tier1_recall": settings.tier1_recall,
            "tier1_cell_recall": settings.tier1_cell_recall,
            "tier1_band": settings.review_band,
            "char_ngrams": settings.char_ngrams,
            "ngram_weight": settings.ngram_weight,
            "ngram_heads": settings.ngram_heads,
            "risk_hidden": settings.risk_hidden,
            "hidden_l2": settings.hidden_l2,
            "finetune": FinetuneConfig(
                objective=settings.finetune_objective,
                pairs_per_message=settings.finetune_pairs,
                epochs=settings.finetune_epochs,
                learning_rate=settings.finetune_learning_rate,
                seed=settings.seed,
            )
            if settings.finetune
            else None,
            "crossfit_folds": settings.crossfit_folds,
            "int8_max_flip_rate": settings.int8_max_flip_rate,
            "prevalence": settings.prevalence,
        }
        return cls(**(values | overrides))


@dataclass
class Trained:
    encoder: Encoder
    heads: list[Head]
    train_df: pd.DataFrame
    ngrams: CharNgrams | None = None
    finetuned: dict[str, float] | None = None  # what fine-tuning did, when it ran


# -- fitting ---------------------------------------------------------------------------------------
def encoder_cache(cfg: TrainConfig) -> Path:
    """Where encoders built from packages (e5-small) are kept: beside the embedding cache."""
    return cfg.cache_dir or Path(".cache")


def embed(encoder: Encoder, texts: list[str], cfg: TrainConfig, finetuned: bool) -> np.ndarray:
    """Embeddings, cached on disk for a frozen encoder (a fine-tuned one is new every run)."""
    return embed_texts(encoder, texts, None if finetuned else cfg.cache_dir, progress=cfg.progress)


def finetune_labels(df: pd.DataFrame) -> list[str]:
    """What fine-tuning pulls together: the claim type (`none` for routine, so it carries the tier too)."""
    return df["claim_type"].tolist()


def crossfit_logits(df: pd.DataFrame, cfg: TrainConfig, ngrams: CharNgrams | None) -> dict[str, np.ndarray]:
    """Out-of-fold logits of both heads from encoders fine-tuned without the fold (risk: every row;
    claim_type: Tier-1 rows), in the label order `fit_head` uses. A fine-tuned encoder has seen every
    training label, so only these say how the model does on messages it has not seen."""
    assert cfg.finetune is not None
    texts = df["text"].tolist()
    tier1 = df["risk"].isin(TIER1_RISKS).to_numpy()
    risk_labels = [r for r in RISKS if r in set(df["risk"])]
    ground_labels = [g for g in GROUNDS if g in set(df.loc[tier1, "claim_type"])]
    risk_y = df["risk"].map(risk_labels.index).to_numpy()
    ground_y = df["claim_type"].map(lambda g: ground_labels.index(g) if g in ground_labels else -1).to_numpy()
    labels, risks = finetune_labels(df), df["risk"].tolist()
    out = {"risk": np.zeros((len(df), len(risk_labels))), "claim_type": np.zeros((len(df), len(ground_labels)))}
    folds = StratifiedKFold(cfg.crossfit_folds, shuffle=True, random_state=cfg.seed)
    for k, (fit_idx, held_idx) in enumerate(folds.split(texts, df["risk"] + df["language"]), start=1):
        log.info("cross-fitting: fold %d of %d", k, cfg.crossfit_folds)
        encoder = load_encoder(cfg.encoder, encoder_cache(cfg))
        finetune(
            encoder,
            [texts[i] for i in fit_idx],
            [labels[i] for i in fit_idx],
            cfg.finetune,
            progress=cfg.progress,
            risks=[risks[i] for i in fit_idx],
        )
        x = build_features(encoder.encode(texts, progress=False), texts, ngrams, cfg.ngram_weight)
        for name, y, rows in (("risk", risk_y, np.ones(len(df), bool)), ("claim_type", ground_y, tier1)):
            fit_rows, held_rows = fit_idx[rows[fit_idx]], held_idx[rows[held_idx]]
            xh = head_input(x, name, encoder.dim, cfg)
            model = fit_model(xh[fit_rows], y[fit_rows], cfg.c, cfg.class_weight, cfg.seed, head_hidden(name, cfg))
            logits = np.full((len(held_rows), out[name].shape[1]), -30.0)
            logits[:, model.classes_] = model_logits(model, xh[held_rows])
            out[name][held_rows] = logits
    return {"risk": out["risk"], "claim_type": out["claim_type"][tier1]}


def head_input(x: Features, head: str, dim: int, cfg: TrainConfig) -> Features:
    """What `head` reads of [embedding | n-grams]: all of it, or the embedding alone when the n-grams are
    for the other heads (`cfg.ngram_heads`) or the head has a hidden layer; such a head's weights cover the
    embedding only, and the export gives it zero n-gram rows."""
    if x.shape[1] == dim or (cfg.ngram_heads in ("all", head) and head_hidden(head, cfg) is None):
        return x
    emb = x[:, :dim]
    # dense: the same numbers, so the same fit, as without the n-grams
    return np.asarray(emb.toarray()) if isinstance(emb, sparse.spmatrix | sparse.sparray) else emb


def head_hidden(head: str, cfg: TrainConfig) -> HiddenLayer | None:
    """The risk head's hidden layer (`cfg.risk_hidden` units; none when 0); the other heads are linear."""
    return HiddenLayer(cfg.risk_hidden, cfg.hidden_l2) if head == "risk" and cfg.risk_hidden else None


def fit_triage_heads(
    df: pd.DataFrame, x: Features, dim: int, cfg: TrainConfig, oof: dict[str, np.ndarray] | None = None
) -> list[Head]:
    """`risk` on every row; `claim_type` (the ground) on Tier-1 rows only, `none` being implied by routine.
    The routing threshold is chosen on the risk head's out-of-fold P(Tier 1) for `cfg.tier1_recall` overall
    and `cfg.tier1_cell_recall` in every language x length bucket."""
    tier1 = df["risk"].isin(TIER1_RISKS).to_numpy()
    oof = oof or {}
    steps = tqdm(total=2, desc="fitting heads", disable=not cfg.progress)
    xr = head_input(x, "risk", dim, cfg)
    risk = fit_head(
        "risk", xr, df["risk"], RISKS, cfg.c, cfg.class_weight, cfg.seed, oof.get("risk"), head_hidden("risk", cfg)
    )
    risk.info["tier1_threshold"] = choose_tier1_threshold(
        risk, df["risk"].tolist(), cfg.tier1_recall, language_length_cells(df), cfg.tier1_cell_recall
    )
    steps.update()
    ground = fit_head(
        "claim_type",
        head_input(x, "claim_type", dim, cfg)[tier1],
        df["claim_type"][tier1],
        GROUNDS,
        cfg.c,
        cfg.class_weight,
        cfg.seed,
        oof.get("claim_type"),
    )
    steps.update()
    steps.close()
    return [risk, ground]


def fit(cfg: TrainConfig) -> Trained:
    df = data_mod.load_dataset(cfg.data, cfg.target)
    for held in (cfg.test, None if cfg.target else cfg.real):  # the real messages are triage messages
        if held:
            df = drop_overlap(df, data_mod.load_dataset(held, cfg.target), held, cfg)
    texts = df["text"].tolist()
    # a generic target's one head reads the n-grams only when every head does
    ngrams = CharNgrams.fit(texts) if cfg.char_ngrams and (not cfg.target or cfg.ngram_heads == "all") else None
    oof, finetuned = None, None
    encoder = load_encoder(cfg.encoder, encoder_cache(cfg))
    if cfg.finetune is not None:
        if not cfg.target:
            oof = crossfit_logits(df, cfg, ngrams)
        log.info("fine-tuning %s on %d messages", encoder.id, len(df))
        finetuned = finetune(
            encoder,
            texts,
            finetune_labels(df) if not cfg.target else df[cfg.target].tolist(),
            cfg.finetune,
            progress=cfg.progress,
            risks=None if cfg.target else df["risk"].tolist(),
        )
        encoder.id = f"{encoder.id}-ft-{weights_digest(encoder)}"
    log.info("embedding %d messages with %s", len(df), encoder.id)
    x = build_features(embed(encoder, texts, cfg, finetuned is not None), texts, ngrams, cfg.ngram_weight)
    if cfg.target:
        heads = [fit_head(cfg.target, x, df[cfg.target], None, cfg.c, cfg.class_weight, cfg.seed)]
    else:
        heads = fit_triage_heads(df, x, encoder.dim, cfg, oof)
    return Trained(encoder, heads, df, ngrams, finetuned)


def weights_digest(encoder: Encoder) -> str:
    """A short digest of the encoder's trainable weights: a fine-tuned encoder's identity."""
    h = hashlib.sha256()
    for p in encoder.trainable():
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:10]


def drop_overlap(train: pd.DataFrame, held: pd.DataFrame, where: Path, cfg: TrainConfig) -> pd.DataFrame:
    """Training never sees a held-out message (the test split, the real-message set): rows that are the
    same message as a held-out row (same `message_key`: case, Unicode form and spacing aside) are left
    out, and said."""
    overlap = train["text"].map(message_key).isin(set(held["text"].map(message_key)))
    if overlap.any():
        lines = ", ".join(str(n) for n in train.loc[overlap, "line"].head(10))
        log.warning(
            "%d training row(s) also in %s are left out of training (lines %s%s)",
            int(overlap.sum()),
            where,
            lines,
            "..." if overlap.sum() > 10 else "",
        )
        key = "rows_left_out_in_test" if where == cfg.test else "rows_left_out_in_real"
        cfg.extra[key] = cfg.extra.get(key, 0) + int(overlap.sum())
    return train.loc[~overlap].reset_index(drop=True)


# -- building the model folder -------------------------------------------------------------------------
def target_report(bundle: ModelBundle, test: pd.DataFrame, target: str) -> dict[str, Any]:
    """n, accuracy and macro-F1 of a generic model's `target` head."""
    return target_metrics(test[target].tolist(), target_predictions(bundle, test["text"].tolist(), target))


def target_predictions(bundle: ModelBundle, texts: list[str], target: str) -> list[str]:
    probs = bundle.predict_proba(texts)[target]
    return [bundle.heads[target][i] for i in probs.argmax(1)]


def tier1_threshold(heads: list[Head]) -> float:
    return float(next((h.info.get("tier1_threshold", 0.5) for h in heads if h.name == "risk"), 0.5))


def version_name(encoder: Encoder, now: datetime, finetuned: bool) -> str:
    kind = encoder.describe()["kind"].replace("sentence-transformers", "st")
    return f"{now:%Y%m%d-%H%M%S}-{kind}" + ("-ft" if finetuned else "")


def build_model(trained: Trained, cfg: TrainConfig) -> Path:
    """Export, check, quantise, evaluate and publish a model folder; return its final path.

    Everything is written in a staging folder next to the destination and moved into place only when
    complete, so a crash leaves no half-written model behind.
    """
    encoder, heads = trained.encoder, trained.heads
    now = datetime.now(UTC)
    version = version_name(encoder, now, trained.finetuned is not None)
    final = cfg.out or cfg.models_dir / version
    final.parent.mkdir(parents=True, exist_ok=True)
    test = data_mod.load_dataset(cfg.test, cfg.target) if cfg.test else None
    real = data_mod.load_dataset(cfg.real) if cfg.real and not cfg.target else None

    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        steps = tqdm(total=5, desc="exporting", disable=not cfg.progress)
        ngram_scale = cfg.ngram_weight if trained.ngrams is not None else None
        export_onnx(encoder, heads, staging / FP32_FILE, ngram_scale)
        steps.update()
        config: dict[str, Any] = {
            "format": 2,
            "version": version,
            "created_at": now.isoformat(timespec="seconds"),
            "task": "generic" if cfg.target else "triage",
            "target": cfg.target,
            "encoder": encoder.describe()
            | ({"finetuned": trained.finetuned, "weights": ENCODER_WEIGHTS} if trained.finetuned else {}),
            "tokenizer": encoder.write_tokenizer(staging),
            "heads": [
                {
                    "name": h.name,
                    "labels": h.labels,
                    "temperature": round(h.temperature, 4),
                    "cv": h.info,
                    "hidden_units": h.hidden[0].shape[1] if h.hidden is not None else 0,
                }
                for h in heads
            ],
            "files": {"fp32": FP32_FILE, "int8": INT8_FILE},
            "default_variant": "fp32",
            "review": {
                "risk_threshold": cfg.risk_threshold,
                "claim_type_threshold": cfg.claim_type_threshold,
                "tier1_threshold": tier1_threshold(heads),
                "tier1_band": cfg.tier1_band,
            },
            "training": {
                "data": str(cfg.data),
                "data_sha256": sha256_file(cfg.data),
                "rows": len(trained.train_df),
                "test": str(cfg.test) if cfg.test else None,
                "test_sha256": sha256_file(cfg.test) if cfg.test else None,
                "real": str(cfg.real) if cfg.real else None,
                "c": cfg.c,
                "class_weight": cfg.class_weight,
                "seed": cfg.seed,
                "tier1_recall_target": cfg.tier1_recall,
                "tier1_cell_recall_target": cfg.tier1_cell_recall,
                "char_ngrams": cfg.char_ngrams,
                "ngram_weight": cfg.ngram_weight if trained.ngrams is not None else None,
                "ngram_heads": cfg.ngram_heads if trained.ngrams is not None else None,
                "risk_hidden": cfg.risk_hidden,
                "hidden_l2": cfg.hidden_l2 if cfg.risk_hidden else None,
                "finetune": asdict(cfg.finetune) if cfg.finetune else None,
                "crossfit_folds": cfg.crossfit_folds if cfg.finetune else None,
                "platform": platform.platform(),
            }
            | cfg.extra,
        }
        if trained.ngrams is not None:
            config["ngrams"] = trained.ngrams.save(staging)
        if trained.finetuned is not None:
            save_encoder_weights(encoder, staging / ENCODER_WEIGHTS)
        write_json(staging / CONFIG, config)
        arrays: dict[str, Any] = {f"{h.name}.weight": h.weight for h in heads}
        arrays |= {f"{h.name}.bias": h.bias for h in heads}
        arrays |= {f"{h.name}.hidden_weight": h.hidden[0] for h in heads if h.hidden is not None}
        arrays |= {f"{h.name}.hidden_bias": h.hidden[1] for h in heads if h.hidden is not None}
        np.savez(staging / "heads.npz", **arrays)
        parity = {"fp32_min_cosine": round(check_parity(encoder, staging, "fp32"), 6)}
        steps.update()
        quantize_int8(staging / FP32_FILE, staging / INT8_FILE, encoder.float_weights)
        steps.update()
        metrics: dict[str, Any] = {"parity": parity, "counts": counts(trained.train_df, cfg.target)}
        bundles = {v: ModelBundle(staging, v, verify=False) for v in ("fp32", "int8")}
        # int8 is served when it routes (or labels) all labelled messages like fp32, but for a few
        labelled = trained.train_df["text"].tolist() + (test["text"].tolist() if test is not None else [])
        if cfg.target:
            fp32, int8 = (target_predictions(bundles[v], labelled, cfg.target) for v in ("fp32", "int8"))
            flips = round(sum(a != b for a, b in zip(fp32, int8, strict=True)) / max(1, len(labelled)), 5)
        else:
            flips = tier_flip_rate(*(Classifier(bundles[v]).predict(labelled) for v in ("fp32", "int8")))
        config["default_variant"] = "int8" if flips <= cfg.int8_max_flip_rate else "fp32"
        metrics["int8_flip_rate"] = flips
        metrics["default_variant_reason"] = (
            f"int8 {'changes' if cfg.target else 'routes'} {flips:.2%} of the {len(labelled)} labelled messages "
            f"differently from fp32 ({'within' if flips <= cfg.int8_max_flip_rate else 'over'} the "
            f"{cfg.int8_max_flip_rate:.0%} allowed)"
        )
        variant = config["default_variant"]
        if not cfg.target:
            scores = tier1_scores(heads[0])
            if scores is not None:
                truth = trained.train_df["risk"].isin(TIER1_RISKS).to_numpy()
                metrics["operating_points"] = operating_points(scores, truth, trained.train_df["language"].tolist())
        if test is not None:
            preds = {} if cfg.target else {v: Classifier(b).predict(test["text"].tolist()) for v, b in bundles.items()}
            metrics["test"] = {
                v: target_report(b, test, cfg.target) if cfg.target else triage_report(test, preds[v], cfg.prevalence)
                for v, b in bundles.items()
            }
            if not cfg.target:
                metrics["test"][variant]["intervals"] = bootstrap_intervals(
                    test["risk"], test["claim_type"], preds[variant]
                )
                metrics["keyword_baseline"] = triage_report(
                    test, KeywordTriage().predict(test["text"].tolist()), cfg.prevalence
                )
                plot_triage(
                    staging,
                    test["risk"],
                    test["claim_type"],
                    preds[variant],
                    metrics["test"][variant],
                    metrics["keyword_baseline"],
                    "test split",
                )
        steps.update()
        if real is not None:
            real_preds = Classifier(bundles[variant]).predict(real["text"].tolist())
            metrics["real"] = {
                "data": str(cfg.real),
                variant: triage_report(real, real_preds, cfg.prevalence)
                | {"intervals": bootstrap_intervals(real["risk"], real["claim_type"], real_preds)},
                "keyword_baseline": triage_report(real, KeywordTriage().predict(real["text"].tolist()), cfg.prevalence),
            }
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


def save_encoder_weights(encoder: Encoder, path: Path) -> None:
    """The fine-tuned weights (the trainable ones only), so `triage export` can rebuild the graph."""
    from safetensors.torch import save_file

    trainable = {id(p) for p in encoder.trainable()}
    save_file(
        {n: p.detach().contiguous() for n, p in encoder.model.named_parameters() if id(p) in trainable}, str(path)
    )


def load_encoder_weights(encoder: Encoder, path: Path) -> None:
    from safetensors.torch import load_file

    missing = set(load_file(str(path))) - {n for n, _ in encoder.model.named_parameters()}
    if missing:
        raise ExportError(f"{path}: weights for parameters the encoder does not have: {sorted(missing)[:5]}")
    encoder.model.load_state_dict(load_file(str(path)), strict=False)


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
