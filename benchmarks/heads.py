"""`python -m benchmarks.heads`: the risk head's fit time with subnormal floats flushed to zero or not.

The default risk head is a perceptron (`TRIAGE_RISK_HIDDEN` ReLU units) fitted for a fixed number of epochs
six times per training (the final head and five out-of-fold ones). Once its float32 probabilities underflow,
x86 CPUs compute the subnormal numbers in microcode; `training.heads.fit_model` therefore fits with them
flushed to zero (`subnormals_flushed`). This runs the same fit both ways, on the embeddings of the training
data, one after the other in the same process (a ratio, since the machine is shared), and checks that the
two fits end at the same loss. Prints a table and writes `benchmarks/results/heads-<UTC time>.json`.

    python -m benchmarks.heads                          # the default head on data/train.csv: ~5 min here
    python -m benchmarks.heads --rows 1000 --epochs 60  # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.neural_network import MLPClassifier

from benchmarks import RESULTS, positive, write_result
from serving.errors import TriageError
from serving.labels import RISKS
from serving.settings import Settings
from training import heads
from training.data import load_dataset
from training.embed import embed_texts
from training.encoders import load_encoder


def fit_seconds(x: np.ndarray, y: np.ndarray, layer: heads.HiddenLayer, flushed: bool, seed: int) -> dict[str, Any]:
    """One fit of the head as training does it (`heads.fit_model`), with the flush in place or taken out."""
    keep = heads.subnormals_flushed
    if not flushed:
        heads.subnormals_flushed = contextlib.nullcontext  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        model = heads.fit_model(x, y, 1.0, "balanced", seed, layer)
        seconds = time.perf_counter() - start
    finally:
        heads.subnormals_flushed = keep
    assert isinstance(model, MLPClassifier)
    return {"flushed": flushed, "seconds": round(seconds, 2), "epochs": int(model.n_iter_), "loss": float(model.loss_)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, help="training CSV (default: data/train.csv)")
    parser.add_argument("--rows", type=positive, help="use the first N training rows only (a quick check)")
    parser.add_argument("--epochs", type=positive, default=heads.HiddenLayer.max_iter, help="default: %(default)s")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON result (default: %(default)s)")
    parser.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    args = parser.parse_args(argv)
    settings = Settings()
    data_path = args.data or settings.data_dir / "train.csv"
    try:  # a bad CSV or an encoder that cannot load: one line that says what to fix, no traceback
        df = load_dataset(data_path)
        if args.rows:
            df = df.head(args.rows).reset_index(drop=True)
        if df["risk"].nunique() < 2:
            parser.error("the training data needs at least two risk labels")
        encoder = load_encoder(settings.encoder, settings.cache_dir)
        x = embed_texts(encoder, df["text"].tolist(), settings.cache_dir, progress=True)
    except TriageError as err:
        parser.error(str(err))
    labels = [r for r in RISKS if r in set(df["risk"])]
    y = df["risk"].map(labels.index).to_numpy()
    layer = heads.HiddenLayer(settings.risk_hidden or 512, settings.hidden_l2, args.epochs)
    runs = [fit_seconds(x, y, layer, flushed, settings.seed) for flushed in (True, False)]
    flushed, plain = runs
    speedup = plain["seconds"] / flushed["seconds"]
    same_loss = bool(np.isclose(flushed["loss"], plain["loss"], rtol=1e-6))
    print(f"\nrisk head: {layer.units} ReLU units, {len(df)} messages x {x.shape[1]} dimensions, {args.epochs} epochs")
    print("| subnormals | seconds | epochs | final loss |\n|---|---:|---:|---:|")
    for run in runs:
        kind = "flushed to zero" if run["flushed"] else "computed"
        print(f"| {kind} | {run['seconds']:.1f} | {run['epochs']} | {run['loss']:.6f} |")
    print(f"\nflushing is {speedup:.1f}x faster; the same final loss: {same_loss}")
    if args.no_save:
        return 0
    out = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": str(data_path),
        "rows": len(df),
        "dimensions": int(x.shape[1]),
        "hidden_units": layer.units,
        "epochs": args.epochs,
        "runs": runs,
        "speedup": round(speedup, 2),
        "same_loss": same_loss,
    }
    print(f"\nwritten to {write_result(out, args.out, 'heads')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
