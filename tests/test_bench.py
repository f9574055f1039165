"""The benchmark's own logic (fast): its load generator stops by itself and counts right; targets are judged
from the numbers. `make bench` itself is the slow, real run."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.load import Plan, drive, load_bodies
from benchmarks.stats import percentile, summary_ms


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like uvicorn

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 200 if json.loads(body) else 422
        out = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def _plan(port: int, bodies: list[bytes], counts: list[int], **kw: float) -> Plan:
    base: dict[str, float] = {"concurrency": 2, "requests": 20, "duration": 10.0, "warmup": 1, "timeout": 5.0}
    base |= kw
    return Plan(
        host="127.0.0.1",
        port=port,
        path="/classify",
        bodies=bodies,
        messages=counts,
        concurrency=int(base["concurrency"]),
        requests=int(base["requests"]),
        duration=base["duration"],
        warmup=int(base["warmup"]),
        timeout=base["timeout"],
        latencies=True,
    )


def test_load_generator_stops_after_its_request_budget_and_counts_batch_messages(server: int, tmp_path: Path) -> None:
    payloads = tmp_path / "bodies.jsonl"
    payloads.write_text('{"text": "hello"}\n{"messages": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}\n')
    bodies, counts = load_bodies(payloads)
    assert counts == [1, 3]
    result = asyncio.run(drive(_plan(server, bodies, counts, requests=20)))
    assert result["requests"] == 20 and result["errors"] == {} and result["stopped_by"] == "requests"
    assert 20 < result["messages"] < 60  # a mix of 1- and 3-message bodies
    assert len(result["latencies_ms"]) == 20 and result["latency_ms"]["p50"] > 0


def test_load_generator_stops_after_its_time_budget(server: int) -> None:
    result = asyncio.run(drive(_plan(server, [b'{"text": "x"}'], [1], requests=10**9, duration=0.3)))
    assert result["stopped_by"] == "duration"
    assert 0.3 <= result["wall_s"] < 2.0 and result["requests"] > 0


def test_load_generator_counts_non_200_answers_as_errors(server: int) -> None:
    result = asyncio.run(drive(_plan(server, [b"{}"], [1], requests=5, concurrency=1)))
    assert result["requests"] == 0 and result["errors"] == {"http_422": 5}


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert summary_ms([0.001, 0.002, 0.003])["p50"] == 2.0


def _result(int8_speedup: float, drop: float, http_p50: float, bare: float, rss: float, batch: float) -> dict[str, Any]:
    return {
        "encoder": {"speedup": {"int8_vs_torch": {"short": {"1": int8_speedup}, "long": {"1": int8_speedup + 1}}}},
        "int8_accuracy": {"max_drop_points": drop, "risk_drop_points": drop, "claim_type_drop_points": 0.0},
        "floor": {"bare": {"p50_ms": bare}},
        "http": {
            "concurrency": 8,
            "classify_c1": {"latency_ms": {"p50": http_p50}, "messages_per_s": 100.0},
            "classify_c8": {"messages_per_s": 100.0},
            "batch_c8": {"messages_per_s": 100.0 * batch},
            "batch_vs_single": {"1": batch, "8": batch},
            "memory_mb": {"after_warmup": {"VmRSS": rss}, "after_load": {"VmRSS": rss, "VmHWM": rss}},
        },
    }


def test_targets_pass_and_miss_on_the_numbers() -> None:
    good = report.targets(_result(int8_speedup=2.5, drop=0.5, http_p50=3.9, bare=2.0, rss=250, batch=3.2))
    assert [t["pass"] for t in good] == [True, True, True, True]
    bad = report.targets(_result(int8_speedup=1.9, drop=0.5, http_p50=4.1, bare=2.0, rss=310, batch=2.9))
    assert [t["pass"] for t in bad] == [False, False, False, False]
    # fast enough but less accurate still misses
    assert not report.targets(_result(int8_speedup=3.0, drop=1.5, http_p50=1, bare=2, rss=1, batch=9))[0]["pass"]


def test_the_case_lookup_is_measured_and_judged() -> None:
    """A tiny real run of benchmarks/cases.py on SQLite: every variant timed, the target judged on it."""
    from benchmarks import cases

    result = cases.measure(n=25, existing=50, rounds=1)
    assert set(result["commit_ms"]) == set(cases.VARIANTS)
    assert result["requests_per_variant"] == 25 and result["existing_cases"] == 50
    assert all(result["case_step_ms"][v]["p50"] > 0 for v in ("new_case", "existing_case", "existing_buyer"))
    check = cases.target(result)
    assert check["value"] == max(
        *result["case_lookup_added_p50_ms"].values(),
        *(result["case_step_ms"][v]["p50"] for v in ("new_case", "existing_case", "existing_buyer")),
    )
    assert check["pass"] == (check["value"] <= 0.3)
    assert report.targets({"cases": result}) == [check]
    assert "Case lookup in /classify's commit" in "\n".join(cases.table(result))
