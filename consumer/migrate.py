"""`python -m consumer.migrate [--dry-run] [--lock-timeout-s S]`: brings DATABASE_URL to the
schema this release needs (consumer/schema.py), or with `--dry-run` says what it would do.

Run it before starting this release's consumers (they refuse an older schema): `make run`,
`make migrate` and compose's `migrate` service do.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import psycopg

from consumer.schema import (
    DEFAULT_LOCK_TIMEOUT_S,
    MIGRATE_COMMAND,
    SCHEMA_PATH,
    Plan,
    load_migrations,
    migrate,
)
from core.config import environ, redacted_conninfo, without_password
from core.settings import DATABASE_URL

LOCK_HINT = (
    "A session holds a lock the migration needs (a consumer batch, a long stats query, a "
    "rebuild): see pg_locks / pg_stat_activity. Run `{command}` again at a quieter moment, or "
    "stop the consumers first; `--lock-timeout-s` waits longer."
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m consumer.migrate", description=__doc__)
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be applied; change nothing"
    )
    parser.add_argument(
        "--lock-timeout-s",
        type=float,
        default=DEFAULT_LOCK_TIMEOUT_S,
        help="how long each migration may wait for a table lock (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.lock_timeout_s <= 0:
        parser.error("--lock-timeout-s: must be greater than 0")
    return args


def describe(plan: Plan, latest: int) -> str:
    """One line on where the database stands, for --dry-run and after a run."""
    if plan.fresh:
        return f"a new database: {SCHEMA_PATH.name} would be applied, recorded as version {latest}"
    if plan.pending:
        labels = ", ".join(m.label for m in plan.pending)
        return f"{len(plan.pending)} migrations to apply: {labels}"
    newer = ""
    if plan.unknown:
        newer = f" (and {', '.join(map(str, plan.unknown))}, of a newer release)"
    return f"at version {latest}{newer}: nothing to apply"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    database_url = DATABASE_URL.read(environ())
    shown = redacted_conninfo(database_url)
    latest = load_migrations()[-1].version

    def say(line: str) -> None:
        print(f"migrate: {line}", flush=True)

    try:
        plan = asyncio.run(
            migrate(database_url, dry_run=args.dry_run, lock_timeout_s=args.lock_timeout_s, say=say)
        )
    # A deadlock is the lock wait of a migration that took its tables in another order than
    # a batch: the same advice holds.
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
        reason = without_password(str(exc), database_url)
        advice = LOCK_HINT.format(command=MIGRATE_COMMAND)
        # A deadlock's own hint only points at the server log.
        deadlock = isinstance(exc, psycopg.errors.DeadlockDetected)
        hint = advice if deadlock else exc.diag.message_hint or advice
        print(
            f"migrate: stopped at {shown}: {reason}\n{hint}\n"
            "The migration in progress was rolled back; those before it stay applied "
            "(`--dry-run` lists what is left).",
            file=sys.stderr,
        )
        return 1
    except psycopg.OperationalError as exc:
        reason = without_password(str(exc), database_url)
        print(
            f"migrate: cannot use {shown}: {reason}\n"
            "Is PostgreSQL up? (`make up`, or check DATABASE_URL)",
            file=sys.stderr,
        )
        return 1
    except psycopg.Error as exc:
        reason = without_password(str(exc), database_url)
        print(f"migrate: stopped at {shown}: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    if args.dry_run:
        say(f"{shown}: {describe(plan, latest)}")
    else:
        say(f"{shown} is at version {latest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
