"""The model card written into every model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.labels import LANGUAGES

ROWS = ("tier1_recall", "tier1_precision", "risk_macro_f1", "claim_type_macro_f1", "claim_filed_recall")


def metrics_table(model: dict[str, Any], keywords: dict[str, Any] | None) -> str:
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
            m = model if lang == "all" else model["per_language"][lang]
            cells.append(_fmt(m.get(key)))
            if keywords:
                k = keywords if lang == "all" else keywords["per_language"][lang]
                cells.append(_fmt(k.get(key)))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write_model_card(path: Path, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    enc = config["encoder"]
    tr = config["training"]
    lines = [
        f"# triage model {config['version']}",
        "",
        f"- created: {config['created_at']}",
        f"- task: {config['task']}" + (f" (target column `{config['target']}`)" if config["target"] else ""),
        f"- encoder: {enc['name']} (`{enc['id']}`, {enc['dim']}-d), frozen; heads: "
        + ", ".join(f"`{h['name']}` ({len(h['labels'])} classes, T={h['temperature']})" for h in config["heads"]),
        "  (logistic regression, balanced class weights, temperature-scaled on 5-fold out-of-fold logits)",
        f"- training data: `{tr['data']}` ({tr['rows']} rows, sha256 {tr['data_sha256'][:12]}...)",
        f"- test split: `{tr['test']}`" if tr.get("test") else "- test split: none",
        f"- counts: {metrics['counts']}",
        f"- ONNX parity (fp32 vs in-memory encoder, min cosine): {metrics['parity']['fp32_min_cosine']}",
        f"- served variant: **{config['default_variant']}** ({metrics['default_variant_reason']})",
        f"- needs_review: probability of the chosen risk < {config['review']['risk_threshold']}, or Tier-1 claim type "
        f"probability < {config['review']['claim_type_threshold']}",
        "",
    ]
    test = metrics.get("test")
    if test and config["task"] == "triage":
        variant = config["default_variant"]
        lines += [
            f"## Test split ({variant}), model vs keyword triage",
            "",
            metrics_table(test[variant], metrics.get("keyword_baseline")),
            "",
            "![per language](per_language.png) ![risk](confusion_risk.png) ![claim type](confusion_claim_type.png)",
            "",
        ]
    elif test:
        lines += ["## Test split", "", "| variant | n | accuracy | macro_f1 |", "|---|---|---|---|"]
        lines += [f"| {v} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" for v, m in test.items()]
        lines.append("")
    lines += [
        "## Intended use and limits",
        "",
        "Routes helpdesk messages (French, Italian, English) to Tier 1 (A-to-Z claim filed or at risk) or",
        "Tier 2. It does not answer buyers and must not auto-close anything: low-confidence outputs carry",
        "`needs_review`. Other languages are out of scope (reported as `other`).",
    ]
    path.write_text("\n".join(lines) + "\n")
