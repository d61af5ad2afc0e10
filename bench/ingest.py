"""`python -m bench ingest`: ingest throughput and latency against a bare ceiling, same run.

For each worker count, serves (1) the bare Starlette endpoint of bench/bare.py and (2) the
real API (`python -m ingest`, acks=all, on a fresh topic of the broker named by
KAFKA_BOOTSTRAP_SERVERS), and drives each with bench/loadgen.py in its own process:
single events on POST /event (coalesced, the default, and with PRODUCE_COALESCE=0: each
request's message sent alone), browser hits on POST /api/event (bench/browser_traffic.py:
text/plain bodies, a few hundred real user agents, forwarded public addresses, so the
visitor hash, the bot check and the enrichment run as for real traffic; the API gets a
VISITOR_KEY, TRUSTED_PROXY_HOPS=1 and a fresh database of its own for the daily salts),
batches on POST /events, batches of one hot site (one partition) and the same site spread
over sub-keys (HOT_SITES), and batches produced one message per event instead of arrays.
Prints one table with requests/s, events/s, p50/p99 and the ratio to the bare ceiling.

Options: --duration-s (4, per round), --rounds (3), --connections (64), --workers (1,2),
--batch-size (100), --cpus (none: the servers, bare and API alike, run under `taskset -c
CPUS`, e.g. 0 for one core; the load generator and the broker are not pinned), --only
(`single`: only the bare ceiling, POST /event and the browser route, for quick pairs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench import browser_traffic
from bench.table import print_table
from consumer.schema import apply_schema
from core.settings import DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOT_SITE_SPREAD = 4
BROWSER_HITS = 2000  # distinct prepared requests, rotated through
# What navigator.sendBeacon and fetch send with a string body: no CORS preflight.
BROWSER_CONTENT_TYPE = "text/plain;charset=UTF-8"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Now, as of the run: the API refuses days before its window (MAX_PAST_DAYS).
TIMESTAMP = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(site: str, i: int) -> dict[str, Any]:
    return {
        "site_id": site,
        "event_type": "page_view",
        "path": f"/pricing/{i % 7}",
        "user_id": f"user-{i:06d}",
        "timestamp": TIMESTAMP,
    }


def _specs(batch_size: int) -> dict[str, dict[str, Any]]:
    single = [json.dumps(_event(f"site-{i % 16}", i)) for i in range(64)]
    batches = [
        json.dumps([_event(f"site-{(b + i) % 16}", i) for i in range(batch_size)])
        for b in range(16)
    ]
    hot = [json.dumps([_event("hot-site", b * batch_size + i) for i in range(batch_size)])
           for b in range(16)]  # fmt: skip
    json_type = "application/json"
    hits, hit_headers = browser_traffic.hits(BROWSER_HITS)
    return {
        "single": {"path": "/event", "content_type": json_type, "bodies": single,
                   "events_per_body": 1},
        "browser": {"path": "/api/event", "content_type": BROWSER_CONTENT_TYPE, "bodies": hits,
                    "body_headers": hit_headers, "events_per_body": 1},
        "batch": {"path": "/events", "content_type": json_type, "bodies": batches,
                  "events_per_body": batch_size},
        "hot": {"path": "/events", "content_type": json_type, "bodies": hot,
                "events_per_body": batch_size},
    }  # fmt: skip


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants, from /proc."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _cpu_s(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


class Server:
    def __init__(self, args: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"server exited early: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1)
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


@contextlib.contextmanager
def serve(
    kind: str, workers: int, env: dict[str, str], tmp: Path, cpus: str = ""
) -> Iterator[Server]:
    port = _free_port()
    pin = ["taskset", "-c", cpus] if cpus else []
    if kind == "bare":
        args = [sys.executable, "-m", "uvicorn", "bench.bare:app", "--port", str(port),
                "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                "--log-level", "warning", "--workers", str(workers)]  # fmt: skip
    else:
        args = [sys.executable, "-m", "ingest"]
    env = {**os.environ, **env, "PORT": str(port), "WEB_CONCURRENCY": str(workers)}
    server = Server(pin + args, env, tmp / f"{kind}-{port}.log", port)
    try:
        yield server
    finally:
        server.stop()


def wait_for_browser_route(server: Server, spec: dict[str, Any]) -> None:
    """Waits (at most a minute) until the browser route answers 202: it answers 503 until the
    API has loaded the day's visitor salt from PostgreSQL."""
    request = urllib.request.Request(
        f"{server.url}{spec['path']}",
        data=spec["bodies"][0].encode(),
        headers={"Content-Type": spec["content_type"], **spec["body_headers"][0]},
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                if answer.status == 202:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"POST /api/event never answered 202: {server.log.read_text()[-2000:]}"
            )
        time.sleep(0.5)


def load(url: str, spec: dict[str, Any], tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    spec_path = tmp / f"spec-{uuid.uuid4().hex[:8]}.json"
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "bench.loadgen", "--url", url, "--spec", str(spec_path),
               "--connections", str(args.connections), "--duration-s", str(args.duration_s),
               "--warmup-s", "0.5", "--out", str(spec_path.with_suffix(".out"))]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, timeout=600)
    result: dict[str, Any] = json.loads(spec_path.with_suffix(".out").read_text())
    return result


def measure(server: Server, spec: dict[str, Any], tmp: Path, args: argparse.Namespace) -> Any:
    cpu0 = _cpu_s(server.popen.pid)
    result = load(server.url, spec, tmp, args)
    result["server_cpu_s"] = _cpu_s(server.popen.pid) - cpu0
    return result


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums interleaved rounds of one run; percentiles from all their latencies."""
    latencies = sorted(x for r in runs for x in r["latencies_ms"])
    statuses: dict[str, int] = {}
    for r in runs:
        for status, n in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {
        "requests": sum(r["requests"] for r in runs),
        "events": sum(r["events"] for r in runs),
        "elapsed_s": sum(r["elapsed_s"] for r in runs),
        "statuses": statuses,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "server_cpu_s": sum(r["server_cpu_s"] for r in runs),
        "loadgen_cpu_s": sum(r["loadgen_cpu_s"] for r in runs),
    }


def _row(name: str, workers: int, r: dict[str, Any], ceiling: dict[str, Any] | None) -> list[Any]:
    seconds = r["elapsed_s"]
    rps = r["requests"] / seconds
    eps = r["events"] / seconds
    bad = sum(n for status, n in r["statuses"].items() if not status.startswith("2"))
    ratio = f"{100 * eps / (ceiling['events'] / ceiling['elapsed_s']):.0f} %" if ceiling else "-"
    cpu_us = 1e6 * r["server_cpu_s"] / r["events"] if r["events"] else 0.0
    return [name, workers, rps, eps, r["p50_ms"], r["p99_ms"], bad, ratio,
            f"{cpu_us:.1f}", f"{r['loadgen_cpu_s'] / seconds:.2f}"]  # fmt: skip


def run_workers(
    workers: int, api_env: dict[str, str], specs: dict[str, Any], tmp: Path, args: Any
) -> list[list[Any]]:
    """All runs for one worker count. The servers run side by side and the runs are
    interleaved in rounds, so a burst of load from elsewhere on the machine hits the
    ceiling and the API alike instead of skewing their ratio."""
    plan = [
        ("bare", "single"), ("api", "single"), ("api", "browser"), ("uncoalesced", "single"),
        ("bare", "batch"), ("api", "batch"), ("per_event", "batch"), ("api", "hot"),
        ("hot_spread", "hot"),
    ]  # fmt: skip
    if args.only == "single":
        plan = plan[:3]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {step: [] for step in plan}
    per_event_env = {**api_env, "PRODUCE_SITE_ARRAYS": "0"}
    uncoalesced_env = {**api_env, "PRODUCE_COALESCE": "0"}
    spread_env = {**api_env, "HOT_SITES": f"hot-site:{HOT_SITE_SPREAD}"}
    cpus = args.cpus
    with (
        serve("bare", workers, {}, tmp, cpus) as bare,
        serve("ingest", workers, api_env, tmp, cpus) as api,
        serve("ingest", workers, uncoalesced_env, tmp, cpus) as uncoalesced,
        serve("ingest", workers, per_event_env, tmp, cpus) as per_event,
        serve("ingest", workers, spread_env, tmp, cpus) as hot_spread,
    ):
        wait_for_browser_route(api, specs["browser"])
        servers = {"bare": bare, "api": api, "uncoalesced": uncoalesced,
                   "per_event": per_event, "hot_spread": hot_spread}  # fmt: skip
        for _ in range(args.rounds):
            for server, spec in plan:
                results[(server, spec)].append(measure(servers[server], specs[spec], tmp, args))
    r = {step: _merge(runs) for step, runs in results.items()}
    n = args.batch_size
    singles = [
        _row("bare POST /event (ceiling)", workers, r["bare", "single"], None),
        _row("API POST /event", workers, r["api", "single"], r["bare", "single"]),
        _row("API POST /api/event (browser hits, enriched)", workers, r["api", "browser"],
             r["bare", "single"]),
    ]  # fmt: skip
    if args.only == "single":
        return singles
    return [
        *singles,
        _row("API POST /event, PRODUCE_COALESCE=0", workers, r["uncoalesced", "single"],
             r["bare", "single"]),
        _row(f"bare POST /events x{n} (ceiling)", workers, r["bare", "batch"], None),
        _row(f"API POST /events x{n}, message per partition", workers, r["api", "batch"],
             r["bare", "batch"]),
        _row(f"API POST /events x{n}, message per event", workers, r["per_event", "batch"],
             r["bare", "batch"]),
        _row(f"API POST /events x{n}, one site (1 partition)", workers, r["api", "hot"],
             r["bare", "batch"]),
        _row(f"API POST /events x{n}, one site, HOT_SITES={HOT_SITE_SPREAD} sub-keys", workers,
             r["hot_spread", "hot"], r["bare", "batch"]),
    ]  # fmt: skip


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench ingest")
    parser.add_argument("--duration-s", type=float, default=4, help="per run and round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per run")
    parser.add_argument("--cpus", default="", help="pin the servers: taskset -c CPUS")
    parser.add_argument(
        "--only", choices=("", "single"), default="", help="single: the three single-hit rows"
    )
    args, _ = parser.parse_known_args(argv)
    bootstrap = KAFKA_BOOTSTRAP_SERVERS.read(os.environ)
    server_url = DATABASE_URL.read(os.environ)
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    database = topic.replace("-", "_")
    database_url = make_conninfo(server_url, dbname=database)
    # The browser route: a visitor key of this run, salts in a database of this run, and the
    # client taken from X-Forwarded-For as behind one proxy.
    api_env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "EVENTS_TOPIC": topic,
               "DLQ_TOPIC": f"{topic}.dlq", "LOG_LEVEL": "WARNING",
               "DATABASE_URL": database_url, "TRUSTED_PROXY_HOPS": "1",
               "VISITOR_KEY": base64.b64encode(os.urandom(32)).decode()}  # fmt: skip
    specs = _specs(args.batch_size)
    rows: list[list[Any]] = []
    print(f"bench ingest: {args.connections} connections, {args.duration_s:g} s per run, "
          f"Kafka {bootstrap} topic {topic} (acks=all)", file=sys.stderr)  # fmt: skip
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            asyncio.run(apply_schema(database_url))
            for workers in [int(w) for w in args.workers.split(",")]:
                rows += run_workers(workers, api_env, specs, tmp, args)
        finally:
            with contextlib.suppress(Exception):
                asyncio.run(_delete_topics(bootstrap, [topic, f"{topic}.dlq"]))
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database)
                    )
                )
    pinned = f", servers pinned to CPU {args.cpus}" if args.cpus else ""
    print_table(
        f"ingest: {args.connections} connections, {args.rounds} x {args.duration_s:g} s "
        f"per run (interleaved), acks=all{pinned}",
        [
            "run",
            "workers",
            "req/s",
            "events/s",
            "p50 ms",
            "p99 ms",
            "non-2xx",
            "% of bare",
            "server CPU µs/event",
            "loadgen cores",
        ],
        rows,
    )
