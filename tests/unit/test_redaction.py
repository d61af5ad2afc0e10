"""DATABASE_URL in logs and messages: never with its password."""

from __future__ import annotations

import pytest

from core.config import redacted_conninfo, without_password


@pytest.mark.parametrize(
    ("conninfo", "shown"),
    [
        (
            "postgresql://postgres:s3cr%40t@db.example:5432/analytics",
            "postgresql://postgres:***@db.example:5432/analytics",
        ),
        ("postgres://app:pw@h1:5432,h2:5433/db", "postgres://app:***@h1:5432,h2:5433/db"),
        (
            "postgresql://app@h/db?sslmode=require&password=pw",
            "postgresql://app@h/db?sslmode=require&password=***",
        ),
        ("postgresql://u:p@h?password=p", "postgresql://u:***@h?password=***"),
        # No password: shown as it is.
        (
            "postgresql://postgres@127.0.0.1:15432/analytics",
            "postgresql://postgres@127.0.0.1:15432/analytics",
        ),
        ("postgresql:///analytics", "postgresql:///analytics"),
        # key=value strings, with and without quoting (written back in libpq's order).
        ("host=db user=app password=pw dbname=x", "user=app password=*** dbname=x host=db"),
        ("host=db password='two words' dbname=x", "password=*** dbname=x host=db"),
        ("host=db dbname=x", "dbname=x host=db"),
        # libpq cannot parse it: its parts are not shown at all.
        ("host=db password", "(a connection string that cannot be parsed)"),
    ],
)
def test_conninfo_is_shown_without_its_password(conninfo: str, shown: str) -> None:
    assert redacted_conninfo(conninfo) == shown


@pytest.mark.parametrize(
    "conninfo",
    [
        "postgresql://postgres:s3cr%40t@db/analytics",
        "host=db password=s3cr@t dbname=analytics",
        "postgresql://u@db/analytics?password=s3cr%40t",
    ],
)
def test_messages_lose_the_password_in_either_spelling(conninfo: str) -> None:
    message = "failed for s3cr@t (given as s3cr%40t)"
    expected = "failed for *** (given as ***)"
    if "://" not in conninfo:
        expected = "failed for *** (given as s3cr%40t)"  # key=value never spells it encoded
    assert without_password(message, conninfo) == expected


def test_messages_without_a_password_are_left_alone() -> None:
    assert without_password("no route to host", "postgresql://u@h/db") == "no route to host"
