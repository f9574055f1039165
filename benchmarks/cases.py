"""What the case lookup adds to /classify: the prediction-log commit with and without the case step, on SQLite.

    python -m benchmarks.cases [--n 2000] [--cases 10000] [--rounds 5] [--out benchmarks/results]

A fresh SQLite file (WAL, synchronous=NORMAL, as served) already holding `--cases` cases (one message each,
a third of them with a buyer), then single-message requests recorded exactly as /classify records them
(`PredictionLog.record(within=CaseBook.route)`), the variants alternating round by round:

- `baseline`: the prediction-log commit alone (the service before cases);
- `no_order`: + the case step for a message without order_id (the suggested reply only);
- `new_case`: a message about a new order (read misses, savepoint, insert the case, link the message);
- `existing_case`: a message about one of the existing orders (read, update, link);
- `existing_buyer`: the same with a buyer_id (+ one count over the buyer's earlier cases).

Each request is timed whole (build, transaction, commit) and the case step alone (inside the transaction).
The cost of the case lookup is the commit's p50 with a case minus its p50 without one (`no_order`), and
the case step's own p50; the target is both under 0.3 ms. Prints a table and writes
`benchmarks/results/cases-<UTC time>.json` (`make bench` runs it too, into its own JSON).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

from benchmarks.predlog import TEXT, response
from benchmarks.stats import percentile
from serving.cases.replies import load_catalogue
from serving.cases.store import CaseBook
from serving.files import write_json
from serving.predlog import PredictionLog
from serving.schemas import ClassifyRequest, ClassifyResponse
from serving.settings import Settings

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("baseline", "no_order", "new_case", "existing_case", "existing_buyer")
LABELS = {
    "baseline": "prediction log only (before cases)",
    "no_order": "+ case step, no order_id (reply only)",
    "new_case": "+ new case",
    "existing_case": "+ existing case",
    "existing_buyer": "+ existing case + buyer_id",
}
CASE_LOOKUP_MAX_MS = 0.3


class CaseBench:
    """A prediction log and case book on a temporary SQLite file, with `existing` cases in it."""

    def __init__(self, folder: Path, existing: int) -> None:
        self.plog = PredictionLog.open(f"sqlite:///{folder / 'cases-bench.db'}")
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, database_url=self.plog.url, buyer_salt=SecretStr("bench-salt")
        )
        self.book = CaseBook.open(self.plog, settings, load_catalogue())
        self.counter = 0
        self.existing = existing
        self.buyers = max(1, existing // 3)
        for start in range(0, existing, 100):
            batch = [
                self._request(f"order-{i}", f"buyer-{i % self.buyers}" if i % 3 == 0 else None)
                for i in range(start, min(existing, start + 100))
            ]
            self.record(batch)

    def _request(self, order_id: str | None, buyer_id: str | None = None) -> ClassifyRequest:
        return ClassifyRequest(text=TEXT, channel="amazon", order_id=order_id, buyer_id=buyer_id)

    def _responses(self, n: int) -> list[ClassifyResponse]:
        out = [response(self.counter + i) for i in range(n)]
        self.counter += n
        return out

    def record(self, requests: list[ClassifyRequest], with_cases: bool = True) -> float:
        """Record like /classify; returns the case step's own seconds (0 without cases)."""
        results = self._responses(len(requests))
        now = datetime.now(UTC)
        spent = [0.0]

        def route(conn: sa.Connection) -> None:
            t = time.perf_counter()
            self.book.route(conn, requests, results, now)
            spent[0] = time.perf_counter() - t

        self.plog.record(requests, results, now, within=route if with_cases else None)
        return spent[0]

    def once(self, variant: str) -> tuple[float, float]:
        """(whole request, case step) in seconds for one message of `variant`."""
        i = self.counter
        t0 = time.perf_counter()
        if variant == "baseline":
            step = self.record([self._request(None)], with_cases=False)
        elif variant == "no_order":
            step = self.record([self._request(None)])
        elif variant == "new_case":
            step = self.record([self._request(f"new-{i}")])
        else:
            k = (i * 7919) % self.existing  # spread over the existing cases
            buyer = f"buyer-{k % self.buyers}" if variant == "existing_buyer" else None
            step = self.record([self._request(f"order-{k}", buyer)])
        return time.perf_counter() - t0, step

    def close(self) -> None:
        self.plog.close()


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in seconds]
    return {
        "p50": round(percentile(ms, 50), 4),
        "p95": round(percentile(ms, 95), 4),
        "p99": round(percentile(ms, 99), 4),
        "mean": round(statistics.fmean(ms), 4),
    }


def measure(n: int = 2000, existing: int = 10_000, rounds: int = 5) -> dict[str, Any]:
    """`n` requests per variant over `rounds` alternating rounds (rotating which variant goes first)."""
    whole: dict[str, list[float]] = {v: [] for v in VARIANTS}
    step: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="triage-bench-cases-") as tmp:
        bench = CaseBench(Path(tmp), existing)
        try:
            for v in VARIANTS:  # warm-up: statements compiled, pages cached
                for _ in range(20):
                    bench.once(v)
            per_round = max(1, n // rounds)
            for r in range(rounds):
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                for v in order:
                    for _ in range(per_round):
                        w, s = bench.once(v)
                        whole[v].append(w)
                        step[v].append(s)
        finally:
            bench.close()
    out: dict[str, Any] = {
        "database": "sqlite (WAL, synchronous=NORMAL)",
        "existing_cases": existing,
        "requests_per_variant": len(whole["baseline"]),
        "rounds": rounds,
        "commit_ms": {v: _summary(whole[v]) for v in VARIANTS},
        "case_step_ms": {v: _summary(step[v]) for v in VARIANTS if v != "baseline"},
    }
    ref = out["commit_ms"]["no_order"]["p50"]
    out["case_lookup_added_p50_ms"] = {
        v: round(out["commit_ms"][v]["p50"] - ref, 4) for v in ("new_case", "existing_case", "existing_buyer")
    }
    out["case_step_added_vs_before_p50_ms"] = round(
        out["commit_ms"]["existing_case"]["p50"] - out["commit_ms"]["baseline"]["p50"], 4
    )
    return out


def target(cases: dict[str, Any]) -> dict[str, Any]:
    """PASS when the case lookup (commit p50 with a case minus without, and the step alone) is under 0.3 ms."""
    added = cases["case_lookup_added_p50_ms"]
    steps = {v: cases["case_step_ms"][v]["p50"] for v in ("new_case", "existing_case", "existing_buyer")}
    value = max(max(added.values()), max(steps.values()))
    return {
        "name": f"case lookup on /classify (SQLite) p50 <= {CASE_LOOKUP_MAX_MS} ms",
        "value": value,
        "limit": CASE_LOOKUP_MAX_MS,
        "pass": value <= CASE_LOOKUP_MAX_MS,
        "detail": "commit p50 added vs no order: "
        + ", ".join(f"{k} {added[k]:+.3f}" for k in added)
        + " ms; case step alone p50: "
        + ", ".join(f"{k} {steps[k]:.3f}" for k in steps)
        + " ms",
    }


def table(cases: dict[str, Any]) -> list[str]:
    out = [
        f"Case lookup in /classify's commit ({cases['database']}; {cases['existing_cases']:,} cases in the "
        f"database; {cases['requests_per_variant']:,} requests per variant in {cases['rounds']} alternating rounds)"
    ]
    header = ["variant", "commit p50", "p95", "p99", "case step p50", "p95"]
    rows = []
    for v in VARIANTS:
        c, s = cases["commit_ms"][v], cases["case_step_ms"].get(v)
        rows.append(
            [
                LABELS[v],
                f"{c['p50']:.3f}",
                f"{c['p95']:.3f}",
                f"{c['p99']:.3f}",
                f"{s['p50']:.3f}" if s else "-",
                f"{s['p95']:.3f}" if s else "-",
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        out.append(
            "  "
            + "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths, strict=True)))
        )
    added = cases["case_lookup_added_p50_ms"]
    out.append(
        "  added to the commit at p50 by the case lookup (vs no order_id): "
        + ", ".join(f"{k.replace('_', ' ')} {v:+.3f} ms" for k, v in added.items())
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=2000, help="requests per variant (default 2000)")
    p.add_argument("--cases", type=int, default=10_000, help="cases in the database before timing (default 10000)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    started = datetime.now(UTC)
    cases = measure(args.n, args.cases, args.rounds)
    check = target(cases)
    result = {"meta": {"timestamp": started.isoformat(timespec="seconds")}, "cases": cases, "target": check}
    path = args.out / f"cases-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    write_json(path, result)
    print("\n".join(table(cases)))
    print(f"  [{'PASS' if check['pass'] else 'MISS'}] {check['name']}: {check['detail']}")
    print(f"\nresults: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
