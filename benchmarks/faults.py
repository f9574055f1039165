"""Faults under load: a real `triage serve` on loopback at concurrency 16 for 20,000 requests while the model
is hot-reloaded three times (once to a folder tampered with after its manifest was written), the prediction
log's database is locked for a while, and the process is `kill -9`-ed and restarted.

    python -m benchmarks.faults [--model DIR] [--requests 20000] [--concurrency 16]

Prints a table and writes benchmarks/results/faults-<UTC time>.json. `tests/test_faults.py` runs the same
function and asserts on its result. The load comes from `benchmarks.load` in its own process (API key
header, every 200's request id and time to a file, reconnecting through the restart); the faults are
triggered by how many answers have been acknowledged so far, so the schedule holds on a fast or a slow
machine:

| acknowledged | fault |
|---|---|
| 1,500 | reload 1: a new model folder (version `...-r1`): must be served, no request may fail |
| 3,500 | `kill -9`, then the same command again on the same port |
| 6,000 | RSS of the new process ("start") |
| 7,000 | reload 2: a newer folder whose config.json changed after its manifest: refused (409), old model serves |
| 9,000 | the database is locked (`BEGIN EXCLUSIVE`) for 2 s, with writes waiting at most 0.5 s: 503s, then recovery |
| 12,000 | reload 3: another good folder (`...-r3`) |
| the end | RSS ("end"); every request answered 200 is in the log, those before the kill included |
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import RESULTS, write_result
from benchmarks.server import HOST, Server, free_port, write_payloads
from serving.keys import create_key
from serving.model import CONFIG, write_manifest

REPO = Path(__file__).resolve().parent.parent
DB_LOCK_S = 2.0
DB_TIMEOUT_S = 0.5
# when each fault happens, as the acknowledged answers reach this share of the run (for 20,000 requests: reload
# at 1,500, kill at 3,500, RSS at 6,000, tampered reload at 7,000, database lock at 9,000, reload at 12,000), so a
# shorter run (`make bench BENCH_ARGS=--quick`) still meets every fault
SCHEDULE = {"reload1": 0.075, "kill": 0.175, "rss_start": 0.30, "reload2": 0.35, "db_lock": 0.45, "reload3": 0.60}


def copy_model(src: Path, dst: Path, version: str, tamper: bool = False) -> Path:
    """A copy of model folder `src` as `version` (big files hard-linked), with a new manifest; `tamper`
    changes config.json after the manifest was written, as an attacker or a broken sync would."""
    staging = dst.parent / f".{dst.name}.staging"
    staging.mkdir(parents=True)
    for f in src.rglob("*"):
        if f.is_dir() or f.name == "manifest.json":
            continue
        out = staging / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if f.stat().st_size > 1 << 20:
            os.link(f, out)
        else:
            shutil.copy2(f, out)
    config = json.loads((staging / CONFIG).read_text())
    config["version"] = version
    (staging / CONFIG).write_text(json.dumps(config, indent=2))
    write_manifest(staging)
    if tamper:
        config["review"]["tier1_threshold"] = 0.01  # everything to Tier 1
        (staging / CONFIG).write_text(json.dumps(config, indent=2))
    staging.rename(dst)  # complete, or not there at all
    return dst


def http(method: str, port: int, path: str, headers: dict[str, str], timeout: float = 120.0) -> tuple[int, Any]:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers)
        res = conn.getresponse()
        body = res.read()
        try:
            return res.status, json.loads(body)
        except ValueError:
            return res.status, body.decode(errors="replace")
    finally:
        conn.close()


@dataclass
class Window:
    name: str
    start: float
    end: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def acknowledged(ids: Path) -> int:
    try:
        with ids.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def run_faults(
    model: Path,
    workdir: Path,
    texts: Sequence[str],
    requests: int = 20_000,
    concurrency: int = 16,
    max_seconds: float = 600.0,
) -> dict[str, Any]:
    """Run the load with the faults of the module docstring; return every count and time (see `summarise`)."""
    models = workdir / "models"
    base = json.loads((model / CONFIG).read_text())["version"]
    copy_model(model, models / "v0", base)
    keys = workdir / "api-keys"
    load_key, _ = create_key(keys, "load", ["classify"])
    admin_key, _ = create_key(keys, "ops", ["admin"])
    db = workdir / "triage.db"
    env = {
        "TRIAGE_MODELS_DIR": str(models),
        "TRIAGE_MODEL": "",
        "TRIAGE_API_KEYS_FILE": str(keys),
        "TRIAGE_DATABASE_URL": f"sqlite:///{db}",
        "TRIAGE_DATABASE_TIMEOUT": str(DB_TIMEOUT_S),
        "TRIAGE_VAR_DIR": str(workdir / "var"),
    }
    auth = {"Authorization": f"Bearer {load_key}"}
    admin = {"Authorization": f"Bearer {admin_key}"}
    payloads = write_payloads(workdir / "bodies.jsonl", [{"text": t} for t in texts])
    ids = workdir / "acknowledged.txt"
    probe = json.dumps({"text": texts[0]}).encode()
    windows: list[Window] = []
    rss: dict[str, dict[str, float]] = {}
    server = Server(None, cwd=workdir, log=workdir / "server.log", extra_env=env, headers=auth)
    port = free_port()
    out = workdir / "load.json"
    try:
        server.start(probe, port=port)
        assert server.proc is not None
        first_pid = server.proc.pid
        rss["first_process_start"] = server.memory_mb()
        cmd = [
            sys.executable, "-m", "benchmarks.load", "--url", f"http://{HOST}:{port}/classify",
            "--payloads", str(payloads), "--concurrency", str(concurrency), "--requests", str(requests),
            "--duration", str(max_seconds), "--warmup", "0", "--timeout", "30", "--reconnect",
            "--header", f"Authorization: Bearer {load_key}", "--ids", str(ids),
        ]  # fmt: skip
        with out.open("w") as stdout:
            load = subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True)
        t_load = time.time()
        done: set[str] = set()

        def due(step: str) -> bool:
            return step not in done and acknowledged(ids) >= SCHEDULE[step] * requests

        def reload(name: str, folder: str, tamper: bool) -> None:
            copy_model(model, models / folder, f"{base}-{folder}", tamper=tamper)
            w = Window(name, time.time())
            status, body = http("POST", port, "/admin/reload", admin)
            w.end = time.time()
            _, health = http("GET", port, "/health", {})
            w.detail = {"status": status, "answer": body, "serving_after": health.get("model_version")}
            windows.append(w)

        while load.poll() is None:
            if time.time() - t_load > max_seconds + 60:
                load.kill()
                raise RuntimeError("the load did not stop by itself")
            if due("reload1"):
                done.add("reload1")
                reload("reload 1 (good)", "r1", tamper=False)
            elif due("kill"):
                done.add("kill")
                w = Window("kill -9 and restart", time.time())
                server.kill()
                w.detail["killed_at"] = w.start
                server.start(probe, port=port)  # the same command, the same port
                w.end = time.time()
                assert server.proc is not None
                w.detail |= {"old_pid": first_pid, "new_pid": server.proc.pid, "restart_s": round(w.end - w.start, 2)}
                windows.append(w)
            elif due("rss_start"):
                done.add("rss_start")
                rss["start"] = server.memory_mb()
            elif due("reload2"):
                done.add("reload2")
                reload("reload 2 (tampered folder)", "r2", tamper=True)
            elif due("db_lock"):
                done.add("db_lock")
                w = Window("database locked", time.time())
                lock = sqlite3.connect(db, timeout=10, isolation_level=None)
                lock.execute("BEGIN EXCLUSIVE")
                time.sleep(DB_LOCK_S)
                lock.execute("ROLLBACK")
                lock.close()
                w.end = time.time()
                w.detail = {"locked_s": DB_LOCK_S, "write_timeout_s": DB_TIMEOUT_S}
                windows.append(w)
            elif due("reload3"):
                done.add("reload3")
                reload("reload 3 (good)", "r3", tamper=False)
            time.sleep(0.05)
        rss["end"] = server.memory_mb()
        stderr = load.stderr.read() if load.stderr else ""
        if load.returncode != 0:
            raise RuntimeError(f"the load generator failed ({load.returncode}): {stderr[-2000:]}")
        _, metrics = http("GET", port, "/metrics", admin)
    finally:
        server.stop()
    result = json.loads(out.read_text())
    return summarise(result, windows, rss, ids, db, sorted(done), metrics if isinstance(metrics, str) else "")


def logged_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT request_id FROM predictions")}


def summarise(
    load: dict[str, Any],
    windows: list[Window],
    rss: dict[str, dict[str, float]],
    ids: Path,
    db: Path,
    done: list[str],
    metrics: str,
) -> dict[str, Any]:
    acked = [line.split() for line in ids.read_text().splitlines() if line.strip()]
    logged = logged_ids(db)
    by = {w.name: w for w in windows}
    kill = by.get("kill -9 and restart")
    lock = by.get("database locked")
    events = [(float(t), kind) for t, kind in load["events"]]
    slack = 1.0  # an answer may arrive a moment after the window that caused it

    def inside(t: float, w: Window | None, after: float = slack) -> bool:
        return w is not None and w.start - 0.05 <= t <= w.end + after

    lock_503 = [t for t, k in events if k == "http_503" and inside(t, lock, DB_TIMEOUT_S + slack)]
    other_5xx = [(t, k) for t, k in events if k.startswith("http_5") and not inside(t, lock, DB_TIMEOUT_S + slack)]
    reloads = [w for w in windows if w.name.startswith("reload")]
    reload_failures = [(t, k, w.name) for w in reloads for t, k in events if inside(t, w, 0.2)]
    crash_errors = [(t, k) for t, k in events if not k.startswith("http_") and inside(t, kill, 2.0)]
    other_errors = [(t, k) for t, k in events if not k.startswith("http_") and not inside(t, kill, 2.0)]
    before_kill = [rid for t, rid in acked if kill is None or float(t) < kill.start]
    after_lock = [rid for t, rid in acked if lock is not None and float(t) > lock.end + DB_TIMEOUT_S]
    statuses = {k: int(v) for k, v in load["statuses"].items()}
    start_rss, end_rss = rss.get("start", {}).get("VmRSS", 0.0), rss.get("end", {}).get("VmRSS", 0.0)
    return {
        "requests_sent": load["issued"],
        "answered_2xx": sum(v for k, v in statuses.items() if k.startswith("2")),
        "answered_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
        "statuses": statuses,
        "db_lock_503": len(lock_503),
        "acknowledged_after_db_window": len(after_lock),  # the service recovered
        "unexpected_5xx": len(other_5xx),
        "reload_failures": len(reload_failures),
        "connection_errors_during_restart": len(crash_errors),
        "connection_errors_elsewhere": len(other_errors),
        "acknowledged": len(acked),
        "acknowledged_logged": len(logged & {rid for _, rid in acked}),
        "acknowledged_before_kill": len(before_kill),
        "logged_of_those_before_kill": len(logged & set(before_kill)),
        "rss_mb": rss,
        "rss_growth_pct": round((end_rss - start_rss) / start_rss * 100, 1) if start_rss else None,
        "wall_s": load["wall_s"],
        "requests_per_s": load["requests_per_s"],
        "latency_ms": load["latency_ms"],
        "faults_done": done,
        "windows": [{"name": w.name, "start": w.start, "s": round(w.end - w.start, 3), **w.detail} for w in windows],
        "examples": {"unexpected_5xx": other_5xx[:5], "reload_failures": reload_failures[:5]},
        "metrics_after": [
            line for line in metrics.splitlines() if line.startswith(("triage_model_reloads_total", "triage_predlog"))
        ],
    }


def table(r: dict[str, Any]) -> str:
    reloads = [w for w in r["windows"] if w["name"].startswith("reload")]
    before, lat = r["acknowledged_before_kill"], r["latency_ms"]
    start, end = (r["rss_mb"].get(k, {}).get("VmRSS") for k in ("start", "end"))
    rows = [
        ("requests sent", r["requests_sent"]),
        ("2xx", r["answered_2xx"]),
        ("5xx (all of them 503 while the database was locked)", f"{r['answered_5xx']} ({r['db_lock_503']})"),
        ("5xx outside the database window", r["unexpected_5xx"]),
        ("answered 200 after the database window (recovered)", r["acknowledged_after_db_window"]),
        ("failures during the 3 reloads", r["reload_failures"]),
        *(
            (f"  {w['name']}", f"{w['status']} in {w['s']:.2f} s, serving {w['serving_after']}"
             + (f": ...{str(w['answer'].get('detail', ''))[-70:]}" if w["status"] != 200 else ""))
            for w in reloads
        ),
        ("connection errors while the process was down (kill -9)", r["connection_errors_during_restart"]),
        ("acknowledged before the kill / of those in the log after", f"{before} / {r['logged_of_those_before_kill']}"),
        ("acknowledged in all / of those in the log", f"{r['acknowledged']} / {r['acknowledged_logged']}"),
        ("RSS after warm-up / at the end (restarted process), growth", f"{start} / {end} MB, {r['rss_growth_pct']}%"),
        ("throughput, p50 / p99 latency", f"{r['requests_per_s']:.0f} req/s, {lat['p50']:.1f} / {lat['p99']:.1f} ms"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.inference import message_sets
    from benchmarks.run import resolve_model

    p = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", help="model folder (default: the newest triage model under models/)")
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--test-data", type=Path, default=REPO / "data" / "test.csv")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    model = resolve_model(args.model, REPO / "models")
    texts = message_sets(args.test_data).all
    with tempfile.TemporaryDirectory(prefix="triage-faults-") as tmp:
        result = run_faults(model, Path(tmp), texts, args.requests, args.concurrency)
    result["meta"] = {"timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "model": str(model)}
    path = write_result(result, args.out, "faults")
    print(f"Faults under load (c={args.concurrency}, model {model.name})\n{table(result)}\n\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
