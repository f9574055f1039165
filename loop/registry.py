"""The MLflow tracking server and model registry: the only module that talks to MLflow.

A registered model version is a plain artifact folder (our model folder, `models/README.md`), not an
MLflow "flavor": `log_run` uploads it with the run, `register_version` registers that folder, aliases
(`champion`, `challenger`) say which version serves (`loop.promote` moves them). `loop.download` brings a
version back into a local, verified cache for serving.

Every MLflow failure (server down, unknown model or alias, bad URI) becomes a `RegistryError`, a
`ModelError`: the CLI prints it without a traceback and `/admin/reload` answers 409 and keeps serving.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from serving.masking import mask_text, mask_url
from serving.model import ModelError
from serving.settings import Settings

MODEL_ARTIFACT = "model"  # where the model folder sits in a run's artifacts
CHAMPION = "champion"
CHALLENGER = "challenger"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
_BATCH = 900  # MLflow accepts up to 1000 metrics / 100 params per log_batch call


class RegistryError(ModelError):
    """The MLflow tracking server or registry could not do what was asked (the message says why)."""


@dataclass(frozen=True)
class ModelRef:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION`."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version, with the metrics of the run that produced it."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    artifact_uri: str
    url: str | None  # the run's page when the tracking store is a server


def parse_model_uri(uri: str) -> ModelRef:
    m = _URI.match(uri.strip())
    if not m:
        raise RegistryError(f"{uri!r} is not a registry model URI: use models:/NAME@ALIAS or models:/NAME/VERSION")
    return ModelRef(m["name"], alias=m["alias"], version=m["version"])


@contextmanager
def mlflow_call(settings: Settings, what: str) -> Iterator[None]:
    """Turn MLflow / network failures into a RegistryError that says what failed and where."""
    try:
        yield
    except RegistryError:
        raise
    except (MlflowException, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = mask_url(settings.tracking_uri)
        if any(s in first for s in ("Max retries exceeded", "Failed to establish a new connection")):
            raise RegistryError(
                f"{what} failed: cannot reach MLflow at {where} (is the server running? MLFLOW_TRACKING_URI chooses it)"
            ) from err
        raise RegistryError(f"{what} failed (MLflow at {where}): {mask_text(first)[:500]}") from err
    except Exception as err:  # requests' and urllib3's errors do not share a base class with MLflow's
        if type(err).__module__.split(".")[0] in ("requests", "urllib3", "sqlalchemy"):
            where = mask_url(settings.tracking_uri)
            kind = type(err).__name__
            raise RegistryError(f"{what} failed: cannot reach MLflow at {where} ({kind})") from err
        raise


def configure(settings: Settings) -> None:
    """Quiet, fail-fast MLflow defaults (a user's own MLFLOW_* environment wins): no telemetry, no progress
    bars or "View run" lines on stdout, and `settings.mlflow_http_retries` quick retries instead of ~4
    minutes of them when the server is down. MLflow reads these at each call, so this runs before each."""
    for key, value in {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.mlflow_http_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(settings.mlflow_http_timeout),
    }.items():
        os.environ.setdefault(key, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # importing mlflow set it to INFO
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # one clear error, not each retry


def client(settings: Settings) -> MlflowClient:
    """The one way to MLflow: configured, on `settings.tracking_uri` for runs and registry alike."""
    configure(settings)
    uri = settings.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _is_server(uri: str) -> bool:
    return uri.split(":", 1)[0] in ("http", "https", "databricks")


def ensure_experiment(settings: Settings) -> str:
    """The id of `settings.mlflow_experiment`, created if missing.

    With a local store (sqlite) artifacts go to `var_dir/mlflow-artifacts`, not `./mlruns`; a server
    decides for itself (ours proxies them to its `--artifacts-destination`).
    """
    c = client(settings)
    with mlflow_call(settings, f"looking up experiment {settings.mlflow_experiment!r}"):
        exp = c.get_experiment_by_name(settings.mlflow_experiment)
        if exp is not None:
            return str(exp.experiment_id)
        location = None
        if not _is_server(settings.tracking_uri):
            folder = (settings.var_dir / "mlflow-artifacts").resolve()
            folder.mkdir(parents=True, exist_ok=True)
            location = folder.as_uri()
        try:
            return str(c.create_experiment(settings.mlflow_experiment, artifact_location=location))
        except MlflowException:  # created meanwhile by another process
            exp = c.get_experiment_by_name(settings.mlflow_experiment)
            if exp is None:
                raise
            return str(exp.experiment_id)


# -- tracking ---------------------------------------------------------------------------------
def log_run(
    settings: Settings,
    *,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artifacts: Mapping[str, Path],
) -> RunInfo:
    """One finished run: params, metrics, tags, and `artifacts` (artifact path -> local file or folder).

    A failure part-way marks the run FAILED (it stays in the store, visibly) and raises RegistryError.
    """
    experiment_id = ensure_experiment(settings)
    c = client(settings)
    with mlflow_call(settings, "creating the MLflow run"):
        run = c.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    run_id = run.info.run_id
    try:
        with mlflow_call(settings, f"logging run {run_id}"):
            plist = [Param(k, str(v)) for k, v in params.items()]
            for i in range(0, len(plist), 100):
                c.log_batch(run_id, params=plist[i : i + 100])
            stamp = int(run.info.start_time or 0)
            mlist = [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
            for i in range(0, len(mlist), _BATCH):
                c.log_batch(run_id, metrics=mlist[i : i + _BATCH])
            for path, local in artifacts.items():
                if local.is_dir():
                    c.log_artifacts(run_id, str(local), path)
                else:
                    c.log_artifact(run_id, str(local), path.rsplit("/", 1)[0] if "/" in path else None)
            c.set_terminated(run_id, "FINISHED")
    except BaseException:
        with suppress(Exception):  # the first error is the one to report
            c.set_terminated(run_id, "FAILED")
        raise
    url = None
    if _is_server(settings.tracking_uri):
        url = f"{settings.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return RunInfo(run_id, experiment_id, run.info.artifact_uri, url)


def set_run_tags(settings: Settings, run_id: str, tags: Mapping[str, str]) -> None:
    with mlflow_call(settings, f"tagging run {run_id}"):
        client(settings).log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


# -- registry ---------------------------------------------------------------------------------
def _info(c: MlflowClient, mv: ModelVersion, with_metrics: bool = True) -> VersionInfo:
    metrics: dict[str, float] = {}
    if with_metrics and mv.run_id:
        try:
            metrics = dict(c.get_run(mv.run_id).data.metrics)
        except MlflowException:  # the run was deleted: the version still serves
            metrics = {}
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source or "",
        aliases=tuple(mv.aliases or ()),
        tags=dict(mv.tags or {}),
        metrics=metrics,
    )


def register_version(
    settings: Settings, run: RunInfo, tags: Mapping[str, str] | None = None, description: str | None = None
) -> VersionInfo:
    """Register the run's model folder as a new version of `settings.registered_model` (created if new)."""
    name = settings.registered_model
    c = client(settings)
    with mlflow_call(settings, f"registering a version of {name!r}"):
        try:
            c.get_registered_model(name)
        except MlflowException:
            try:
                c.create_registered_model(name, description="triage: A-to-Z risk and claim type, ONNX folder")
            except MlflowException:  # created meanwhile
                c.get_registered_model(name)
        mv = c.create_model_version(
            name,
            source=f"{run.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT}",
            run_id=run.run_id,
            tags=dict(tags or {}),
            description=description,
            run_link=run.url,
        )
        return _info(c, mv)


def get_version(settings: Settings, ref: ModelRef | str) -> VersionInfo | None:
    """The version a URI names (with its run's metrics); None if the model or the alias does not exist."""
    ref = parse_model_uri(ref) if isinstance(ref, str) else ref
    c = client(settings)
    with mlflow_call(settings, f"resolving {ref}"):
        try:
            c.get_registered_model(ref.name)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        try:
            if ref.alias:
                mv = c.get_model_version_by_alias(ref.name, ref.alias)
            else:
                mv = c.get_model_version(ref.name, str(ref.version))
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise
        return _info(c, mv)


def champion(settings: Settings) -> VersionInfo | None:
    return get_version(settings, ModelRef(settings.registered_model, alias=CHAMPION))


def list_versions(settings: Settings) -> list[VersionInfo]:
    """Every version of `settings.registered_model`, oldest first (empty if it does not exist)."""
    c = client(settings)
    with mlflow_call(settings, f"listing versions of {settings.registered_model!r}"):
        found = c.search_model_versions(f"name = '{settings.registered_model}'")
        return sorted((_info(c, mv) for mv in found), key=lambda v: int(v.version))


def set_alias(settings: Settings, alias: str, version: str) -> None:
    with mlflow_call(settings, f"setting alias {alias!r} to version {version}"):
        client(settings).set_registered_model_alias(settings.registered_model, alias, str(version))


def delete_alias(settings: Settings, alias: str) -> None:
    with mlflow_call(settings, f"removing alias {alias!r}"):
        try:
            client(settings).delete_registered_model_alias(settings.registered_model, alias)
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise
