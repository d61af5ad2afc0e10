"""Whose fault a PostgreSQL error is: the data's (isolate the culprit events) or the
database's (pause, back off, retry the same batch).

Decided by SQLSTATE, which names the condition whatever exception class psycopg maps it to
(54000 "index row size exceeds btree maximum" is an OperationalError, like a lost
connection). The exception class is only a fallback for errors that carry no SQLSTATE, which
are raised on the client's side: a lost connection, a closed socket.

Getting this wrong either way hurts: data's fault taken for the database's stalls every
partition behind one event; the database's taken for the data's sends good events to the
dead-letter topic (from where they can be replayed, so nothing is lost). A code the table
does not know is the database's: stalling is visible in lag and health, and an operator can
act on it.
"""

from __future__ import annotations

import enum

import psycopg


class Fault(enum.Enum):
    DATA = "data"  # the rows themselves: retrying them will fail again
    DATABASE = "database"  # the server, its state or its configuration: retry later


# SQLSTATE classes (the first two characters) that the rows can cause.
DATA_CLASSES = {
    "21",  # cardinality violation: an upsert meeting one key twice, which only some rows
    # cause (a statement's flaw, but retrying the same rows will fail again: isolate them)
    "22",  # data exception: invalid text (NUL), out-of-range values, and functions refusing
    # a value with a class-22 code (a day already dropped by retention: 22023)
    "23",  # integrity constraint violation, incl. 23514 "no partition of relation found"
    "42",  # syntax error or access rule violation, except the codes below
    "54",  # program limit exceeded: 54000 index row too large, 54001 statement too complex
}

# Codes of the data classes that no row can cause: a missing table, column, function or
# privilege, a duplicate object or a wrong object definition means the schema, the role or
# the SQL is not what this consumer expects. That is the operator's to fix; the batch waits.
DATABASE_CODES = {
    "42501",  # insufficient_privilege
    "42601",  # syntax_error: our statements are fixed, values are bound parameters
    "42P01",  # undefined_table
    "42P02",  # undefined_parameter
    "42703",  # undefined_column
    "42704",  # undefined_object (e.g. a missing type: the hll extension)
    "42883",  # undefined_function (ensure_events_partition, hll_*)
    "42P06",  # duplicate_schema
    "42P07",  # duplicate_table: two creators of one day partition met
    "42710",  # duplicate_object
    "42723",  # duplicate_function
    "42P17",  # invalid_object_definition: e.g. a new day partition overlapping another
}


def fault_of_sqlstate(sqlstate: str | None) -> Fault:
    """Whose fault an error with this SQLSTATE is; None (no SQLSTATE) is the database's."""
    if not sqlstate:
        return Fault.DATABASE
    if sqlstate in DATABASE_CODES:
        return Fault.DATABASE
    if sqlstate[:2] in DATA_CLASSES:
        return Fault.DATA
    # 08 connection, 40 serialization/deadlock, 53 resources, 55 object state (55P03 lock
    # timeout), 57 operator intervention (57014 canceled, 57P01 shutdown), 58 system, XX
    # internal (XX001/XX002 corruption is the disk's, not the row's), and the rest.
    return Fault.DATABASE


def sqlstate_of(exc: BaseException) -> str | None:
    if not isinstance(exc, psycopg.Error):
        return None
    return exc.sqlstate or exc.diag.sqlstate or None


def fault_of(exc: BaseException) -> Fault:
    """Whose fault a psycopg error is: by its SQLSTATE, else by its class (a DataError the
    client raised while encoding a value is the data's; anything else, such as a lost
    connection, is the database's)."""
    sqlstate = sqlstate_of(exc)
    if sqlstate:
        return fault_of_sqlstate(sqlstate)
    if isinstance(exc, psycopg.DataError):
        return Fault.DATA
    return Fault.DATABASE


def describe(exc: BaseException) -> str:
    """The error's first line (the server's primary message), as an operator reads it."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
