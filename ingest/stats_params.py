"""Step 1 of a stats request: its query parameters, validated into a frozen request (the
planner, ingest/stats_plan.py, takes it from there). Pure: `parse_*` return a request or
raise BadRequest naming the field. Range arithmetic is in ingest/stats_days.py.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Literal

import msgspec

from core.calendar import next_month
from core.events import MAX_PROP_KEY_BYTES, MAX_PROP_VALUE_BYTES
from core.timezones import UnknownTimeZone, check_timezone
from ingest.errors import BadRequest, InvalidText, OutOfRange, TooLong, TooManyFilters
from ingest.stats_days import DateRange, make_range

Metric = Literal[
    "views",
    "visitors",
    "events",
    "visits",
    "bounce_rate",
    "visit_duration",
    "views_per_visit",
]
# "props": a custom property (the key is carried beside it: Filter.key, BreakdownRequest.key).
# source … exit_page: a visit's own (ingest/stats_visits.py), which no event row holds.
Dimension = Literal[
    "event_type",
    "path",
    "browser",
    "os",
    "device",
    "country",
    "props",
    "source",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "entry_page",
    "exit_page",
]
Interval = Literal["hour", "day"]

METRICS: tuple[Metric, ...] = ("views", "visitors", "events")  # the default set
# Metrics of visits (Plausible's names), answered from the visit tables.
VISIT_METRICS: tuple[Metric, ...] = ("visits", "bounce_rate", "visit_duration", "views_per_visit")
ALL_METRICS: tuple[Metric, ...] = METRICS + VISIT_METRICS
# Plausible's name of page views, accepted in every metric list and answered under the name
# asked (stats_response.with_views_named).
METRIC_ALIASES: dict[str, Metric] = {"pageviews": "views"}
DEFAULT_PERIOD = "30d"
MAX_RANGE_DAYS = 366
MAX_HOURLY_RANGE_DAYS = 31
MAX_BREAKDOWN_LIMIT = 1000
DEFAULT_BREAKDOWN_LIMIT = 100
PAGE_VIEW = "page_view"
# A hit's context (ingest/context.py), kept per day in daily_dimensions; a missing value is
# counted, shown and filtered as NOT_SET.
CONTEXT_DIMENSIONS: tuple[Dimension, ...] = ("browser", "os", "device", "country")
# A visit's source, UTM values and entry and exit pages, from its first and last events: kept
# per visit only (visits, daily_visit_dimensions), never per event.
SESSION_DIMENSIONS: tuple[Dimension, ...] = (
    "source",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "entry_page",
    "exit_page",
)
# What the visit tables can filter and break down by.
VISIT_DIMENSIONS: tuple[Dimension, ...] = SESSION_DIMENSIONS + CONTEXT_DIMENSIONS
NOT_SET = "(not set)"
# Custom properties (`event:props:<key>`): an event without the key has the value NO_VALUE
# in filters, as in Plausible. Keys and values have ingest's limits (core/events.py).
PROPS_PREFIX = "event:props:"
NO_VALUE = "(none)"
# The days a request may cover, checked after a period's arithmetic: from the Unix epoch (no
# analytics event predates it; ingest/stats_days.py's EPOCH) to a
# year short of 9999, which leaves room for the day after, a month ahead and a zone's offset
# within Python's calendar (year 1 or 9999 overflowed it: the 500s of issue 11).
MIN_DAY = dt.date(1970, 1, 1)
MAX_DAY = dt.date(9998, 12, 31)
MAX_FILTERS = 10
# Text sizes in UTF-8 bytes, ingest's limits: a longer value cannot match anything stored.
MAX_SITE_ID_BYTES = 128
MAX_FILTER_BYTES: dict[str, int] = {
    "path": 2048,
    "event_type": 64,
    **{dimension: 512 for dimension in ("browser", "os", "device", "country")},
    "props": MAX_PROP_VALUE_BYTES,
    # A page as a path; a source, referrer host or UTM value as text taken from a URL.
    "entry_page": 2048,
    "exit_page": 2048,
    **{dimension: 2048 for dimension in ("source", "referrer")},
    **{f"utm_{name}": 2048 for name in ("source", "medium", "campaign", "content", "term")},
}

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WHOLE_NUMBER_RE = re.compile(r"[0-9]{1,9}")
_FILTER_RE = re.compile(r"(?P<key>[a-z:_]+)\s*(?P<op>==|!=)\s*(?P<value>.*)")
# Plausible's names first, then the plain column names.
_DIMENSIONS: dict[str, Dimension] = {
    "event:name": "event_type",
    "event:page": "path",
    "visit:browser": "browser",
    "visit:os": "os",
    "visit:device": "device",
    "visit:country": "country",
    "visit:source": "source",
    "visit:referrer": "referrer",
    "visit:utm_source": "utm_source",
    "visit:utm_medium": "utm_medium",
    "visit:utm_campaign": "utm_campaign",
    "visit:utm_content": "utm_content",
    "visit:utm_term": "utm_term",
    "visit:entry_page": "entry_page",
    "visit:exit_page": "exit_page",
    "event_type": "event_type",
    "path": "path",
    "browser": "browser",
    "os": "os",
    "device": "device",
    "country": "country",
}
_PROPERTY_NAMES = (
    "event:page, event:name, visit:browser, visit:os, visit:device, visit:country, "
    "visit:source, visit:referrer, visit:utm_source, visit:utm_medium, visit:utm_campaign, "
    "visit:utm_content, visit:utm_term, visit:entry_page, visit:exit_page, event:props:<key>"
)
# Plausible's name of each dimension, for messages.
PROPERTY_NAME: dict[Dimension, str] = {
    "event_type": "event:name",
    "path": "event:page",
    "props": "event:props",
    **{d: f"visit:{d}" for d in VISIT_DIMENSIONS},
}
# A custom property filter: the key is whatever precedes the first == or !=.
_PROPS_FILTER_RE = re.compile(r"event:props:(?P<key>.*?)(?P<op>==|!=)(?P<value>.*)", re.S)
_ROLLING_PERIODS = {"7d": 7, "30d": 30}


class Filter(msgspec.Struct, frozen=True):
    dimension: Dimension
    negated: bool
    value: str
    key: str = ""  # a custom property's key (dimension "props")


class StatsRequest(msgspec.Struct, frozen=True):
    site_id: str
    range: DateRange
    metrics: tuple[Metric, ...]
    filters: tuple[Filter, ...] = ()


class TimeseriesRequest(msgspec.Struct, frozen=True):
    stats: StatsRequest
    interval: Interval


class BreakdownRequest(msgspec.Struct, frozen=True):
    stats: StatsRequest
    dimension: Dimension
    limit: int
    page: int
    # A props breakdown's key (`event:props:<key>`); None with `event:props`: every key.
    key: str | None = None


def parse_timezone(params: dict[str, str]) -> str:
    """The `timezone` parameter (an IANA name), UTC when absent."""
    name = params.get("timezone", "").strip()
    if not name:
        return "UTC"
    try:
        return check_timezone(name)
    except UnknownTimeZone as exc:
        raise BadRequest(f"`timezone` is {exc}", field="timezone") from None


def check_text(value: str, field: str, max_bytes: int) -> str:
    """`value` if PostgreSQL text can hold it and it is at most `max_bytes` UTF-8 bytes."""
    if "\x00" in value:
        raise InvalidText(f"`{field}` must not contain NUL characters", field=field)
    try:
        size = len(value.encode())
    except UnicodeEncodeError:  # a lone surrogate
        raise InvalidText(f"`{field}` is not valid Unicode", field=field) from None
    if size > max_bytes:
        raise TooLong(
            f"`{field}` is {size} bytes of UTF-8; at most {max_bytes} can be stored", field=field
        )
    return value


def parse_date(raw: str, field: str) -> dt.date:
    """A YYYY-MM-DD calendar day from MIN_DAY to MAX_DAY."""
    if not _DATE_RE.fullmatch(raw):
        raise BadRequest(f"`{field}` must be YYYY-MM-DD, got {raw!r}", field=field)
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"`{field}` is not a calendar day: {raw!r}", field=field) from None
    check_day(day, field)
    return day


def check_day(day: dt.date, field: str) -> None:
    if not MIN_DAY <= day <= MAX_DAY:
        raise OutOfRange(
            f"`{field}` reaches {day.isoformat()}: days from {MIN_DAY} to {MAX_DAY} are supported",
            field=field,
        )


def parse_range(
    params: dict[str, str],
    *,
    now: dt.datetime,
    max_days: int = MAX_RANGE_DAYS,
    horizon: dt.datetime | None = None,
) -> DateRange:
    """`period` (day, 7d, 30d, month, 6mo, 12mo, custom) with `date`, or `from` and `to`.

    `date` is the period's last day (day, 7d, 30d), a day of the month (month) or of the
    last month (6mo, 12mo), or `FIRST,LAST` with period=custom; it defaults to today in the
    request's time zone (`now` is an aware instant). With `horizon`
    (stats_days.data_horizon), the range is read only as far as events can be dated.
    """
    timezone = parse_timezone(params)
    today = now.astimezone(zoneinfo.ZoneInfo(timezone)).date()
    raw_from, raw_to = params.get("from", ""), params.get("to", "")
    period = params.get("period", "")
    if raw_from or raw_to:
        if not raw_from:
            raise BadRequest("`from` is required when `to` is given", field="from")
        if not raw_to:
            raise BadRequest("`to` is required when `from` is given", field="to")
        first, last = parse_date(raw_from, "from"), parse_date(raw_to, "to")
        order_field = "to"
    else:
        period = period or DEFAULT_PERIOD
        raw_date = params.get("date", "")
        order_field = "date"
        if period == "custom":
            parts = raw_date.split(",")
            if len(parts) != 2:
                raise BadRequest(
                    "`date` must be FIRST,LAST (YYYY-MM-DD,YYYY-MM-DD) with period=custom",
                    field="date",
                )
            first, last = parse_date(parts[0], "date"), parse_date(parts[1], "date")
        else:
            anchor = parse_date(raw_date, "date") if raw_date else today
            first, last = _period_days(period, anchor)
            check_day(first, "date")
            check_day(last, "date")
    if last < first:
        raise BadRequest(f"the range ends before it starts ({first} > {last})", field=order_field)
    days = (last - first).days + 1
    if days > max_days:
        raise BadRequest(
            f"the range covers {days} days; at most {max_days} are allowed here",
            field=order_field if order_field != "date" or period == "custom" else "period",
        )
    return make_range(first, last, timezone, horizon)


def _period_days(period: str, anchor: dt.date) -> tuple[dt.date, dt.date]:
    if period == "day":
        return anchor, anchor
    if period in _ROLLING_PERIODS:
        return anchor - dt.timedelta(days=_ROLLING_PERIODS[period] - 1), anchor
    if period in ("month", "6mo", "12mo"):
        months = {"month": 1, "6mo": 6, "12mo": 12}[period]
        month_index = anchor.year * 12 + anchor.month - 1 - (months - 1)
        first = dt.date(month_index // 12, month_index % 12 + 1, 1)
        return first, next_month(anchor) - dt.timedelta(days=1)
    raise BadRequest(
        f"`period` must be one of day, 7d, 30d, month, 6mo, 12mo, custom; got {period!r}",
        field="period",
    )


def parse_metrics(params: dict[str, str], default: tuple[Metric, ...]) -> tuple[Metric, ...]:
    """The listed metrics, each once, `pageviews` read as `views` (METRIC_ALIASES)."""
    raw = params.get("metrics", "")
    if not raw:
        return default
    metrics: list[Metric] = []
    for name in raw.split(","):
        name = METRIC_ALIASES.get(name.strip(), name.strip())
        if name not in ALL_METRICS:
            raise BadRequest(
                f"`metrics` may list {', '.join(ALL_METRICS)} (or pageviews for views); "
                f"got {name!r}",
                field="metrics",
            )
        if name not in metrics:
            metrics.append(name)
    return tuple(metrics)


def views_named(params: dict[str, str]) -> str:
    """The name the answer gives page views: the one the `metrics` list uses first."""
    for name in params.get("metrics", "").split(","):
        if name.strip() in ("views", "pageviews"):
            return name.strip()
    return "views"


def parse_filters(params: dict[str, str]) -> tuple[Filter, ...]:
    """Plausible's form, `event:page==/pricing;event:name==signup` (AND), `!=` negates."""
    raw = params.get("filters", "")
    if not raw:
        return ()
    parts = raw.split(";", MAX_FILTERS)
    if len(parts) > MAX_FILTERS:
        raise TooManyFilters(
            f"`filters` may hold at most {MAX_FILTERS} filters (separated by ;)", field="filters"
        )
    filters = []
    for part in parts:
        props = _PROPS_FILTER_RE.fullmatch(part.strip())
        if props:
            key = _prop_key(props["key"].strip(), "filters")
            value = check_text(props["value"].strip(), "filters", MAX_FILTER_BYTES["props"])
            filters.append(Filter("props", props["op"] == "!=", value, key))
            continue
        match = _FILTER_RE.fullmatch(part.strip())
        if not match or match["key"] not in _DIMENSIONS:
            raise BadRequest(
                "`filters` must look like event:page==/path;visit:browser==Firefox "
                f"({_PROPERTY_NAMES}; == or !=); got {part!r}",
                field="filters",
            )
        dimension = _DIMENSIONS[match["key"]]
        value = check_text(match["value"].strip(), "filters", MAX_FILTER_BYTES[dimension])
        filters.append(Filter(dimension, match["op"] == "!=", value))
    return tuple(filters)


def parse_site(params: dict[str, str]) -> str:
    """`site_id`: required, at most MAX_SITE_ID_BYTES of UTF-8, no NUL."""
    site_id = params.get("site_id", "")
    if not site_id:
        raise BadRequest("`site_id` query parameter is required", field="site_id")
    return check_text(site_id, "site_id", MAX_SITE_ID_BYTES)


def parse_stats(
    params: dict[str, str],
    *,
    now: dt.datetime,
    default_metrics: tuple[Metric, ...] = METRICS,
    max_days: int = MAX_RANGE_DAYS,
    dimension: Dimension | None = None,
    horizon: dt.datetime | None = None,
) -> StatsRequest:
    """The request, its visit metrics and filters checked (check_visits) for a breakdown by
    `dimension`, or for totals and series when it is None. A question counted over visits
    (from_visits) asked without `metrics` gets the defaults but events."""
    request = StatsRequest(
        site_id=parse_site(params),
        range=parse_range(params, now=now, max_days=max_days, horizon=horizon),
        metrics=parse_metrics(params, default_metrics),
        filters=parse_filters(params),
    )
    if not params.get("metrics") and from_visits(request, dimension):
        # No events count per visit: the default set leaves them out rather than refuse.
        metrics = tuple(m for m in request.metrics if m != "events")
        request = msgspec.structs.replace(request, metrics=metrics)
    check_visits(request, dimension)
    return request


def session_filtered(request: StatsRequest) -> bool:
    """Whether a filter names a visit's own dimension (source, UTM, entry or exit page)."""
    return any(f.dimension in SESSION_DIMENSIONS for f in request.filters)


def visit_metrics(request: StatsRequest) -> tuple[Metric, ...]:
    return tuple(m for m in request.metrics if m in VISIT_METRICS)


def from_visits(request: StatsRequest, dimension: Dimension | None) -> bool:
    """Whether every metric of the question, views and visitors included, is counted over
    visits: a filter on a visit's own dimension, or a breakdown by one or asking a visit
    metric. Otherwise only the visit metrics are (totals and series), or none."""
    if session_filtered(request):
        return True
    return dimension is not None and (
        dimension in SESSION_DIMENSIONS or bool(visit_metrics(request))
    )


def check_visits(request: StatsRequest, dimension: Dimension | None) -> None:
    """Refuses what the visit tables cannot answer, naming the parameter: visits are kept per
    visit (with its source, pages, device and country), not per page, event name or custom
    property, and not with their events' count per source."""
    asked = visit_metrics(request)
    if not (asked or from_visits(request, dimension)):
        return
    if dimension is not None and dimension not in VISIT_DIMENSIONS:
        if asked:
            raise BadRequest(
                f"`metrics`: {', '.join(asked)} can be broken down by visit:* properties only, "
                f"not by {PROPERTY_NAME[dimension]}",
                field="metrics",
            )
        raise BadRequest(
            f"`filters`: a filter on a visit's source, UTM values or pages applies to visit:* "
            f"breakdowns only, not to {PROPERTY_NAME[dimension]}",
            field="filters",
        )
    for f in request.filters:
        if f.dimension not in VISIT_DIMENSIONS:
            raise BadRequest(
                f"`filters`: {PROPERTY_NAME[f.dimension]} cannot be combined with visit metrics "
                "or filters on a visit's source, UTM values or pages (visits are not kept per "
                "page, event name or custom property); filter on visit:* properties",
                field="filters",
            )
    if "events" in request.metrics and from_visits(request, dimension):
        raise BadRequest(
            "`metrics`: events are not counted per visit source, UTM value or page, nor in "
            "breakdowns of visit metrics; ask views (page views) instead",
            field="metrics",
        )


def parse_timeseries(
    params: dict[str, str], *, now: dt.datetime, horizon: dt.datetime | None = None
) -> TimeseriesRequest:
    interval = params.get("interval", "") or "day"
    if interval not in ("hour", "day"):
        raise BadRequest(f"`interval` must be hour or day; got {interval!r}", field="interval")
    max_days = MAX_HOURLY_RANGE_DAYS if interval == "hour" else MAX_RANGE_DAYS
    stats = parse_stats(params, now=now, max_days=max_days, horizon=horizon)
    return TimeseriesRequest(stats, interval)  # type: ignore[arg-type]


def _prop_key(key: str, field: str) -> str:
    """A custom property's key: 1 to MAX_PROP_KEY_BYTES bytes of UTF-8, no NUL (as ingest)."""
    if not key:
        raise BadRequest(f"`{field}` names a custom property with an empty key", field=field)
    if "\x00" in key:
        raise InvalidText(f"`{field}`: a custom property key must not contain NUL", field=field)
    try:
        size = len(key.encode())
    except UnicodeEncodeError:  # a lone surrogate
        raise InvalidText(
            f"`{field}`: a custom property key is not valid Unicode", field=field
        ) from None
    if size > MAX_PROP_KEY_BYTES:
        raise TooLong(
            f"`{field}`: a custom property key is {size} bytes of UTF-8; at most "
            f"{MAX_PROP_KEY_BYTES} can be stored",
            field=field,
        )
    return key


def parse_breakdown(
    params: dict[str, str], *, now: dt.datetime, horizon: dt.datetime | None = None
) -> BreakdownRequest:
    """`property`: a dimension (event:page by default), `event:props:<key>` (one custom
    property's values) or `event:props` (every key's values)."""
    raw_property = params.get("property", "") or "event:page"
    key: str | None = None
    if raw_property == "event:props" or raw_property.startswith(PROPS_PREFIX):
        dimension: Dimension = "props"
        if raw_property != "event:props":
            key = _prop_key(raw_property.removeprefix(PROPS_PREFIX), "property")
    elif raw_property in _DIMENSIONS:
        dimension = _DIMENSIONS[raw_property]
    else:
        raise BadRequest(
            f"`property` must be one of {_PROPERTY_NAMES}; got {raw_property!r}",
            field="property",
        )
    default: tuple[Metric, ...] = ("views", "visitors")
    if dimension in ("event_type", "props"):
        default = ("events", "visitors")
    elif dimension in SESSION_DIMENSIONS:
        default = ("visitors", "visits")
    stats = parse_stats(
        params, now=now, default_metrics=default, dimension=dimension, horizon=horizon
    )
    limit = _parse_int(params, "limit", DEFAULT_BREAKDOWN_LIMIT, 1, MAX_BREAKDOWN_LIMIT)
    page = _parse_int(params, "page", 1, 1, 1_000_000)
    return BreakdownRequest(stats, dimension, limit, page, key)


def _parse_int(params: dict[str, str], field: str, default: int, low: int, high: int) -> int:
    raw = params.get(field, "")
    if not raw:
        return default
    if not _WHOLE_NUMBER_RE.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadRequest(
            f"`{field}` must be a whole number from {low} to {high}; got {raw!r}", field=field
        )
    return int(raw)
