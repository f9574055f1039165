"""What the prediction log adds to a request: `PredictionLog.record` timed on a fresh SQLite file.

    python -m benchmarks.predlog [--n 2000] [--batch 64]

Prints median / p95 / p99 per single-message request and per batch, for the shipped setting
(WAL, synchronous=NORMAL) and for synchronous=FULL (an fsync per commit) for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from serving.labels import CLAIM_TYPES, RISKS
from serving.prediction import Prediction
from serving.predlog import PredictionLog
from serving.schemas import ClassifyRequest, ClassifyResponse
from serving.service import respond

TEXT = (
    "Bonjour, commande 171-2233445-6677889 toujours pas reçue, livraison prévue le 12 mars. "
    "Je vais ouvrir un litige A à Z si rien ne bouge cette semaine. Cordialement, Marie"
)


def response(i: int) -> ClassifyResponse:
    pred = Prediction("at_risk", "not_received", {r: 1 / 3 for r in RISKS}, {c: 1 / 7 for c in CLAIM_TYPES})
    return respond(ClassifyRequest(text=TEXT), pred, "20261127-000000-usem3", datetime.now(UTC), f"{i:032x}")


def timed(fn: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


def summary(ms: list[float]) -> str:
    return (
        f"median {statistics.median(ms):.3f} ms, p95 {ms[int(len(ms) * 0.95)]:.3f} ms, "
        f"p99 {ms[int(len(ms) * 0.99)]:.3f} ms"
    )


def run(n: int, batch: int, synchronous: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        plog = PredictionLog.open(f"sqlite:///{Path(tmp) / 'bench.db'}")
        if synchronous != "NORMAL":
            sa.event.listen(
                plog.engine, "connect", lambda c, _r: c.cursor().execute(f"PRAGMA synchronous={synchronous}")
            )
            plog.engine.dispose()
        req = ClassifyRequest(text=TEXT, channel="amazon", order_id="171-2233445-6677889")
        counter = iter(range(10**9))
        single = timed(lambda: plog.record([req], [response(next(counter))]), n)
        batched = timed(
            lambda: plog.record([req] * batch, [response(next(counter)) for _ in range(batch)]), max(10, n // batch)
        )
        plog.close()
    return {"single": single, "batch": batched}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    for sync in ("NORMAL", "FULL"):
        res = run(args.n, args.batch, sync)
        print(f"synchronous={sync:<6} 1 message : {summary(res['single'])}")
        print(f"synchronous={sync:<6} {args.batch} messages: {summary(res['batch'])}")


if __name__ == "__main__":
    main()
