"""`triage evaluate`: a model folder against any labeled CSV, side by side with keyword triage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serving.keywords import KeywordTriage
from serving.labels import TIER1_RISKS
from serving.model import Classifier, ModelBundle, ModelError
from training.data import load_dataset
from training.metrics import (
    DEFAULT_PREVALENCE,
    INTERVAL_RESAMPLES,
    bootstrap_intervals,
    confusion,
    operating_points,
    paired_differences,
    target_metrics,
    tier1_score,
    triage_report,
)
from training.modelcard import (
    group_table,
    interval_lines,
    length_table,
    metrics_table,
    operating_table,
    paired_table,
)
from training.plots import plot_confusion, plot_triage


def evaluate_file(
    data: Path,
    folder: Path,
    target: str | None = None,
    variant: str | None = None,
    plots_dir: Path | None = None,
    prevalence: float = DEFAULT_PREVALENCE,
    real: Path | None = None,
    against: Path | None = None,
) -> dict[str, Any]:
    """{"metrics": the JSON object, "text": readable tables}; plots are written when `plots_dir` is set.
    With `against` (another model folder), each file also gets the paired comparison of the two models.

    A triage evaluation reports overall, per language, per length bucket and per slice (when the file has
    a `slice` column), precision at `prevalence` next to the raw figure, and the same for the `real`
    messages (unless `data` is that file)."""
    bundle = ModelBundle(folder, variant=variant)
    baseline = ModelBundle(against) if against is not None else None
    if target:
        if baseline is not None:
            raise ModelError("--against compares two triage models; it does not take --target")
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

    report, text = triage_evaluation(data, bundle, prevalence, plots_dir, baseline=baseline)
    metrics = report
    if real is not None and real.resolve() != Path(data).resolve():
        real_report, real_text = triage_evaluation(
            real,
            bundle,
            prevalence,
            plots_dir / "real" if plots_dir else None,
            title="real messages (never trained on)",
            baseline=baseline,
        )
        metrics = report | {"real": real_report}
        text += "\n\n" + real_text
    return {"metrics": metrics, "text": text}


def triage_evaluation(
    data: Path,
    bundle: ModelBundle,
    prevalence: float,
    plots_dir: Path | None,
    title: str = "",
    baseline: ModelBundle | None = None,
) -> tuple[dict[str, Any], str]:
    """The report (model and keyword triage, and the `baseline` model when given) on one labeled file, and its
    tables."""
    df = load_dataset(data)
    texts = df["text"].tolist()
    preds = Classifier(bundle).predict(texts)
    report = triage_report(df, preds, prevalence)
    keywords = triage_report(df, KeywordTriage().predict(texts), prevalence)
    scores = np.array([tier1_score(p) for p in preds])
    truth = df["risk"].isin(TIER1_RISKS).to_numpy()
    report |= {
        "keyword_baseline": keywords,
        "model_version": bundle.version,
        "variant": bundle.variant,
        "data": str(data),
        "operating_points": operating_points(scores, truth, df["language"].tolist()),
        "intervals": bootstrap_intervals(df["risk"], df["claim_type"], preds),
    }
    lines = [
        f"{data}{f' ({title})' if title else ''}: {report['n']} messages, model {bundle.version} "
        f"({bundle.variant}) vs keyword triage",
        "",
        metrics_table(report, keywords),
        "",
        *interval_lines(report),
        "Tier 1 per language and length (characters):",
        "",
        length_table(report),
    ]
    if report.get("per_slice"):
        lines += ["", "Per slice:", "", group_table(report["per_slice"], "slice")]
    lines += [
        "",
        "Precision at a stated recall on this file (what another threshold would give):",
        "",
        operating_table(report["operating_points"]),
    ]
    if baseline is not None:
        diffs = paired_differences(df["risk"], df["claim_type"], preds, Classifier(baseline).predict(texts))
        report["against"] = {"model_version": baseline.version, "variant": baseline.variant, "figures": diffs}
        lines += [
            "",
            f"Against {baseline.version} ({baseline.variant}), both scored on the same {INTERVAL_RESAMPLES} "
            "resamples of these messages (a difference whose interval holds 0 is within this file's luck):",
            "",
            paired_table(diffs, baseline.version),
        ]
    if plots_dir:
        paths = plot_triage(plots_dir, df["risk"], df["claim_type"], preds, report, keywords, data.name)
        lines += ["", "plots: " + ", ".join(str(p) for p in paths)]
    return report, "\n".join(lines)
