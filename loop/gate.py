"""The retraining gate: may a candidate model replace the champion? Pure functions of flat run metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serving.labels import LANGUAGES
from training.metrics import LENGTH_BUCKETS, TRIAGE_KEYS

COMPARED = (
    "tier1_recall",
    "tier1_average_precision",
    "risk_macro_f1",
    "claim_type_macro_f1",
    "claim_filed_recall",
    "tier1_precision",
)


def bucket_id(bucket: str) -> str:
    """A length bucket as MLflow allows it in a metric name (no < or >)."""
    return bucket.replace("<", "lt").replace(">", "gt")


def flatten_metrics(metrics: Mapping[str, Any], variant: str) -> dict[str, float]:
    """A model folder's metrics.json as flat MLflow metrics: `test.<key>`, `test.<lang>.<key>` and
    `test.<lang>.<bucket>.<key>` (length buckets: lt80, 80-200, gt200) for the served variant,
    `test_<variant>.*` for each graph, `keywords.*` for the keyword baseline, `real.*` for real messages."""
    out: dict[str, float] = {}

    def put(name: str, report: Mapping[str, Any]) -> None:
        for key in TRIAGE_KEYS:
            if report.get(key) is not None:
                out[f"{name}.{key}"] = float(report[key])

    def add(prefix: str, report: Mapping[str, Any]) -> None:
        put(prefix, report)
        for lang, sub in report.get("per_language", {}).items():
            put(f"{prefix}.{lang}", sub)
        for lang, buckets in report.get("per_language_length", {}).items():
            for bucket, sub in buckets.items():
                put(f"{prefix}.{lang}.{bucket_id(bucket)}", sub)
        for bucket, sub in report.get("per_length", {}).items():
            put(f"{prefix}.{bucket_id(bucket)}", sub)

    tests = metrics.get("test") or {}
    if variant in tests:
        add("test", tests[variant])
    for name, report in tests.items():
        add(f"test_{name}", report)
    if metrics.get("keyword_baseline"):
        add("keywords", metrics["keyword_baseline"])
    real = metrics.get("real") or {}
    if variant in real:
        add("real", real[variant])
    if metrics.get("int8_flip_rate") is not None:
        out["int8_flip_rate"] = float(metrics["int8_flip_rate"])
    for key, value in (metrics.get("parity") or {}).items():
        out[f"parity.{key}"] = float(value)
    return out


@dataclass(frozen=True)
class GatePolicy:
    """How much a retrained model may lose against the champion on the test (challenge) split.

    Overall Tier-1 recall may not drop at all; each language may lose at most `language_tier1_messages`
    Tier-1 messages' worth of recall, and each language x length bucket (< 80, 80-200, > 200 characters)
    at most `length_tier1_messages`, so a model that gains overall but loses the short messages does not
    pass; the average precision of P(Tier 1) may drop by at most `tier1_average_precision_drop` points (0-100).

    The last check reads the ranking, not one threshold: each model's routing threshold is chosen for the same
    out-of-fold recall, so new data that lowers it trades precision for recall by policy; a figure taken at the
    threshold (risk macro-F1) would refuse a model that ranks as well or better for following that policy.
    """

    tier1_recall_drop: float = 0.0
    language_tier1_messages: int = 2
    length_tier1_messages: int = 1
    tier1_average_precision_drop: float = 0.5

    def as_params(self) -> dict[str, float]:
        return {f"gate.{k}": v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class GateCheck:
    metric: str  # e.g. test.tier1_recall
    champion: float | None
    candidate: float | None
    allowed_drop: float  # points

    @property
    def drop(self) -> float | None:
        if self.champion is None or self.candidate is None:
            return None
        return round((self.champion - self.candidate) * 100, 2) + 0.0  # no "-0.00"

    @property
    def passed(self) -> bool:
        if self.candidate is None:
            return self.champion is None
        return self.drop is None or self.drop <= self.allowed_drop + 1e-9

    def describe(self) -> str:
        if self.candidate is None:
            return f"{self.metric}: the candidate has no value (was it evaluated on the test split?)"
        if self.champion is None:
            return f"{self.metric}: {self.candidate:.4f} (the champion has no value)"
        verdict = "ok" if self.passed else "FAIL"
        return (
            f"{self.metric}: {self.candidate:.4f} vs champion {self.champion:.4f} "
            f"({0.0 - (self.drop or 0.0):+.2f} points, allowed -{self.allowed_drop:.2f}) {verdict}"
        )


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    checks: tuple[GateCheck, ...] = ()
    champion_version: str | None = None

    def as_tags(self) -> dict[str, str]:
        return {
            "gate.passed": str(self.passed).lower(),
            "gate.reason": self.reason[:4900],
            "gate.champion_version": self.champion_version or "",
        }


def gate(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    champion_version: str | None = None,
    policy: GatePolicy | None = None,
) -> GateDecision:
    """May the candidate replace the champion? `candidate` / `champion` are flat run metrics."""
    policy = policy or GatePolicy()
    if champion is None:
        if "test.tier1_recall" not in candidate:
            return GateDecision(False, "no test metrics for the candidate: it cannot be judged")
        return GateDecision(True, "no champion yet: the first registered version becomes champion")

    def allowed(group: str, messages: int) -> float:
        """`messages` Tier-1 messages of `group`, in recall points (+0.01: ratios are stored rounded)."""
        n = candidate.get(f"{group}.tier1_n") or champion.get(f"{group}.tier1_n")
        return round(100.0 * messages / n + 0.01, 2) if n else 0.0

    def check(group: str, allowed_drop: float, key: str = "tier1_recall") -> GateCheck:
        return GateCheck(
            f"{group}.{key}", champion.get(f"{group}.{key}"), candidate.get(f"{group}.{key}"), allowed_drop
        )

    checks = [check("test", policy.tier1_recall_drop)]
    for lang in LANGUAGES:
        group = f"test.{lang}"
        checks.append(check(group, allowed(group, policy.language_tier1_messages)))
        for bucket, _, _ in LENGTH_BUCKETS:
            sub = f"{group}.{bucket_id(bucket)}"
            if f"{sub}.tier1_recall" in candidate or f"{sub}.tier1_recall" in champion:
                checks.append(check(sub, allowed(sub, policy.length_tier1_messages)))
    checks.append(check("test", policy.tier1_average_precision_drop, "tier1_average_precision"))
    failed = [c for c in checks if not c.passed]
    versus = f"champion (version {champion_version})" if champion_version else "the champion"
    if failed:
        reason = f"worse than {versus}: " + "; ".join(c.describe() for c in failed)
    else:
        reason = f"passes the gate against {versus}: " + "; ".join(
            c.describe() for c in checks if c.metric in ("test.tier1_recall", "test.tier1_average_precision")
        )
    return GateDecision(not failed, reason, tuple(checks), champion_version)


def comparison_table(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, keys: tuple[str, ...] = COMPARED
) -> str:
    """Markdown table: each metric overall and per language, champion -> candidate."""
    cols = ("all", *LANGUAGES)
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for key in keys:
        cells = []
        for col in cols:
            name = f"test.{key}" if col == "all" else f"test.{col}.{key}"
            new = candidate.get(name)
            old = champion.get(name) if champion else None
            if new is None:
                cells.append("-")
            elif old is None:
                cells.append(f"{new:.4f}")
            else:
                cells.append(f"{old:.4f} -> {new:.4f} ({(new - old) * 100:+.1f})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
