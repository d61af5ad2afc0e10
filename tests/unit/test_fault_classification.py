"""Whose fault a PostgreSQL error is, per SQLSTATE: the data's (isolate) or the database's
(pause and retry)."""

from __future__ import annotations

import psycopg
import pytest

from consumer.errors import Fault, fault_of, fault_of_sqlstate


@pytest.mark.parametrize(
    "sqlstate",
    [
        "21000",  # cardinality_violation: an upsert meeting one key twice
        "22001",  # string_data_right_truncation
        "22003",  # numeric_value_out_of_range
        "22008",  # datetime_field_overflow
        "22021",  # character_not_in_repertoire (a NUL in text)
        "22023",  # invalid_parameter_value: a function refusing a day retention dropped
        "22P05",  # untranslatable_character
        "23502",  # not_null_violation
        "23505",  # unique_violation
        "23514",  # check_violation, incl. "no partition of relation found for row"
        "42804",  # datatype_mismatch
        "54000",  # program_limit_exceeded: index row size exceeds btree maximum
        "54001",  # statement_too_complex
    ],
)
def test_the_datas_fault(sqlstate: str) -> None:
    assert fault_of_sqlstate(sqlstate) is Fault.DATA


@pytest.mark.parametrize(
    "sqlstate",
    [
        None,  # no SQLSTATE: the connection was lost
        "",
        "08000",  # connection_exception
        "08006",  # connection_failure
        "25006",  # read_only_sql_transaction (a standby after a failover)
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "42501",  # insufficient_privilege
        "42601",  # syntax_error
        "42P01",  # undefined_table
        "42703",  # undefined_column
        "42704",  # undefined_object
        "42883",  # undefined_function
        "42P07",  # duplicate_table
        "42P17",  # invalid_object_definition (a partition overlapping another)
        "53100",  # disk_full
        "53200",  # out_of_memory
        "53300",  # too_many_connections
        "55000",  # object_not_in_prerequisite_state
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown
        "57P03",  # cannot_connect_now (starting up)
        "58030",  # io_error
        "XX000",  # internal_error
        "XX001",  # data_corrupted: the disk's fault, not the row's
        "P0001",  # raise_exception without a code
    ],
)
def test_the_databases_fault(sqlstate: str | None) -> None:
    assert fault_of_sqlstate(sqlstate) is Fault.DATABASE


def test_the_sqlstate_decides_not_the_exception_class() -> None:
    # psycopg maps 54000 onto OperationalError, the class of a lost connection.
    too_large = psycopg.errors.lookup("54000")("index row size 6016 exceeds btree maximum")
    assert isinstance(too_large, psycopg.OperationalError)
    assert fault_of(too_large) is Fault.DATA
    # ... and 42501 onto ProgrammingError, like a data type mismatch.
    assert fault_of(psycopg.errors.lookup("42501")("permission denied")) is Fault.DATABASE


def test_without_a_sqlstate_the_class_decides() -> None:
    assert fault_of(psycopg.OperationalError("connection lost")) is Fault.DATABASE
    assert fault_of(psycopg.InterfaceError("the connection is closed")) is Fault.DATABASE
    # Raised by the client while encoding a value: the value's fault.
    assert fault_of(psycopg.DataError("cannot encode")) is Fault.DATA
    assert fault_of(ValueError("not a psycopg error")) is Fault.DATABASE
