"""Kept only for consumer/seal.py and consumer/zones.py until they import the shared core:
the stats parameters are parsed in ingest/stats_params.py."""

from ingest.stats_params import next_month as next_month
from ingest.stats_params import parse_timezone as parse_timezone
