"""`python -m bench [SECTION...]`: runs the benchmark sections (all by default) against the
services named by KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, printing one table per section.

Each section module in this package exposes `main(argv: list[str]) -> None`.
"""

from __future__ import annotations

import importlib
import sys

SECTIONS = ["ingest", "consumer", "stats", "dashboard", "enrich"]


def main() -> int:
    wanted = [a for a in sys.argv[1:] if not a.startswith("-")] or SECTIONS
    unknown = [name for name in wanted if name not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {unknown}; choose from {SECTIONS}", file=sys.stderr)
        return 2
    for name in wanted:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            print(f"bench: section {name!r} is not written yet", file=sys.stderr)
            continue
        module.main([a for a in sys.argv[1:] if a.startswith("-")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
