from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.settings import ConsumerSettings
from ingest.settings import Settings
from tests.e2e.hostile import hostile  # noqa: F401  (a fixture of the hostile suites)
from tests.processes import start_api, start_consumer


@pytest.fixture
def pipeline(
    api_settings: Settings, consumer_settings: ConsumerSettings, tmp_path: Path
) -> Iterator[str]:
    """The API and one consumer as real processes on this test's topic and database;
    yields the API's base URL."""
    consumer = start_consumer(consumer_settings, tmp_path)
    api, base_url = start_api(api_settings, tmp_path)
    try:
        yield base_url
    finally:
        api_code = api.terminate()
        consumer_code = consumer.terminate()
        # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too.
        assert api_code in (0, -signal.SIGTERM), f"API exited with {api_code}:\n{api.log_tail()}"
        assert "Application shutdown complete" in api.log_tail()
        assert consumer_code == 0, f"consumer exited with {consumer_code}:\n{consumer.log_tail()}"
