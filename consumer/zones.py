"""The time zones a site is read in, and their local-day rollups (schema.sql: site_zones).

    python -m consumer.zones add SITE ZONE      # e.g. add shop.example Asia/Kolkata
    python -m consumer.zones remove SITE ZONE
    python -m consumer.zones list

`add` builds the zone's local_* rollups from the 15-minute rollups, which hold every day the
site has (also days that retention took out of `events`), then the consumer keeps them up to
date with each batch. Both commands are one transaction that locks the local_* tables against
the consumers' writes (their batches wait, then carry on: nothing is lost or counted twice),
so a reader sees either no zone or a zone with complete rollups.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
import zoneinfo
from typing import Any

import psycopg
from psycopg import sql

from consumer.data_epoch import bump_epoch
from consumer.rollups import zone_steps, zone_tables
from consumer.settings import settings_for_command
from consumer.table_locks import connect_read_committed, lock_or_give_up, lock_rollups
from core.timezones import check_timezone

# The rollups kept per zone (the registry's `zoned` ones, in its lock order): waits for the
# batches in flight and holds new ones until commit. A batch's statement locks every table
# it names before it takes its snapshot, so one that waited here sees the committed
# site_zones rows.
LOCK_LOCAL_ROLLUPS = lock_rollups(zone_tables())

# (delete, recount) per rollup kept per zone (`zone_delete`, `zone_recount` in
# consumer/rollups/*.sql), from the 15-minute rollups, in the registry's order: the monthly
# ones after the daily ones they sum, the sealed months last (the zone's days before the
# watermark, consumer/seal.py).
RECOUNT_LOCAL_ROLLUPS = zone_steps()
DELETE_ZONE_ROWS = [
    sql.SQL("DELETE FROM {} WHERE site_id = %(site)s AND timezone = %(tz)s").format(
        sql.Identifier(table)
    )
    for table in zone_tables()
]


async def recount_local_rollups(conn: psycopg.AsyncConnection[Any], params: dict[str, Any]) -> None:
    """Recounts the local rollups in scope (`site`, `tz`, `lo`, `hi` as in
    consumer/rollups/zones.sql; absent means all) inside the caller's transaction, which
    must hold LOCK_LOCAL_ROLLUPS and see final 15-minute rollups."""
    params = {"site": None, "tz": None, "lo": None, "hi": None, **params}
    for delete, recount in RECOUNT_LOCAL_ROLLUPS:
        await conn.execute(delete, params)
        await conn.execute(recount, params)


def validate_zone(zone: str) -> str:
    """An IANA zone whose days are not always UTC days, or ValueError saying why not."""
    name = check_timezone(zone.strip())
    # Requests in a zone whose midnights are UTC midnights read the UTC rollups anyway.
    zone_info = zoneinfo.ZoneInfo(name)
    now = dt.datetime.now(dt.UTC)
    if all(
        (now + dt.timedelta(days=d)).astimezone(zone_info).utcoffset() == dt.timedelta(0)
        for d in range(-366, 367, 7)
    ):
        raise ValueError(f"days in {name} are UTC days, which are always kept; no zone is needed")
    return name


async def _check_postgres_knows(conn: psycopg.AsyncConnection[Any], zone: str) -> None:
    """PostgreSQL's time zone data may differ from Python's: a name it does not know would
    make every later batch of the site fail."""
    if not await zone_known_to_postgres(conn, zone):
        raise ValueError(f"PostgreSQL does not know the time zone {zone!r} (update its tzdata)")


async def zone_known_to_postgres(conn: psycopg.AsyncConnection[Any], zone: str) -> bool:
    """Whether PostgreSQL knows `zone` (in a transaction, a False answer aborts it)."""
    try:
        await conn.execute("SELECT now() AT TIME ZONE %s", (zone,))
    except psycopg.errors.InvalidParameterValue:
        return False
    return True


async def add_zone(database_url: str, site: str, zone: str, *, auto: bool = False) -> int:
    """Starts keeping `zone`'s local rollups for `site` (built now from the 15-minute
    rollups); returns the number of local days built. Adding a zone twice rebuilds it.
    `auto`: asked for by requests (consumer/zone_requests.py), not by an operator."""
    zone = validate_zone(zone)
    async with await connect_read_committed(database_url) as conn, conn.transaction():
        await _lock(conn)
        await _check_postgres_knows(conn, zone)
        await _add(conn, site, zone, auto=auto)
        cur = await conn.execute(
            "SELECT count(*) FROM local_daily_stats WHERE site_id = %s AND timezone = %s",
            (site, zone),
        )
        row = await cur.fetchone()
        await bump_epoch(conn)
    return int(row[0]) if row else 0


async def _lock(conn: psycopg.AsyncConnection[Any]) -> None:
    await lock_or_give_up(conn, LOCK_LOCAL_ROLLUPS, "the local rollups")


async def _add(
    conn: psycopg.AsyncConnection[Any], site: str, zone: str, *, auto: bool = False
) -> None:
    # An operator's add makes a zone kept automatically their own (it stays until removed).
    await conn.execute(
        "INSERT INTO site_zones (site_id, timezone, auto) VALUES (%s, %s, %s) "
        "ON CONFLICT (site_id, timezone) DO UPDATE SET auto = site_zones.auto AND EXCLUDED.auto",
        (site, zone, auto),
    )
    await recount_local_rollups(conn, {"site": site, "tz": zone})


async def remove_zone(
    database_url: str, site: str, zone: str, *, by_operator: bool = False, only_auto: bool = False
) -> bool:
    """Stops keeping `zone` for `site` and deletes its local rollups; False if it was not
    kept. Requests in that zone are answered from the 15-minute rollups again. An operator's
    removal also declines the zone, so requests do not make the consumers keep it again
    (consumer/zone_requests.py). `only_auto`: unless an operator has made it theirs since."""
    async with await connect_read_committed(database_url) as conn, conn.transaction():
        await _lock(conn)
        params = {"site": site, "tz": zone}
        if only_auto:
            cur = await conn.execute(
                "SELECT auto FROM site_zones WHERE site_id = %(site)s AND timezone = %(tz)s",
                params,
            )
            row = await cur.fetchone()
            if row is None or not row[0]:
                return False
        if by_operator:
            await conn.execute(
                "INSERT INTO zone_requests (site_id, timezone, declined) "
                "VALUES (%(site)s, %(tz)s, 'operator') "
                "ON CONFLICT (site_id, timezone) DO UPDATE SET declined = 'operator'",
                params,
            )
        for delete in DELETE_ZONE_ROWS:
            await conn.execute(delete, params)
        cur = await conn.execute(
            "DELETE FROM site_zones WHERE site_id = %(site)s AND timezone = %(tz)s", params
        )
        await bump_epoch(conn)
        return cur.rowcount > 0


async def list_zones(database_url: str) -> list[tuple[str, str, int, bool]]:
    """(site, zone, local days kept, kept automatically) for every configured zone."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            """
            SELECT z.site_id, z.timezone,
                   (SELECT count(*) FROM local_daily_stats l
                    WHERE l.site_id = z.site_id AND l.timezone = z.timezone), z.auto
            FROM site_zones z ORDER BY 1, 2
            """
        )
        return [(str(s), str(t), int(n), bool(a)) for s, t, n, a in await cur.fetchall()]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.zones", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("add", "keep local-day rollups for SITE in ZONE (built now, then kept by consumers)"),
        ("remove", "stop keeping them and delete them"),
    ]:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("site")
        command.add_argument("zone", help="an IANA time zone, e.g. Asia/Kolkata")
    commands.add_parser("list", help="the configured zones and how many local days each has")
    args = parser.parse_args(argv)
    settings = settings_for_command("zones")
    if settings is None:
        return 2
    url = settings.database_url
    started = time.monotonic()
    try:
        if args.command == "add":
            validate_zone(args.zone)
            print(f"zones: building {args.zone} rollups of {args.site} (consumers wait)…")
            days = asyncio.run(add_zone(url, args.site, args.zone))
            print(
                f"zones: {args.site} in {args.zone}: {days} local days built in "
                f"{time.monotonic() - started:.1f} s; consumers keep them from now on"
            )
        elif args.command == "remove":
            if not asyncio.run(remove_zone(url, args.site, args.zone, by_operator=True)):
                print(f"zones: {args.site} had no zone {args.zone} (see `list`)", file=sys.stderr)
                return 1
            print(
                f"zones: {args.site} no longer keeps {args.zone}; its local rollups are gone "
                "(and requests will not bring it back: `add` does)"
            )
        else:
            for site, zone, days, auto in asyncio.run(list_zones(url)):
                how = "kept while requests ask for it" if auto else "added by an operator"
                print(f"{site}\t{zone}\t{days} days\t{how}")
    except ValueError as exc:
        print(f"zones: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(
            f"zones: {type(exc).__name__}: {exc}\nIs PostgreSQL up and the schema applied "
            "(`make schema`)?",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
