"""Real `triage` processes for the tests: the CLI with a chosen environment, and a uvicorn server
(`triage serve`) that is always terminated."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest


def clean_env() -> dict[str, str]:
    """This environment without TRIAGE_* settings, so a developer's shell cannot change what is tested."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def triage_env(extra: Mapping[str, str | Path]) -> dict[str, str]:
    """A clean environment (no TRIAGE_* or MLFLOW_TRACKING_URI of the developer's shell) plus `extra`."""
    env = clean_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_triage(
    *args: str | Path, env: Mapping[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triage", *map(str, args)],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Served:
    """A running `triage serve` process: its URL, the process and its log file."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        if proc.poll() is not None:
            pytest.fail(f"triage serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"triage serve did not answer /health within {wait} s:\n{log.read_text()}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


@contextmanager
def serve_process(
    model: str | None,
    env: Mapping[str, str],
    cwd: Path,
    wait: float = 180,
    args: Sequence[str] = ("--no-access-log",),
    port: int | None = None,
) -> Iterator[Served]:
    """`triage serve [--model MODEL] ARGS` on 127.0.0.1 and a free port; yields it once /health answers and
    always stops it."""
    port = port or free_port()
    log_path = cwd / f"serve-{port}-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "triage", "serve", "--port", str(port), *args]
    if model:
        cmd += ["--model", model]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_healthy(served.url, proc, log_path, wait)
        yield served
    finally:
        stop(proc)


@contextmanager
def triage_server(model: str, env: Mapping[str, str], cwd: Path, wait: float = 180) -> Iterator[str]:
    """`triage serve --model MODEL` on a free port; yields its base URL once /health answers."""
    with serve_process(model, env, cwd, wait) as served:
        yield served.url


@dataclass
class Traffic:
    """A stream of /classify requests in a thread, counting answers and failures, until stopped."""

    url: str
    text: str = "Bonjour, où en est ma commande ? Merci"
    headers: dict[str, str] = field(default_factory=dict)
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60, headers=self.headers) as client:
            while not self._stop.is_set():
                try:
                    r = client.post("/classify", json={"text": self.text})
                    if r.status_code == 200:
                        self.ok += 1
                        self.versions.add(r.json()["model_version"])
                    else:
                        self.failures.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as err:
                    self.failures.append(repr(err))

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)
