"""`python -m bench.export --site SITE --from DAY --to DAY [--days N ...]`: the export of a
site's range (ingest/export.py), timed, and its memory, against the database of DATABASE_URL.

For each range (the last N days of [from, to], shortest first) it runs `python -m
ingest.export` in a child process and reports the wall time, the archive's size and the
child's peak RSS; the baseline, measured in the same run, is the export's ten statements run
by the server alone (`SELECT count(*) FROM (…)`, nothing sent, with the same planner
settings), so the ratio is what reading
through a cursor, writing CSV and compressing add. Flat memory: the peak RSS of the longest
range is that of the shortest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.table import print_table
from core.config import environ
from ingest.export import DEFAULT_SETTINGS, HASH_SETTINGS, HASHED_GROUPS, STATEMENTS


def _statements_alone(database_url: str, site: str, first: dt.date, last: dt.date) -> float:
    params = {
        "site": site,
        "first": first,
        "last": last,
        "start": dt.datetime.combine(first, dt.time(), dt.UTC),
        "end": dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC),
    }
    started = time.perf_counter()
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        conn.execute("SET LOCAL jit = off")
        for name, statement in STATEMENTS.items():
            conn.execute(HASH_SETTINGS if name in HASHED_GROUPS else DEFAULT_SETTINGS)
            conn.execute(f"SELECT count(*) FROM ({statement}) s", params).fetchone()
    return time.perf_counter() - started


def _export_child(site: str, first: dt.date, last: dt.date, output: Path) -> tuple[float, int]:
    """(seconds, peak RSS in KiB of the children so far) for one export in a child."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ingest.export", "--site", site, "--from", str(first),
         "--to", str(last), "--output", str(output)],
        check=True,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.export")
    parser.add_argument("--site", default="bench-site")
    parser.add_argument("--from", dest="first", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--to", dest="last", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--days", type=int, nargs="+", default=[1, 7, 30])
    args = parser.parse_args(argv)
    database_url = environ().get("DATABASE_URL", "")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for days in sorted(args.days):
            first = max(args.first, args.last - dt.timedelta(days=days - 1))
            alone = _statements_alone(database_url, args.site, first, args.last)
            output = Path(tmp) / f"{days}.zip"
            seconds, peak_kib = _export_child(args.site, first, args.last, output)
            rows.append(
                [
                    f"{first} to {args.last} ({(args.last - first).days + 1} d)",
                    f"{seconds:.2f}",
                    f"{alone:.2f}",
                    f"{seconds / alone:.2f}" if alone else "-",
                    f"{output.stat().st_size / 1e6:.2f}",
                    f"{peak_kib / 1024:.0f}",
                ]
            )
    print_table(
        f"Export of {args.site} (ingest/export.py)",
        ["range", "export s", "statements alone s", "ratio", "ZIP MB", "peak RSS MiB (children)"],
        rows,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
