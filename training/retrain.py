"""`triage retrain`: seed data + reviewer corrections -> a tracked, registered, gated model version.

Stages (pure): `merge_corrections` (a correction overrides the seed label of the same message; corrections
of test-split messages are held out), `flatten_metrics`, `gate` (the candidate against the champion).
The pipeline `retrain` writes the derived training set to a run folder under `var/retrain/`, trains with
`training.train`, and does all its tracking through `training.registry` (the only module that talks to
MLflow): one run with params, data hashes and counts, metrics overall and per language, plots and the
model folder; one registered version; alias `champion` if the gate passes, else `challenger`.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from serving.labels import LANGUAGES
from serving.model import sha256_file
from serving.settings import Settings
from training import registry
from training.data import OPTIONAL, REQUIRED, load_dataset
from training.evaluate import TRIAGE_KEYS
from training.export import write_json
from training.train import TrainConfig, build_model, fit

log = logging.getLogger("triage.retrain")

SCHEMA = (*REQUIRED, *OPTIONAL)
PLOTS = ("confusion_risk.png", "confusion_claim_type.png", "per_language.png")
COMPARED = ("tier1_recall", "risk_macro_f1", "claim_type_macro_f1", "claim_filed_recall", "tier1_precision")


# -- merge ------------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """The identity of a message: its text with runs of whitespace collapsed and the ends trimmed."""
    return " ".join(str(text).split())


@dataclass
class Merge:
    """The training set after corrections, and what the corrections did to it."""

    train: pd.DataFrame  # the rows to train on, SCHEMA columns
    applied: pd.DataFrame  # corrections trained on; `change` is new | relabel | confirm
    held_out: pd.DataFrame  # corrections of messages in the test split: never trained on
    seed_rows: int
    correction_rows: int  # rows in the corrections file
    superseded: int  # older corrections of a message a newer one replaced

    @property
    def overriding(self) -> int:
        """Applied corrections of a message the seed data already had (relabelled or confirmed)."""
        return int((self.applied["change"] != "new").sum())

    @property
    def relabelled(self) -> int:
        return int((self.applied["change"] == "relabel").sum())

    def counts(self) -> dict[str, int]:
        """Flat counts for tracking: rows, corrections, and per language / label of both."""
        out = {
            "seed_rows": self.seed_rows, "train_rows": len(self.train),
            "corrections.rows": self.correction_rows, "corrections.applied": len(self.applied),
            "corrections.overriding": self.overriding, "corrections.relabelled": self.relabelled,
            "corrections.new": int((self.applied["change"] == "new").sum()),
            "corrections.held_out": len(self.held_out), "corrections.superseded": self.superseded,
        }
        for prefix, df in (("train", self.train), ("corrections", self.applied)):
            for col in ("language", "risk", "claim_type"):
                for value, n in df[col].value_counts().sort_index().items():
                    out[f"{prefix}.{col}.{value}"] = int(n)
        return out


def merge_corrections(seed: pd.DataFrame, corrections: pd.DataFrame | None, test: pd.DataFrame) -> Merge:
    """Seed rows plus corrections, one row per message (same text after whitespace normalisation).

    The newest correction of a message wins (by `labeled_at`, then file order) and replaces the seed row
    of that message; a correction of a test-split message is held out so the test split stays unseen.
    """
    seed = seed.copy()
    seed["_key"] = seed["text"].map(normalize_text)
    empty = pd.DataFrame(columns=[*SCHEMA, "_key"])
    corr = corrections.copy() if corrections is not None and len(corrections) else empty.copy()
    for col in SCHEMA:
        if col not in corr:
            corr[col] = ""
    corr["_key"] = corr["text"].map(normalize_text)
    corr["_order"] = range(len(corr))
    corr = corr.sort_values(["labeled_at", "_order"], kind="stable")
    latest = corr.drop_duplicates("_key", keep="last").sort_values("_order")
    superseded = len(corr) - len(latest)

    test_keys = set(test["text"].map(normalize_text))
    in_test = latest["_key"].isin(test_keys)
    held_out, use = latest[in_test], latest[~in_test].copy()

    first_seed = seed.drop_duplicates("_key", keep="first").set_index("_key")
    prev_risk = use["_key"].map(first_seed["risk"])
    prev_claim = use["_key"].map(first_seed["claim_type"])
    use["previous_risk"] = prev_risk.fillna("")
    use["previous_claim_type"] = prev_claim.fillna("")
    same = (prev_risk == use["risk"]) & (prev_claim == use["claim_type"])
    use["change"] = "relabel"
    use.loc[prev_risk.isna(), "change"] = "new"
    use.loc[same, "change"] = "confirm"
    use.loc[use["source"].fillna("") == "", "source"] = "correction"

    kept_seed = seed[~seed["_key"].isin(set(use["_key"]))]
    train = pd.concat([kept_seed[list(SCHEMA)], use[list(SCHEMA)]], ignore_index=True).fillna("")
    extra = [c for c in use.columns if c not in SCHEMA and not c.startswith("_") and c != "line"]
    applied = use[[*SCHEMA, *extra]].reset_index(drop=True)
    held = held_out[[c for c in held_out.columns if not c.startswith("_") and c != "line"]]
    held = held.reset_index(drop=True)
    return Merge(train=train, applied=applied, held_out=held, seed_rows=len(seed),
                 correction_rows=len(corr), superseded=superseded)


# -- metrics and the gate -----------------------------------------------------------------------
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
        return (f"{self.metric}: {self.candidate:.4f} vs champion {self.champion:.4f} "
                f"({0.0 - (self.drop or 0.0):+.2f} points, allowed -{self.allowed_drop:.2f}) {verdict}")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    checks: tuple[GateCheck, ...] = ()
    champion_version: str | None = None

    def as_tags(self) -> dict[str, str]:
        return {"gate.passed": str(self.passed).lower(), "gate.reason": self.reason[:4900],
                "gate.champion_version": self.champion_version or ""}


def gate(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
         champion_version: str | None = None, policy: GatePolicy | None = None) -> GateDecision:
    """May the candidate replace the champion? `candidate` / `champion` are flat run metrics."""
    policy = policy or GatePolicy()
    if champion is None:
        if "test.tier1_recall" not in candidate:
            return GateDecision(False, "no test metrics for the candidate: it cannot be judged")
        return GateDecision(True, "no champion yet: the first registered version becomes champion")
    checks = [GateCheck("test.tier1_recall", champion.get("test.tier1_recall"),
                        candidate.get("test.tier1_recall"), policy.tier1_recall_drop)]
    checks += [GateCheck(f"test.{lang}.tier1_recall", champion.get(f"test.{lang}.tier1_recall"),
                         candidate.get(f"test.{lang}.tier1_recall"), policy.language_tier1_recall_drop)
               for lang in LANGUAGES]
    checks.append(GateCheck("test.risk_macro_f1", champion.get("test.risk_macro_f1"),
                            candidate.get("test.risk_macro_f1"), policy.risk_macro_f1_drop))
    failed = [c for c in checks if not c.passed]
    versus = f"champion (version {champion_version})" if champion_version else "the champion"
    if failed:
        reason = f"worse than {versus}: " + "; ".join(c.describe() for c in failed)
    else:
        reason = f"passes the gate against {versus}: " + "; ".join(
            c.describe() for c in checks if c.metric in ("test.tier1_recall", "test.risk_macro_f1"))
    return GateDecision(not failed, reason, tuple(checks), champion_version)


def comparison_table(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
                     keys: tuple[str, ...] = COMPARED) -> str:
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


# -- the pipeline -------------------------------------------------------------------------------
@dataclass
class RetrainResult:
    run_id: str
    run_url: str | None
    run_dir: Path
    model_folder: Path
    model_version: str  # the folder's version name
    registered: registry.VersionInfo
    alias: str  # champion | challenger
    decision: GateDecision
    promoted: bool
    previous_champion: registry.VersionInfo | None
    metrics: dict[str, float]
    counts: dict[str, int]
    merge: Merge = field(repr=False)

    @property
    def version(self) -> str:
        return self.registered.version

    @property
    def champion_metrics(self) -> dict[str, float] | None:
        return dict(self.previous_champion.metrics) if self.previous_champion else None

    def report(self) -> str:
        c = self.counts
        before = (f"champion before: version {self.previous_champion.version}" if self.previous_champion
                  else "champion before: none")
        lines = [
            f"training rows: {c['train_rows']} (seed {c['seed_rows']}; corrections: "
            f"{c['corrections.applied']} applied = {c['corrections.new']} new + "
            f"{c['corrections.overriding']} overriding a seed label "
            f"({c['corrections.relabelled']} relabelled); {c['corrections.held_out']} held out (test split); "
            f"{c['corrections.superseded']} superseded by newer ones)",
            f"MLflow run {self.run_id}" + (f" ({self.run_url})" if self.run_url else ""),
            f"registered {self.registered.uri} (model {self.model_version}); {before}",
            "",
            "test split, champion -> candidate (points):",
            comparison_table(self.metrics, self.champion_metrics),
            "",
            f"gate: {'PASSED' if self.decision.passed else 'FAILED'}: {self.decision.reason}",
        ]
        if self.promoted:
            lines.append(f"version {self.version} is now `{registry.CHAMPION}`; reload servers with "
                         "POST /admin/reload")
        else:
            why = "" if not self.decision.passed else " (registered without promotion: --no-promote); " \
                f"promote it with `triage promote --version {self.version}`"
            lines.append(f"version {self.version} is `{self.alias}`{why}; the champion is unchanged")
        return "\n".join(lines)


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def retrain(
    settings: Settings,
    *,
    data: Path | None = None,
    corrections: Path | None = None,
    test: Path | None = None,
    c: float = 10.0,
    promote: bool = True,
    policy: GatePolicy | None = None,
    progress: bool = False,
    run_name: str | None = None,
) -> RetrainResult:
    """Merge, train, evaluate, track, register and gate one model; see the module docstring.

    `corrections` defaults to `data_dir/corrections.csv` when it exists. With `promote=False` the new
    version is only `challenger`, whatever the gate says (the notebook promotes after a look).
    """
    policy = policy or GatePolicy()
    data = data or settings.data_dir / "train.csv"
    test = test or settings.data_dir / "test.csv"
    if corrections is None and (settings.data_dir / "corrections.csv").is_file():
        corrections = settings.data_dir / "corrections.csv"

    seed_df = load_dataset(data)
    test_df = load_dataset(test)
    corr_df = load_dataset(corrections) if corrections is not None else None
    # before spending a training run: is MLflow there, and who is champion?
    previous = registry.champion(settings)
    registry.ensure_experiment(settings)

    merge = merge_corrections(seed_df, corr_df, test_df)
    now = datetime.now(UTC)
    run_dir = settings.var_dir / "retrain" / f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True)
    merged_csv = _write_csv(merge.train, data_dir / "train.csv")
    _write_csv(merge.applied, data_dir / "corrections_applied.csv")
    _write_csv(merge.held_out, data_dir / "corrections_held_out.csv")
    counts = merge.counts()
    hashes = {
        "data.seed_sha256": sha256_file(data),
        "data.corrections_sha256": sha256_file(corrections) if corrections is not None else "none",
        "data.test_sha256": sha256_file(test),
        "data.train_sha256": sha256_file(merged_csv),
    }
    write_json(data_dir / "summary.json", {"counts": counts, "hashes": hashes, "seed": str(data),
                                           "corrections": str(corrections) if corrections else None,
                                           "test": str(test)})
    log.info("training on %d rows (%d corrections applied, %d held out)", len(merge.train),
             len(merge.applied), len(merge.held_out))

    cfg = TrainConfig(
        data=merged_csv, test=test, out=run_dir / "model", models_dir=run_dir, encoder=settings.encoder,
        cache_dir=settings.cache_dir, c=c, seed=settings.seed, risk_threshold=settings.review_threshold,
        claim_type_threshold=settings.claim_type_review_threshold, progress=progress,
        extra={"seed_data": str(data), "seed_sha256": hashes["data.seed_sha256"],
               "corrections": str(corrections) if corrections else None,
               "corrections_sha256": hashes["data.corrections_sha256"],
               "corrections_applied": len(merge.applied), "corrections_held_out": len(merge.held_out)},
    )
    folder = build_model(fit(cfg), cfg)
    config = json.loads((folder / "config.json").read_text())
    folder_metrics = json.loads((folder / "metrics.json").read_text())
    metrics = flatten_metrics(folder_metrics, config["default_variant"])
    decision = gate(metrics, dict(previous.metrics) if previous else None,
                    previous.version if previous else None, policy)

    params: dict[str, Any] = {
        "encoder": config["encoder"]["id"], "c": c, "class_weight": cfg.class_weight, "seed": cfg.seed,
        # every other scalar training knob (e.g. the Tier-1 precision target), and the folder's thresholds
        **{k: v for k, v in vars(cfg).items()
           if k not in ("c", "encoder", "progress") and isinstance(v, int | float | str) and not isinstance(v, bool)},
        **{f"review.{k}": v for k, v in config.get("review", {}).items()},
        "served_variant": config["default_variant"], "model_version": config["version"],
        "registered_model": settings.registered_model, "seed_data": str(data),
        "corrections": str(corrections) if corrections else "none", "test": str(test), "promote": promote,
    } | hashes | policy.as_params()
    run_metrics = metrics | {f"data.{k}": float(v) for k, v in counts.items()}
    artifacts: dict[str, Path] = {"model": folder, "data": data_dir}
    artifacts |= {f"plots/{p}": folder / p for p in PLOTS if (folder / p).is_file()}
    run = registry.log_run(
        settings, run_name=run_name or f"retrain-{config['version']}", params=params, metrics=run_metrics,
        tags={"triage.model_version": config["version"], "triage.kind": "retrain"} | decision.as_tags(),
        artifacts=artifacts,
    )
    registered = registry.register_version(
        settings, run, tags={"model_version": config["version"]} | decision.as_tags(),
        description=decision.reason[:4900],
    )
    promoted = promote and decision.passed
    if promoted:
        registry.promote(settings, registered.version)
        alias = registry.CHAMPION
    else:
        registry.set_alias(settings, registry.CHALLENGER, registered.version)
        alias = registry.CHALLENGER
    registry.set_run_tags(settings, run.run_id,
                          {"registry.version": registered.version, "registry.alias": alias})
    registered = registry.get_version(
        settings, registry.ModelRef(settings.registered_model, version=registered.version)) or registered
    return RetrainResult(
        run_id=run.run_id, run_url=run.url, run_dir=run_dir, model_folder=folder,
        model_version=config["version"], registered=registered, alias=alias, decision=decision,
        promoted=promoted, previous_champion=previous, metrics=metrics, counts=counts, merge=merge,
    )
