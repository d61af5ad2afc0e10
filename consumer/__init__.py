"""Kafka consumer group that writes events and their rollups to PostgreSQL, exactly once."""
