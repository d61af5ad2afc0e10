"""`python -m bench stats [--events N] [--rate R] [--seconds S] [--windows W] [--reload]
[--mode alone|together|both] [--only A|B]`

Loads (or reuses) a site with N events in one month, starts the API as a real process on
that database, and drives each stats query at a fixed rate for W windows of S seconds,
printing client and server p50 and p99 of the window with the median server p99 (and every
window's p99), and, each query alone, the server time of its first answer on the fresh API
(what it costs before any answer is kept; the load that follows mostly reuses it while
nothing commits). Queries with a filter on a hit's context (`visit:...`), which read raw
events, run at --filtered-rate instead of --rate. In the same run, after the load, it times
the naive query over raw events for the same questions (the baseline) and prints the ratios.

`--mode together` drives every chosen query at once against one API, --rate shared between
them (each query's own p50/p99 reported), so that a slow question shows whether it slows the
others; `both` runs each alone, then all together. Zones other than the site's kept one are
made not kept before each measurement (the bench runs no consumer, so nothing keeps them
during it): their rows measure a zone asked for the first time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psycopg

from bench import http_load, stats_data
from bench.batches import OTHER_SITE, batches_beside
from bench.consumer import pin_local_backend
from bench.table import print_table
from consumer.zones import remove_zone
from core.settings import DATABASE_URL, DB_POOL_MAX_SIZE, DB_POOL_MIN_SIZE

ROOT = Path(__file__).resolve().parent.parent
SITE = stats_data.SITE
DAY = "2025-11-12"
MONTH = {"period": "month", "date": DAY}

# (name, path, params, target p99 ms, naive SQL over raw events answering the same question)
NAIVE_DAY = """
SELECT count(*), count(DISTINCT user_id),
       (SELECT array_agg(path) FROM (
           SELECT path FROM events WHERE site_id = %(site)s AND day = %(day)s
             AND event_type = 'page_view'
           GROUP BY path ORDER BY count(*) DESC, path LIMIT 3) t)
FROM events WHERE site_id = %(site)s AND day = %(day)s AND event_type = 'page_view'
"""
NAIVE_MONTH = """
SELECT count(*) FILTER (WHERE event_type = 'page_view'),
       count(DISTINCT user_id) FILTER (WHERE event_type = 'page_view'), count(*)
FROM events WHERE site_id = %(site)s
  AND event_time >= %(start)s::timestamptz AND event_time < %(end)s::timestamptz
"""
NAIVE_SERIES = """
SELECT (event_time AT TIME ZONE %(tz)s)::date, count(*) FILTER (WHERE event_type = 'page_view'),
       count(DISTINCT user_id) FILTER (WHERE event_type = 'page_view'), count(*)
FROM events WHERE site_id = %(site)s
  AND event_time >= %(start)s::timestamptz AND event_time < %(end)s::timestamptz
GROUP BY 1 ORDER BY 1
"""
NAIVE_TOP = """
SELECT path, count(*), count(DISTINCT user_id) FROM events
WHERE site_id = %(site)s AND event_type = 'page_view'
  AND event_time >= %(start)s::timestamptz AND event_time < %(end)s::timestamptz
GROUP BY path ORDER BY 2 DESC, 1 LIMIT 10
"""
NAIVE_BROWSERS = """
SELECT coalesce(browser, '(not set)'), count(*) FILTER (WHERE event_type = 'page_view'),
       count(DISTINCT user_id) FILTER (WHERE event_type = 'page_view'), count(*)
FROM events WHERE site_id = %(site)s
  AND event_time >= %(start)s::timestamptz AND event_time < %(end)s::timestamptz
  AND (%(country)s = '' OR country = %(country)s)
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10
"""
NAIVE_VISIT_TOTALS = """
SELECT count(*), count(*) FILTER (WHERE events = 1 AND page_views = 1),
       avg(extract(epoch FROM last_at - started_at)), avg(page_views)
FROM visits WHERE site_id = %(site)s
  AND started_at >= %(start)s::timestamptz AND started_at < %(end)s::timestamptz
"""
NAIVE_VISIT_SOURCES = """
SELECT coalesce(referrer_source, referrer_host, '(not set)'), count(DISTINCT visitor), count(*),
       count(*) FILTER (WHERE events = 1 AND page_views = 1)
FROM visits WHERE site_id = %(site)s
  AND started_at >= %(start)s::timestamptz AND started_at < %(end)s::timestamptz
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10
"""
NAIVE_REALTIME = """
SELECT count(DISTINCT visitor) FROM visits
WHERE site_id = %(site)s AND last_at >= %(start)s::timestamptz - interval '5 minutes'
"""
VISIT_METRICS = "visitors,visits,views,views_per_visit,bounce_rate,visit_duration"
# Countries of bench/consumer.py's context(): about half the events come from COMMON_COUNTRY,
# 5 % from TYPICAL_COUNTRY.
COMMON_COUNTRY = "AB"
TYPICAL_COUNTRY = "AE"
# A whole-hour zone the site does not keep, without daylight saving time in November.
WHOLE_HOUR_ZONE = "Asia/Tokyo"
UTC_MONTH = {"start": "2025-11-01 00:00+00", "end": "2025-12-01 00:00+00", "tz": "UTC"}
IST_MONTH = {"start": "2025-10-31 18:30+00", "end": "2025-11-30 18:30+00", "tz": "Asia/Kolkata"}
JST_MONTH = {"start": "2025-10-31 15:00+00", "end": "2025-11-30 15:00+00", "tz": WHOLE_HOUR_ZONE}
NPT_MONTH = {
    "start": "2025-10-31 18:15+00",
    "end": "2025-11-30 18:15+00",
    "tz": "Asia/Kathmandu",
}

QUERIES: list[tuple[str, str, dict[str, str], float, str, dict[str, str]]] = [
    ("/stats day (UTC)", "/stats", {"date": DAY}, 5.0, NAIVE_DAY, {"day": DAY}),
    (
        "/stats day (Asia/Kolkata: site's zone)",
        "/stats",
        {"date": DAY, "timezone": "Asia/Kolkata"},
        10.0,
        NAIVE_DAY,
        {"day": DAY},
    ),
    (
        "/stats day (Asia/Kathmandu: other zone)",
        "/stats",
        {"date": DAY, "timezone": "Asia/Kathmandu"},
        10.0,
        NAIVE_DAY,
        {"day": DAY},
    ),
    (
        "aggregate month (UTC)",
        "/api/v1/stats/aggregate",
        MONTH,
        10.0,
        NAIVE_MONTH,
        UTC_MONTH,
    ),
    (
        "aggregate month (Asia/Kolkata: site's zone)",
        "/api/v1/stats/aggregate",
        {**MONTH, "timezone": "Asia/Kolkata"},
        10.0,
        NAIVE_MONTH,
        IST_MONTH,
    ),
    (
        "timeseries month by day (UTC)",
        "/api/v1/stats/timeseries",
        MONTH,
        10.0,
        NAIVE_SERIES,
        UTC_MONTH,
    ),
    (
        "timeseries month by day (Asia/Kolkata: site's zone)",
        "/api/v1/stats/timeseries",
        {**MONTH, "timezone": "Asia/Kolkata"},
        10.0,
        NAIVE_SERIES,
        IST_MONTH,
    ),
    (
        "timeseries month by day (Asia/Kathmandu: other zone)",
        "/api/v1/stats/timeseries",
        {**MONTH, "timezone": "Asia/Kathmandu"},
        10.0,
        NAIVE_SERIES,
        NPT_MONTH,
    ),
    (
        "timeseries day by hour (UTC)",
        "/api/v1/stats/timeseries",
        {"period": "day", "date": DAY, "interval": "hour"},
        10.0,
        "",
        {},
    ),
    (
        "breakdown top 10 paths, month (UTC)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "event:page", "limit": "10"},
        10.0,
        NAIVE_TOP,
        UTC_MONTH,
    ),
    (
        "breakdown top 10 paths, month (Asia/Kolkata: site's zone)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "event:page", "limit": "10", "timezone": "Asia/Kolkata"},
        10.0,
        NAIVE_TOP,
        IST_MONTH,
    ),
    (
        "breakdown top 10 paths, month (Asia/Kathmandu: other zone)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "event:page", "limit": "10", "timezone": "Asia/Kathmandu"},
        10.0,
        NAIVE_TOP,
        NPT_MONTH,
    ),
    (
        "breakdown event types, month (UTC)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "event:name"},
        10.0,
        "",
        {},
    ),
    (
        "aggregate month, filter path (UTC)",
        "/api/v1/stats/aggregate",
        {**MONTH, "filters": "event:page==/page/3"},
        10.0,
        "",
        {},
    ),
    (
        "breakdown browsers, month (UTC)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "visit:browser"},
        10.0,
        NAIVE_BROWSERS,
        {**UTC_MONTH, "country": ""},
    ),
    (
        f"breakdown browsers, month ({WHOLE_HOUR_ZONE}: whole-hour zone)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "visit:browser", "timezone": WHOLE_HOUR_ZONE},
        10.0,
        NAIVE_BROWSERS,
        {**JST_MONTH, "country": ""},
    ),
    (
        f"breakdown browsers, month, filter country=={COMMON_COUNTRY} (half the events) (UTC)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "visit:browser", "filters": f"visit:country=={COMMON_COUNTRY}"},
        100.0,
        NAIVE_BROWSERS,
        {**UTC_MONTH, "country": COMMON_COUNTRY},
    ),
    (
        f"breakdown browsers, month, filter country=={TYPICAL_COUNTRY} (5 % of the events) (UTC)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "visit:browser", "filters": f"visit:country=={TYPICAL_COUNTRY}"},
        100.0,
        NAIVE_BROWSERS,
        {**UTC_MONTH, "country": TYPICAL_COUNTRY},
    ),
    (
        "aggregate month with the visit metrics (UTC)",
        "/api/v1/stats/aggregate",
        {**MONTH, "metrics": VISIT_METRICS},
        10.0,
        NAIVE_VISIT_TOTALS,
        UTC_MONTH,
    ),
    (
        "aggregate month with the visit metrics (Asia/Kolkata)",
        "/api/v1/stats/aggregate",
        {**MONTH, "metrics": VISIT_METRICS, "timezone": "Asia/Kolkata"},
        10.0,
        NAIVE_VISIT_TOTALS,
        IST_MONTH,
    ),
    (
        "breakdown visit:source, month (UTC)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "visit:source", "metrics": "visitors,visits,bounce_rate"},
        10.0,
        NAIVE_VISIT_SOURCES,
        UTC_MONTH,
    ),
    (
        "breakdown visit:entry_page, month (UTC)",
        "/api/v1/stats/breakdown",
        {**MONTH, "property": "visit:entry_page", "metrics": "visitors,visits"},
        10.0,
        "",
        UTC_MONTH,
    ),
    (
        "realtime visitors",
        "/api/v1/stats/realtime/visitors",
        {},
        10.0,
        NAIVE_REALTIME,
        UTC_MONTH,
    ),
]

# Issue 15's grid: each question for the calendar month and for the dashboard's default
# rolling 30 days, in UTC, a whole-hour zone, and :45 and :30 zones the site has never kept
# (Kathmandu is among the zones the API warms its connections in, ingest/stats_warm.py; Eucla
# and St John's are not). The 30 days end on ROLLING_DAY, inside the data, so that they span
# two calendar months (ending on the 30th they would be the calendar month in UTC).
ROLLING_DAY = "2025-11-25"
PERIODS = (("month", MONTH), ("30d", {"period": "30d", "date": ROLLING_DAY}))
GRID_ZONES = (
    ("UTC", 10.0),
    ("Europe/Berlin", 10.0),
    ("Asia/Kathmandu", 25.0),
    ("Australia/Eucla", 25.0),
    ("America/St_Johns", 25.0),
)
QUESTIONS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("aggregate", "/api/v1/stats/aggregate", {}),
    ("timeseries by day", "/api/v1/stats/timeseries", {}),
    ("timeseries by hour", "/api/v1/stats/timeseries", {"interval": "hour"}),
    ("top 10 paths", "/api/v1/stats/breakdown", {"property": "event:page", "limit": "10"}),
    ("event types", "/api/v1/stats/breakdown", {"property": "event:name"}),
    ("filter path", "/api/v1/stats/aggregate", {"filters": "event:page==/page/3"}),
)


def _grid() -> list[tuple[str, str, dict[str, str], float, str, dict[str, str]]]:
    rows: list[tuple[str, str, dict[str, str], float, str, dict[str, str]]] = []
    for zone, target in GRID_ZONES:
        zone_param = {} if zone == "UTC" else {"timezone": zone}
        for period, period_params in PERIODS:
            for question, path, params in QUESTIONS:
                name = f"grid {period} {question} ({zone})"
                rows.append((name, path, {**period_params, **params, **zone_param}, target, "", {}))
        hourly = {"period": "day", "date": DAY, "interval": "hour", **zone_param}
        rows.append(
            (
                f"grid day timeseries by hour ({zone})",
                "/api/v1/stats/timeseries",
                hourly,
                target,
                "",
                {},
            )
        )
    return rows


QUERIES += _grid()


def _rate(params: dict[str, str], args: argparse.Namespace) -> float:
    """A filter on a context dimension reads raw events: at --rate it would only queue."""
    return float(args.filtered_rate if "visit:" in params.get("filters", "") else args.rate)


def _nan_last(value: float) -> tuple[bool, float]:
    return (math.isnan(value), value)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(
    database_url: str,
    port: int,
    settings: dict[str, str] | None = None,
    pin_cpu: int | None = None,
) -> subprocess.Popen[bytes]:
    """An API process on `port` (its `settings` over the bench's), once it answers. With
    `pin_cpu`, the API and its PostgreSQL backends (the server's side of a request) run on
    that core alone: a slower server."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "EVENTS_TOPIC": "bench-stats-events",
        "DLQ_TOPIC": "bench-stats-events.dlq",
        "STATS_RATE_LIMIT_PER_S": "0",
        # Every connection comes from 127.0.0.1: --mode=together opens more than one client's
        # share.
        "MAX_CONNECTIONS_PER_CLIENT": "0",
        "LOG_LEVEL": "WARNING",
        **(settings or {}),
    }
    command = [sys.executable, "-m", "ingest"]
    earlier: set[int] = set()
    if pin_cpu is not None:
        command = ["taskset", "-c", str(pin_cpu), *command]
        earlier = _api_backends(database_url)  # another API's, closing: not this one's
    process = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_ready(process, env, port)
        if pin_cpu is not None:
            _pin_backends(_api_backends(database_url) - earlier, pin_cpu)
    except BaseException:
        process.kill()
        raise
    return process


def _wait_until_ready(process: subprocess.Popen[bytes], env: dict[str, str], port: int) -> None:
    """Until the API answers with its pool's kept connections all open and warmed, as a
    service's are well before its first visitor: no measurement waits for one."""
    kept = min(DB_POOL_MIN_SIZE.read(env), DB_POOL_MAX_SIZE.read(env))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the API exited during start-up (is Kafka running?)")
        with contextlib.suppress(httpx.TransportError):
            if _pool_ready(port, kept):
                return
        time.sleep(0.2)
    raise RuntimeError("the API did not answer within 60 s")


def _api_backends(database_url: str) -> set[int]:
    """The PostgreSQL backends of API processes on this database."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name IN ('analytics-api', 'analytics-api-salts')"
        ).fetchall()
    return {pid for (pid,) in rows}


def _pin_backends(pids: set[int], cpu: int) -> None:
    """Moves these backends (a new API's pool, open and warmed by now) to core `cpu`; they
    must be processes of this machine (PostgreSQL on another host or in a container cannot
    be pinned from here)."""
    if not pids:
        raise RuntimeError("found none of the API's PostgreSQL backends to pin")
    for pid in pids:
        if refused := pin_local_backend(pid, cpu):
            raise RuntimeError(f"cannot pin backend {pid}: {refused}")


def _pool_ready(port: int, connections: int) -> bool:
    """The API answers and its stats pool has opened (and warmed) all its connections: a
    service runs well before its first visitor, so no measurement waits for one."""
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
    ready = re.search(r"^stats_pool_available (\S+)$", metrics.text, re.MULTILINE)
    return metrics.status_code == 200 and ready is not None and float(ready[1]) >= connections


def _time_naive(database_url: str, query: str, params: dict[str, str], runs: int) -> float:
    """Median wall time (ms) of `runs` runs of the naive query (the first warms the cache)."""
    if not query:
        return float("nan")
    with psycopg.connect(database_url) as conn:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(query, {"site": SITE, **params}).fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench stats")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument(
        "--filtered-rate", type=float, default=10.0, help="req/s of context-filtered queries"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per query")
    parser.add_argument("--naive-runs", type=int, default=3)
    parser.add_argument("--windows", type=int, default=3, help="measurements per query")
    parser.add_argument("--reload", action="store_true", help="rebuild the cached dataset")
    parser.add_argument(
        "--only", default="", help="run the queries whose name contains this (or any of A|B)"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the raw-event baseline")
    parser.add_argument(
        "--mode",
        choices=("alone", "together", "both"),
        default="alone",
        help="each query alone, all at once (--rate shared), or both in turn",
    )
    parser.add_argument(
        "--arrivals",
        choices=ARRIVALS,
        default="even",
        help="with --mode=together: the queries' requests evenly spaced, at random "
        "(Poisson) gaps, or every query at the same instants (bursts of one each)",
    )
    parser.add_argument(
        "--batches-per-s",
        type=float,
        default=0.0,
        help="consumer batches committed a second while measuring (0: none)",
    )
    parser.add_argument(
        "--batches-site",
        choices=("other", "same"),
        default="other",
        help="whose events those batches store: another site's or the measured site's",
    )
    args, _ = parser.parse_known_args(argv)  # options of other sections pass through
    if args.windows < 1:
        parser.error("--windows must be at least 1")

    server_url = DATABASE_URL.read(os.environ)
    database_url = stats_data.ensure_dataset(server_url, args.events, reload=args.reload)
    wanted = args.only.split("|")
    chosen = [q for q in QUERIES if any(part in q[0] for part in wanted)]
    unkeep_other_zones(database_url, chosen)
    modes = ("alone", "together") if args.mode == "both" else (args.mode,)
    arriving = SITE if args.batches_site == "same" else OTHER_SITE
    for mode in modes:
        with batches_beside(database_url, arriving, args.batches_per_s):
            if mode == "alone":
                rows = [_measure_alone(database_url, query, args) for query in chosen]
            else:
                rows = _measure_together(database_url, chosen, args)
        _print_rows(database_url, mode, chosen, rows, args)
    unkeep_other_zones(database_url, chosen)


Query = tuple[str, str, dict[str, str], float, str, dict[str, str]]


def unkeep_other_zones(database_url: str, chosen: list[Query]) -> None:
    """Stops keeping the zones of the chosen queries other than the site's own, so that they
    are measured as a zone asked for the first time (and says so if one was kept)."""
    zones = {params.get("timezone", "UTC") for _, _, params, *_ in chosen}
    for zone in sorted(zones - {"UTC", stats_data.SITE_ZONE}):
        if asyncio.run(remove_zone(database_url, SITE, zone)):
            print(f"stats bench: {zone} was kept for {SITE}; removed", flush=True)


def _url(path: str, params: dict[str, str]) -> str:
    return f"{path}?{urlencode({'site_id': SITE, **params})}"


def _row(
    name: str,
    rate: float,
    target: float,
    windows: list[http_load.LoadResult],
    first_ms: float = math.nan,
) -> list[object]:
    """The window with the median server p99 (NaN, a window without one answer, sorts last),
    and `first_ms`, the server time of the question's first answer on a fresh API."""
    windows = sorted(windows, key=lambda w: _nan_last(http_load.percentile(w.server_ms, 99)))
    p99s = [http_load.percentile(w.server_ms, 99) for w in windows]
    result = windows[len(windows) // 2]
    server_p99 = http_load.percentile(result.server_ms, 99)
    return [
        name,
        f"{rate:g}",
        f"{result.ok}/{result.sent}",
        http_load.percentile(result.client_ms, 50),
        http_load.percentile(result.client_ms, 99),
        http_load.percentile(result.server_ms, 50),
        server_p99,
        " / ".join(f"{p:.3g}" for p in p99s),
        f"{target:g}",
        "yes" if server_p99 <= target else "NO",
        first_ms,
    ]


def server_ms(response: httpx.Response) -> float:
    """The server time an answer reports (its Server-Timing), NaN for a refusal."""
    _, _, duration = response.headers.get("server-timing", "").partition("dur=")
    return float(duration) if response.status_code == 200 and duration else math.nan


def _first_answer_ms(port: int, url: str) -> float:
    """The server time of one request on a fresh API: the question's first answer, before
    any answer is kept (ingest/stats_answers.py) and with its statements not yet prepared."""
    return server_ms(httpx.get(f"http://127.0.0.1:{port}{url}", timeout=60))


def _measure_alone(database_url: str, query: Query, args: argparse.Namespace) -> list[object]:
    """One query on a fresh API (a query that fell behind must not leave a backlog behind)."""
    name, path, params, target, _, _ = query
    rate = _rate(params, args)
    requests = int(rate * args.seconds)
    port = free_port()
    api = start_api(database_url, port)
    try:
        url = _url(path, params)
        first_ms = _first_answer_ms(port, url)
        # Warm-up: the pool's connections and the statement caches (slowly, so that a slow
        # query does not start the measurement with a backlog).
        asyncio.run(http_load.run("127.0.0.1", port, [url], rate_per_s=20, requests=20))
        # Several windows, the one with the median server p99 reported: on a shared machine
        # one window's p99 can be a neighbour's burst. A saturated query (the first window
        # far past its target) is not worth repeating.
        windows: list[http_load.LoadResult] = []
        for _ in range(args.windows):
            windows.append(
                asyncio.run(
                    http_load.run("127.0.0.1", port, [url], rate_per_s=rate, requests=requests)
                )
            )
            if http_load.percentile(windows[0].server_ms, 50) > target:
                break
        row = _row(name, rate, target, windows, first_ms)
        print(
            f"stats bench: {name}: server p99 {float(row[6]):.2f} ms, "  # type: ignore[arg-type]
            f"first answer {first_ms:.2f} ms",
            flush=True,
        )
        return row
    finally:
        api.terminate()
        api.wait(30)


# How --mode=together's requests arrive (--arrivals).
ARRIVALS = ("even", "poisson", "lockstep")


async def _together_window(
    port: int, urls: list[str], rates: list[float], seconds: float, arrivals: str
) -> list[http_load.LoadResult]:
    """Each query at its rate, all at once. Even (the default): query k starts k/total s
    after the first (total: the queries' summed rate), so that the requests arrive evenly
    spaced, one every 1/total s when the rates are equal. Poisson: each query's requests at
    random gaps of the same mean, as many independent clients, so that they sometimes
    bunch up. Lockstep: every query sends at the same instants, bursts of one request per
    query."""
    total = sum(rates)
    return list(
        await asyncio.gather(
            *(
                http_load.run(
                    "127.0.0.1",
                    port,
                    [url],
                    rate_per_s=rate,
                    requests=max(1, int(rate * seconds)),
                    connections=8,
                    delay_s=k / total if arrivals == "even" else 0.0,
                    poisson_seed=k if arrivals == "poisson" else None,
                )
                for k, (url, rate) in enumerate(zip(urls, rates, strict=True))
            )
        )
    )


def _measure_together(
    database_url: str, chosen: list[Query], args: argparse.Namespace
) -> list[list[object]]:
    """Every query at once on one API, --rate shared between those that read rollups (the
    context-filtered ones at their own --filtered-rate): each query's percentiles under the
    others' load."""
    plain = sum(1 for _, _, params, *_ in chosen if "visit:" not in params.get("filters", ""))
    rates = [
        float(args.filtered_rate)
        if "visit:" in params.get("filters", "")
        else float(args.rate) / max(1, plain)
        for _, _, params, *_ in chosen
    ]
    urls = [_url(path, params) for _, path, params, *_ in chosen]
    port = free_port()
    api = start_api(database_url, port)
    try:
        asyncio.run(http_load.run("127.0.0.1", port, urls, rate_per_s=20, requests=2 * len(urls)))
        windows = [
            asyncio.run(_together_window(port, urls, rates, args.seconds, args.arrivals))
            for _ in range(args.windows)
        ]
    finally:
        api.terminate()
        api.wait(30)
    return [
        _row(query[0], rate, query[3], [window[i] for window in windows])
        for i, (query, rate) in enumerate(zip(chosen, rates, strict=True))
    ]


def _print_rows(
    database_url: str,
    mode: str,
    chosen: list[Query],
    rows: list[list[object]],
    args: argparse.Namespace,
) -> None:
    # The naive queries last: scanning 10M rows (and spilling count(DISTINCT) to disk) would
    # disturb the next query's measurement.
    for row, (_, _, _, _, naive_sql, naive_params) in zip(rows, chosen, strict=True):
        naive_ms = _time_naive(
            database_url, "" if args.no_naive else naive_sql, naive_params, args.naive_runs
        )
        server_p50 = float(row[5])  # type: ignore[arg-type]
        row += [naive_ms, f"{naive_ms / server_p50:,.0f}x" if naive_ms == naive_ms else "-"]
    print_table(
        f"stats ({mode}): {args.events:,} events in one month, {args.rate:g} req/s "
        f"({args.filtered_rate:g} with a context filter), "
        f"{args.windows} windows of "
        f"{args.seconds:g} s per query (ms)"
        + (f", {args.arrivals} arrivals" if mode == "together" else "")
        + (
            f", {args.batches_per_s:g} batches/s of the {args.batches_site} site beside"
            if args.batches_per_s > 0
            else ""
        ),
        [
            "query",
            "req/s",
            "ok/sent",
            "client p50",
            "client p99",
            "server p50",
            "server p99",
            "server p99 of each window",
            "target p99",
            "met",
            "first answer (server ms)",
            "naive SQL p50",
            "naive / server p50",
        ],
        rows,
    )
