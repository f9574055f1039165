"""Serving from the registry: a registered version's folder in a local, verified cache, and the loader
that follows an alias at every POST /admin/reload."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import mlflow

from loop.registry import RegistryError, VersionInfo, get_version, mlflow_call, parse_model_uri
from serving.files import atomic_write
from serving.masking import mask_url
from serving.model import Classifier, ModelError, verify_manifest
from serving.service import ServiceLoader, TriageService
from serving.settings import Settings


def _cache_dir(settings: Settings, name: str) -> Path:
    return settings.var_dir / "registry" / name


def _fetch(settings: Settings, uri: str) -> tuple[VersionInfo, Path]:
    """Resolve `uri` to a version and make sure its folder is in the local cache, verified."""
    ref = parse_model_uri(uri)
    info = get_version(settings, ref)
    if info is None:
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        raise RegistryError(
            f"{ref}: registered model {ref.name!r} has no {what} at {mask_url(settings.tracking_uri)} "
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
        with mlflow_call(settings, f"downloading {info.uri} ({info.source})"):
            mlflow.artifacts.download_artifacts(
                artifact_uri=info.source,
                dst_path=str(staging),
                tracking_uri=settings.tracking_uri,
            )
        folder = staging / info.source.rstrip("/").rsplit("/", 1)[-1]
        if not folder.is_dir():
            raise RegistryError(f"{info.uri}: the downloaded artifact {info.source} is not a folder")
        try:
            verify_manifest(folder)
        except ModelError as err:
            raise RegistryError(f"{info.uri}: the registered folder does not verify: {err}") from err
        try:
            folder.rename(final)
        except OSError:  # another process finished the same download first
            verify_manifest(final)
        with atomic_write(stamp) as f:
            f.write(json.dumps(origin))
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
        return TriageService(
            Classifier.load(folder, threads=settings.threads),
            source=f"{uri} -> {info.uri}",
            registry_version=info.version,
        )

    return load
