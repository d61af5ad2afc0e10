"""The export's streamed ZIP: chunks that together are an archive any reader opens."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

from ingest.export_zip import ZipStream


def test_chunks_make_an_archive_of_csv_members() -> None:
    archive = ZipStream(dt.datetime(2025, 11, 12, 10, 0))
    chunks = []
    archive.begin("imported_pages_20251101_20251130.csv", ["date", "page", "pageviews"])
    for day in range(1, 31):
        archive.rows(
            [[dt.date(2025, 11, day), f"/p,{day}", day], [dt.date(2025, 11, day), None, 0]]
        )
        chunks.append(archive.take())
    archive.end()
    archive.begin("imported_visitors_20251101_20251130.csv", ["date", "visitors"])
    archive.end()
    archive.close()
    chunks.append(archive.take())
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as z:
        assert z.testzip() is None
        pages = z.read("imported_pages_20251101_20251130.csv").decode().splitlines()
        assert pages[:3] == ["date,page,pageviews", '2025-11-01,"/p,1",1', "2025-11-01,,0"]
        assert len(pages) == 61
        assert z.read("imported_visitors_20251101_20251130.csv") == b"date,visitors\n"
        assert z.getinfo("imported_pages_20251101_20251130.csv").compress_type == (
            zipfile.ZIP_DEFLATED
        )


def test_what_is_taken_is_not_kept() -> None:
    archive = ZipStream(dt.datetime(2025, 11, 12))
    archive.begin("a.csv", ["x"])
    for _ in range(1000):
        archive.rows([["a fairly long value that compresses"] * 20])
        archive.take()
        assert archive.pending == 0
    archive.abandon()
