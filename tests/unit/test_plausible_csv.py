"""Plausible's CSV export format: file names, headers and rows as the import reads them."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import pytest

from consumer.imports_read import ImportRefused, SourceFile, export_files, read_rows
from core.plausible_csv import BY_NAME, IMPORTED_TABLES, TABLES, parse_file_name


def source(table: str, text: str) -> SourceFile:
    data = text.encode()
    return SourceFile(
        f"{table}_20250101_20250131.csv",
        BY_NAME[table],
        dt.date(2025, 1, 1),
        dt.date(2025, 1, 31),
        lambda: io.BytesIO(data),
    )


def test_file_names_as_plausible_writes_and_reads_them() -> None:
    pages = BY_NAME["imported_pages"]
    assert pages.file_name(dt.date(2025, 1, 1), dt.date(2025, 1, 31)) == (
        "imported_pages_20250101_20250131.csv"
    )
    parsed = parse_file_name("imported_pages_20250101_20250131.csv")
    assert parsed is not None and parsed.table is pages
    assert parse_file_name("operating_systems_20250101_20250131.csv") is not None
    for wrong in (
        "imported_pages_20250131_20250101.csv",  # ends before it starts
        "imported_pages_20250230_20250301.csv",  # no such day
        "imported_goals_20250101_20250131.csv",
        "imported_pages.csv",
    ):
        assert parse_file_name(wrong) is None, wrong


def test_every_table_has_a_date_and_its_keys_among_its_columns() -> None:
    assert len(IMPORTED_TABLES) == 10
    for table in TABLES:
        names = [c.name for c in table.columns]
        assert names[0] == "date"
        assert set(table.keys) <= set(names)
        key_bytes = sum(table.column(k).max_bytes for k in table.keys)
        assert key_bytes <= 2304, table.name  # under PostgreSQL's B-tree entry size


def test_rows_are_read_by_header_name_with_missing_optional_columns() -> None:
    text = "visitors,date,device,visits,visit_duration,bounces\n3,2025-01-02,Desktop,4,50,1\n"
    rows = list(read_rows(source("imported_devices", text)))
    # Stored order: day, device, visitors, visits, visit_duration, bounces, pageviews (absent).
    assert rows == [(2, (dt.date(2025, 1, 2), "desktop", 3, 4, 50, 1, 0))]


def test_empty_text_is_not_set_and_ignored_columns_are_left_aside() -> None:
    text = (
        "date,hostname,page,visits,visitors,pageviews,total_scroll_depth,"
        "total_scroll_depth_visits,exits\n2025-01-02,,/a,1,1,2,40,1,1\n"
    )
    [(line, row)] = list(read_rows(source("imported_pages", text)))
    assert (line, row) == (2, (dt.date(2025, 1, 2), "(not set)", "/a", 1, 1, 2))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2025-02-01,Desktop,1,1,0,0", "line 2, column 'date': 2025-02-01 is outside"),
        ("2025-01-02,Desktop,1,1,0,-1", "line 2, column 'bounces': '-1' is not a whole"),
        ("2025-01-02,Desktop,1,1,0,1.5", "line 2, column 'bounces': '1.5' is not a whole"),
        ("2025-01-02,Desktop,1,1,0,99999999999999999999", "column 'bounces'"),
        ("2025-01-02," + "x" * 33 + ",1,1,0,0", "column 'device': the value is 33 bytes"),
        ("2025-01-02,Desk\0top,1,1,0,0", "column 'device': a value must not contain NUL"),
        ("2025-01-02,Desktop,1,1,0", "line 2: 5 fields where the header has 6"),
        ('2025-01-02,"Desktop,1,1,0,0', "line 2"),
    ],
)
def test_a_bad_row_names_its_line_and_column(row: str, message: str) -> None:
    text = "date,device,visitors,visits,visit_duration,bounces\n" + row + "\n"
    with pytest.raises(ImportRefused, match=message):
        list(read_rows(source("imported_devices", text)))


def test_a_missing_required_column_and_a_repeated_one_are_refused() -> None:
    with pytest.raises(ImportRefused, match="line 1: column 'bounces' is missing"):
        list(read_rows(source("imported_devices", "date,device,visitors,visits,visit_duration\n")))
    with pytest.raises(ImportRefused, match="line 1: column 'date' appears twice"):
        list(read_rows(source("imported_visitors", "date,date\n")))


def test_bytes_that_are_not_utf8_are_refused() -> None:
    data = b"date,device,visitors,visits,visit_duration,bounces\n2025-01-02,\xff,1,1,0,0\n"
    bad = SourceFile(
        "imported_devices_20250101_20250131.csv",
        BY_NAME["imported_devices"],
        dt.date(2025, 1, 1),
        dt.date(2025, 1, 31),
        lambda: io.BytesIO(data),
    )
    with pytest.raises(ImportRefused, match="not UTF-8"):
        list(read_rows(bad))


def test_an_archive_lists_one_file_per_table_in_the_formats_order(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pages_20250101_20250131.csv", "date\n")
        z.writestr("imported_visitors_20250101_20250131.csv", "date\n")
    with export_files(path) as files:
        assert [f.table.name for f in files] == ["imported_visitors", "imported_pages"]
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("imported_pages_20250201_20250228.csv", "date\n")
    with pytest.raises(ImportRefused, match="both hold imported_pages"), export_files(path):
        pass
