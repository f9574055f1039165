"""The service's Prometheus metrics (`GET /metrics`), one registry per app, every name starting with `triage_`.

Counters and histograms are cheap (a dict lookup and a lock per sample); label values are bounded: the
route template (never the raw path), the status code, the label sets, the served model version.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from serving.schemas import ClassifyResponse

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds: /classify takes ~2 ms alone, a 64-message batch ~100 ms, a queue under load more
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric of one app, on its own registry (two apps in one process never share counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "triage_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "triage_http_request_duration_seconds",
            "Time from request to the end of the answer, by route template, method and status",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("triage_http_requests_in_flight", "HTTP requests being answered now", registry=r)
        self.predictions = Counter(
            "triage_predictions",
            "Messages classified, by risk, tier, language and served model version",
            ["risk", "tier", "language", "model_version"],
            registry=r,
        )
        self.needs_review = Counter(
            "triage_needs_review",
            "Messages classified with needs_review set (the rate: this over triage_predictions_total)",
            ["model_version"],
            registry=r,
        )
        self.predlog_failures = Counter(
            "triage_predlog_write_failures",
            "Prediction-log writes that failed (the request got 503), by what was written",
            ["kind"],
            registry=r,
        )
        self.model = Info("triage_model", "The served model: version, variant, source", registry=r)
        self.model_load_seconds = Gauge(
            "triage_model_load_seconds", "Seconds the served model took to load", registry=r
        )
        self.reloads = Counter(
            "triage_model_reloads", "POST /admin/reload attempts by outcome", ["outcome"], registry=r
        )
        self.auth_failures = Counter(
            "triage_auth_failures", "Requests refused for their API key, by reason", ["reason"], registry=r
        )
        for kind in ("prediction", "feedback"):
            self.predlog_failures.labels(kind)
        for outcome in ("ok", "refused"):
            self.reloads.labels(outcome)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(route, method, code).inc()
        self.latency.labels(route, method, code).observe(seconds)

    def count_predictions(self, results: Sequence[ClassifyResponse]) -> None:
        for res in results:
            self.predictions.labels(res.risk, str(res.tier), res.language, res.model_version).inc()
            if res.needs_review:
                self.needs_review.labels(res.model_version).inc()

    def served(self, version: str, variant: str, source: str, load_seconds: float) -> None:
        self.model.info({"version": version, "variant": variant, "source": source})
        self.model_load_seconds.set(load_seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
