"""A small HTTP load generator: N keep-alive connections POST JSON bodies in a closed loop, then stop.

    python -m benchmarks.load --url http://127.0.0.1:8000/classify --payloads bodies.jsonl \
        --concurrency 8 --requests 2000 --duration 30

Each line of `--payloads` is one request body (JSON); bodies are sent in turn. Every connection sends
its next request as soon as the previous answer arrived (closed loop: `--concurrency` requests in
flight). The run stops by itself after `--requests` measured requests or `--duration` seconds, whichever
comes first; `--warmup` requests per connection go first and are not measured. One JSON object goes to
standard output: latency percentiles (ms), requests/s and messages/s (a body with a `messages` list
counts its length, any other body counts 1).

It runs in its own process, one asyncio loop (uvloop if installed) speaking raw HTTP/1.1, so the client
takes as little of the shared CPU as possible and never holds the server's GIL.

For the fault run (`benchmarks.faults`): `--header` adds a header (an API key), `--ids FILE` appends
`<unix time> <request_id>` for every 200 answer the moment it arrives (what was acknowledged, and when),
`--reconnect` rides through a server that goes away (a refused connection is counted and retried), and
the output lists every non-200 outcome with its time (`events`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from benchmarks.stats import summary_ms


@dataclass
class Plan:
    host: str
    port: int
    path: str
    bodies: list[bytes]
    messages: list[int]  # messages in each body
    concurrency: int
    requests: int
    duration: float
    warmup: int
    timeout: float
    latencies: bool = False  # also return every latency (ms), e.g. to pool several runs
    headers: list[str] = field(default_factory=list)  # extra "Name: value" request headers
    ids: Path | None = None  # append "<time> <request_id>" per 200 answer
    reconnect: bool = False  # retry refused connections (a server restarting) instead of failing


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, 200 answers only
    messages: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    issued: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)  # (unix time, kind) of every non-200

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.events.append((time.time(), kind))


def load_bodies(path: Path) -> tuple[list[bytes], list[int]]:
    bodies, counts = [], []
    for line in path.read_bytes().splitlines():
        if line.strip():
            doc = json.loads(line)
            bodies.append(line.strip())
            counts.append(len(doc["messages"]) if isinstance(doc, dict) and "messages" in doc else 1)
    if not bodies:
        raise SystemExit(f"{path}: no request bodies")
    return bodies, counts


def request_bytes(plan: Plan, body: bytes) -> bytes:
    extra = "".join(f"{h}\r\n" for h in plan.headers)
    head = (
        f"POST {plan.path} HTTP/1.1\r\nHost: {plan.host}:{plan.port}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, body: list[bytes] | None = None
) -> int:
    """Send one request, read the whole answer; return its status code (and the body in `body`, if given)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        data = await reader.readexactly(length)
        if body is not None:
            body.append(data)
    return status


class StartLine:
    """Connections wait here after their warm-up; the last one to arrive starts the clock."""

    def __init__(self, parties: int, duration: float) -> None:
        self.parties, self.duration = parties, duration
        self.arrived = 0
        self.start = 0.0
        self.deadline = float("inf")
        self.event = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived == self.parties:
            self.start = time.perf_counter()
            self.deadline = self.start + self.duration
            self.event.set()
        else:
            await self.event.wait()


def request_id_of(body: bytes) -> str:
    """The request_id of a /classify answer (it comes first: no JSON parse needed), else of its first result."""
    prefix = b'{"request_id":"'
    if body.startswith(prefix):
        return body[len(prefix) : body.index(b'"', len(prefix))].decode()
    doc = json.loads(body)
    return str(doc["results"][0]["request_id"]) if "results" in doc else str(doc.get("request_id", ""))


async def open_connection(
    plan: Plan, tally: Tally, deadline: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    while True:
        try:
            return await asyncio.open_connection(plan.host, plan.port)
        except OSError:
            if not plan.reconnect or time.perf_counter() > deadline:
                raise
            tally.error("connect_refused")
            await asyncio.sleep(0.05)


async def connection(plan: Plan, worker: int, line: StartLine, tally: Tally, ids: IO[str] | None) -> None:
    reader, writer = await open_connection(plan, tally, time.perf_counter() + plan.timeout)
    requests = [request_bytes(plan, b) for b in plan.bodies]
    n = len(requests)
    i = worker * max(1, n // plan.concurrency)  # connections start at different bodies
    try:
        for _ in range(plan.warmup):
            async with asyncio.timeout(plan.timeout):
                await exchange(reader, writer, requests[i % n])
            i += 1
        await line.wait()
        while tally.issued < plan.requests and time.perf_counter() < line.deadline:
            tally.issued += 1
            body = i % n
            t0 = time.perf_counter()
            answer: list[bytes] | None = [] if ids is not None else None
            try:
                async with asyncio.timeout(plan.timeout):
                    status = await exchange(reader, writer, requests[body], answer)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as err:
                tally.error(type(err).__name__)
                writer.close()
                reader, writer = await open_connection(plan, tally, line.deadline)
                continue
            tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
            if status == 200:
                tally.latencies.append(time.perf_counter() - t0)
                tally.messages += plan.messages[body]
                if ids is not None and answer:
                    ids.write(f"{time.time():.6f} {request_id_of(answer[0])}\n")
                    ids.flush()
            else:
                tally.error(f"http_{status}")
            if status == 503:  # the server closes the connection with a 503 while draining
                writer.close()
                reader, writer = await open_connection(plan, tally, line.deadline)
            i += 1
    finally:
        writer.close()


async def drive(plan: Plan) -> dict[str, Any]:
    tally = Tally()
    line = StartLine(plan.concurrency, plan.duration)
    with contextlib.ExitStack() as stack:
        ids = stack.enter_context(plan.ids.open("a", encoding="ascii")) if plan.ids else None
        await asyncio.gather(*(connection(plan, w, line, tally, ids) for w in range(plan.concurrency)))
    wall = time.perf_counter() - line.start
    done = len(tally.latencies)
    return {
        "url_path": plan.path,
        "concurrency": plan.concurrency,
        "requests": done,
        "errors": tally.errors,
        "messages": tally.messages,
        "wall_s": round(wall, 3),
        "stopped_by": "requests" if tally.issued >= plan.requests else "duration",
        "requests_per_s": round(done / wall, 2) if wall > 0 else 0.0,
        "messages_per_s": round(tally.messages / wall, 2) if wall > 0 else 0.0,
        "latency_ms": summary_ms(tally.latencies),
        "issued": tally.issued,
        "statuses": tally.statuses,
        "events": [(round(t, 4), kind) for t, kind in tally.events],
    } | ({"latencies_ms": [round(x * 1e3, 4) for x in tally.latencies]} if plan.latencies else {})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="http://HOST:PORT/PATH to POST to")
    p.add_argument("--payloads", type=Path, required=True, help="JSON lines, one request body each")
    p.add_argument("--concurrency", type=int, default=1, help="connections, each with one request in flight")
    p.add_argument("--requests", type=int, default=1000, help="stop after this many measured requests")
    p.add_argument("--duration", type=float, default=30.0, help="...or after this many seconds")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured requests per connection first")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before one request counts as failed")
    p.add_argument("--latencies", action="store_true", help="also print every measured latency (ms)")
    p.add_argument("--header", action="append", default=[], help="an extra request header, 'Name: value'")
    p.add_argument("--ids", type=Path, help="append '<unix time> <request_id>' for every 200 answer to this file")
    p.add_argument("--reconnect", action="store_true", help="retry refused connections (a restarting server)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url = urlsplit(args.url)
    if url.scheme != "http" or not url.hostname:
        raise SystemExit(f"--url must be http://HOST:PORT/PATH, got {args.url!r}")
    bodies, counts = load_bodies(args.payloads)
    plan = Plan(
        host=url.hostname,
        port=url.port or 80,
        path=url.path or "/",
        bodies=bodies,
        messages=counts,
        concurrency=max(1, args.concurrency),
        requests=args.requests,
        duration=args.duration,
        warmup=args.warmup,
        timeout=args.timeout,
        latencies=args.latencies,
        headers=args.header,
        ids=args.ids,
        reconnect=args.reconnect,
    )
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(drive(plan))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
