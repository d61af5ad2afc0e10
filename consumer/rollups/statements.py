"""The named SQL statements of the rollups, read from this package's `.sql` files.

A file is a series of sections, each opened by a line `-- name: <table>.<kind>` and running to
the next one. Whole-line comments are for the SQL's readers and are left out of a statement's
text, as are blank lines at either end; text before a file's first section must be comments.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib import resources

_SECTION = re.compile(r"--\s*name:\s*(?P<name>\S+)\s*")
_NAME = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_]+")


def parse_sections(text: str, source: str) -> dict[str, str]:
    """The statements of one file's `text`, by name; ValueError (naming `source` and the line)
    for a malformed or repeated name, an empty section, or SQL outside any section."""
    sections: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []

    def close() -> None:
        if name is None:
            return
        sql = "\n".join(body).strip("\n")
        if not sql.strip():
            raise ValueError(f"{source}: statement {name!r} is empty")
        sections[name] = sql

    for number, line in enumerate(text.splitlines(), start=1):
        if (match := _SECTION.fullmatch(line.strip())) is not None:
            close()
            name, body = match["name"], []
            if not _NAME.fullmatch(name):
                raise ValueError(f"{source}:{number}: {name!r} is not <table>.<kind>")
            if name in sections:
                raise ValueError(f"{source}:{number}: statement {name!r} is named twice")
        elif line.lstrip().startswith("--"):
            continue
        elif name is None:
            if line.strip():
                raise ValueError(f"{source}:{number}: SQL before the first `-- name:` line")
        else:
            body.append(line.rstrip())
    close()
    return sections


@functools.cache
def all_statements() -> Mapping[str, str]:
    """Every statement of every `.sql` file of this package, by name (read once)."""
    found: dict[str, str] = {}
    for resource in sorted(resources.files(__package__).iterdir(), key=lambda r: r.name):
        if not resource.name.endswith(".sql"):
            continue
        for name, sql in parse_sections(resource.read_text("utf-8"), resource.name).items():
            if name in found:
                raise ValueError(f"{resource.name}: statement {name!r} is also in another file")
            found[name] = sql
    return found


def statement(name: str) -> str:
    """The text of the statement `name`; LookupError if no `.sql` file of the package has it."""
    try:
        return all_statements()[name]
    except KeyError:
        raise LookupError(f"no `-- name: {name}` in consumer/rollups/*.sql") from None
