"""HTTP ingest and stats API: validate events, publish them to Kafka, answer stats."""
