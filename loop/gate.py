"""The retraining gate: may a candidate model replace the champion? Pure functions of flat run metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serving.labels import LANGUAGES
from training.metrics import TRIAGE_KEYS

COMPARED = ("tier1_recall", "risk_macro_f1", "claim_type_macro_f1", "claim_filed_recall", "tier1_precision")


def flatten_metrics(metrics: Mapping[str, Any], variant: str) -> dict[str, float]:
    """A model folder's metrics.json as flat MLflow metrics: `test.<key>`, `test.<lang>.<key>` for the
    served variant, `test_<variant>.*` for each graph, `keywords.*` for the keyword baseline."""
    out: dict[str, float] = {}

    def add(prefix: str, report: Mapping[str, Any]) -> None:
        for key in TRIAGE_KEYS:
            if report.get(key) is not None:
                out[f"{prefix}.{key}"] = float(report[key])
        for lang, sub in report.get("per_language", {}).items():
            for key in TRIAGE_KEYS:
                if sub.get(key) is not None:
                    out[f"{prefix}.{lang}.{key}"] = float(sub[key])

    tests = metrics.get("test") or {}
    if variant in tests:
        add("test", tests[variant])
    for name, report in tests.items():
        add(f"test_{name}", report)
    if metrics.get("keyword_baseline"):
        add("keywords", metrics["keyword_baseline"])
    if metrics.get("int8_gap_points") is not None:
        out["int8_gap_points"] = float(metrics["int8_gap_points"])
    for key, value in (metrics.get("parity") or {}).items():
        out[f"parity.{key}"] = float(value)
    return out


@dataclass(frozen=True)
class GatePolicy:
    """How much a retrained model may lose against the champion, in points (0-100), on the test split.

    Overall Tier-1 recall may not drop at all; each language's Tier-1 recall may drop by at most
    `language_tier1_recall_drop` (2.5 points: one Tier-1 message of the ~48 per language, so a noise-level
    swap between languages passes but a language getting worse does not); risk macro-F1 by at most 0.5.
    """

    tier1_recall_drop: float = 0.0
    language_tier1_recall_drop: float = 2.5
    risk_macro_f1_drop: float = 0.5

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
    checks = [
        GateCheck(
            "test.tier1_recall",
            champion.get("test.tier1_recall"),
            candidate.get("test.tier1_recall"),
            policy.tier1_recall_drop,
        )
    ]
    checks += [
        GateCheck(
            f"test.{lang}.tier1_recall",
            champion.get(f"test.{lang}.tier1_recall"),
            candidate.get(f"test.{lang}.tier1_recall"),
            policy.language_tier1_recall_drop,
        )
        for lang in LANGUAGES
    ]
    checks.append(
        GateCheck(
            "test.risk_macro_f1",
            champion.get("test.risk_macro_f1"),
            candidate.get("test.risk_macro_f1"),
            policy.risk_macro_f1_drop,
        )
    )
    failed = [c for c in checks if not c.passed]
    versus = f"champion (version {champion_version})" if champion_version else "the champion"
    if failed:
        reason = f"worse than {versus}: " + "; ".join(c.describe() for c in failed)
    else:
        reason = f"passes the gate against {versus}: " + "; ".join(
            c.describe() for c in checks if c.metric in ("test.tier1_recall", "test.risk_macro_f1")
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
