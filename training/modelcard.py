"""The model card written into every model folder, and the tables `triage evaluate` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.labels import LANGUAGES
from training.metrics import INTERVAL_LEVEL, INTERVAL_RESAMPLES, LENGTH_BUCKETS

ROWS = (
    "tier1_recall",
    "tier1_precision",
    "tier1_precision_at_prevalence",
    "tier1_average_precision",
    "risk_macro_f1",
    "claim_type_macro_f1",
    "claim_filed_recall",
)
# per group, claim-type accuracy rather than macro-F1: a slice often has one true claim type (see triage_metrics)
GROUP_ROWS = ("n", "tier1_n", "tier1_recall", "tier1_precision", "tier1_routed", "claim_type_accuracy")


def metrics_table(model: dict[str, Any], keywords: dict[str, Any] | None) -> str:
    """Model (and keyword triage) per language and overall."""
    head = (
        "| metric | "
        + " | ".join(f"model {lg} | keywords {lg}" if keywords else f"model {lg}" for lg in (*LANGUAGES, "all"))
        + " |"
    )
    cols = head.count("|") - 1
    lines = [head, "|" + "---|" * cols]
    for key in ROWS:
        cells = []
        for lang in (*LANGUAGES, "all"):
            m = model if lang == "all" else model["per_language"].get(lang, {})
            cells.append(_fmt(m.get(key)))
            if keywords:
                k = keywords if lang == "all" else keywords["per_language"].get(lang, {})
                cells.append(_fmt(k.get(key)))
        name = f"{key} ({model.get('prevalence', 0.1):.0%} Tier 1)" if key.endswith("at_prevalence") else key
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_table(groups: dict[str, dict[str, Any]], title: str) -> str:
    """One row per group (length bucket, slice...): size and the Tier-1 figures."""
    lines = [f"| {title} | " + " | ".join(GROUP_ROWS) + " |", "|---|" + "---|" * len(GROUP_ROWS)]
    for name, m in groups.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in GROUP_ROWS) + " |")
    return "\n".join(lines)


def length_table(report: dict[str, Any]) -> str:
    """Tier-1 recall / precision per language x length bucket (the cells the retraining gate checks)."""
    buckets = [b for b, _, _ in LENGTH_BUCKETS]
    lines = [
        "| language | " + " | ".join(f"{b}: recall / precision (n Tier 1)" for b in buckets) + " |",
        "|---|" + "---|" * len(buckets),
    ]
    for lang, groups in report.get("per_language_length", {}).items():
        cells = []
        for b in buckets:
            m = groups.get(b)
            cells.append("-" if not m else f"{_fmt(m['tier1_recall'])} / {_fmt(m['tier1_precision'])} ({m['tier1_n']})")
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interval_lines(report: dict[str, Any]) -> list[str]:
    """The report's bootstrap intervals as a titled table, or nothing for a report without them."""
    if not report.get("intervals"):
        return []
    title = f"How sure ({INTERVAL_LEVEL:.0%} bootstrap intervals, {INTERVAL_RESAMPLES} resamples of these messages):"
    return [title, "", interval_table(report["intervals"]), ""]


def interval_table(intervals: dict[str, dict[str, float | None]]) -> str:
    """Each headline figure with its bootstrap interval (training.metrics.bootstrap_intervals)."""
    lines = [f"| figure | value | {INTERVAL_LEVEL:.0%} interval |", "|---|---|---|"]
    for name, row in intervals.items():
        lines.append(f"| {name} | {_fmt(row['value'])} | {_fmt(row['low'])} - {_fmt(row['high'])} |")
    return "\n".join(lines)


def paired_table(figures: dict[str, dict[str, float | None]], baseline: str) -> str:
    """Each headline figure of this model and `baseline`, the difference, its paired interval and the share
    of resamples where this model is ahead (training.metrics.paired_differences)."""
    lines = [
        f"| figure | this model | {baseline} | difference | {INTERVAL_LEVEL:.0%} interval | ahead in |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in figures.items():
        diff = "n/a" if row["difference"] is None else f"{row['difference']:+.3f}"
        ahead = "n/a" if row["ahead"] is None else f"{row['ahead']:.0%}"
        lines.append(
            f"| {name} | {_fmt(row['value'])} | {_fmt(row['baseline'])} | {diff} | "
            f"{_fmt(row['low'])} - {_fmt(row['high'])} | {ahead} |"
        )
    return "\n".join(lines)


def operating_table(points: dict[str, dict[str, dict[str, float | None]]]) -> str:
    """Precision at recall 0.90 / 0.95 / 0.97, overall and per language, with the threshold for each."""
    targets = list(next(iter(points.values())))
    lines = [
        "| | " + " | ".join(f"recall {t}: precision (threshold)" for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for name, row in points.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{_fmt(row[t]['precision'])} ({_fmt(row[t]['threshold'], 3)})" for t in targets)
            + " |"
        )
    return "\n".join(lines)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def write_model_card(path: Path, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    enc = config["encoder"]
    tr = config["training"]
    review = config["review"]
    finetuned = enc.get("finetuned")
    lines = [
        f"# triage model {config['version']}",
        "",
        f"- created: {config['created_at']}",
        f"- task: {config['task']}" + (f" (target column `{config['target']}`)" if config["target"] else ""),
        f"- encoder: {enc['name']} (`{enc['id']}`, {enc['dim']}-d), "
        + (f"fine-tuned SetFit-style ({tr['finetune']}; {finetuned})" if finetuned else "frozen"),
        "- heads: "
        + ", ".join(
            f"`{h['name']}` ({len(h['labels'])} classes, "
            + (
                f"{h['hidden_units']} hidden ReLU units, L2 {tr.get('hidden_l2')}"
                if h.get("hidden_units")
                else f"logistic regression, C={tr['c']}"
            )
            + f", T={h['temperature']})"
            for h in config["heads"]
        )
        + " (balanced class weights, temperature-scaled on out-of-fold logits"
        + (f" of {tr['crossfit_folds']} cross-fitted fine-tuned encoders" if finetuned else "")
        + ")",
        "- features: sentence embedding"
        + (
            f" + char n-gram TF-IDF ({config['ngrams']['size']} n-grams, weight {tr['ngram_weight']}, read by "
            + ("every head" if tr.get("ngram_heads", "all") == "all" else f"the `{tr['ngram_heads']}` head only")
            + ")"
            if "ngrams" in config
            else ""
        ),
        f"- training data: `{tr['data']}` ({tr['rows']} rows, sha256 {tr['data_sha256'][:12]}...)",
        f"- test split: `{tr['test']}`" if tr.get("test") else "- test split: none",
        f"- counts: {metrics['counts']}",
        f"- ONNX parity (fp32 vs in-memory encoder, min cosine): {metrics['parity']['fp32_min_cosine']}",
        f"- served variant: **{config['default_variant']}** ({metrics['default_variant_reason']})",
    ]
    if config["task"] == "triage":
        lines += [
            f"- routing: Tier 1 when P(claim_filed) + P(at_risk) >= **{review['tier1_threshold']}**, the highest "
            f"threshold whose out-of-fold Tier-1 recall on the training data reaches {tr['tier1_recall_target']}"
            + (
                f" overall and {tr['tier1_cell_recall_target']} in every language x length bucket"
                if tr.get("tier1_cell_recall_target")
                else ""
            ),
            f"- needs_review: P(Tier 1) within {review.get('tier1_band', 0)} of that threshold; or a Tier-1 "
            f"message whose chosen risk has < {review['risk_threshold']} of P(Tier 1), or whose claim type "
            f"probability is < {review['claim_type_threshold']}; or a language other than fr/it/en",
        ]
    lines.append("")
    if metrics.get("operating_points"):
        lines += [
            "## Operating points (out-of-fold, training data)",
            "",
            "What each point of Tier-1 recall costs in precision, on predictions of messages the model had not seen:",
            "",
            operating_table(metrics["operating_points"]),
            "",
        ]
    test = metrics.get("test")
    if test and config["task"] == "triage":
        variant = config["default_variant"]
        report = test[variant]
        lines += [
            f"## Test split ({variant}), model vs keyword triage",
            "",
            metrics_table(report, metrics.get("keyword_baseline")),
            "",
            *interval_lines(report),
            "Per language and length (characters):",
            "",
            length_table(report),
            "",
        ]
        if report.get("per_slice"):
            lines += ["Per slice:", "", group_table(report["per_slice"], "slice"), ""]
        lines += [
            "![per language](per_language.png) ![per length](per_length.png) ![per slice](per_slice.png) "
            "![risk](confusion_risk.png) ![claim type](confusion_claim_type.png)",
            "",
        ]
    elif test:
        lines += ["## Test split", "", "| variant | n | accuracy | macro_f1 |", "|---|---|---|---|"]
        lines += [f"| {v} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" for v, m in test.items()]
        lines.append("")
    real = metrics.get("real")
    if real:
        variant = config["default_variant"]
        lines += [
            f"## Real messages (`{real['data']}`, never trained on)",
            "",
            metrics_table(real[variant], real.get("keyword_baseline")),
            "",
            *interval_lines(real[variant]),
            group_table(real[variant]["per_length"], "length"),
            "",
        ]
    lines += [
        "## Intended use and limits",
        "",
        "Routes helpdesk messages (French, Italian, English) to Tier 1 (A-to-Z claim filed or at risk) or",
        "Tier 2. It does not answer buyers and must not auto-close anything: uncertain outputs carry",
        "`needs_review`. Other languages are out of scope (reported as `other`).",
    ]
    path.write_text("\n".join(lines) + "\n")
