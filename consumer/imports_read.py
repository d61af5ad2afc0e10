"""Reading a Plausible CSV export (core/plausible_csv.py) for `python -m consumer.imports`:
finding its files in a ZIP or a directory, and checking and converting each row. Pure but for
reading the files; rows are read one at a time, so a file of any size takes little memory.

Every refusal is an ImportRefused naming the file, the line and the column. A hostile export
is refused by ImportLimits before it costs much: the number of files (counted from the ZIP's
end record, before its directory is read), their size once inflated (zipfile stops each
member at its declared size and checks its CRC), the header's columns and a row's bytes
(checked on the raw line, before the csv module holds it).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from core.plausible_csv import (
    IMPORTED_TABLES,
    MAX_COUNT,
    NOT_SET,
    Column,
    CsvTable,
    parse_file_name,
)

StoredValue = dt.date | str | int
Row = tuple[StoredValue, ...]

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COUNT = re.compile(r"[0-9]{1,19}")
_END_RECORD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_RECORD = b"PK\x06\x06"
# What a damaged or crafted ZIP member raises while it is read.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


class ImportRefused(Exception):
    """The export cannot be imported; the message says where and why."""


@dataclass(frozen=True)
class ImportLimits:
    """What an export may hold (docs/operations.md, Imports). The format has 10 files of at
    most 13 columns, and its longest valid row is under 6 KiB even with every value quoted,
    so the defaults refuse only what no export holds, but for `max_inflated_bytes`: raise it
    (`--max-bytes`) for a larger export."""

    max_files: int = 64  # entries of the ZIP, or files of the directory
    max_inflated_bytes: int = 8 * 1024**3  # every file together, uncompressed
    max_columns: int = 64  # names in a header line
    max_row_bytes: int = 64 * 1024  # one row (a quoted value may span lines), as stored


@dataclass(frozen=True)
class SourceFile:
    """One CSV file of an export: its name (as in the ZIP or directory), its table and days,
    and how to open it for reading bytes."""

    name: str
    table: CsvTable
    first: dt.date
    last: dt.date
    open: Callable[[], IO[bytes]]
    limits: ImportLimits = field(default_factory=ImportLimits)

    def digest(self) -> bytes:
        """SHA-256 of the file's bytes, read in chunks."""
        sha = hashlib.sha256()
        try:
            with self.open() as stream:
                while chunk := stream.read(1 << 16):
                    sha.update(chunk)
        except _DAMAGED as exc:
            raise ImportRefused(f"{self.name}: damaged in the archive ({exc})") from None
        return sha.digest()


@contextmanager
def export_files(path: Path, limits: ImportLimits | None = None) -> Iterator[list[SourceFile]]:
    """The CSV files of the export at `path` (a ZIP, or a directory of CSV files), one per
    table, in the format's order; raises ImportRefused for a name that is not one of the
    format's, two files of one table, none at all, or an export past `limits`."""
    limits = limits or ImportLimits()
    if path.is_dir():
        found = list(itertools.islice(path.iterdir(), limits.max_files + 1))
        _check_count(path, len(found), limits)
        files = sorted(p for p in found if p.is_file())
        _check_size(path, [(p.name, p.stat().st_size) for p in files], limits)
        yield _files(path, {p.name: _file_opener(p) for p in files}, limits)
        return
    if not zipfile.is_zipfile(path):
        raise ImportRefused(f"{path}: neither a ZIP file nor a directory")
    _check_count(path, zip_entries(path), limits)
    try:
        archive = zipfile.ZipFile(path)
    except _DAMAGED as exc:
        raise ImportRefused(f"{path}: a damaged ZIP file ({exc})") from None
    with archive:
        members = [i for i in archive.infolist() if not i.is_dir()]
        _check_count(path, len(archive.infolist()), limits)
        for info in members:
            if info.flag_bits & 0x1:
                raise ImportRefused(f"{path}: {info.filename} is encrypted")
        _check_size(path, [(i.filename, i.file_size) for i in members], limits)
        openers = {i.filename: _zip_opener(archive, i.filename) for i in members}
        yield _files(path, openers, limits)


def _check_count(path: Path, count: int | None, limits: ImportLimits) -> None:
    if count is not None and count > limits.max_files:
        raise ImportRefused(
            f"{path}: holds more than {limits.max_files} files (an export has 10); "
            "not an export of the format"
        )


def _check_size(path: Path, sizes: list[tuple[str, int]], limits: ImportLimits) -> None:
    total = 0
    for name, size in sizes:
        total += size
        if total > limits.max_inflated_bytes:
            raise ImportRefused(
                f"{path}: {name} takes its files past {limits.max_inflated_bytes} bytes "
                "uncompressed (`--max-bytes` raises the cap)"
            )


def zip_entries(path: Path) -> int | None:
    """The number of entries the ZIP's end record declares, read without its directory
    (which zipfile would load whole); None when no end record is found where it belongs."""
    with path.open("rb") as stream:
        size = stream.seek(0, 2)
        start = max(0, size - 22 - 0xFFFF)  # the record, then a comment of 64 KiB at most
        stream.seek(start)
        tail = stream.read()
        at = tail.rfind(_END_RECORD)
        if at < 0 or len(tail) - at < 22:
            return None
        (entries,) = struct.unpack_from("<H", tail, at + 10)
        if entries != 0xFFFF:
            return int(entries)
        # ZIP64: a locator just before the end record gives where the ZIP64 record is.
        if start + at < 20:
            return None
        stream.seek(start + at - 20)
        locator = stream.read(20)
        if locator[:4] != _ZIP64_LOCATOR:
            return None
        (offset,) = struct.unpack_from("<Q", locator, 8)
        stream.seek(offset)
        record = stream.read(56)
        if len(record) < 56 or record[:4] != _ZIP64_END_RECORD:
            return None
        (entries,) = struct.unpack_from("<Q", record, 32)
        return int(entries)


def _zip_opener(archive: zipfile.ZipFile, name: str) -> Callable[[], IO[bytes]]:
    return lambda: archive.open(name)


def _file_opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")


def _files(
    path: Path, openers: dict[str, Callable[[], IO[bytes]]], limits: ImportLimits
) -> list[SourceFile]:
    found: dict[str, SourceFile] = {}
    for name, opener in openers.items():
        parsed = parse_file_name(PurePosixPath(name).name)
        if parsed is None:
            raise ImportRefused(
                f"{path}: {name} is not a file of a Plausible CSV export (expected names like "
                "imported_pages_20250101_20250131.csv)"
            )
        table = parsed.table
        if table.name in found:
            raise ImportRefused(
                f"{path}: {found[table.name].name} and {name} both hold {table.name}"
            )
        found[table.name] = SourceFile(name, table, parsed.first, parsed.last, opener, limits)
    if not found:
        raise ImportRefused(f"{path}: holds no CSV file of a Plausible export")
    return sorted(found.values(), key=lambda f: IMPORTED_TABLES.index(f.table.name))


@dataclass(frozen=True)
class Layout:
    """Where each stored column is in a file's rows (None: absent, its default is used), and
    the header's columns the import leaves aside."""

    positions: tuple[int | None, ...]
    width: int
    ignored: tuple[str, ...]


def read_header(source: SourceFile, header: list[str]) -> Layout:
    """Matches the header's names with the table's columns; raises ImportRefused for more
    names than ImportLimits.max_columns, a required column that is missing or a name given
    twice."""
    if len(header) > source.limits.max_columns:
        raise ImportRefused(
            f"{source.name}, line 1: {len(header)} columns; a file of the format has at most "
            f"{source.limits.max_columns} (a {source.table.name} file has "
            f"{len(source.table.columns)})"
        )
    names = [h.strip() for h in header]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0][1:]
    where: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in where:
            raise ImportRefused(f"{source.name}, line 1: column {name!r} appears twice")
        where[name] = i
    stored = {c.name for c in source.table.stored}
    positions: list[int | None] = []
    for column in source.table.stored:
        if column.name in where:
            positions.append(where[column.name])
        elif column.required:
            raise ImportRefused(
                f"{source.name}, line 1: column {column.name!r} is missing (a "
                f"{source.table.name} file has {', '.join(c.name for c in source.table.columns)})"
            )
        else:
            positions.append(None)
    # A column another kind of file ignores (`exits` of pages) may be stored by this one.
    ignored = tuple(n for n in names if n not in stored)
    return Layout(tuple(positions), len(names), ignored)


def convert(source: SourceFile, layout: Layout, fields: list[str], line: int) -> Row:
    """A row's stored values, in the table's stored-column order (core/plausible_csv.py):
    the day, text as the rollups keep it (empty is '(not set)', devices lower case), counts
    as integers. Raises ImportRefused naming the line and column."""
    if len(fields) != layout.width:
        raise ImportRefused(
            f"{source.name}, line {line}: {len(fields)} fields where the header has {layout.width}"
        )
    values: list[StoredValue] = []
    for column, position in zip(source.table.stored, layout.positions, strict=True):
        if position is None:
            raw: str | int = column.default
            values.append(stored_text(column, raw) if isinstance(raw, str) else raw)
            continue
        values.append(_value(source, column, fields[position], line))
    return tuple(values)


def _value(source: SourceFile, column: Column, raw: str, line: int) -> StoredValue:
    where = f"{source.name}, line {line}, column {column.name!r}"
    if column.kind == "date":
        if not _DATE.fullmatch(raw):
            raise ImportRefused(f"{where}: {raw!r} is not a day (YYYY-MM-DD)")
        try:
            day = dt.date.fromisoformat(raw)
        except ValueError:
            raise ImportRefused(f"{where}: {raw!r} is not a calendar day") from None
        if not source.first <= day <= source.last:
            raise ImportRefused(
                f"{where}: {day} is outside the days its file name covers "
                f"({source.first} to {source.last})"
            )
        return day
    if column.kind == "count":
        if not _COUNT.fullmatch(raw) or int(raw) > MAX_COUNT:
            raise ImportRefused(
                f"{where}: {raw[:40]!r} is not a whole number from 0 to {MAX_COUNT}"
            )
        return int(raw)
    if "\x00" in raw:
        raise ImportRefused(f"{where}: a value must not contain NUL")
    size = len(raw.encode())
    if size > column.max_bytes:
        raise ImportRefused(
            f"{where}: the value is {size} bytes of UTF-8; at most {column.max_bytes} are kept"
        )
    return stored_text(column, raw)


def stored_text(column: Column, raw: str) -> str:
    """How the rollups keep a CSV text value: empty is NOT_SET; devices are lower case
    (Plausible writes "Desktop", the tracker's rollups "desktop")."""
    if raw == "":
        return NOT_SET
    return raw.lower() if column.name == "device" else raw


class _Lines:
    """A file's lines as text, for csv.reader: refuses a row (one line, or several when a
    quoted value holds line breaks) longer than the limit before the csv module holds it,
    and bytes that are not UTF-8, naming the line. `row_done` starts the next row's count."""

    def __init__(self, stream: IO[bytes], source: SourceFile) -> None:
        self._stream = stream
        self._source = source
        self._max = source.limits.max_row_bytes
        self._row_bytes = 0
        self._buffer = b""  # the last readline(), of which `_at` on is not yet returned
        self._at = 0
        self.line = 0

    def __iter__(self) -> _Lines:
        return self

    def _readline(self, limit: int) -> bytes:
        """The next line, ended by "\n", "\r\n" or a bare "\r" (spreadsheets of old Macs
        end every line so), at most about `limit` bytes (more only when a row is refused).
        A bare "\r" ends lines inside what readline() returned: the rest is kept in
        `_buffer` for the next calls, read from `_at` on, never copied whole again."""
        if self._at >= len(self._buffer):
            self._buffer, self._at = self._stream.readline(limit), 0
        end = self._line_end()
        if end is None and not self._buffer.endswith((b"\n", b"\r")):
            # Cut by the limit (or the file's last line): the line goes on in the stream.
            rest = self._buffer[self._at :]
            self._buffer = rest + self._stream.readline(max(limit - len(rest), 1))
            self._at = 0
            end = self._line_end()
        end = len(self._buffer) if end is None else end
        line = self._buffer[self._at : end]
        self._at = end
        return line

    def _line_end(self) -> int | None:
        """Where the line starting at `_at` ends in `_buffer` (after its terminator)."""
        buffer, at = self._buffer, self._at
        cr = buffer.find(b"\r", at)
        lf = buffer.find(b"\n", at, cr if cr != -1 else len(buffer))
        if lf != -1:
            return lf + 1
        if cr != -1:
            return cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
        return None

    def __next__(self) -> str:
        raw = self._readline(self._max - self._row_bytes + 1)
        if not raw:
            raise StopIteration
        self.line += 1
        self._row_bytes += len(raw)
        if self._row_bytes > self._max:
            raise ImportRefused(
                f"{self._source.name}, line {self.line}: the row is longer than {self._max} "
                "bytes; no row of the format is (a value is at most a few KiB)"
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ImportRefused(f"{self._source.name}, line {self.line}: not UTF-8 text") from None

    def row_done(self) -> None:
        self._row_bytes = 0


@contextmanager
def _csv_rows(source: SourceFile) -> Iterator[Iterator[tuple[int, list[str]]]]:
    """The file's CSV rows (the header first) with the line each ends on, each checked by
    _Lines; a damaged member or malformed CSV is an ImportRefused naming the file and line."""
    lines: _Lines | None = None
    try:
        with source.open() as stream:
            lines = _Lines(stream, source)
            reader = csv.reader(lines, strict=True)

            def rows() -> Iterator[tuple[int, list[str]]]:
                for fields in reader:
                    assert lines is not None
                    lines.row_done()
                    yield reader.line_num, fields

            yield rows()
    except csv.Error as exc:
        raise ImportRefused(f"{source.name}, line {lines.line if lines else 0}: {exc}") from None
    except _DAMAGED as exc:
        raise ImportRefused(f"{source.name}: damaged in the archive ({exc})") from None


def read_rows(source: SourceFile) -> Iterator[tuple[int, Row]]:
    """Each data row of the file with its line number (the header is line 1), converted
    (`convert`); raises ImportRefused at the first bad row, for bytes that are not UTF-8, or
    past the source's ImportLimits."""
    with _csv_rows(source) as rows:
        first = next(rows, None)
        if first is None:
            raise ImportRefused(f"{source.name}: empty (a header line is expected)")
        layout = read_header(source, first[1])
        for line, fields in rows:
            if not fields:
                continue
            yield line, convert(source, layout, fields, line)


def ignored_columns(source: SourceFile) -> tuple[str, ...]:
    """The header's columns the import leaves aside (for the command's summary)."""
    with _csv_rows(source) as rows:
        first = next(rows, None)
    return read_header(source, first[1]).ignored if first and first[1] else ()
