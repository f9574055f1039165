"""A real `triage serve` process for the benchmark: spawn it, time its cold start, read its memory, load it.

The load comes from `benchmarks.load` in a separate process, so client and server never share a GIL.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_status_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in MB, from /proc/<pid>/status."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def post_json(
    port: int, path: str, body: bytes, timeout: float = 30.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"} | (headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Server:
    """One uvicorn process serving `model` (None: the newest under TRIAGE_MODELS_DIR) on a loopback port."""

    model: Path | None
    cwd: Path
    log: Path
    extra_env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    cold_start_s: float = float("nan")
    headers: dict[str, str] | None = None  # sent with the probe (an API key)

    def start(self, probe: bytes, timeout: float = 180.0, port: int = 0) -> float:
        """Spawn the server (on `port`, or a free one) and POST `probe` to /classify until the first 200;
        return that delay (s)."""
        self.port = port or free_port()
        cmd = [sys.executable, "-m", "triage", "serve", "--host", HOST, "--port", str(self.port), "--no-access-log"]
        if self.model is not None:
            cmd += ["--model", str(self.model)]
        env = dict(os.environ) | (self.extra_env or {})
        with self.log.open("ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                status, _ = post_json(self.port, "/classify", probe, timeout=timeout, headers=self.headers)
            except (ConnectionError, OSError):
                time.sleep(0.01)
                continue
            if status == 200:
                self.cold_start_s = time.perf_counter() - t0
                return self.cold_start_s
            raise RuntimeError(f"first /classify answered {status}; see {self.log}")
        raise RuntimeError(f"no answer from the server within {timeout:.0f} s; see {self.log}")

    def memory_mb(self) -> dict[str, float]:
        assert self.proc is not None
        return proc_status_mb(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # uvicorn shuts down cleanly on SIGTERM
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_payloads(path: Path, bodies: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bodies), encoding="utf-8")
    return path


def run_load(
    port: int,
    path: str,
    payloads: Path,
    concurrency: int,
    requests: int,
    duration: float,
    warmup: int,
    latencies: bool = False,
    headers: Sequence[str] = (),
) -> dict[str, Any]:
    """Run `python -m benchmarks.load` in its own process; return its JSON result."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.load",
        "--url",
        f"http://{HOST}:{port}{path}",
        "--payloads",
        str(payloads),
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ] + (["--latencies"] if latencies else [])
    for header in headers:
        cmd += ["--header", header]
    out = subprocess.run(
        cmd,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=duration + 120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return dict(json.loads(out.stdout))


@dataclass
class LoadPlan:
    """How much load each run sends; every run also stops after `duration` seconds."""

    rounds: int = 4
    single_c1: int = 300
    single_cn: int = 800
    batch_c1: int = 16
    batch_cn: int = 48
    concurrency: int = 8
    duration: float = 30.0
    warmup: int = 100


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several load runs as one: latency percentiles over every request, throughput over the total time."""
    from benchmarks.stats import summary_ms

    latencies = [ms / 1e3 for run in runs for ms in run.pop("latencies_ms")]
    wall = sum(run["wall_s"] for run in runs)
    messages = sum(run["messages"] for run in runs)
    errors: dict[str, int] = {}
    for run in runs:
        for k, v in run["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "requests": len(latencies),
        "messages": messages,
        "wall_s": round(wall, 3),
        "errors": errors,
        "messages_per_s": round(messages / wall, 2) if wall else 0.0,
        "requests_per_s": round(len(latencies) / wall, 2) if wall else 0.0,
        "latency_ms": summary_ms(latencies),
        "runs": runs,
    }


def http_benchmark(
    model: Path,
    texts: Sequence[str],
    plan: LoadPlan,
    workdir: Path,
    before_c1: Callable[[], None] | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Cold start, memory, /classify latency at c=1 and c=N, /classify/batch vs /classify throughput.

    The server logs its predictions to a SQLite file in `workdir`, never to the configured database.
    `before_c1` runs before each c=1 round while the server is idle (the in-process floor, measured in
    the same rounds as the HTTP latency it is compared with).
    """
    import random

    rng = random.Random(13)
    single = write_payloads(workdir / "single.jsonl", [{"text": t} for t in texts])
    batch = write_payloads(
        workdir / "batch.jsonl",
        [{"messages": [{"text": t} for t in rng.sample(list(texts), batch_size)]} for _ in range(24)],
    )
    var = workdir / "var"
    # as deployed: API keys required (the key check and the request's metrics are part of the latency)
    from serving.keys import create_key

    key, _ = create_key(workdir / "api-keys", "bench", ["classify"])
    auth = [f"Authorization: Bearer {key}"]
    env = {
        "TRIAGE_VAR_DIR": str(var),
        "TRIAGE_DATABASE_URL": f"sqlite:///{var / 'bench.db'}",
        "TRIAGE_API_KEYS_FILE": str(workdir / "api-keys"),
    }
    repo = Path(__file__).resolve().parent.parent
    probe = json.dumps({"text": texts[0]}).encode()
    c, d = plan.concurrency, plan.duration
    runs: dict[str, list[dict[str, Any]]] = {"classify_c1": [], f"classify_c{c}": [], "batch_c1": [], f"batch_c{c}": []}
    headers = {"Authorization": f"Bearer {key}"}
    with Server(model, cwd=repo, log=workdir / "server.log", extra_env=env, headers=headers) as server:
        cold = server.start(probe)
        run_load(server.port, "/classify", single, 1, plan.warmup, d, 0, headers=auth)
        run_load(server.port, "/classify/batch", batch, 2, 4, d, 0, headers=auth)
        warm = server.memory_mb()
        p = server.port
        for _ in range(plan.rounds):
            if before_c1:
                before_c1()
            runs["classify_c1"].append(run_load(p, "/classify", single, 1, plan.single_c1, d, 2, True, auth))
            runs[f"classify_c{c}"].append(run_load(p, "/classify", single, c, plan.single_cn, d, 2, True, auth))
            runs[f"batch_c{c}"].append(run_load(p, "/classify/batch", batch, c, plan.batch_cn, d, 1, True, auth))
            runs["batch_c1"].append(run_load(p, "/classify/batch", batch, 1, plan.batch_c1, d, 1, True, auth))
        after = server.memory_mb()
        server_pid = server.proc.pid if server.proc else None
    result: dict[str, Any] = {key: pooled(v) for key, v in runs.items()}
    result["batch_vs_single"] = {
        str(k): round(result[f"batch_c{k}"]["messages_per_s"] / result[f"classify_c{k}"]["messages_per_s"], 2)
        for k in (1, c)
    }
    result |= {
        "concurrency": c,
        "batch_size": batch_size,
        "cold_start_s": round(cold, 3),
        "server_pid": server_pid,
        "memory_mb": {"after_warmup": warm, "after_load": after},
        "plan": plan.__dict__,
    }
    return result
