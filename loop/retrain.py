"""`triage retrain`: seed data + reviewer corrections -> a tracked, registered, gated model version.

Stages (pure): `loop.corrections.apply_corrections` (a correction overrides the seed label of the same
message; corrections of test-split messages are held out), `loop.gate` (flat metrics, the candidate against
the champion). This pipeline writes the derived training set to a run folder under `var/retrain/`, trains
with `training.train`, and does all its tracking through `loop.registry` (the only module that talks to
MLflow): one run with params, data hashes and counts, metrics overall and per language, plots and the
model folder; one registered version; alias `champion` if the gate passes, else `challenger`.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from loop import registry
from loop.corrections import FILE_NAME, Corrected, apply_corrections
from loop.gate import GateDecision, GatePolicy, comparison_table, flatten_metrics, gate
from loop.promote import promote as promote_version
from serving.files import atomic_write, sha256_file, write_json
from serving.settings import Settings
from training.data import load_dataset
from training.train import TrainConfig, build_model, fit

log = logging.getLogger("triage.retrain")

PLOTS = ("confusion_risk.png", "confusion_claim_type.png", "per_language.png")


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
    merge: Corrected = field(repr=False)

    @property
    def version(self) -> str:
        return self.registered.version

    @property
    def champion_metrics(self) -> dict[str, float] | None:
        return dict(self.previous_champion.metrics) if self.previous_champion else None

    def report(self) -> str:
        c = self.counts
        before = (
            f"champion before: version {self.previous_champion.version}"
            if self.previous_champion
            else "champion before: none"
        )
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
            lines.append(f"version {self.version} is now `{registry.CHAMPION}`; reload servers with POST /admin/reload")
        else:
            why = (
                ""
                if not self.decision.passed
                else " (registered without promotion: --no-promote); "
                f"promote it with `triage promote --version {self.version}`"
            )
            lines.append(f"version {self.version} is `{self.alias}`{why}; the champion is unchanged")
        return "\n".join(lines)


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_write(path, newline="") as f:
        df.to_csv(f, index=False)
    return path


def retrain(
    settings: Settings,
    *,
    data: Path | None = None,
    corrections: Path | None = None,
    test: Path | None = None,
    c: float | None = None,
    promote: bool = True,
    policy: GatePolicy | None = None,
    progress: bool = False,
    run_name: str | None = None,
) -> RetrainResult:
    """Merge, train, evaluate, track, register and gate one model; see the module docstring.

    `corrections` defaults to `data_dir/corrections.csv` when it exists; `c` to `settings.head_c`. With
    `promote=False` the new version is only `challenger`, whatever the gate says (the notebook promotes
    after a look).
    """
    policy = policy or GatePolicy()
    data = data or settings.data_dir / "train.csv"
    test = test or settings.data_dir / "test.csv"
    if corrections is None and (settings.data_dir / FILE_NAME).is_file():
        corrections = settings.data_dir / FILE_NAME

    seed_df = load_dataset(data)
    test_df = load_dataset(test)
    corr_df = load_dataset(corrections) if corrections is not None else None
    # before spending a training run: is MLflow there, and who is champion?
    previous = registry.champion(settings)
    registry.ensure_experiment(settings)

    merge = apply_corrections(seed_df, corr_df, test_df)
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
    write_json(
        data_dir / "summary.json",
        {
            "counts": counts,
            "hashes": hashes,
            "seed": str(data),
            "corrections": str(corrections) if corrections else None,
            "test": str(test),
        },
    )
    log.info(
        "training on %d rows (%d corrections applied, %d held out)",
        len(merge.train),
        len(merge.applied),
        len(merge.held_out),
    )

    cfg = TrainConfig.from_settings(
        settings,
        data=merged_csv,
        test=test,
        out=run_dir / "model",
        models_dir=run_dir,
        c=c or settings.head_c,
        progress=progress,
        extra={
            "seed_data": str(data),
            "seed_sha256": hashes["data.seed_sha256"],
            "corrections": str(corrections) if corrections else None,
            "corrections_sha256": hashes["data.corrections_sha256"],
            "corrections_applied": len(merge.applied),
            "corrections_held_out": len(merge.held_out),
        },
    )
    folder = build_model(fit(cfg), cfg)
    config = json.loads((folder / "config.json").read_text())
    folder_metrics = json.loads((folder / "metrics.json").read_text())
    metrics = flatten_metrics(folder_metrics, config["default_variant"])
    decision = gate(
        metrics, dict(previous.metrics) if previous else None, previous.version if previous else None, policy
    )

    params: dict[str, Any] = (
        {
            "encoder": config["encoder"]["id"],
            "c": cfg.c,
            "class_weight": cfg.class_weight,
            "seed": cfg.seed,
            # every other scalar training knob (e.g. the Tier-1 precision target), and the folder's thresholds
            **{
                k: v
                for k, v in vars(cfg).items()
                if k not in ("c", "encoder", "progress")
                and isinstance(v, int | float | str)
                and not isinstance(v, bool)
            },
            **{f"review.{k}": v for k, v in config.get("review", {}).items()},
            "served_variant": config["default_variant"],
            "model_version": config["version"],
            "registered_model": settings.registered_model,
            "seed_data": str(data),
            "corrections": str(corrections) if corrections else "none",
            "test": str(test),
            "promote": promote,
        }
        | hashes
        | policy.as_params()
    )
    run_metrics = metrics | {f"data.{k}": float(v) for k, v in counts.items()}
    artifacts: dict[str, Path] = {"model": folder, "data": data_dir}
    artifacts |= {f"plots/{p}": folder / p for p in PLOTS if (folder / p).is_file()}
    run = registry.log_run(
        settings,
        run_name=run_name or f"retrain-{config['version']}",
        params=params,
        metrics=run_metrics,
        tags={"triage.model_version": config["version"], "triage.kind": "retrain"} | decision.as_tags(),
        artifacts=artifacts,
    )
    registered = registry.register_version(
        settings,
        run,
        tags={"model_version": config["version"]} | decision.as_tags(),
        description=decision.reason[:4900],
    )
    promoted = promote and decision.passed
    if promoted:
        promote_version(settings, registered.version)
        alias = registry.CHAMPION
    else:
        registry.set_alias(settings, registry.CHALLENGER, registered.version)
        alias = registry.CHALLENGER
    registry.set_run_tags(settings, run.run_id, {"registry.version": registered.version, "registry.alias": alias})
    registered = (
        registry.get_version(settings, registry.ModelRef(settings.registered_model, version=registered.version))
        or registered
    )
    return RetrainResult(
        run_id=run.run_id,
        run_url=run.url,
        run_dir=run_dir,
        model_folder=folder,
        model_version=config["version"],
        registered=registered,
        alias=alias,
        decision=decision,
        promoted=promoted,
        previous_champion=previous,
        metrics=metrics,
        counts=counts,
        merge=merge,
    )
