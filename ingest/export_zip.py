"""A ZIP archive written as a stream of byte chunks, for exports (ingest/export.py). Pure.

The standard library's zipfile writes to a stream it cannot seek when the file object has no
`tell` and `seek`: each member then carries its sizes and CRC in a data descriptor after its
data, and the central directory is written at the end. ZipStream hands out what has been
written so far, so the caller can send it and memory holds one chunk, whatever the archive's
size.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from collections.abc import Iterable
from typing import Any


class _Sink(io.RawIOBase):
    """Collects written bytes until taken; neither seekable nor tellable."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self.size += len(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return data


class ZipStream:
    """An archive of CSV members written one after the other: `begin` a member, `rows` into
    it (as often as needed), `end` it; `take` returns the bytes written since the last take.
    `close` writes the central directory (take once more after it)."""

    def __init__(self, modified: dt.datetime) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, mode="w", compression=zipfile.ZIP_DEFLATED)
        self._modified = modified.timetuple()[:6]
        self._member: Any = None
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, lineterminator="\n")

    @property
    def pending(self) -> int:
        """Bytes written and not taken yet."""
        return self._sink.size

    def begin(self, name: str, header: Iterable[str]) -> None:
        info = zipfile.ZipInfo(name, date_time=self._modified)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        self._member = self._zip.open(info, mode="w")
        self.rows([list(header)])

    def rows(self, rows: Iterable[Iterable[Any]]) -> None:
        """Writes rows as CSV lines (None as an empty field)."""
        self._csv.writerows(rows)
        self._member.write(self._text.getvalue().encode())
        self._text.seek(0)
        self._text.truncate()

    def end(self) -> None:
        self._member.close()
        self._member = None

    def close(self) -> None:
        self._zip.close()

    def take(self) -> bytes:
        return self._sink.take()

    def abandon(self) -> None:
        """Closes the archive unfinished (its export failed or its client left); what it
        writes while closing is dropped."""
        if self._member is not None:
            self._member.close()
            self._member = None
        self._zip.close()
        self._sink.take()
