#!/usr/bin/env bash
# test.sh [PYTEST ARGS...]: lint, then the whole suite against the real services.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

echo "test: lint (ruff, mypy --strict)"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy

# The URL may hold a password: shown without it.
database=$("$PY" -c 'import os, core.config as c; print(c.redacted_conninfo(os.environ["DATABASE_URL"]))')
# Most of the suite waits on Kafka and PostgreSQL rather than on a core, and every test has
# its own topic, group and database: two workers share the services (docs/testing.md).
workers=${TEST_WORKERS:-2}
processes=$([[ "$workers" == 0 ]] && echo "one process" || echo "$workers workers")
echo "test: pytest in $processes against Kafka at $KAFKA_BOOTSTRAP_SERVERS and PostgreSQL at $database"
"$PY" -m pytest -n "$workers" --dist loadgroup "$@"
