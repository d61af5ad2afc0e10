"""The rollups, each declared once: its table, its place in the one lock order, and which of
its statements exist. The statements are SQL in this package's `.sql` files, named
`<table>.<kind>` (consumer/rollups/statements.py reads them):

- `upsert`: its CTE in the batch statement (consumer/write.py), reading the batch's `counts`;
- `delete`, `recount`: `rebuild` of a range of UTC days from the raw events (`rebuilt`);
- `zone_delete`, `zone_recount`: a recount per kept time zone, from the 15-minute rollups
  (`zoned`: `zones add`, `zones remove`, and `rebuild` after the UTC recounts);
- `seal` (and `zone_seal` if zoned): a seal of closed days into months (`sealed`);
- `expected`, `stored`: the tests' check that the rollup equals a recount of the raw events.

The visit rollups (`from_visits`) are the exception: their upserts are CTEs of the visit
statement (`visit_statement`), which a batch runs after the batch statement in the same
transaction, once consumer/sessions.py has placed the new events in visits; their recounts
read the stored `visits`. That statement locks `visits`, then the visit rollups, after every
table of the batch statement; retention locks `visits` alone (consumer/retention.py).

The order of ROLLUPS is the lock order. The batch statement names the tables in it, so it
locks them in it (PostgreSQL locks a statement's tables CTE by CTE as it analyses it), and
every command that locks rollup tables locks a subsequence of it, so a batch and a command
never wait for each other. It is also the order of the recounts: each reads only rollups
before it. The sealed rollups come last in the batch statement: a seal locks them only, and
a batch waiting for a seal then holds no lock the seal needs. The visit rollups follow them,
as the visit statement follows the batch statement, their sealed months last: a batch
reaches the visit statement holding the batch statement's sealed months, so a seal never
waits for it there.

Adding a rollup: its table in schema.sql (and a migration), a `Rollup` line here at its place
in the order, and its statements in a `.sql` file of this package.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from consumer.rollups.statements import statement

# CTEs of batch.sql that a rollup's upsert may read besides `inserted`, `counts` and
# `page_counts`; each is written into the statement once, before the first upsert that reads it.
BATCH_INPUTS = ("context_counts", "local_counts", "sealed")
_TABLE = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Rollup:
    table: str
    batch_inputs: tuple[str, ...] = ()
    rebuilt: bool = True
    zoned: bool = False
    sealed: bool = False
    from_visits: bool = False

    def __post_init__(self) -> None:
        if not _TABLE.fullmatch(self.table):
            raise ValueError(f"rollup table {self.table!r} is not a plain lower-case name")
        if unknown := set(self.batch_inputs) - set(BATCH_INPUTS):
            raise ValueError(f"{self.table} reads unknown batch inputs {sorted(unknown)}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of statement this rollup has (each `<table>.<kind>` in a .sql file)."""
        kinds = ["upsert"]
        if self.rebuilt:
            kinds += ["delete", "recount"]
        if self.zoned:
            kinds += ["zone_delete", "zone_recount"]
        if self.sealed:
            kinds += ["seal", "zone_seal"] if self.zoned else ["seal"]
        return (*kinds, "expected", "stored")

    def sql(self, kind: str) -> str:
        if kind not in self.kinds:
            raise LookupError(f"rollup {self.table} has no {kind!r} statement")
        return statement(f"{self.table}.{kind}")


ROLLUPS: tuple[Rollup, ...] = (
    # UTC, for the dashboard (utc_days.sql)
    Rollup("daily_visitor_ids"),
    Rollup("daily_stats"),  # after daily_visitor_ids: counts the visitors it found new
    Rollup("daily_paths"),
    Rollup("hourly_stats"),
    # UTC, for the stats API (stats_api.sql)
    Rollup("daily_visitors"),
    Rollup("quarter_hour_stats"),
    Rollup("quarter_hour_paths"),
    Rollup("hourly_paths"),
    Rollup("quarter_hour_event_types"),
    Rollup("quarter_hour_event_paths"),
    Rollup("daily_details"),
    Rollup("monthly_paths"),  # recounted from daily_paths
    Rollup("daily_event_types"),
    # UTC, by each event's context (dimensions.sql)
    Rollup("daily_dimensions", ("context_counts",)),
    Rollup("quarter_hour_dimensions", ("context_counts",)),
    Rollup("daily_dimension_pairs", ("context_counts",)),  # (dimension_pairs.sql)
    Rollup("daily_props"),
    # by local day of each kept zone (zones.sql)
    Rollup("local_daily_stats", ("local_counts",), rebuilt=False, zoned=True),
    Rollup("local_daily_paths", ("local_counts",), rebuilt=False, zoned=True),
    Rollup("local_monthly_paths", ("local_counts",), rebuilt=False, zoned=True),  # from ^
    # sealed months, last (sealed.sql)
    Rollup("sealed_monthly_paths", ("local_counts", "sealed"), zoned=True, sealed=True),
    Rollup("sealed_monthly_event_types", ("sealed",), sealed=True),
    # visits, by where they start (visits.sql), written by the visit statement
    Rollup("quarter_hour_visits", from_visits=True),
    Rollup("quarter_hour_visit_dimensions", from_visits=True),
    Rollup("daily_visit_dimensions", from_visits=True),
    # sealed months of the one before (sealed.sql): last of the visit statement, as the
    # other sealed months are of the batch statement
    Rollup("sealed_monthly_visit_dimensions", sealed=True, from_visits=True),
)

LOCK_ORDER: tuple[str, ...] = tuple(rollup.table for rollup in ROLLUPS)


def batch_statement() -> str:
    """The one statement a batch runs after copying its rows into `staging_events`: insert
    them into `events`, then every rollup's upsert in the lock order, then bump the versions
    of the sites it wrote; it returns the number of rows inserted."""
    ctes = [statement("batch.head")]
    written: set[str] = set()
    for rollup in ROLLUPS:
        if rollup.from_visits:
            continue
        for name in rollup.batch_inputs:
            if name not in written:
                ctes.append(statement(f"batch.{name}"))
                written.add(name)
        ctes.append(rollup.sql("upsert"))
    ctes.append(statement("batch.site_versions"))
    return ",\n".join(ctes) + "\n" + statement("batch.tail")


def visit_statement() -> str:
    """The statement a batch runs once its new events are placed in visits (rows of
    `visit_changes`): store the visits, then each visit rollup's delta in the lock order, then
    stamp the days they changed with the site's version; it returns the number of visits made
    or changed."""
    ctes = [statement("visits.head")] + [r.sql("upsert") for r in ROLLUPS if r.from_visits]
    ctes.append(statement("visits.site_days"))
    return ",\n".join(ctes) + "\n" + statement("visits.tail")


def rebuild_steps() -> list[tuple[str, str]]:
    """(delete, recount) of each rollup rebuilt from raw UTC days, in the lock order."""
    return [(r.sql("delete"), r.sql("recount")) for r in ROLLUPS if r.rebuilt]


def zone_tables() -> tuple[str, ...]:
    """The tables holding rows per kept zone, in the lock order."""
    return tuple(r.table for r in ROLLUPS if r.zoned)


def zone_steps() -> list[tuple[str, str]]:
    """(delete, recount) of each rollup kept per zone, in the lock order."""
    return [(r.sql("zone_delete"), r.sql("zone_recount")) for r in ROLLUPS if r.zoned]


def sealed_tables() -> tuple[str, ...]:
    """The tables a seal writes, in the lock order."""
    return tuple(r.table for r in ROLLUPS if r.sealed)


def seal_steps() -> list[str]:
    """The statements of a seal of days [%(lo)s, %(hi)s), in the lock order."""
    return [r.sql(kind) for r in ROLLUPS for kind in ("seal", "zone_seal") if kind in r.kinds]


def checks() -> Iterator[tuple[str, str, str]]:
    """(table, expected, stored) of every rollup: the tests' recount from raw events and the
    rollup as stored, which a correct consumer keeps equal row for row."""
    for rollup in ROLLUPS:
        yield rollup.table, rollup.sql("expected"), rollup.sql("stored")
