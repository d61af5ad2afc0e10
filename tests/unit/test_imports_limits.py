"""A hostile export is refused before it costs much, with a message naming the file (and the
row and column where there is one): a ZIP bomb, too many files, a header of too many
columns, a row too long for any file of the format."""

from __future__ import annotations

import datetime as dt
import io
import struct
import zipfile
from pathlib import Path

import pytest

from consumer.imports_read import (
    ImportLimits,
    ImportRefused,
    SourceFile,
    export_files,
    ignored_columns,
    read_rows,
    zip_entries,
)
from core.plausible_csv import BY_NAME

VISITORS = "imported_visitors_20250101_20250131.csv"
HEADER = "date,visitors,pageviews,bounces,visits,visit_duration\n"


def source(text: str | bytes, limits: ImportLimits | None = None) -> SourceFile:
    data = text.encode() if isinstance(text, str) else text
    return SourceFile(
        VISITORS,
        BY_NAME["imported_visitors"],
        dt.date(2025, 1, 1),
        dt.date(2025, 1, 31),
        lambda: io.BytesIO(data),
        limits or ImportLimits(),
    )


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def opened(path: Path, limits: ImportLimits | None = None) -> None:
    with export_files(path, limits):
        pass


def test_a_zip_bomb_is_refused_by_its_inflated_size_before_a_row_is_read(
    tmp_path: Path,
) -> None:
    # 4 MiB of one repeated row deflates to a few KiB.
    rows = HEADER.encode() + b"2025-01-02,1,1,1,1,0\n" * ((4 << 20) // 21)
    path = write_zip(tmp_path / "bomb.zip", {VISITORS: rows})
    assert path.stat().st_size < 64 * 1024
    limits = ImportLimits(max_inflated_bytes=1 << 20)
    with pytest.raises(ImportRefused, match=rf"{VISITORS} takes its files past 1048576 bytes"):
        opened(path, limits)


def test_a_member_that_inflates_past_its_declared_size_is_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "liar.zip", {VISITORS: HEADER.encode() + b"\0" * (1 << 20)})
    data = bytearray(path.read_bytes())
    # Declare 100 bytes in the local header and in the directory: the sum checked up front
    # is small, and zipfile stops the member there and finds its CRC wrong.
    data[22:26] = struct.pack("<I", 100)
    entry = data.rfind(b"PK\x01\x02")
    data[entry + 24 : entry + 28] = struct.pack("<I", 100)
    path.write_bytes(bytes(data))
    with export_files(path) as [member]:
        with pytest.raises(ImportRefused, match=rf"{VISITORS}: damaged in the archive \(Bad CRC"):
            list(read_rows(member))
        with pytest.raises(ImportRefused, match=rf"{VISITORS}: damaged in the archive"):
            member.digest()


def test_too_many_files_are_refused_from_the_end_record(tmp_path: Path) -> None:
    files = {f"notes/{i}.txt": b"" for i in range(70)}
    path = write_zip(tmp_path / "many.zip", files)
    assert zip_entries(path) == 70
    with pytest.raises(ImportRefused, match=r"many.zip: holds more than 64 files"):
        opened(path)
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.csv").write_text("")
    with pytest.raises(ImportRefused, match=r"many: holds more than 4 files"):
        opened(folder, ImportLimits(max_files=4))


def test_the_entry_count_of_a_zip64_archive_is_read_from_its_zip64_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "zip64.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(0x10000):  # one more than the end record's 16 bits
            z.writestr(zipfile.ZipInfo(f"{i}"), b"")
    assert zip_entries(path) == 0x10000
    assert zip_entries(write_zip(tmp_path / "small.zip", {VISITORS: b""})) == 1
    (tmp_path / "none.zip").write_bytes(b"not a zip at all")
    assert zip_entries(tmp_path / "none.zip") is None


def test_a_header_of_too_many_columns_is_refused() -> None:
    header = ",".join(f"c{i}" for i in range(65)) + "\n"
    with pytest.raises(ImportRefused, match=rf"{VISITORS}, line 1: 65 columns; .* at most 64"):
        list(read_rows(source(header)))
    with pytest.raises(ImportRefused, match=r"line 1: 65 columns"):
        ignored_columns(source(header))
    # A name twice among many is found (in one pass over the names).
    many = ",".join([*HEADER.strip().split(","), *(f"x{i}" for i in range(50)), "x7"])
    with pytest.raises(ImportRefused, match=r"line 1: column 'x7' appears twice"):
        list(read_rows(source(many + "\n")))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A header line of commas, which csv would split into a million fields.
        ("," * (1 << 20), r"line 1: the row is longer than 65536 bytes"),
        (HEADER + "2025-01-02,1,1,1,1,0\n" + "2025-01-03," + "1" * 70_000 + "\n", r"line 3: "),
        # A quoted value spanning many short lines is one row.
        (HEADER + '2025-01-02,"' + "x\n" * 40_000 + '",1,1,1,0\n', r"line 327\d\d: the row"),
        (HEADER + "2025-01-02" + ",1" * 40_000 + "\n", r"line 2: the row is longer"),
    ],
)
def test_a_row_too_long_is_refused_naming_its_line(text: str, message: str) -> None:
    with pytest.raises(ImportRefused, match=rf"{VISITORS}, {message}"):
        list(read_rows(source(text)))


def test_a_row_with_more_fields_than_its_header_is_refused() -> None:
    text = HEADER + "2025-01-02" + ",1" * 500 + "\n"
    with pytest.raises(ImportRefused, match=r"line 2: 501 fields where the header has 6"):
        list(read_rows(source(text)))


def test_a_long_field_is_refused_naming_its_column() -> None:
    text = "date,device,visitors,visits,visit_duration,bounces\n"
    text += "2025-01-02," + "d" * 5000 + ",1,1,0,0\n"
    devices = SourceFile(
        "imported_devices_20250101_20250131.csv",
        BY_NAME["imported_devices"],
        dt.date(2025, 1, 1),
        dt.date(2025, 1, 31),
        lambda: io.BytesIO(text.encode()),
    )
    with pytest.raises(ImportRefused, match=r"line 2, column 'device': the value is 5000 bytes"):
        list(read_rows(devices))


def test_rows_within_the_limits_are_read_with_their_lines() -> None:
    text = HEADER + '2025-01-02,1,1,1,1,0\r\n\r\n"2025-01-03",2,2,2,2,0\n'
    assert [line for line, _ in read_rows(source(text))] == [2, 4]


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_every_line_ending_reads_the_same_rows(ending: str) -> None:
    rows = ["2025-01-02,1,1,1,1,0", '"2025-01-03",2,2,2,2,0', "2025-01-04,3,3,0,3,7"]
    text = ending.join([HEADER.rstrip("\n"), *rows]) + ending
    assert [(line, row[1]) for line, row in read_rows(source(text))] == [(2, 1), (3, 2), (4, 3)]


def test_lines_ended_by_a_bare_carriage_return_keep_the_row_limit() -> None:
    limits = ImportLimits(max_row_bytes=64)
    many = HEADER.rstrip("\n") + "\r" + "2025-01-02,1,1,1,1,0\r" * 50
    assert len(list(read_rows(source(many, limits)))) == 50
    long = HEADER.rstrip("\n") + "\r" + "2025-01-02,1,1,1,1," + "0" * 100 + "\r"
    with pytest.raises(ImportRefused, match=r"line 2: the row is longer than 64 bytes"):
        list(read_rows(source(long, limits)))


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_a_row_of_exactly_the_limit_is_read_and_one_byte_more_is_refused(ending: str) -> None:
    limits = ImportLimits(max_row_bytes=64)
    header = HEADER.rstrip("\n") + ",note"  # a column not kept here pads the row
    head = "2025-01-02,1,1,1,1,0,"
    exact = head + "x" * (64 - len(head) - len(ending))  # the row with its ending: 64 bytes
    assert [line for line, _ in read_rows(source(header + ending + exact + ending, limits))] == [2]
    with pytest.raises(ImportRefused, match=r"line 2: the row is longer than 64 bytes"):
        list(read_rows(source(header + ending + exact + "x" + ending, limits)))
