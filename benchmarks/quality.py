"""`python -m benchmarks.quality`: the experiments behind the default recipe, in one table.

Each variant (encoder, features, fine-tuning, head strength) is fitted with the product's own
`training.train.fit` on `data/train.csv` and judged only by what model selection may use:

- cross-validation on the training data (out-of-fold predictions, cross-fitted for fine-tuned encoders):
  the routing threshold for the Tier-1 recall target, the precision it leaves, the precision at recall
  0.90 / 0.95 / 0.97, average precision, claim-type macro-F1;
- the real messages (`TRIAGE_REAL_EVAL`, never trained on) at that threshold: Tier-1 recall and precision,
  precision at the stated prevalence, claim-type macro-F1, average precision.

The challenge set (`data/test.csv`) plays no part: it measures the chosen model once, in `triage train`.
Prints a table and writes `benchmarks/results/quality-<UTC time>.json`.

    python -m benchmarks.quality                       # every variant (about an hour on 2 busy cores)
    python -m benchmarks.quality --only usem3,usem3+ngrams
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score

from benchmarks import RESULTS, write_result
from serving.labels import TIER1_RISKS
from serving.model import ReviewPolicy, decide
from serving.settings import Settings
from training.data import load_dataset
from training.features import build_features
from training.finetune import FinetuneConfig
from training.heads import softmax, tier1_scores
from training.metrics import operating_points, triage_metrics
from training.train import TrainConfig, Trained, fit


def recipe(
    encoder: str,
    c: float = 1.0,
    ngrams: tuple[float, str] | None = None,
    finetune: FinetuneConfig | None = None,
    risk_hidden: int = 0,
) -> dict[str, Any]:
    """TrainConfig overrides for one variant; `ngrams` = (their weight, which heads read them) or none;
    `risk_hidden`: hidden units of the risk head (0: logistic regression)."""
    out: dict[str, Any] = {
        "encoder": encoder,
        "c": c,
        "char_ngrams": ngrams is not None,
        "finetune": finetune,
        "risk_hidden": risk_hidden,
    }
    if ngrams is not None:
        out |= {"ngram_weight": ngrams[0], "ngram_heads": ngrams[1]}
    return out


def variants(settings: Settings) -> dict[str, dict[str, Any]]:
    """name -> TrainConfig overrides; what was tried, the old recipe first."""
    # the fine-tuning settings tried by hand first (one run each on the real messages): SetFit pairs need a
    # learning rate of 3e-4 to move the USE layers at all (2e-5 left them as they were); e5 end to end 3e-5
    pairs = FinetuneConfig(objective="pairs", pairs_per_message=1, learning_rate=3e-4, seed=settings.seed)
    classify = FinetuneConfig(objective="classify", learning_rate=3e-5, seed=settings.seed)
    return {
        "usem3 C=10 (old recipe)": recipe("usem3", c=10.0),
        "usem3": recipe("usem3"),
        "usem3+ngrams": recipe("usem3", ngrams=(0.5, "all")),
        "usem3+ngrams (weight 1)": recipe("usem3", ngrams=(1.0, "all")),
        "usem3+ngrams for the claim type (weight 1)": recipe("usem3", ngrams=(1.0, "claim_type")),
        "usem3+ngrams for the claim type (weight 2)": recipe("usem3", ngrams=(2.0, "claim_type")),
        "usem3+ngrams for the claim type (weight 2) + risk MLP 256": recipe(
            "usem3", ngrams=(2.0, "claim_type"), risk_hidden=256
        ),
        "usem3+ngrams for the claim type (weight 2) + risk MLP 512": recipe(
            "usem3", ngrams=(2.0, "claim_type"), risk_hidden=512
        ),
        "usem3+ngrams for the claim type (weight 2) + risk MLP 1024": recipe(
            "usem3", ngrams=(2.0, "claim_type"), risk_hidden=1024
        ),
        "usem3 fine-tuned (pairs)": recipe("usem3", finetune=pairs),
        "e5-small": recipe("e5-small"),
        "e5-small+ngrams": recipe("e5-small", ngrams=(0.5, "all")),
        "e5-small fine-tuned (classify)": recipe("e5-small", finetune=classify),
    }


def predict_in_memory(trained: Trained, cfg: TrainConfig, texts: list[str]) -> list[Any]:
    """The model's answers without exporting it: the same features, heads and policy as the ONNX graph."""
    x = build_features(trained.encoder.encode(texts), texts, trained.ngrams, cfg.ngram_weight)
    risk, ground = trained.heads
    policy = ReviewPolicy(
        cfg.risk_threshold, cfg.claim_type_threshold, float(risk.info["tier1_threshold"]), cfg.tier1_band
    )
    risk_p, ground_p = softmax(risk.logits(x)), softmax(ground.logits(x))
    return [
        decide(risk_p[i], ground_p[i], risk.labels, ground.labels, policy)  # type: ignore[arg-type]
        for i in range(len(texts))
    ]


def judge(name: str, cfg: TrainConfig, real_path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    trained = fit(cfg)
    fit_s = time.perf_counter() - started
    df = trained.train_df
    truth = df["risk"].isin(TIER1_RISKS).to_numpy()
    risk, ground = trained.heads
    scores = tier1_scores(risk)
    assert scores is not None
    threshold = float(risk.info["tier1_threshold"])
    routed = scores >= threshold
    tier1_rows = df[truth]
    assert ground.oof_proba is not None
    ground_pred = [ground.labels[i] for i in ground.oof_proba.argmax(1)]
    cv = {
        "threshold": threshold,
        "tier1_recall": round(float(routed[truth].mean()), 4),
        "tier1_precision": round(float(truth[routed].mean()), 4),
        "average_precision": round(float(average_precision_score(truth, scores)), 4),
        "claim_type_macro_f1_tier1": round(float(f1_score(tier1_rows["claim_type"], ground_pred, average="macro")), 4),
        "operating_points": operating_points(scores, truth, df["language"].tolist()),
    }
    real = load_dataset(real_path)
    preds = predict_in_memory(trained, cfg, real["text"].tolist())
    real_truth = real["risk"].isin(TIER1_RISKS).to_numpy()
    real_scores = np.array([1 - p.risk_scores["routine"] for p in preds])
    real_m = triage_metrics(real["risk"], real["claim_type"], preds, cfg.prevalence)
    real_m["average_precision"] = round(float(average_precision_score(real_truth, real_scores)), 4)
    return {
        "variant": name,
        "fit_s": round(fit_s, 1),
        "rows": len(df),
        "cv": cv,
        "real": real_m,
        "finetune": trained.finetuned,
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| variant | threshold | CV recall | CV precision | CV P@R0.95 | CV AP | CV claim-type F1 | real recall | "
        "real precision | real P@10% | real AP | real claim-type F1 | fit s |"
    )
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for r in results:
        cv, real = r["cv"], r["real"]
        p95 = cv["operating_points"]["all"]["0.95"]["precision"]
        cells = [
            cv["threshold"],
            cv["tier1_recall"],
            cv["tier1_precision"],
            p95,
            cv["average_precision"],
            cv["claim_type_macro_f1_tier1"],
            real["tier1_recall"],
            real["tier1_precision"],
            real["tier1_precision_at_prevalence"],
            real["average_precision"],
            real["claim_type_macro_f1"],
            r["fit_s"],
        ]
        lines.append(
            f"| {r['variant']} | "
            + " | ".join("n/a" if c is None else f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--folds", type=int, default=3, help="cross-fitting folds for fine-tuned variants")
    parser.add_argument(
        "--show",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="print the table of earlier runs (benchmarks/results/quality-*.json) instead of fitting",
    )
    args = parser.parse_args(argv)
    if args.show:
        print(table([r for path in args.show for r in json.loads(path.read_text())["results"]]))
        return 0
    settings = Settings()
    if not settings.real_eval or not settings.real_eval.is_file():
        parser.error(f"the real-message set {settings.real_eval} is missing (TRIAGE_REAL_EVAL)")
    chosen = variants(settings)
    if args.only:
        unknown = set(args.only.split(",")) - set(chosen)
        if unknown:
            parser.error(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    results = []
    make: Callable[..., TrainConfig] = TrainConfig.from_settings
    for name, overrides in chosen.items():
        cfg = make(settings, test=None, progress=False, crossfit_folds=args.folds, **overrides)
        print(f"{name}: fitting ...", flush=True)
        results.append(judge(name, cfg, settings.real_eval))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    out = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": str(settings.data_dir / "train.csv"),
        "real": str(settings.real_eval),
        "recall_target": settings.tier1_recall,
        "results": results,
    }
    path = write_result(out, RESULTS, "quality")
    print()
    print(table(results))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
