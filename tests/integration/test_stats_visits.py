"""Visit metrics, breakdowns and filters (visits, bounce_rate, visit_duration,
views_per_visit; visit:source, visit:utm_*, visit:entry_page, visit:exit_page …) and the
realtime count, against a real PostgreSQL.

The visit tables are seeded from a list of visits (`seed_visits`: the visits rows as the
consumer keeps them, and its rollups recounted from them), and every answer is compared
with a recount of the same list done here in Python, in UTC, in a zone of half hours
(Asia/Kolkata) and in one of whole hours (America/New_York). Nothing here depends on how the
rows were written, so the same checks hold on rows the consumer wrote.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from consumer.rollups import ROLLUPS
from ingest.settings import Settings
from ingest.stats_realtime import RealtimeCounts
from tests.integration.test_stats_api import at, client_for, get_json, make_app

pytestmark = pytest.mark.postgres

SITE = "site-visits"
NOT_SET = "(not set)"


@dataclass(frozen=True)
class Visit:
    visitor: str
    started_at: dt.datetime
    last_at: dt.datetime
    entry_page: str
    exit_page: str
    page_views: int
    events: int
    referrer_host: str | None = None
    referrer_source: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None
    browser: str | None = None
    os: str | None = None
    device: str | None = None
    country: str | None = None
    site_id: str = SITE


COLUMNS = [f.name for f in fields(Visit)]
# The visit rollups the stats read, recounted from the seeded visits by their own statements.
VISIT_ROLLUPS = [rollup for rollup in ROLLUPS if rollup.from_visits and not rollup.sealed]


def seed_visits(database_url: str, visits: Iterable[Visit]) -> None:
    """The visits rows, `day` the UTC day of the start, and their rollups recounted. They
    replace whatever visits the consumer made of events written before: the rows given are
    the test's whole oracle."""
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE visits")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO visits (day, {', '.join(COLUMNS)}) "
                f"VALUES (%s, {', '.join(['%s'] * len(COLUMNS))})",
                [
                    (v.started_at.astimezone(dt.UTC).date(), *(getattr(v, c) for c in COLUMNS))
                    for v in visits
                ],
            )
        conn.execute("TRUNCATE " + ", ".join(rollup.table for rollup in VISIT_ROLLUPS))
        days = sorted({v.started_at.astimezone(dt.UTC).date() for v in visits})
        for rollup in VISIT_ROLLUPS:
            conn.execute(rollup.sql("recount"), {"days": days, "site": None})


GOOGLE = {"referrer_host": "www.google.com", "referrer_source": "Google"}
HN = {"referrer_host": "news.ycombinator.com", "referrer_source": "Hacker News"}
CPC = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "brand",
       "utm_content": "ad1", "utm_term": "analytics"}  # fmt: skip
MAIL = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "launch"}
FIREFOX = {"browser": "Firefox", "os": "Ubuntu", "device": "desktop", "country": "NL"}
SAFARI = {"browser": "Mobile Safari", "os": "iOS", "device": "mobile", "country": "US"}
CHROME = {"browser": "Chrome", "os": "Android", "device": "tablet", "country": "NL"}


def visit(
    start: str, end: str, who: str, entry: str, exit: str, views: int, events: int, **more: Any
) -> Visit:
    return Visit(who, at(start), at(end), entry, exit, views, events, **more)


# Around local midnights: Asia/Kolkata's start at 18:30 UTC, America/New_York's at 05:00 UTC
# (November); one visit crosses a UTC midnight, one a Kolkata midnight.
VISITS = [
    visit("2025-11-10 12:00:00", "2025-11-10 12:00:00", "u7", "/", "/", 1, 1, **GOOGLE),
    visit("2025-11-11 18:20:00", "2025-11-11 18:25:00", "u1", "/", "/pricing", 3, 3,
          **GOOGLE, **FIREFOX),
    visit("2025-11-11 18:40:00", "2025-11-11 18:40:00", "u2", "/blog", "/blog", 1, 1,
          **HN, **SAFARI),
    visit("2025-11-12 09:00:00", "2025-11-12 09:12:30.700", "u1", "/", "/signup", 2, 3,
          **MAIL, **FIREFOX),
    visit("2025-11-12 10:00:00", "2025-11-12 10:00:00", "u3", "/", "/", 1, 1,
          **GOOGLE, **CPC, **CHROME),
    visit("2025-11-12 10:05:00", "2025-11-12 10:05:00", "u4", "/pricing", "/pricing", 0, 1),
    visit("2025-11-12 18:29:00", "2025-11-12 19:05:00", "u2", "/blog", "/", 4, 5,
          referrer_host="example.org", **SAFARI),
    visit("2025-11-12 23:50:00", "2025-11-13 00:20:00", "u5", "/", "/docs", 2, 2,
          **GOOGLE, **FIREFOX),
    visit("2025-11-13 04:59:00", "2025-11-13 05:00:01", "u1", "/docs", "/docs", 1, 1,
          **FIREFOX),
    visit("2025-11-13 05:00:00", "2025-11-13 05:30:00", "u6", "/", "/pricing", 3, 4,
          **GOOGLE, **CPC, **CHROME),
    visit("2025-11-12 10:00:00", "2025-11-12 10:30:00", "x1", "/", "/", 9, 9, site_id="other"),
]  # fmt: skip
ZONES = ["UTC", "Asia/Kolkata", "America/New_York"]
RANGES = [("2025-11-12", "2025-11-12"), ("2025-11-11", "2025-11-13"), ("2025-11-10", "2025-11-13")]
VISIT_METRICS = ["visits", "bounce_rate", "visit_duration", "views_per_visit"]
SESSION = ["source", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content",
           "utm_term", "entry_page", "exit_page"]  # fmt: skip


# The oracle: the same questions answered from the list.


def value(v: Visit, dimension: str) -> str:
    if dimension == "source":
        return v.referrer_source or v.referrer_host or NOT_SET
    if dimension == "referrer":
        return v.referrer_host or NOT_SET
    found: str | None = getattr(v, dimension)
    return found or NOT_SET


def local(v: Visit, zone: str) -> dt.datetime:
    return v.started_at.astimezone(zoneinfo.ZoneInfo(zone))


Check = Callable[[Visit], bool]


def chosen(zone: str, first: str, last: str, *checks: Check) -> list[Visit]:
    lo, hi = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [
        v
        for v in VISITS
        if v.site_id == SITE and lo <= local(v, zone).date() <= hi and all(c(v) for c in checks)
    ]


def half_up(x: Fraction, places: int = 0) -> Fraction:
    scale = 10**places
    return Fraction(int(x * scale + Fraction(1, 2)), scale)


def metrics_of(visits: list[Visit]) -> dict[str, Any]:
    n = len(visits)
    bounces = sum(1 for v in visits if v.events == 1 and v.page_views == 1)
    seconds = sum(int((v.last_at - v.started_at).total_seconds()) for v in visits)
    views = sum(v.page_views for v in visits)
    return {
        "visits": n,
        "bounce_rate": int(half_up(Fraction(100 * bounces, n))) if n else 0,
        "visit_duration": int(half_up(Fraction(seconds, n))) if n else 0,
        "views_per_visit": float(half_up(Fraction(views, n), 2)) if n else 0.0,
        "views": views,
        "visitors": len({v.visitor for v in visits}),
    }


def is_(dimension: str, wanted: str, negated: bool = False) -> Check:
    return lambda v: (value(v, dimension) == wanted) != negated


def expected_breakdown(
    visits: list[Visit], dimension: str, metrics: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for name in {value(v, dimension) for v in visits}:
        of = metrics_of([v for v in visits if value(v, dimension) == name])
        rows.append({dimension: name, **{m: of[m] for m in metrics}})
    return sorted(rows, key=lambda r: (-r[metrics[0]], r[dimension]))


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    seed_visits(database_url, VISITS)
    async with (
        AsyncConnectionPool(
            database_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
        ) as pool,
        client_for(make_app(Settings(stats_rate_limit_per_s=0), pool)) as c,
    ):
        yield c


def results(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v["value"] for k, v in body["results"].items()}


def span(days: tuple[str, str], zone: str) -> dict[str, str]:
    return {"site_id": SITE, "period": "custom", "date": ",".join(days), "timezone": zone}


@pytest.mark.parametrize("zone", ZONES)
async def test_visit_totals_match_a_recount_in_every_zone(
    client: httpx.AsyncClient, zone: str
) -> None:
    for days in RANGES:
        body = await get_json(
            client, "/api/v1/stats/aggregate", metrics=",".join(VISIT_METRICS), **span(days, zone)
        )
        expected = metrics_of(chosen(zone, *days))
        assert results(body) == {m: expected[m] for m in VISIT_METRICS}, (zone, days)


FILTERS: list[tuple[str, list[Check]]] = [
    ("visit:source==Google", [is_("source", "Google")]),
    ("visit:source!=Google", [is_("source", "Google", True)]),
    ("visit:source==(not set)", [is_("source", NOT_SET)]),
    ("visit:referrer==example.org", [is_("referrer", "example.org")]),
    ("visit:utm_medium==cpc", [is_("utm_medium", "cpc")]),
    ("visit:utm_campaign!=launch", [is_("utm_campaign", "launch", True)]),
    ("visit:entry_page==/", [is_("entry_page", "/")]),
    ("visit:exit_page==/pricing", [is_("exit_page", "/pricing")]),
    ("visit:browser==Firefox", [is_("browser", "Firefox")]),
    ("visit:country==(not set)", [is_("country", NOT_SET)]),
    (
        "visit:source==Google;visit:device!=tablet",
        [is_("source", "Google"), is_("device", "tablet", True)],
    ),
]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(("filters", "checks"), FILTERS, ids=[f for f, _ in FILTERS])
async def test_a_visit_filter_applies_to_totals_and_series(
    client: httpx.AsyncClient, zone: str, filters: str, checks: list[Check]
) -> None:
    """Views and visitors are the matching visits' when a filter names a visit's source or
    pages; a context filter leaves them to the event rollups (not asked here)."""
    session = any(name in filters for name in SESSION)
    metrics = VISIT_METRICS + (["views", "visitors"] if session else [])
    for days in RANGES:
        body = await get_json(
            client, "/api/v1/stats/aggregate", metrics=",".join(metrics), filters=filters,
            **span(days, zone),
        )  # fmt: skip
        expected = metrics_of(chosen(zone, *days, *checks))
        assert results(body) == {m: expected[m] for m in metrics}, (zone, days)
    days = RANGES[1]
    for interval in ("day", "hour"):
        series = await get_json(
            client, "/api/v1/stats/timeseries", metrics="visits,bounce_rate,views_per_visit",
            filters=filters, interval=interval, **span(days, zone),
        )  # fmt: skip
        expected_points = expected_series(chosen(zone, *days, *checks), zone, interval)
        shown = {
            p["date"]: (p["visits"], p["bounce_rate"], p["views_per_visit"])
            for p in series["results"]
            if p["visits"]
        }
        assert shown == expected_points, (zone, interval)


def expected_series(
    visits: list[Visit], zone: str, interval: str
) -> dict[str, tuple[int, int, float]]:
    def period(v: Visit) -> str:
        t = local(v, zone)
        return t.date().isoformat() if interval == "day" else f"{t:%Y-%m-%d %H:00:00}"

    points = {}
    for name in {period(v) for v in visits}:
        of = metrics_of([v for v in visits if period(v) == name])
        points[name] = (of["visits"], of["bounce_rate"], of["views_per_visit"])
    return points


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("interval", ["day", "hour"])
async def test_an_unfiltered_visit_series_matches_a_recount(
    client: httpx.AsyncClient, zone: str, interval: str
) -> None:
    days = RANGES[1]
    series = await get_json(
        client, "/api/v1/stats/timeseries", metrics="visits,bounce_rate,views_per_visit",
        interval=interval, **span(days, zone),
    )  # fmt: skip
    points = series["results"]
    assert len(points) == (3 if interval == "day" else 72)  # zeros where nothing started
    shown = {p["date"]: (p["visits"], p["bounce_rate"], p["views_per_visit"]) for p in points}
    expected = expected_series(chosen(zone, *days), zone, interval)
    assert {k: v for k, v in shown.items() if v[0]} == expected


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("dimension", [*SESSION, "browser", "country"])
async def test_a_visit_breakdown_matches_a_recount(
    client: httpx.AsyncClient, zone: str, dimension: str
) -> None:
    metrics = ["visitors", "visits", "bounce_rate", "visit_duration", "views_per_visit", "views"]
    for days in RANGES:
        body = await get_json(
            client, "/api/v1/stats/breakdown", property=f"visit:{dimension}",
            metrics=",".join(metrics), **span(days, zone),
        )  # fmt: skip
        expected = expected_breakdown(chosen(zone, *days), dimension, metrics)
        assert body["results"] == expected, (zone, days)
        assert body["property"] == dimension


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("sort", [*VISIT_METRICS, "views"])
async def test_a_visit_breakdown_sorts_by_its_first_metric_and_pages(
    client: httpx.AsyncClient, zone: str, sort: str
) -> None:
    days = RANGES[2]
    metrics = [sort, "visitors"]
    expected = expected_breakdown(chosen(zone, *days), "entry_page", metrics)
    pages = []
    for page in (1, 2, 3):
        body = await get_json(
            client, "/api/v1/stats/breakdown", property="visit:entry_page",
            metrics=",".join(metrics), limit=1, page=page, **span(days, zone),
        )  # fmt: skip
        pages += body["results"]
    assert pages == expected[:3]


@pytest.mark.parametrize("zone", ZONES)
async def test_a_filtered_visit_breakdown_reads_the_visits(
    client: httpx.AsyncClient, zone: str
) -> None:
    days = RANGES[2]
    body = await get_json(
        client, "/api/v1/stats/breakdown", property="visit:source",
        filters="visit:device!=tablet;visit:entry_page==/", metrics="visits,bounce_rate",
        **span(days, zone),
    )  # fmt: skip
    visits = chosen(zone, *days, is_("device", "tablet", True), is_("entry_page", "/"))
    assert body["results"] == expected_breakdown(visits, "source", ["visits", "bounce_rate"])


async def test_a_source_breakdown_defaults_to_visitors_and_visits(
    client: httpx.AsyncClient,
) -> None:
    body = await get_json(
        client, "/api/v1/stats/breakdown", property="visit:source", **span(RANGES[1], "UTC")
    )
    expected = expected_breakdown(chosen("UTC", *RANGES[1]), "source", ["visitors", "visits"])
    assert body["results"] == expected
    assert body["results"][0] == {"source": "Google", "visitors": 4, "visits": 4}


REFUSED = [
    (
        "/api/v1/stats/aggregate",
        {"metrics": "visits", "filters": "event:page==/"},
        "filters",
        "event:page",
    ),
    (
        "/api/v1/stats/timeseries",
        {"metrics": "views", "filters": "visit:source==Google;event:name==signup"},
        "filters",
        "event:name",
    ),
    (
        "/api/v1/stats/aggregate",
        {"metrics": "events", "filters": "visit:utm_medium==cpc"},
        "metrics",
        "events",
    ),
    (
        "/api/v1/stats/breakdown",
        {"property": "visit:source", "metrics": "events"},
        "metrics",
        "events",
    ),
    (
        "/api/v1/stats/breakdown",
        {"property": "event:page", "metrics": "visits"},
        "metrics",
        "event:page",
    ),
    (
        "/api/v1/stats/breakdown",
        {"property": "event:name", "filters": "visit:source==Google"},
        "filters",
        "event:name",
    ),
    (
        "/api/v1/stats/breakdown",
        {"property": "visit:exit_page", "filters": "event:props:plan==pro"},
        "filters",
        "event:props",
    ),
    ("/api/v1/stats/aggregate", {"metrics": "bounces"}, "metrics", "bounce_rate"),
    ("/api/v1/stats/breakdown", {"property": "visit:utm_planet"}, "property", "visit:utm_term"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "params", "field", "named"), REFUSED)
async def test_what_visits_cannot_answer_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, path: str, params: dict[str, str], field: str, named: str
) -> None:
    response = await client.get(path, params={"site_id": SITE, **params})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["field"] == field
    assert named in body["message"]


async def test_realtime_counts_visitors_seen_in_the_last_five_minutes(
    database_url: str,
) -> None:
    now = dt.datetime.now(dt.UTC)
    ago = lambda minutes: now - dt.timedelta(minutes=minutes)  # noqa: E731
    seed_visits(
        database_url,
        [
            Visit("a", ago(40), ago(1), "/", "/x", 5, 5),
            Visit("a", ago(3), ago(2), "/", "/", 2, 2),  # the same visitor, another tab
            Visit("b", ago(4), ago(4), "/", "/", 1, 1),
            Visit("c", ago(30), ago(6), "/", "/", 1, 1),  # left
            Visit("e", ago(-50), ago(-50), "/", "/", 1, 1),  # dated 50 minutes ahead
            Visit("f", ago(-0.5), ago(-0.5), "/", "/", 1, 1),  # a clock 30 s fast
            Visit("d", ago(2), ago(2), "/", "/", 1, 1, site_id="other"),
        ],
    )
    settings = Settings(stats_rate_limit_per_s=0, stats_read_keys={"private": ("k",)})
    async with (
        AsyncConnectionPool(
            database_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
        ) as pool,
        client_for(make_app(settings, pool)) as client,
    ):
        path = "/api/v1/stats/realtime/visitors"
        response = await client.get(path, params={"site_id": SITE})
        assert response.status_code == 200
        assert response.content == b"3"  # a bare number, as Plausible answers
        assert response.headers["content-type"].startswith("application/json")
        assert (await client.get(path, params={"site_id": "nobody"})).json() == 0
        missing = await client.get(path)
        assert missing.status_code == 400 and missing.json()["field"] == "site_id"
        assert (await client.get(path, params={"site_id": "private"})).status_code == 401
        keyed = await client.get(
            path, params={"site_id": "private"}, headers={"Authorization": "Bearer k"}
        )
        assert keyed.status_code == 200 and keyed.json() == 0


async def test_a_realtime_count_answers_its_site_for_a_few_seconds(database_url: str) -> None:
    now = dt.datetime.now(dt.UTC)
    seed_visits(database_url, [Visit("a", now, now, "/", "/", 1, 1)])
    clock = [0.0]
    counts = RealtimeCounts(ttl_s=5.0, max_sites=2, timer=lambda: clock[0])
    async with AsyncConnectionPool(
        database_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    ) as pool:
        assert await counts.current_visitors(pool, SITE, now) == 1
        with psycopg.connect(database_url) as conn:  # a second visitor arrives
            conn.execute(
                "INSERT INTO visits (site_id, visitor, started_at, last_at, day, entry_page,"
                " exit_page, page_views, events) VALUES (%s, 'b', %s, %s, %s, '/', '/', 1, 1)",
                (SITE, now, now, now.date()),
            )
        clock[0] = 4.9
        assert await counts.current_visitors(pool, SITE, now) == 1  # the shared count
        assert await counts.current_visitors(pool, "other", now) == 0  # per site
        clock[0] = 5.1
        assert await counts.current_visitors(pool, SITE, now) == 2  # counted anew


# Many values: visit breakdowns rank on exact sums and merge sketches for the shown values
# only (ingest/stats_visits_rank.py). Fifty pages of one returning visitor each lead by
# visits; /real, with the most visitors, ranks after all of them; ties in every metric.


def many_visits() -> list[Visit]:
    pages: list[tuple[str, list[str], int]] = []  # page, its visitors, visits per visitor
    pages += [(f"/bot/{i:02}", [f"b{i:02}"], 21 + i % 5) for i in range(50)]
    pages.append(("/real", [f"r{j:02}" for j in range(20)], 1))
    pages += [(f"/t/{name}", [f"t{name}{j}" for j in range(3)], 1) for name in "abc"]
    pages.append(("/t/d", [f"td{j}" for j in range(3)], 2))
    pages += [(f"/v/{i:02}", [f"v{i}-{j}" for j in range(2 + i % 6)], 1 + i % 3) for i in range(15)]
    start = at("2025-11-11 00:00:00")
    made = []
    for page, visitors, each in pages:
        for who in visitors:
            for _ in range(each):
                k = len(made)
                views = 1 if page == "/real" or page.startswith("/t/") else 1 + k % 3
                events = views + (0 if views == 1 and k % 4 else k % 2)
                begin = start + dt.timedelta(minutes=3.5 * k, seconds=k % 7)
                made.append(
                    Visit(who, begin, begin + dt.timedelta(seconds=(k % 5) * 37 * (events > 1)),
                          page, page, views, events, referrer_source=page, utm_campaign=page,
                          browser=page)
                )  # fmt: skip
    return made


MANY = many_visits()
MANY_RANGES = [("2025-11-11", "2025-11-13"), ("2025-11-12", "2025-11-12")]
SORTS = ["visitors", "visits", "views", "bounce_rate", "visit_duration", "views_per_visit"]


def within(visits: list[Visit], zone: str, first: str, last: str) -> list[Visit]:
    lo, hi = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [v for v in visits if lo <= local(v, zone).date() <= hi]


@pytest.fixture
async def many(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    seed_visits(database_url, MANY)
    async with (
        AsyncConnectionPool(
            database_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
        ) as pool,
        client_for(make_app(Settings(stats_rate_limit_per_s=0), pool)) as c,
    ):
        yield c


async def pages_of(
    client: httpx.AsyncClient, limit: int, count: int, **params: Any
) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = []
    for page in range(1, count + 1):
        body = await get_json(client, "/api/v1/stats/breakdown", limit=limit, page=page, **params)
        assert len(body["results"]) <= limit
        shown += body["results"]
    return shown


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
@pytest.mark.parametrize("sort", SORTS)
async def test_a_breakdown_of_many_values_pages_as_a_recount(
    many: httpx.AsyncClient, zone: str, sort: str
) -> None:
    metrics = [sort, *(m for m in SORTS if m != sort)]
    for days in MANY_RANGES:
        expected = expected_breakdown(within(MANY, zone, *days), "entry_page", metrics)
        params = {
            "property": "visit:entry_page", "metrics": ",".join(metrics), **span(days, zone)
        }  # fmt: skip
        whole = await get_json(many, "/api/v1/stats/breakdown", **params)
        assert whole["results"] == expected, (zone, days)
        # Every page of 7 (the last one past the values: empty), and the first of 1 and 2.
        assert await pages_of(many, 7, len(expected) // 7 + 2, **params) == expected
        assert await pages_of(many, 1, 2, **params) == expected[:2]


async def test_the_most_visitors_lead_though_fifty_values_have_more_visits(
    many: httpx.AsyncClient,
) -> None:
    for dimension in ("entry_page", "exit_page", "source", "utm_campaign", "browser"):
        body = await get_json(
            many, "/api/v1/stats/breakdown", property=f"visit:{dimension}",
            metrics="visitors,visits", limit=3, **span(MANY_RANGES[0], "UTC"),
        )  # fmt: skip
        visits = within(MANY, "UTC", *MANY_RANGES[0])
        assert body["results"] == expected_breakdown(visits, dimension, ["visitors", "visits"])[:3]
        assert body["results"][0] == {dimension: "/real", "visitors": 20, "visits": 20}
        assert body["visitors_approximate"] is True


# Plausible's name of page views, answered under the name asked.


async def test_pageviews_is_an_alias_of_views_answered_under_its_name(
    client: httpx.AsyncClient,
) -> None:
    days = RANGES[1]
    google = chosen("UTC", *days, is_("source", "Google"))
    body = await get_json(
        client, "/api/v1/stats/aggregate", metrics="pageviews,visits",
        filters="visit:source==Google", **span(days, "UTC"),
    )  # fmt: skip
    assert results(body) == {"pageviews": metrics_of(google)["views"], "visits": len(google)}
    plain = await get_json(client, "/api/v1/stats/aggregate", metrics="pageviews,visits",
                           **span(days, "UTC"))  # fmt: skip
    assert list(plain["results"]) == ["pageviews", "visits"]
    series = await get_json(
        client, "/api/v1/stats/timeseries", metrics="visits,pageviews",
        filters="visit:source==Google", **span(days, "UTC"),
    )  # fmt: skip
    for point in series["results"]:
        that_day = [v for v in google if local(v, "UTC").date().isoformat() == point["date"]]
        assert point == {
            "date": point["date"],
            "visits": len(that_day),
            "pageviews": metrics_of(that_day)["views"],
        }
    ranked = await get_json(
        client, "/api/v1/stats/breakdown", property="visit:source", metrics="pageviews,visits",
        **span(days, "UTC"),
    )  # fmt: skip
    expected = expected_breakdown(chosen("UTC", *days), "source", ["views", "visits"])
    assert ranked["results"] == [
        {"source": row["source"], "pageviews": row["views"], "visits": row["visits"]}
        for row in expected
    ]
