"""Applying `schema.sql` (idempotent) under an advisory lock; `python -m consumer.schema`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psycopg

from core.config import environ, redacted_conninfo, without_password
from core.settings import DATABASE_URL

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.sql"
_LOCK_KEY = "analytics schema"


async def apply_schema(database_url: str, schema_path: Path = SCHEMA_PATH) -> None:
    """Runs schema.sql in one transaction; replicas starting together take turns."""
    schema = schema_path.read_bytes()  # noqa: ASYNC240 (a few KiB, once at start-up)
    async with (
        await psycopg.AsyncConnection.connect(database_url, connect_timeout=10) as conn,
        conn.transaction(),
    ):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK_KEY,))
        await conn.execute(schema)


def main() -> int:
    database_url = DATABASE_URL.read(environ())
    shown = redacted_conninfo(database_url)
    try:
        asyncio.run(apply_schema(database_url))
    except psycopg.OperationalError as exc:
        reason = without_password(str(exc), database_url)
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            # schema.sql's own message and hint say which lock and what to do.
            hint = f"\n{exc.diag.message_hint}" if exc.diag.message_hint else ""
            print(f"schema: not applied to {shown}: {reason}{hint}", file=sys.stderr)
            return 1
        print(
            f"schema: cannot connect to {shown}: {reason}\n"
            "Is PostgreSQL up? (`make up`, or check DATABASE_URL)",
            file=sys.stderr,
        )
        return 1
    except psycopg.Error as exc:
        reason = without_password(str(exc), database_url)
        print(f"schema: not applied to {shown}: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    print(f"schema: applied {SCHEMA_PATH.name} to {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
