"""Plots people would rather look at than read: confusion matrices and per-language bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from serving.labels import GROUNDS, LANGUAGES, RISKS  # noqa: E402
from serving.prediction import Prediction  # noqa: E402
from training.metrics import LENGTH_BUCKETS, confusion  # noqa: E402


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], title: str, path: Path) -> Path:
    size = max(4.0, 0.75 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        color="white" if norm[i, j] > 0.5 else "black",
                        fontsize=8,
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true row")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_per_language(
    reports: dict[str, dict[str, Any]],
    path: Path,
    keys: Sequence[str] = ("tier1_recall", "tier1_precision", "risk_macro_f1"),
) -> Path:
    """Grouped bars: one panel per metric, languages on x, one bar per predictor (model, keywords...)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), sharey=True)
    width = 0.8 / max(1, len(reports))
    x = np.arange(len(LANGUAGES))
    for ax, key in zip(np.atleast_1d(axes), keys, strict=True):
        for k, (name, rep) in enumerate(reports.items()):
            vals = [rep["per_language"][lang].get(key) or 0.0 for lang in LANGUAGES]
            bars = ax.bar(x + k * width - 0.4 + width / 2, vals, width, label=name)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(x, LANGUAGES)
        ax.set_ylim(0, 1.08)
        ax.set_title(key)
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_per_length(report: dict[str, Any], path: Path, name: str) -> Path:
    """Tier-1 recall per language and length bucket (characters): the cells the retraining gate checks."""
    buckets = [b for b, _, _ in LENGTH_BUCKETS]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / len(buckets)
    x = np.arange(len(LANGUAGES))
    for k, bucket in enumerate(buckets):
        vals = [
            (report.get("per_language_length", {}).get(lang, {}).get(bucket) or {}).get("tier1_recall") or 0.0
            for lang in LANGUAGES
        ]
        bars = ax.bar(x + k * width - 0.4 + width / 2, vals, width, label=f"{bucket} chars")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, LANGUAGES)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("Tier-1 recall")
    ax.set_title(f"Tier-1 recall per length ({name})")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_per_slice(report: dict[str, Any], path: Path, name: str) -> Path:
    """Per slice: Tier-1 recall where the slice has Tier-1 messages, else the share wrongly sent to Tier 1."""
    slices = report["per_slice"]
    names = sorted(slices, key=lambda s: (slices[s]["tier1_n"] == 0, s))
    values = [slices[s]["tier1_recall"] if slices[s]["tier1_n"] else slices[s]["tier1_routed"] or 0.0 for s in names]
    colors = ["tab:blue" if slices[s]["tier1_n"] else "tab:red" for s in names]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.2))
    bars = ax.barh(names, values, color=colors)
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_title(f"{name}: blue = Tier-1 recall, red = routine sent to Tier 1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_triage(
    folder: Path,
    risk_true: Sequence[str],
    claim_true: Sequence[str],
    preds: Sequence[Prediction],
    report: dict[str, Any],
    keywords: dict[str, Any],
    name: str,
) -> list[Path]:
    """The plots of a triage evaluation: risk and claim-type confusion matrices, per-language bars, Tier-1
    recall per language x length bucket and, when the data has slices, per slice."""
    folder.mkdir(parents=True, exist_ok=True)
    claim_labels = [*GROUNDS, "none"]
    extra = [plot_per_length(report, folder / "per_length.png", name)]
    if report.get("per_slice"):
        extra.append(plot_per_slice(report, folder / "per_slice.png", name))
    return extra + [
        plot_confusion(
            confusion(risk_true, [p.risk for p in preds], RISKS),
            list(RISKS),
            f"risk ({name})",
            folder / "confusion_risk.png",
        ),
        plot_confusion(
            confusion(claim_true, [p.claim_type for p in preds], claim_labels),
            claim_labels,
            f"claim_type ({name})",
            folder / "confusion_claim_type.png",
        ),
        plot_per_language({"model": report, "keywords": keywords}, folder / "per_language.png"),
    ]
