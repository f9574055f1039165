"""The MLflow tracking server and model registry: the only module that talks to MLflow.

A registered model version is a plain artifact folder (our model folder, `models/README.md`), not an
MLflow "flavor": `log_run` uploads it with the run, `register_version` registers that folder, aliases
(`champion`, `challenger`) say which version serves. `download_model` brings a version back into a local,
verified cache; `registry_loader` gives the FastAPI app a loader that follows an alias at every reload.

Every MLflow failure (server down, unknown model or alias, bad URI) becomes a `RegistryError`, a
`ModelError`: the CLI prints it without a traceback and `/admin/reload` answers 409 and keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Quiet, fail-fast MLflow defaults (a user's own environment wins): no telemetry, no progress bars or
# "View run" lines on stdout, and a few quick retries instead of ~4 minutes when the server is down.
for _key, _value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}.items():
    os.environ.setdefault(_key, _value)

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.entities.model_registry import ModelVersion  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from serving.app import ServiceLoader  # noqa: E402
from serving.model import Classifier, ModelError, verify_manifest  # noqa: E402
from serving.service import TriageService  # noqa: E402
from serving.settings import Settings  # noqa: E402

logging.getLogger("mlflow").setLevel(logging.WARNING)  # importing mlflow set it to INFO: keep ours quiet
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # one clear error, not each retry

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
        raise RegistryError(
            f"{uri!r} is not a registry model URI: use models:/NAME@ALIAS or models:/NAME/VERSION")
    return ModelRef(m["name"], alias=m["alias"], version=m["version"])


_USERINFO = re.compile(r"(\w+://)[^/\s@]+@")


def scrub(text: str) -> str:
    """`text` with the user:password part of every URL in it masked."""
    return _USERINFO.sub(r"\1***@", text)


def redact(uri: str) -> str:
    """A URI without any user:password part, for messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


@contextmanager
def _errors(settings: Settings, what: str) -> Iterator[None]:
    """Turn MLflow / network failures into a RegistryError that says what failed and where."""
    try:
        yield
    except RegistryError:
        raise
    except (MlflowException, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = redact(settings.tracking_uri)
        if any(s in first for s in ("Max retries exceeded", "Failed to establish a new connection")):
            raise RegistryError(f"{what} failed: cannot reach MLflow at {where} (is the server running? "
                                "MLFLOW_TRACKING_URI chooses it)") from err
        raise RegistryError(f"{what} failed (MLflow at {where}): {scrub(first)[:500]}") from err
    except Exception as err:  # requests' and urllib3's errors do not share a base class with MLflow's
        if type(err).__module__.split(".")[0] in ("requests", "urllib3", "sqlalchemy"):
            where = redact(settings.tracking_uri)
            kind = type(err).__name__
            raise RegistryError(f"{what} failed: cannot reach MLflow at {where} ({kind})") from err
        raise


def client(settings: Settings) -> MlflowClient:
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
    with _errors(settings, f"looking up experiment {settings.mlflow_experiment!r}"):
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
    with _errors(settings, "creating the MLflow run"):
        run = c.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    run_id = run.info.run_id
    try:
        with _errors(settings, f"logging run {run_id}"):
            plist = [Param(k, str(v)) for k, v in params.items()]
            for i in range(0, len(plist), 100):
                c.log_batch(run_id, params=plist[i:i + 100])
            stamp = int(run.info.start_time or 0)
            mlist = [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
            for i in range(0, len(mlist), _BATCH):
                c.log_batch(run_id, metrics=mlist[i:i + _BATCH])
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
    with _errors(settings, f"tagging run {run_id}"):
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
        name=mv.name, version=str(mv.version), run_id=mv.run_id, source=mv.source or "",
        aliases=tuple(mv.aliases or ()), tags=dict(mv.tags or {}), metrics=metrics,
    )


def register_version(settings: Settings, run: RunInfo, tags: Mapping[str, str] | None = None,
                     description: str | None = None) -> VersionInfo:
    """Register the run's model folder as a new version of `settings.registered_model` (created if new)."""
    name = settings.registered_model
    c = client(settings)
    with _errors(settings, f"registering a version of {name!r}"):
        try:
            c.get_registered_model(name)
        except MlflowException:
            try:
                c.create_registered_model(name, description="triage: A-to-Z risk and claim type, ONNX folder")
            except MlflowException:  # created meanwhile
                c.get_registered_model(name)
        mv = c.create_model_version(
            name, source=f"{run.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT}", run_id=run.run_id,
            tags=dict(tags or {}), description=description, run_link=run.url,
        )
        return _info(c, mv)


def get_version(settings: Settings, ref: ModelRef | str) -> VersionInfo | None:
    """The version a URI names (with its run's metrics); None if the model or the alias does not exist."""
    ref = parse_model_uri(ref) if isinstance(ref, str) else ref
    c = client(settings)
    with _errors(settings, f"resolving {ref}"):
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
    with _errors(settings, f"listing versions of {settings.registered_model!r}"):
        found = c.search_model_versions(f"name = '{settings.registered_model}'")
        return sorted((_info(c, mv) for mv in found), key=lambda v: int(v.version))


def set_alias(settings: Settings, alias: str, version: str) -> None:
    with _errors(settings, f"setting alias {alias!r} to version {version}"):
        client(settings).set_registered_model_alias(settings.registered_model, alias, str(version))


def delete_alias(settings: Settings, alias: str) -> None:
    with _errors(settings, f"removing alias {alias!r}"):
        try:
            client(settings).delete_registered_model_alias(settings.registered_model, alias)
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise


def set_version_tags(settings: Settings, version: str, tags: Mapping[str, str]) -> None:
    c = client(settings)
    with _errors(settings, f"tagging version {version}"):
        for k, v in tags.items():
            c.set_model_version_tag(settings.registered_model, str(version), k, v)


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    previous: str | None  # the version that was champion before


def promote(settings: Settings, version: str | int, alias: str = CHAMPION) -> Promotion:
    """Point `alias` (default `champion`) at `version`: promotion and rollback alike.

    A version promoted to champion loses the `challenger` alias if it had it. Serving processes pick
    the change up at their next POST /admin/reload.
    """
    version = str(version)
    target = get_version(settings, ModelRef(settings.registered_model, version=version))
    if target is None:
        known = ", ".join(v.version for v in list_versions(settings)) or "none"
        raise RegistryError(f"{settings.registered_model!r} has no version {version} (versions: {known})")
    before = get_version(settings, ModelRef(settings.registered_model, alias=alias))
    set_alias(settings, alias, version)
    if alias == CHAMPION and CHALLENGER in target.aliases:
        delete_alias(settings, CHALLENGER)
    return Promotion(settings.registered_model, version, before.version if before else None)


# -- serving from the registry ----------------------------------------------------------------
def _cache_dir(settings: Settings, name: str) -> Path:
    return settings.var_dir / "registry" / name


def _fetch(settings: Settings, uri: str) -> tuple[VersionInfo, Path]:
    """Resolve `uri` to a version and make sure its folder is in the local cache, verified."""
    ref = parse_model_uri(uri)
    info = get_version(settings, ref)
    if info is None:
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        raise RegistryError(
            f"{ref}: registered model {ref.name!r} has no {what} at {redact(settings.tracking_uri)} "
            "(train and register one with `triage retrain`)"
        )
    root = _cache_dir(settings, info.name)
    final = root / info.version
    origin = {"source": info.source, "run_id": info.run_id}
    stamp = root / f"{info.version}.origin.json"
    if final.is_dir():
        try:
            same = json.loads(stamp.read_text()) == origin
        except (OSError, ValueError):
            same = False
        if same:
            try:
                verify_manifest(final)
                return info, final
            except ModelError:
                pass  # corrupted cache: download again
        _discard(final)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.version}.", dir=root))
    try:
        with _errors(settings, f"downloading {info.uri} ({info.source})"):
            mlflow.artifacts.download_artifacts(
                artifact_uri=info.source, dst_path=str(staging), tracking_uri=settings.tracking_uri,
            )
        folder = staging / info.source.rstrip("/").rsplit("/", 1)[-1]
        if not folder.is_dir():
            raise RegistryError(f"{info.uri}: the downloaded artifact {info.source} is not a folder")
        try:
            verify_manifest(folder)
        except ModelError as err:
            raise RegistryError(f"{info.uri}: the registered folder does not verify: {err}") from err
        tmp_stamp = root / f".{info.version}.origin.json.tmp"
        tmp_stamp.write_text(json.dumps(origin))
        try:
            folder.rename(final)
        except OSError:  # another process finished the same download first
            verify_manifest(final)
        os.replace(tmp_stamp, stamp)
        return info, final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Move a stale cached folder out of the way first (a rename is atomic), then delete it."""
    trash = folder.with_name(f".{folder.name}.stale.{os.getpid()}")
    try:
        folder.rename(trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def download_model(settings: Settings, uri: str) -> Path:
    """The local folder of `models:/NAME@ALIAS` or `models:/NAME/VERSION`, downloaded once into
    `var_dir/registry/NAME/VERSION/` (atomically, checksums verified) and reused after that."""
    return _fetch(settings, uri)[1]


def registry_loader(settings: Settings) -> ServiceLoader:
    """A loader for `create_app` that resolves `settings.model` (models:/...) at every call, so
    POST /admin/reload serves whatever version the alias points to now."""
    if not settings.model:
        raise RegistryError("no registry model given (models:/NAME@ALIAS)")
    uri = settings.model
    parse_model_uri(uri)
    _fetch(settings, uri)  # fail now, with a clear error, rather than inside the server's startup

    def load() -> TriageService:
        info, folder = _fetch(settings, uri)
        return TriageService(Classifier.load(folder, threads=settings.threads),
                             source=f"{uri} -> {info.uri}", registry_version=info.version)

    return load
