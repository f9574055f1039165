"""Bad input, found by a machine: >= 10,000 requests generated with hypothesis from the app's own OpenAPI
schemas (then broken on purpose) against a real `triage serve`, sent by a few clients at once.

Valid bodies come from the schemas (`strategy_for` turns each JSON schema the app publishes into a
hypothesis strategy); the rest is what clients really send by mistake: fields of the wrong type, unknown
fields, missing fields, non-UTF-8 bytes, deeply nested JSON, huge numbers, NUL and control characters,
texts of 20,000 and 20,001 characters, batches of 64 and 65, wrong content types and methods, no key, a
wrong key, a key without the scope. Every answer must be below 500, and every 4xx must say what to fix in
the one error shape. Failures are collected (no shrinking) and reported together at the end.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import ApiKeys, TrainedModel
from tests.processes import Served, clean_env, serve_process

EXAMPLES = int(__import__("os").environ.get("FUZZ_N", "10400"))  # one request each
MIN_REQUESTS = 10_000
CLIENTS = 4  # requests in flight at once
ROUTES = {"/classify": "ClassifyRequest", "/classify/batch": "BatchRequest", "/feedback": "FeedbackRequest"}
JSON = "application/json"
# Starlette's bare reason phrases: an answer that says only this does not say what to fix
BARE = {"Not Found", "Method Not Allowed", "Bad Request", "There was an error parsing the body", "Unauthorized"}


# -- hypothesis strategies from the app's JSON schemas ------------------------------------------------------
def strategy_for(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that satisfy `schema` (the subset of JSON Schema the app's OpenAPI uses; anything else fails
    loudly, so a new kind of field cannot slip past the fuzz)."""
    if "$ref" in schema:
        return strategy_for(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    if "anyOf" in schema:
        return st.one_of([strategy_for(s, components) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 200)
        return st.text(min_size=lo, max_size=min(hi, 150))
    if kind == "array":
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", 10)
        return st.lists(strategy_for(schema["items"], components), min_size=lo, max_size=min(hi, 6))
    if kind == "object":
        props, required = schema.get("properties", {}), set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: strategy_for(v, components) for k, v in props.items() if k in required},
            optional={k: strategy_for(v, components) for k, v in props.items() if k not in required},
        )
    raise AssertionError(f"the fuzz does not know this schema yet: {schema}")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.sampled_from(["", " ", "\x00", "\u202e", "\ud7ff"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
control_text = st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), min_size=1)
weird_text = st.one_of(
    control_text,
    st.text(min_size=1, max_size=100).map(lambda t: "\x00" + t + "\x00"),
    st.sampled_from(["a" * 20_000, "é" * 20_000, "a" * 20_001, "\U0001f600" * 20_001, " " * 20_000]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
)


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = JSON
    auth: str = "all"  # a key name of the session's key file, or none | wrong | garbage
    kind: str = "schema"

    def headers(self, keys: ApiKeys) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        if self.content_type is not None:
            out[b"content-type"] = self.content_type.encode()
        if self.auth in keys.keys:
            out[b"authorization"] = f"Bearer {keys.keys[self.auth]}".encode()
        elif self.auth == "wrong":
            out[b"authorization"] = b"Bearer tk_wrong"
        elif self.auth == "garbage":
            out[b"authorization"] = b"Bearer \xff\xfe x"  # not ASCII (h11 refuses a NUL even to send)
        return out


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def cases(spec: dict[str, Any]) -> st.SearchStrategy[Case]:
    components = spec["components"]["schemas"]
    valid = {path: strategy_for({"$ref": f"#/components/schemas/{name}"}, components) for path, name in ROUTES.items()}
    auth = st.sampled_from(["all"] * 12 + ["helpdesk", "agents", "ops", "none", "wrong", "garbage"])
    route = st.sampled_from(list(ROUTES))

    def valid_body(path: str) -> st.SearchStrategy[Case]:
        return st.builds(lambda b, a: Case("POST", path, dumps(b), auth=a), valid[path], auth)

    def mutated(path: str) -> st.SearchStrategy[Case]:
        """A valid body with one field replaced by any JSON value, dropped, or an unknown one added."""

        def mutate(body: dict[str, Any], key: str, value: Any, how: int) -> Case:
            body = dict(body)
            if how == 0 and body:
                body[sorted(body)[len(key) % len(body)]] = value
            elif how == 1 and body:
                body.pop(sorted(body)[len(key) % len(body)])
            else:
                body[key or "x"] = value
            return Case("POST", path, dumps(body), kind="mutated")

        return st.builds(mutate, valid[path], st.text(max_size=12), json_values, st.integers(0, 2))

    texts = st.builds(
        lambda p, t: Case(
            "POST", p, dumps({"text": t} if p == "/classify" else {"messages": [{"text": t}]}), kind="text"
        ),
        st.sampled_from(["/classify", "/classify/batch"]),
        weird_text,
    )
    batches = st.builds(
        lambda n, t: Case("POST", "/classify/batch", dumps({"messages": [{"text": t}] * n}), kind="batch"),
        st.sampled_from([0, 1, 63, 64, 65, 1000]),
        st.text(min_size=1, max_size=40),
    )
    raw = st.builds(lambda p, b: Case("POST", p, b, kind="bytes"), route, st.binary(max_size=200))
    non_utf8 = st.builds(
        lambda p, b: Case("POST", p, b'{"text": "' + b + b'"}', kind="non-utf8"),
        route,
        st.binary(min_size=1, max_size=20).map(lambda b: b + b"\xff\xc3\x28"),
    )
    nested = st.builds(
        lambda p, depth, wrap: Case(
            "POST",
            p,
            (b'{"text": ' if wrap else b"") + b"[" * depth + b"]" * depth + (b"}" if wrap else b""),
            kind="nested",
        ),
        route,
        st.sampled_from([1, 50, 500, 5_000, 50_000, 200_000]),
        st.booleans(),
    )
    numbers = st.builds(
        lambda p, field_, num: Case(
            "POST", p, b'{"' + field_.encode() + b'": ' + num + b', "text": "x"}', kind="number"
        ),
        route,
        st.sampled_from(["text", "received_at", "messages", "risk", "request_id"]),
        st.sampled_from(
            [b"1" * 5000, b"-" + b"9" * 4301, b"1e400", b"-1e400", b"1e-400", b"123456789012345678901234567890"]
        ),
    )
    content_types = st.builds(
        lambda p, b, ct: Case("POST", p, dumps(b), content_type=ct, kind="content-type"),
        route,
        valid["/classify"],
        st.sampled_from(
            [
                None,
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/xml",
                "",
                "application/json; charset=latin-1",
                "application/vnd.api+json",
                "json",
                "*/*",
            ]
        ),
    )
    methods = st.builds(
        lambda m, p, q: Case(m, p + q, None, content_type=None, kind="method"),
        st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "POST"]),
        st.sampled_from([*ROUTES, "/admin/reload", "/metrics", "/health", "/version", "/nope", "/classify/", "//x"]),
        st.sampled_from(["", "?x=1", "?text=" + "a" * 3000, "?%ff=%00"]),
    )
    reload_ = st.builds(
        lambda a: Case("POST", "/admin/reload", None, content_type=None, auth=a, kind="reload"),
        st.sampled_from(["none", "wrong", "helpdesk", "agents", "garbage"]),
    )
    weighted = [
        *(valid_body(p) for p in ROUTES),
        *(mutated(p) for p in ROUTES),
        *[texts, batches, raw, non_utf8, nested, numbers, content_types, methods] * 2,
        reload_,
    ]
    return st.one_of(weighted)


# -- the run ---------------------------------------------------------------------------------------------
@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def check(self, case: Case, res: httpx.Response) -> None:
        self.sent += 1
        self.statuses[res.status_code] += 1
        self.kinds[case.kind] += 1
        where = f"{case.kind} {case.method} {case.path[:60]} body={(case.body or b'')[:120]!r} -> {res.status_code}"
        if res.status_code >= 500:
            self.failures.append(f"{where}: {res.text[:300]}")
        elif res.status_code >= 400 and case.method != "HEAD":
            try:
                body = res.json()
            except ValueError:
                self.failures.append(f"{where}: not JSON: {res.text[:200]}")
                return
            detail = body.get("detail") if isinstance(body, dict) else None
            if not isinstance(detail, str) or len(detail) < 15 or detail in BARE:
                self.failures.append(f"{where}: the detail does not say what to fix: {res.text[:200]}")
            elif res.status_code == 422 and not (body.get("field") and body.get("errors")):
                self.failures.append(f"{where}: a validation error without its field: {res.text[:200]}")
            elif len(res.content) > 20_000:
                self.failures.append(f"{where}: the answer echoes the input ({len(res.content)} bytes)")


@pytest.fixture(scope="module")
def fuzz_server(
    triage_model: TrainedModel, api_keys: ApiKeys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = clean_env() | {
        "TRIAGE_API_KEYS_FILE": str(api_keys.file),
        "TRIAGE_DATABASE_URL": f"sqlite:///{tmp / 'fuzz.db'}",
    }
    with serve_process(str(triage_model.folder), env, tmp, wait=90) as served:
        yield served


def generated_cases(spec: dict[str, Any]) -> list[Case]:
    """EXAMPLES cases drawn from the app's schemas, generated before any is sent (so sending can be parallel)."""
    out: list[Case] = []

    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.generate],  # collect every case, shrink nothing
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(case=cases(spec))
    def collect(case: Case) -> None:
        out.append(case)

    collect()
    return out


def test_ten_thousand_generated_requests_get_no_5xx_and_every_4xx_says_what_to_fix(
    fuzz_server: Served, api_keys: ApiKeys
) -> None:
    url = fuzz_server.url
    spec = httpx.get(f"{url}/openapi.json").json()
    generated = generated_cases(spec)
    assert len(generated) >= MIN_REQUESTS, f"hypothesis generated only {len(generated)} cases"
    tally, lock = Tally(), threading.Lock()
    start = time.monotonic()
    with httpx.Client(base_url=url, timeout=60) as client:

        def send(case: Case) -> None:
            try:
                res = client.request(case.method, case.path, content=case.body, headers=case.headers(api_keys))
            except httpx.HTTPError as err:
                with lock:
                    tally.failures.append(f"{case.kind} {case.method} {case.path[:60]}: {err!r}")
                return
            with lock:
                tally.check(case, res)

        # a few clients at once, as a helpdesk's workers would: the server answers while the next request is built
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(send, generated))
    elapsed = time.monotonic() - start
    print(
        f"\nfuzz: {tally.sent} requests in {elapsed:.0f} s; statuses {dict(sorted(tally.statuses.items()))}; "
        f"kinds {dict(tally.kinds)}; failures {len(tally.failures)}"
    )
    assert not tally.failures, f"{len(tally.failures)} bad answers, e.g.:\n" + "\n".join(tally.failures[:25])
    assert tally.sent == len(generated)  # every request got an answer
    assert sum(v for k, v in tally.statuses.items() if k >= 500) == 0
    assert httpx.get(f"{url}/health").status_code == 200  # and the service is still up
    assert "Traceback" not in fuzz_server.log_text() and "unhandled error" not in fuzz_server.log_text()
