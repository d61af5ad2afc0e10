"""Plausible's CSV export format, which the export (ingest/export.py) writes and the import
(consumer/imports.py) reads: a ZIP of CSV files with a header row, one file per kind of row,
named `imported_<kind>_<YYYYMMDD>_<YYYYMMDD>.csv` (the first and last day it covers).

The columns are those of Plausible's exporter and CSV importer (lib/plausible/exports.ex,
lib/plausible/imported/csv_importer.ex); docs/api.md ("Export and import") says what each
holds here. Readers match columns by header name, as Plausible's importer does, so their order
is not part of the format. A column that older Plausible exports lack is `required=False`: an
import takes its default when it is missing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["date", "text", "count"]

# A value the CSV leaves empty is stored and shown as this, as the native rollups do.
NOT_SET = "(not set)"
MAX_COUNT = 2**63 - 1  # PostgreSQL bigint


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool = True
    # Text only: the most UTF-8 bytes a value may have. The key columns of a file together
    # stay under PostgreSQL's B-tree entry size (about 2,700 bytes).
    max_bytes: int = 0
    # False: written by the export (as 0) and read by the import, but not kept.
    stored: bool = True

    @property
    def default(self) -> str | int:
        return "" if self.kind == "text" else 0


@dataclass(frozen=True)
class CsvTable:
    """One file of an export: its table name (also the file name's start), its columns in the
    order the export writes them, and the columns that identify a row besides `date`."""

    name: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...]

    @property
    def kind(self) -> str:
        return self.name.removeprefix("imported_")

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def stored(self) -> tuple[Column, ...]:
        """The columns its table keeps (`date` is the table's `day`)."""
        return tuple(c for c in self.columns if c.stored)

    def file_name(self, first: dt.date, last: dt.date) -> str:
        return f"{self.name}_{first:%Y%m%d}_{last:%Y%m%d}.csv"


def _date() -> Column:
    return Column("date", "date")


def _text(name: str, max_bytes: int, *, required: bool = True) -> Column:
    return Column(name, "text", required, max_bytes)


def _count(name: str, *, required: bool = True, stored: bool = True) -> Column:
    return Column(name, "count", required, stored=stored)


def _visit_counts(*, pageviews_required: bool = False) -> tuple[Column, ...]:
    """The visit columns of the per-visit-dimension files, in the exporter's order."""
    return (
        _count("visitors"),
        _count("visits"),
        _count("visit_duration"),
        _count("bounces"),
        _count("pageviews", required=pageviews_required),
    )


SOURCE_KEYS = (
    "source", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"
)  # fmt: skip
PAGE_BYTES = 2048  # ingest's limit on a path (core/events.py)

TABLES: tuple[CsvTable, ...] = (
    CsvTable(
        "imported_visitors",
        (
            _date(),
            _count("visitors"),
            _count("pageviews"),
            _count("bounces"),
            _count("visits"),
            _count("visit_duration"),
        ),
        (),
    ),
    CsvTable(
        "imported_sources",
        (
            _date(),
            _text("source", 256),
            _text("referrer", 512, required=False),
            _text("utm_source", 256, required=False),
            _text("utm_medium", 256),
            _text("utm_campaign", 256),
            _text("utm_content", 256),
            _text("utm_term", 256),
            _count("pageviews", required=False),
            _count("visitors"),
            _count("visits"),
            _count("visit_duration"),
            _count("bounces"),
        ),
        (
            "source",
            "referrer",
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "utm_content",
            "utm_term",
        ),
    ),
    CsvTable(
        "imported_pages",
        (
            _date(),
            _text("hostname", 253, required=False),
            _text("page", PAGE_BYTES),
            _count("visits", required=False),
            _count("visitors"),
            _count("pageviews"),
            # Plausible's scroll depth: not measured here, exported as 0 (no visit measured).
            _count("total_scroll_depth", required=False, stored=False),
            _count("total_scroll_depth_visits", required=False, stored=False),
        ),
        ("hostname", "page"),
    ),
    CsvTable(
        "imported_entry_pages",
        (
            _date(),
            _text("entry_page", PAGE_BYTES),
            _count("visitors"),
            _count("entrances"),
            _count("visit_duration"),
            _count("bounces"),
            _count("pageviews", required=False),
        ),
        ("entry_page",),
    ),
    CsvTable(
        "imported_exit_pages",
        (
            _date(),
            _text("exit_page", PAGE_BYTES),
            _count("visitors"),
            _count("visit_duration", required=False),
            _count("exits"),
            _count("bounces", required=False),
            _count("pageviews", required=False),
        ),
        ("exit_page",),
    ),
    CsvTable(
        "imported_custom_events",
        (
            _date(),
            _text("name", 256),
            _text("link_url", 1024, required=False),
            _text("path", 1024, required=False),
            _count("visitors"),
            _count("events"),
        ),
        ("name", "link_url", "path"),
    ),
    CsvTable(
        "imported_locations",
        (
            _date(),
            _text("country", 8),
            _text("region", 16),
            _count("city"),
            *_visit_counts(),
        ),
        ("country", "region", "city"),
    ),
    CsvTable(
        "imported_devices",
        (_date(), _text("device", 32), *_visit_counts()),
        ("device",),
    ),
    CsvTable(
        "imported_browsers",
        (
            _date(),
            _text("browser", 128),
            _text("browser_version", 64, required=False),
            *_visit_counts(),
        ),
        ("browser", "browser_version"),
    ),
    CsvTable(
        "imported_operating_systems",
        (
            _date(),
            _text("operating_system", 128),
            _text("operating_system_version", 64, required=False),
            *_visit_counts(),
        ),
        ("operating_system", "operating_system_version"),
    ),
)
BY_NAME = {t.name: t for t in TABLES}
IMPORTED_TABLES = tuple(BY_NAME)

# Columns a file's name and header may carry that this format knows and the import ignores
# (other releases of Plausible's exporter wrote them; nothing here measures them).
IGNORED_COLUMNS = frozenset(
    {"exits", "time_on_page", "scroll_depth", "pageleave_visitors", "total_time_on_page",
     "total_time_on_page_visits"}
)  # fmt: skip

# Plausible's importer also takes the names without `imported_`.
_FILE_NAME = re.compile(r"(?:imported_)?(?P<kind>[a-z_]+?)_(?P<first>\d{8})_(?P<last>\d{8})\.csv")


@dataclass(frozen=True)
class FileName:
    table: CsvTable
    first: dt.date
    last: dt.date


def parse_file_name(name: str) -> FileName | None:
    """The table and days of an export file's (base) name; None when it is not one, or its
    days are not calendar days in order."""
    match = _FILE_NAME.fullmatch(name)
    if match is None or f"imported_{match['kind']}" not in BY_NAME:
        return None
    try:
        first = dt.datetime.strptime(match["first"], "%Y%m%d").date()
        last = dt.datetime.strptime(match["last"], "%Y%m%d").date()
    except ValueError:
        return None
    if last < first:
        return None
    return FileName(BY_NAME[f"imported_{match['kind']}"], first, last)
