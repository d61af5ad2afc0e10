"""A fixed-rate (open-loop) HTTP/1.1 GET load generator over keep-alive connections.

Request i is due at start + i / rate whether or not earlier ones have answered, and its
latency is measured from that due time, so a slow server cannot hide queueing behind a
slowed-down client. Loopback only; bounded in count and time. The server's own time is read
from its `Server-Timing: app;dur=<ms>` header.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time

import msgspec

_SERVER_TIMING = re.compile(rb"server-timing:\s*app;dur=([0-9.]+)", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"connection:\s*close", re.IGNORECASE)


class LoadResult(msgspec.Struct):
    sent: int
    ok: int
    errors: int
    client_ms: list[float]
    server_ms: list[float]
    elapsed_s: float


class Connection:
    """One keep-alive HTTP/1.1 connection, opened on its first GET: a client that costs next
    to nothing beside the server it measures (docs/benchmarks.md: what httpx adds)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, float | None]:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        request = f"GET {target} HTTP/1.1\r\nHost: {self._host}\r\n\r\n"
        self._writer.write(request.encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        length = _CONTENT_LENGTH.search(head)
        await self._reader.readexactly(int(length.group(1)) if length else 0)
        status = int(head[9:12])
        timing = _SERVER_TIMING.search(head)
        if _CLOSE.search(head):
            self.close()  # the server closes it after this answer: the next GET reconnects
        return status, float(timing.group(1)) if timing else None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def run(
    host: str,
    port: int,
    targets: list[str],
    *,
    rate_per_s: float,
    requests: int,
    connections: int = 32,
    timeout_s: float = 60.0,
    delay_s: float = 0.0,
    poisson_seed: int | None = None,
) -> LoadResult:
    """Sends `requests` GETs cycling through `targets` at `rate_per_s`, the first `delay_s`
    after the call: evenly spaced, or with `poisson_seed` at random (exponential) gaps of the
    same mean, as independent clients arrive. Waits for all answers (at most `timeout_s`
    after the last is due)."""
    assert host in ("127.0.0.1", "localhost", "::1"), "loopback only"
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(Connection(host, port))
    client_ms: list[float] = []
    server_ms: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()

    async def one(target: str, due: float) -> None:
        nonlocal errors
        conn = await idle.get()
        try:
            status, server = await conn.get(target)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            conn.close()
            errors += 1
            return
        finally:
            idle.put_nowait(conn)
        if status != 200:
            errors += 1
            return
        client_ms.append((loop.time() - due) * 1000)
        if server is not None:
            server_ms.append(server)

    started = loop.time() + 0.05 + delay_s
    if poisson_seed is None:
        offsets = [i / rate_per_s for i in range(requests)]
    else:
        rng = random.Random(poisson_seed)
        gaps = [0.0] + [rng.expovariate(rate_per_s) for _ in range(requests - 1)]
        offsets = list(itertools.accumulate(gaps))
    tasks: list[asyncio.Task[None]] = []
    wall = time.monotonic()
    while len(tasks) < requests:
        now = loop.time()
        while len(tasks) < requests and started + offsets[len(tasks)] <= now:
            i = len(tasks)
            tasks.append(asyncio.create_task(one(targets[i % len(targets)], started + offsets[i])))
        await asyncio.sleep(0.0005)
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    while not idle.empty():
        idle.get_nowait().close()
    return LoadResult(
        sent=len(tasks),
        ok=len(client_ms),
        errors=errors + len(pending),
        client_ms=client_ms,
        server_ms=server_ms,
        elapsed_s=time.monotonic() - wall,
    )


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
