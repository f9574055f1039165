"""The exported model: a folder with ONNX graph(s), tokenizer, labels, metrics and a manifest.

`ModelBundle` loads a folder once (checksums verified) and answers `predict_proba`; `Classifier` adds the
triage policy on top: consistent risk / claim_type, `needs_review`.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from serving.errors import TriageError
from serving.files import sha256_file, write_json
from serving.labels import CLAIM_TYPES, RISKS, ClaimType, Risk
from serving.ngrams import CharNgrams
from serving.prediction import Prediction
from serving.tokenizer import load_tokenizer, pad

CONFIG = "config.json"
MANIFEST = "manifest.json"
# padded tokens per onnxruntime call in a batch: the encoder costs about the same per token at any batch
# size, so bigger calls only add padding and cache misses (4096 ran ~2x slower than 512 and grew the
# memory arena by ~400 MB at concurrency 8; see benchmarks/README.md)
TOKEN_BUDGET = 512


class ModelError(TriageError):
    """A model folder that cannot be served (missing, incomplete, corrupted)."""


def write_manifest(folder: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """sha256 of every file in the folder; written last, so its presence marks a complete model."""
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"created_at": datetime.now(UTC).isoformat(timespec="seconds"), "files": files} | (extra or {})
    write_json(folder / MANIFEST, manifest)
    return manifest


def verify_manifest(folder: Path) -> dict[str, Any]:
    """Check every file listed in manifest.json against its sha256; return the manifest."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelError(f"{folder}: no {MANIFEST}; not a complete model folder (train or export one)")
    manifest = json.loads(path.read_text())
    for name, expected in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            raise ModelError(f"{folder}: {name} is listed in {MANIFEST} but missing")
        if sha256_file(file) != expected:
            raise ModelError(f"{folder}: {name} does not match its sha256 in {MANIFEST} (corrupted?)")
    return dict(manifest)


def find_latest(models_dir: Path) -> Path:
    """The newest complete model folder (one with a manifest) under `models_dir`."""
    candidates = sorted(
        (p for p in Path(models_dir).glob("*/") if (p / MANIFEST).is_file()),
        key=lambda p: json.loads((p / MANIFEST).read_text()).get("created_at", ""),
    )
    if not candidates:
        raise ModelError(f"no trained model under {models_dir}/ (run `triage train` first)")
    return candidates[-1]


def intra_op_threads(threads: int = 0) -> int:
    """onnxruntime threads per inference call: `threads`, or 1 by default.

    The service runs one call per core at a time (`inference_slots`) rather than spreading each call
    over every core: a call is small (a message is ~50 tokens), so a shared thread pool costs more in
    hand-offs than it gains, and concurrent requests would fight over it (see benchmarks/README.md).
    """
    return threads if threads > 0 else 1


def inference_slots(threads: int = 0) -> int:
    """How many inference calls to run at once: the CPU cores this process may use / threads per call."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // intra_op_threads(threads))


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def release_memory() -> None:
    """Give freed memory back to the system (glibc keeps freed heap pages otherwise)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def session_options(threads: int = 0) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = intra_op_threads(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


@dataclass(frozen=True)
class ReviewPolicy:
    """Routing and review thresholds, stored in the model folder's config.json (`review`), chosen at
    training time (Settings gives the defaults)."""

    risk_threshold: float  # needs_review when a Tier-1 message's chosen risk has less than this share of P(Tier 1)
    claim_type_threshold: float  # needs_review below this probability of the chosen ground
    tier1_threshold: float  # Tier 1 when P(claim_filed) + P(at_risk) reaches this
    tier1_band: float = 0.0  # needs_review when P(Tier 1) is this close to the threshold (0: folders before it)


class ModelBundle:
    """One model folder loaded for inference: tokenizer + onnxruntime session, nothing else."""

    def __init__(self, folder: Path | str, variant: str | None = None, threads: int = 0, verify: bool = True) -> None:
        self.folder = Path(folder)
        if not (self.folder / CONFIG).is_file():
            raise ModelError(f"{self.folder}: not a model folder (no {CONFIG})")
        self.manifest = verify_manifest(self.folder) if verify else {}
        self.config: dict[str, Any] = json.loads((self.folder / CONFIG).read_text())
        self.variant = variant or self.config["default_variant"]
        if self.variant not in self.config["files"]:
            raise ModelError(f"{self.folder}: no {self.variant!r} variant (has {sorted(self.config['files'])})")
        self.version: str = self.config["version"]
        self.heads: dict[str, list[str]] = {h["name"]: list(h["labels"]) for h in self.config["heads"]}
        self.tokenizer = load_tokenizer(self.folder, self.config["tokenizer"])
        spec = self.config.get("ngrams")
        self.ngrams = CharNgrams.load(self.folder, spec) if spec else None
        self.session = ort.InferenceSession(
            str(self.folder / self.config["files"][self.variant]),
            sess_options=session_options(threads),
            providers=["CPUExecutionProvider"],
        )
        self._outputs = ["embedding"] + [f"probs_{name}" for name in self.heads]

    def close(self) -> None:
        """Drop the onnxruntime session and the tokenizer (the model's memory) now, whoever still holds the
        bundle."""
        self.__dict__.pop("session", None)
        self.__dict__.pop("tokenizer", None)

    def run(self, texts: Sequence[str], ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """One onnxruntime call: `ids` are the token ids of `texts`."""
        input_ids, mask = pad(ids, self.tokenizer.pad_id)
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if self.ngrams is not None:
            feeds["ngram_ids"], feeds["ngram_weights"] = self.ngrams.transform(texts)
        return list(self.session.run(self._outputs, feeds))

    def infer(self, texts: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Embeddings (n, dim) and probabilities per head (n, k), in the order of `texts`.

        Texts are grouped by token length so a batch pads little, within TOKEN_BUDGET per call.
        """
        ids = self.tokenizer.encode_ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        results: list[list[np.ndarray]] = []
        placed: list[list[int]] = []
        group: list[int] = []
        for i in order:
            if group and len(ids[i]) * (len(group) + 1) > TOKEN_BUDGET:
                results.append(self.run([texts[j] for j in group], [ids[j] for j in group]))
                placed.append(group)
                group = []
            group.append(i)
        if group:
            results.append(self.run([texts[j] for j in group], [ids[j] for j in group]))
            placed.append(group)
        outputs = [np.empty((len(texts), r.shape[1]), np.float32) for r in results[0]] if results else []
        for idx, res in zip(placed, results, strict=True):
            for out, r in zip(outputs, res, strict=True):
                out[idx] = r
        if not outputs:
            return np.zeros((0, 0), np.float32), {name: np.zeros((0, len(lab))) for name, lab in self.heads.items()}
        return outputs[0], dict(zip(self.heads, outputs[1:], strict=True))

    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return self.infer(texts)[1]


class Classifier:
    """The triage model: risk and claim_type heads, made consistent, with a review flag."""

    name = "model"

    def __init__(self, bundle: ModelBundle, policy: ReviewPolicy | None = None) -> None:
        missing = {"risk", "claim_type"} - set(bundle.heads)
        if missing:
            raise ModelError(
                f"{bundle.folder} is not a triage model (heads {sorted(bundle.heads)}, needs risk and "
                "claim_type); evaluate it with `triage evaluate --target`"
            )
        self.bundle = bundle
        self.policy = policy or ReviewPolicy(**bundle.config["review"])
        self.version = bundle.version
        # the heads' labels as the label types (a folder with other labels is not a triage model)
        risks: dict[str, Risk] = {r: r for r in RISKS}
        claim_types: dict[str, ClaimType] = {c: c for c in CLAIM_TYPES}
        unknown = [x for x in bundle.heads["risk"] if x not in risks]
        unknown += [x for x in bundle.heads["claim_type"] if x not in claim_types or x == "none"]
        if unknown:
            raise ModelError(f"{bundle.folder}: unknown labels {unknown} in its heads")
        self._risk_labels = [risks[x] for x in bundle.heads["risk"]]
        self._ground_labels = [claim_types[x] for x in bundle.heads["claim_type"]]

    @classmethod
    def load(cls, folder: Path | str, variant: str | None = None, threads: int = 0) -> Classifier:
        return cls(ModelBundle(folder, variant=variant, threads=threads))

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probs = self.bundle.predict_proba(texts)
        return [
            decide(probs["risk"][i], probs["claim_type"][i], self._risk_labels, self._ground_labels, self.policy)
            for i in range(len(texts))
        ]


def decide(
    risk_p: np.ndarray,
    ground_p: np.ndarray,
    risk_labels: Sequence[Risk],
    ground_labels: Sequence[ClaimType],
    policy: ReviewPolicy,
) -> Prediction:
    """The triage policy on one message's head probabilities: the tier by the routing threshold, the
    risk and ground within Tier 1, consistent claim-type scores, and the review flag."""
    risk_scores: dict[str, float] = {r: 0.0 for r in RISKS}
    risk_scores |= {r: float(p) for r, p in zip(risk_labels, risk_p, strict=True)}
    p_routine = risk_scores["routine"]
    p_tier1 = 1.0 - p_routine
    risk: Risk = "routine"
    if p_tier1 >= policy.tier1_threshold:
        risk = "claim_filed" if risk_scores["claim_filed"] >= risk_scores["at_risk"] else "at_risk"
    # P(claim_type) = P(routine) for `none`, else P(Tier 1) * P(ground | Tier 1)
    claim_scores: dict[str, float] = {c: 0.0 for c in CLAIM_TYPES}
    claim_scores["none"] = p_routine
    for g, p in zip(ground_labels, ground_p, strict=True):
        claim_scores[g] = p_tier1 * float(p)
    claim_type: ClaimType = "none" if risk == "routine" else ground_labels[int(np.argmax(ground_p))]
    needs_review = abs(p_tier1 - policy.tier1_threshold) < policy.tier1_band or (
        risk != "routine"
        and (
            risk_scores[risk] < policy.risk_threshold * p_tier1 or float(np.max(ground_p)) < policy.claim_type_threshold
        )
    )
    return Prediction(risk, claim_type, risk_scores, claim_scores, needs_review)
