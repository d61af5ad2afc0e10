#!/usr/bin/env bash
# test.sh [PYTEST ARGS...]: lint, then the whole suite against the real services.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

echo "test: lint (ruff, mypy --strict)"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy

echo "test: pytest against Kafka at $KAFKA_BOOTSTRAP_SERVERS and PostgreSQL at $DATABASE_URL"
"$PY" -m pytest "$@"
