"""`triage evaluate`: a model folder against any labeled CSV, side by side with keyword triage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.keywords import KeywordTriage
from serving.model import Classifier, ModelBundle, ModelError
from training.data import load_dataset
from training.metrics import confusion, target_metrics, triage_report
from training.modelcard import metrics_table
from training.plots import plot_confusion, plot_triage


def evaluate_file(
    data: Path, folder: Path, target: str | None = None, variant: str | None = None, plots_dir: Path | None = None
) -> dict[str, Any]:
    """{"metrics": the JSON object, "text": readable tables}; plots are written when `plots_dir` is set."""
    bundle = ModelBundle(folder, variant=variant)
    if target:
        if target not in bundle.heads:
            raise ModelError(f"{folder} has no head for {target!r} (heads: {', '.join(bundle.heads)})")
        df = load_dataset(data, target)
        labels = bundle.heads[target]
        probs = bundle.predict_proba(df["text"].tolist())[target]
        pred = [labels[i] for i in probs.argmax(1)]
        metrics = target_metrics(df[target].tolist(), pred)
        text = f"{data}: n={metrics['n']} accuracy={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f}"
        if plots_dir:
            plots_dir.mkdir(parents=True, exist_ok=True)
            names = sorted(set(df[target]) | set(pred))
            path = plot_confusion(
                confusion(df[target], pred, names),
                names,
                f"{target} ({data.name})",
                plots_dir / f"confusion_{target}.png",
            )
            text += f"\nconfusion matrix: {path}"
        return {"metrics": metrics, "text": text}

    df = load_dataset(data)
    texts = df["text"].tolist()
    preds = Classifier(bundle).predict(texts)
    report = triage_report(df, preds)
    keywords = triage_report(df, KeywordTriage().predict(texts))
    metrics = report | {"keyword_baseline": keywords, "model_version": bundle.version, "variant": bundle.variant}
    lines = [
        f"{data}: {report['n']} messages, model {bundle.version} ({bundle.variant}) vs keyword triage",
        "",
        metrics_table(report, keywords),
    ]
    if plots_dir:
        paths = plot_triage(plots_dir, df["risk"], df["claim_type"], preds, report, keywords, data.name)
        lines += ["", "plots: " + ", ".join(str(p) for p in paths)]
    return {"metrics": metrics, "text": "\n".join(lines)}
