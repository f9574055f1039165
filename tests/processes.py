"""Real `triage` processes for the tests: the CLI with a chosen environment, and a uvicorn server
(`triage serve`) that is always terminated."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
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


@contextmanager
def triage_server(model: str, env: Mapping[str, str], cwd: Path, wait: float = 180) -> Iterator[str]:
    """`triage serve --model MODEL` on a free port; yields its base URL once /health answers."""
    port = free_port()
    log_path = cwd / f"serve-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "triage", "serve", "--model", model, "--port", str(port), "--no-access-log"],
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait
        while True:
            if proc.poll() is not None:
                pytest.fail(f"triage serve exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"triage serve did not answer /health within {wait} s:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@dataclass
class Traffic:
    """A stream of /classify requests in a thread, counting answers and failures, until stopped."""

    url: str
    text: str = "Bonjour, où en est ma commande ? Merci"
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
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
