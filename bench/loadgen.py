"""`python -m bench.loadgen`: an HTTP/1.1 keep-alive load generator on raw asyncio streams.

Runs in its own process (so its CPU is not the server's), on loopback only, bounded by time
and by request count. Each of `--connections` connections sends the prepared requests one
after another (rotating through them) and times each answer. Prints one JSON object with
counts, statuses, latencies and its own CPU time to stdout (or --out); progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Requests(msgspec.Struct):
    """What to send: each body with its content type, rotated through by the connections.
    `headers` go on every request; `body_headers[i]`, when given, on the i-th body's only
    (a browser's user agent and forwarded address, say)."""

    path: str
    content_type: str
    bodies: list[str]
    events_per_body: int
    headers: dict[str, str] = {}
    body_headers: list[dict[str, str]] = []


def _header_lines(headers: dict[str, str]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


class Result(msgspec.Struct):
    requests: int
    events: int
    elapsed_s: float
    statuses: dict[str, int]
    p50_ms: float
    p99_ms: float
    loadgen_cpu_s: float
    latencies_ms: list[float]  # every measured request, so runs can be merged


def build_requests(host: str, spec: Requests) -> list[bytes]:
    if spec.body_headers and len(spec.body_headers) != len(spec.bodies):
        raise SystemExit("loadgen: body_headers must have one entry per body")
    extra = _header_lines(spec.headers)
    out = []
    for i, body in enumerate(spec.bodies):
        raw = body.encode()
        own = _header_lines(spec.body_headers[i]) if spec.body_headers else ""
        head = (
            f"POST {spec.path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: {spec.content_type}\r\n"
            f"content-length: {len(raw)}\r\n{extra}{own}\r\n"
        )
        out.append(head.encode() + raw)
    return out


class State:
    def __init__(self, max_requests: int, deadline: float, warmup_until: float) -> None:
        self.max_requests = max_requests
        self.deadline = deadline
        self.warmup_until = warmup_until
        self.started = 0
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.done = 0

    def take(self) -> bool:
        if self.started >= self.max_requests or time.perf_counter() >= self.deadline:
            return False
        self.started += 1
        return True


async def connection(
    host: str, port: int, requests: list[bytes], offset: int, state: State
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while state.take():
            request = requests[i % len(requests)]
            i += 1
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                end = lower.find(b"\r\n", at)
                await reader.readexactly(int(lower[at + 15 : end]))
            t1 = time.perf_counter()
            if t0 >= state.warmup_until:
                state.latencies.append(t1 - t0)
                state.statuses[status] += 1
            state.done += 1
    finally:
        writer.close()


async def run(
    url: str,
    spec: Requests,
    connections: int,
    duration_s: float,
    max_requests: int,
    warmup_s: float,
) -> Result:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    if host not in LOOPBACK:
        raise SystemExit(f"loadgen: loopback only, not {host!r}")
    requests = build_requests(f"{host}:{port}", spec)
    start = time.perf_counter()
    state = State(max_requests, start + warmup_s + duration_s, start + warmup_s)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    tasks = [
        asyncio.create_task(connection(host, port, requests, n, state)) for n in range(connections)
    ]
    with Progress(
        TextColumn(f"{spec.path} x{connections}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} req"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        redirect_stdout=False,
    ) as progress:
        bar = progress.add_task("load", total=warmup_s + duration_s)
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.25)
            progress.update(bar, completed=time.perf_counter() - start)
            progress.update(bar, description=f"{state.done:,}")
    for task in tasks:
        task.result()  # re-raises a connection's failure
    measured_s = min(time.perf_counter(), state.deadline) - state.warmup_until
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    latencies = sorted(state.latencies)
    ok = sum(n for status, n in state.statuses.items() if 200 <= status < 300)

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0
        )

    return Result(
        requests=len(latencies),
        events=ok * spec.events_per_body,
        elapsed_s=measured_s,
        statuses={str(k): v for k, v in sorted(state.statuses.items())},
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        loadgen_cpu_s=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        latencies_ms=[round(x * 1000, 3) for x in latencies],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--spec", required=True, type=Path, help="JSON file of Requests")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=10)
    parser.add_argument("--warmup-s", type=float, default=1)
    parser.add_argument("--max-requests", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, help="write the JSON result here, not to stdout")
    args = parser.parse_args(argv)
    spec = msgspec.json.decode(args.spec.read_bytes(), type=Requests)
    import uvloop

    result = uvloop.run(
        run(args.url, spec, args.connections, args.duration_s, args.max_requests, args.warmup_s)
    )
    output = json.dumps(msgspec.to_builtins(result)) + "\n"
    if args.out:
        args.out.write_text(output)
    else:
        sys.stdout.write(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
