# The two commands a newcomer needs: `make run` and `make test`. Everything they need
# (a virtualenv, Kafka, PostgreSQL) is installed and started on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: help install up down migrate schema run test test-unit test-faults lint bench bench-ingest clean

help:
	@echo "make run        install, start Kafka + PostgreSQL, serve the API on :3001 with a consumer"
	@echo "make test       install, start the services, lint, run the whole suite, stop them"
	@echo "make test-unit  the fast unit tests alone (no services)"
	@echo "make test-faults the fault suite alone (kills consumers, restarts a private broker/PG)"
	@echo "make up / down  start / stop the local Kafka and PostgreSQL (data in .local/)"
	@echo "make migrate    bring DATABASE_URL's schema to this version (schema.sql or migrations)"
	@echo "make schema     the same as make migrate"
	@echo "make lint       ruff and mypy --strict"
	@echo "make bench      benchmarks (docs/benchmarks.md)"
	@echo "make bench-ingest  the ingest benchmark alone"

$(INSTALLED): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "Cannot create a virtualenv: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(INSTALLED)

up:
	@services/up.sh

down:
	@services/down.sh

# Consumers refuse a schema older than they need: `make run` migrates first, and so must a
# deployment (compose's `migrate` service). MIGRATE_ARGS=--dry-run says what it would do.
migrate: install
	@scripts/with-services.sh $(PY) -m consumer.migrate $(MIGRATE_ARGS)

schema: migrate

# The browser route's VISITOR_KEY (ingest/salts.py), made once per checkout; a VISITOR_KEY in
# the environment wins. Production replicas share one key instead (docs/operations.md).
VISITOR_KEY_FILE := .local/visitor_key

$(VISITOR_KEY_FILE):
	@mkdir -p .local
	@(umask 077 && $(PYTHON) -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())' > $@)

run: install $(VISITOR_KEY_FILE)
	@VISITOR_KEY="$${VISITOR_KEY:-$$(cat $(VISITOR_KEY_FILE))}" scripts/with-services.sh scripts/run.sh

test: install
	@services/chromium.sh install
	@scripts/with-services.sh scripts/test.sh

test-unit: install
	$(PY) -m pytest tests/unit -q

# Part of `make test` too (about a minute); this runs it alone.
test-faults: install
	@scripts/with-services.sh $(PY) -m pytest -m faults tests/faults

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: install
	@scripts/with-services.sh $(PY) -m bench $(BENCH_ARGS)

bench-ingest: install
	@scripts/with-services.sh $(PY) -m bench ingest

clean: down
	rm -rf .local $(VENV)
