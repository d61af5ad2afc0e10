"""Export and import in Plausible's CSV format against a real PostgreSQL: a site's export
imported into a fresh site exports the same files again and answers the same stats; a file
with a bad row is refused with its line and column and leaves nothing; an import can be
removed, and importing the same export twice replaces it. A client that reads slowly holds no
connection nor snapshot, is cut off at its send deadline, and runs one export at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from consumer import imports
from consumer.imports import import_export
from consumer.imports_read import ImportRefused
from consumer.imports_write import DuplicateRows, list_imports, remove_imports
from core.plausible_csv import IMPORTED_TABLES, TABLES
from ingest import stats_imported
from ingest.export import export_to_file
from ingest.settings import Settings
from tests.integration.exports_support import (
    Exchange,
    members,
    open_transactions,
    site_events,
    write_site,
    zip_of,
)
from tests.integration.test_stats_api import client_for, make_app
from tests.support import scalar

pytestmark = pytest.mark.postgres

NATIVE, IMPORTED = "site-native", "site-imported"
FIRST, LAST = "2025-11-10", "2025-11-12"
SUFFIX = "20251110_20251112.csv"


@pytest.fixture
async def loaded(database_url: str) -> str:
    await write_site(database_url, site_events(NATIVE))
    return database_url


@pytest.fixture
async def client(loaded: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        AsyncConnectionPool(
            loaded, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
        ) as pool,
        client_for(make_app(Settings(database_url=loaded, stats_rate_limit_per_s=0), pool)) as c,
    ):
        yield c


def settings_for(database_url: str, **changes: Any) -> Settings:
    return Settings(database_url=database_url, stats_rate_limit_per_s=0, **changes)


async def export(client: httpx.AsyncClient, site: str, **params: str) -> bytes:
    response = await client.get(
        f"/api/v1/sites/{site}/export",
        params={"period": "custom", "date": f"{FIRST},{LAST}"} | params,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    return response.content


def imported_rows(database_url: str) -> int:
    return sum(int(scalar(database_url, f"SELECT count(*) FROM {t}")) for t in IMPORTED_TABLES)


def say(line: str) -> None:
    pass


async def test_an_export_imported_into_a_fresh_site_exports_the_same_files(
    client: httpx.AsyncClient, loaded: str, tmp_path: Path
) -> None:
    archive = await export(client, NATIVE)
    files = members(archive)
    assert sorted(files) == sorted(f"{t.name}_{SUFFIX}" for t in TABLES)
    # What the native data says, in Plausible's words.
    assert files[f"imported_visitors_{SUFFIX}"].splitlines() == [
        "date,visitors,pageviews,bounces,visits,visit_duration",
        # u3's visit from 23:50 to 00:10 counts on the 10th: 390 + 0 + 1200 seconds.
        "2025-11-10,3,4,1,3,1590",
        "2025-11-11,3,4,1,2,120",
        # u2 came back after 45 minutes: two visits.
        "2025-11-12,3,4,4,4,0",
    ]
    assert "2025-11-12,Desktop,1,1,0,1,1" in files[f"imported_devices_{SUFFIX}"]
    assert "2025-11-10,signup,,,1,1" in files[f"imported_custom_events_{SUFFIX}"]

    path = tmp_path / "export.zip"
    path.write_bytes(archive)
    written = await import_export(loaded, path, IMPORTED, say)
    assert sum(written.rows.values()) == sum(len(t.splitlines()) - 1 for t in files.values())

    again = members(await export(client, IMPORTED))
    for name, text in files.items():
        assert again[name] == text, name


async def test_the_cli_export_equals_the_routes(
    client: httpx.AsyncClient, loaded: str, tmp_path: Path
) -> None:
    path = tmp_path / "cli.zip"
    first, last = dt.date.fromisoformat(FIRST), dt.date.fromisoformat(LAST)
    await export_to_file(loaded, NATIVE, first, last, path)
    assert members(path.read_bytes()) == members(await export(client, NATIVE))


async def test_a_bad_row_is_named_and_nothing_is_imported(
    client: httpx.AsyncClient, loaded: str, tmp_path: Path
) -> None:
    files = members(await export(client, NATIVE))
    pages = f"imported_pages_{SUFFIX}"
    lines = files[pages].splitlines()
    lines[2] = lines[2].rsplit(",", 3)[0] + ",-4,0,0"  # pageviews of line 3
    files[pages] = "\n".join(lines) + "\n"
    path = tmp_path / "bad.zip"
    path.write_bytes(zip_of(files))
    with pytest.raises(ImportRefused, match=rf"{pages}, line 3, column 'pageviews'"):
        await import_export(loaded, path, IMPORTED, say)
    assert imported_rows(loaded) == 0
    assert scalar(loaded, "SELECT count(*) FROM imports") == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2025-11-13,3,4,1,3,486", r"line 3, column 'date': 2025-11-13 is outside the days"),
        ("2025-11-31,3,4,1,3,486", r"line 3, column 'date': '2025-11-31' is not a calendar day"),
        ("2025-11-11,3,4,1,3", r"line 3: 5 fields where the header has 6"),
        ("2025-11-11,3,x,1,3,486", r"line 3, column 'pageviews': 'x' is not a whole number"),
    ],
)
async def test_each_kind_of_bad_row_is_named(
    loaded: str, tmp_path: Path, line: str, message: str
) -> None:
    text = "date,visitors,pageviews,bounces,visits,visit_duration\n2025-11-10,1,1,1,1,0\n"
    path = tmp_path / "bad.zip"
    path.write_bytes(zip_of({f"imported_visitors_{SUFFIX}": text + line + "\n"}))
    with pytest.raises(ImportRefused, match=message):
        await import_export(loaded, path, IMPORTED, say)
    assert imported_rows(loaded) == 0


async def test_a_missing_column_and_an_unknown_file_are_refused(
    loaded: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.zip"
    path.write_bytes(zip_of({f"imported_visitors_{SUFFIX}": "date,visitors\n"}))
    with pytest.raises(ImportRefused, match=r"line 1: column 'pageviews' is missing"):
        await import_export(loaded, path, IMPORTED, say)
    path.write_bytes(zip_of({"notes.txt": "hello"}))
    with pytest.raises(ImportRefused, match=r"notes.txt is not a file of a Plausible CSV"):
        await import_export(loaded, path, IMPORTED, say)


async def test_a_hostile_file_among_good_ones_leaves_nothing_imported(
    client: httpx.AsyncClient, loaded: str, tmp_path: Path
) -> None:
    files = members(await export(client, NATIVE))
    # The last file of the format's order gets a row no file of the format has.
    systems = f"imported_operating_systems_{SUFFIX}"
    files[systems] += "2025-11-10," + "x" * 70_000 + ",,1,1,0,0,1\n"
    path = tmp_path / "hostile.zip"
    path.write_bytes(zip_of(files))
    with pytest.raises(ImportRefused, match=rf"{systems}, line \d+: the row is longer than"):
        await import_export(loaded, path, IMPORTED, say)
    assert imported_rows(loaded) == 0
    assert scalar(loaded, "SELECT count(*) FROM imports") == 0


def test_the_command_refuses_an_export_past_its_inflated_size(
    loaded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("DATABASE_URL", loaded)
    text = "date,visitors,pageviews,bounces,visits,visit_duration\n"
    text += "2025-11-10,1,1,1,1,0\n" * 100
    path = tmp_path / "big.zip"
    path.write_bytes(zip_of({f"imported_visitors_{SUFFIX}": text}))
    assert imports.main([str(path), "--site", IMPORTED, "--max-bytes", "1000"]) == 1
    err = capsys.readouterr().err
    assert "nothing imported" in err and "past 1000 bytes uncompressed (`--max-bytes`" in err
    assert imported_rows(loaded) == 0
    assert imports.main([str(path), "--site", IMPORTED, "--max-bytes", "100000"]) == 1
    assert "line 3: the same date as line 2" in capsys.readouterr().err


async def test_a_key_listed_twice_is_refused_after_being_checked(
    loaded: str, tmp_path: Path
) -> None:
    text = "date,device,visitors,visits,visit_duration,bounces\n"
    text += "2025-11-10,Desktop,1,1,0,1\n2025-11-10,Mobile,1,1,0,1\n2025-11-10,desktop,2,2,0,0\n"
    path = tmp_path / "twice.zip"
    path.write_bytes(zip_of({f"imported_devices_{SUFFIX}": text}))
    with pytest.raises(DuplicateRows, match=r"line 4: the same date, device as line 2"):
        await import_export(loaded, path, IMPORTED, say)
    assert imported_rows(loaded) == 0
    assert scalar(loaded, "SELECT count(*) FROM imports") == 0


async def test_importing_again_replaces_and_remove_takes_it_away(
    client: httpx.AsyncClient, loaded: str, tmp_path: Path
) -> None:
    native_before = scalar(loaded, "SELECT sum(page_views) FROM daily_stats")
    path = tmp_path / "export.zip"
    path.write_bytes(await export(client, NATIVE))
    first = await import_export(loaded, path, IMPORTED, say)
    rows = imported_rows(loaded)
    second = await import_export(loaded, path, IMPORTED, say)
    assert second.replaced == [first.import_id]
    assert imported_rows(loaded) == rows
    assert scalar(loaded, "SELECT count(*) FROM imports") == 1

    with psycopg.connect(loaded) as conn:
        other = conn.execute("SELECT count(*) FROM imported_pages").fetchone()
    assert other is not None and other[0] > 0
    async with await psycopg.AsyncConnection.connect(loaded, autocommit=True) as conn:
        assert [r.import_id for r in await list_imports(conn, IMPORTED)] == [second.import_id]
        removed = await remove_imports(conn, IMPORTED, second.import_id)
    assert [r.import_id for r in removed] == [second.import_id]
    assert imported_rows(loaded) == 0
    assert scalar(loaded, "SELECT count(*) FROM imports") == 0
    assert scalar(loaded, "SELECT sum(page_views) FROM daily_stats") == native_before


async def test_an_export_with_bare_carriage_returns_imports_the_same_rows(
    client: httpx.AsyncClient, loaded: str, tmp_path: Path
) -> None:
    """Spreadsheets of old Macs end lines with a bare CR: the same export so written imports
    the same rows as the export itself."""
    archive = await export(client, NATIVE)
    path = tmp_path / "export.zip"
    path.write_bytes(archive)
    first = await import_export(loaded, path, IMPORTED, say)
    counts = {t: scalar(loaded, f"SELECT count(*) FROM {t}") for t in IMPORTED_TABLES}
    visitors = scalar(loaded, "SELECT sum(visitors) FROM imported_visitors")
    files = {
        name: text.replace("\r\n", "\n").replace("\n", "\r")
        for name, text in members(archive).items()
    }
    assert all("\n" not in text for text in files.values())
    path.write_bytes(zip_of(files))
    again = await import_export(loaded, path, IMPORTED, say)
    assert again.replaced == [first.import_id]
    assert {t: scalar(loaded, f"SELECT count(*) FROM {t}") for t in IMPORTED_TABLES} == counts
    assert scalar(loaded, "SELECT sum(visitors) FROM imported_visitors") == visitors
    assert sum(int(n) for n in counts.values()) > 0


def test_the_command_exits_non_zero_naming_the_row(
    loaded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("DATABASE_URL", loaded)
    text = "date,visitors,pageviews,bounces,visits,visit_duration\n2025-11-10,1,1,1,1,-1\n"
    bad = tmp_path / "dir"
    bad.mkdir()
    (bad / f"imported_visitors_{SUFFIX}").write_text(text)
    assert imports.main([str(bad), "--site", IMPORTED]) == 1
    err = capsys.readouterr().err
    assert f"imported_visitors_{SUFFIX}, line 2, column 'visit_duration'" in err
    assert "nothing imported" in err
    (bad / f"imported_visitors_{SUFFIX}").write_text(text.replace(",-1\n", ",7\n"))
    assert imports.main([str(bad), "--site", IMPORTED]) == 0
    assert "1 rows of imported_visitors" in capsys.readouterr().out
    assert imports.main(["list", "--site", IMPORTED]) == 0
    assert "2025-11-10 to 2025-11-12, 1 rows" in capsys.readouterr().out
    assert imports.main(["remove", "--site", IMPORTED]) == 0
    assert imported_rows(loaded) == 0


async def get(client: httpx.AsyncClient, route: str, site: str, **params: str) -> Any:
    response = await client.get(f"/api/v1/stats/{route}", params={"site_id": site} | params)
    assert response.status_code == 200, response.text
    return response.json()


def results(body: dict[str, Any]) -> Any:
    return body["results"]


async def test_the_imported_site_answers_the_same_stats(
    client: httpx.AsyncClient, loaded: str, tmp_path: Path
) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(await export(client, NATIVE))
    await import_export(loaded, path, IMPORTED, say)
    whole = {"period": "custom", "date": f"{FIRST},{LAST}"}
    # Over several days, imported visitors are a sum of daily visitors (as in Plausible), so
    # the range compares counts of views and events, and each day compares visitors too.
    metrics = {"metrics": "views,events"}
    native = await get(client, "aggregate", NATIVE, **whole, **metrics)
    imported = await get(client, "aggregate", IMPORTED, **whole, **metrics)
    assert results(imported) == results(native) == {"views": {"value": 12}, "events": {"value": 14}}
    assert imported["imports_included"] is True and "imports_included" not in native
    series = {"interval": "day", "metrics": "views,visitors,events"}
    assert results(await get(client, "timeseries", IMPORTED, **whole, **series)) == results(
        await get(client, "timeseries", NATIVE, **whole, **series)
    )
    for day in ("2025-11-10", "2025-11-11", "2025-11-12"):
        one = {"period": "day", "date": day}
        assert results(await get(client, "aggregate", IMPORTED, **one)) == results(
            await get(client, "aggregate", NATIVE, **one)
        )
        for prop in ("event:page", "event:name"):
            assert results(await get(client, "breakdown", IMPORTED, **one, property=prop)) == (
                results(await get(client, "breakdown", NATIVE, **one, property=prop))
            ), (day, prop)
    # A visit's context is its first hit's, and the visit counts on the day it starts (u3's
    # from 23:50 to 00:10); here every hit of a visit has the same context, so the range's
    # page views per browser, OS, device and country agree.
    for prop, key in [
        ("visit:browser", "browser"),
        ("visit:os", "os"),
        ("visit:device", "device"),
        ("visit:country", "country"),
    ]:
        mine = results(await get(client, "breakdown", IMPORTED, **whole, property=prop))
        theirs = results(await get(client, "breakdown", NATIVE, **whole, property=prop))
        # The export leaves out visits of an unknown country, as Plausible's does.
        theirs = [r for r in theirs if key != "country" or r[key] != "(not set)"]
        assert [(r[key], r["views"]) for r in mine] == [(r[key], r["views"]) for r in theirs]


async def test_with_imported_false_and_filters_leave_imports_out(
    client: httpx.AsyncClient, loaded: str, tmp_path: Path
) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(await export(client, NATIVE))
    await import_export(loaded, path, IMPORTED, say)
    whole = {"period": "custom", "date": f"{FIRST},{LAST}", "metrics": "views"}
    assert results(await get(client, "aggregate", IMPORTED, **whole)) == {"views": {"value": 12}}
    left_out = await get(client, "aggregate", IMPORTED, **whole, with_imported="false")
    assert results(left_out) == {"views": {"value": 0}}
    filtered = await get(client, "aggregate", IMPORTED, **whole, filters="event:page==/")
    assert results(filtered) == {"views": {"value": 0}}
    wrong = await client.get(
        "/api/v1/stats/aggregate", params={"site_id": IMPORTED, "with_imported": "maybe"}
    )
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_request"
    assert wrong.json()["field"] == "with_imported"
    page = await get(
        client, "breakdown", IMPORTED, **whole, property="event:page", limit="2", page="2"
    )
    native = await get(
        client, "breakdown", NATIVE, **whole, property="event:page", limit="2", page="2"
    )
    assert [r["path"] for r in results(page)] == ["/pricing", "/blog/b"]  # "/blog/a" ties
    assert results(page) == results(native)
    assert page["page"] == 2 and page["limit"] == 2


async def test_a_page_of_questions_asked_together_reads_the_import_spans_once(
    client: httpx.AsyncClient, loaded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(await export(client, NATIVE))
    await import_export(loaded, path, IMPORTED, say)
    reads: list[str] = []
    real_fetch = stats_imported.fetch

    async def counting_fetch(pool: Any, query: Any, params: dict[str, Any]) -> Any:
        if query == stats_imported.STATEMENTS["import_spans"]:
            reads.append(query)
        return await real_fetch(pool, query, params)

    monkeypatch.setattr(stats_imported, "fetch", counting_fetch)
    whole = {"period": "custom", "date": f"{FIRST},{LAST}"}
    questions = [("aggregate", {"metrics": m}) for m in ("views", "events", "views,events")] + [
        ("breakdown", {"property": p}) for p in ("event:page", "event:name", "visit:browser")
    ]
    answers = await asyncio.gather(
        *(get(client, route, IMPORTED, **whole, **asked) for route, asked in questions)
    )
    assert len(reads) == 1
    assert all(a.get("imports_included") is True for a in answers)


QUERY = f"period=custom&date={FIRST},{LAST}"
Call = Callable[[Exchange], Awaitable[None]]


def caller(settings: Settings, pool: AsyncConnectionPool[Any]) -> Call:
    app = make_app(settings, pool)
    return lambda exchange: app(exchange.scope, exchange.receive, exchange.send)


@pytest.fixture
async def stats_pool(loaded: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(
        loaded, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    ) as pool:
        yield pool


async def _one_export_held(
    loaded: str, stats_pool: AsyncConnectionPool[Any]
) -> tuple[Any, Exchange, asyncio.Task[None]]:
    """An API with one export slot, taken by an export whose client reads nothing yet: the
    caller, that export, and the task sending it (until `held.release()`)."""
    call = caller(settings_for(loaded, export_concurrency=1), stats_pool)
    held = Exchange(f"/api/v1/sites/{NATIVE}/export", QUERY, hold_body=True)
    running = asyncio.create_task(call(held))
    await held.body_offered.wait()
    return call, held, running


async def test_the_archive_is_built_before_sending_and_a_client_runs_one_export(
    loaded: str, stats_pool: AsyncConnectionPool[Any]
) -> None:
    call, held, running = await _one_export_held(loaded, stats_pool)
    assert held.status == 200 and int(held.header("content-length")) > 0
    # The client has not read a byte: the export's connection is closed, and no backend of
    # the database holds a transaction or a snapshot.
    assert await open_transactions(loaded) == []

    again = Exchange(f"/api/v1/sites/{NATIVE}/export", QUERY)
    await call(again)
    assert again.status == 429 and again.json()["code"] == "export_in_progress"
    assert "one export at a time" in again.json()["message"]
    assert int(again.header("retry-after")) >= 1
    # Another client is served meanwhile: the slot that builds is free again.
    other = Exchange(f"/api/v1/sites/{NATIVE}/export", QUERY, client="127.0.0.2")
    await call(other)
    assert other.status == 200

    held.release()
    await running
    assert members(held.body()) == members(other.body())


async def test_a_head_answers_the_headers_without_building_an_archive(
    loaded: str, stats_pool: AsyncConnectionPool[Any]
) -> None:
    call, held, running = await _one_export_held(loaded, stats_pool)
    # The one slot is taken and this client has an export in progress: a HEAD that built an
    # archive would wait for a slot or be refused.
    head = Exchange(f"/api/v1/sites/{NATIVE}/export", QUERY, method="HEAD")
    await call(head)
    assert head.status == 200 and head.header("content-type") == "application/zip"
    assert head.header("content-disposition") == held.header("content-disposition")
    assert head.body() == b""
    assert all(name.lower() != b"content-length" for name, _ in head.headers)
    # It is checked as a GET is: a bad range is refused the same way.
    bad = Exchange(f"/api/v1/sites/{NATIVE}/export", "period=custom&date=x", method="HEAD")
    await call(bad)
    assert bad.status == 400
    held.release()
    await running


async def test_a_client_that_does_not_read_is_cut_off_at_its_deadline_and_frees_its_slot(
    loaded: str, stats_pool: AsyncConnectionPool[Any]
) -> None:
    settings = settings_for(
        loaded,
        export_concurrency=1,
        export_max_sending=1,
        export_send_deadline_s=0.05,
        export_min_send_bytes_per_s=1 << 40,
    )
    call = caller(settings, stats_pool)
    stuck = Exchange(f"/api/v1/sites/{NATIVE}/export", QUERY, hold_body=True)
    # Returns only because the deadline passed: the client never takes the first chunk.
    await call(stuck)
    assert stuck.status == 200 and stuck.completed is False
    # The one building slot, the one sending slot and the client are all free again.
    after = Exchange(f"/api/v1/sites/{NATIVE}/export", QUERY)
    await call(after)
    assert after.status == 200 and after.completed
    assert len(members(after.body())) == len(TABLES)


async def test_an_archive_past_its_cap_is_refused_and_frees_its_slot(
    loaded: str, stats_pool: AsyncConnectionPool[Any]
) -> None:
    call = caller(settings_for(loaded, export_concurrency=1, export_max_bytes=200), stats_pool)
    for _ in range(2):
        big = Exchange(f"/api/v1/sites/{NATIVE}/export", QUERY)
        await call(big)
        assert big.status == 400
        body = big.json()
        assert (body["code"], body["field"]) == ("export_too_large", "date")
        assert "EXPORT_MAX_BYTES" in body["message"]
    assert await open_transactions(loaded) == []
