"""`make bench`: one command that measures encoder speed, HTTP latency, memory, cold start and training time.

Run it with `python -m benchmarks.run` (see benchmarks/README.md). Nothing under `serving/` imports this.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.files import write_json

RESULTS = Path(__file__).resolve().parent / "results"
"""Where every benchmark writes its JSON (`--out` moves it)."""


def write_result(result: dict[str, Any], folder: Path, kind: str) -> Path:
    """`result` as `folder/<kind>-<UTC time>.json`, written whole or not at all; the path written."""
    path = folder / f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    write_json(path, result)
    return path


def positive(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected a whole number of at least 1")
    return n
