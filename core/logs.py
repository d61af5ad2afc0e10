"""One log format for every process, so `make run`'s interleaved output stays readable."""

from __future__ import annotations

import logging
import os

from core.settings import LOG_LEVEL


def configure_logging(process: str) -> None:
    level = LOG_LEVEL.read(os.environ).upper()
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s",
    )
    # aiokafka logs every reconnect attempt at ERROR; our own code reports the outage once.
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))
