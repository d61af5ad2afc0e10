"""What both processes share: the wire contract, settings, logging, Kafka admin, calendar and
time-zone helpers. Imports neither `ingest` nor `consumer` (tests/unit/test_import_direction.py)."""
