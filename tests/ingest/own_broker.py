"""A Kafka broker of the test's own (services/kafka.sh on free ports, data in tmp), so a test
can stop and restart it without touching the shared one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port


class OwnBroker:
    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.controller_port = free_port()
        self.home = home
        lib_dir = os.environ.get("KAFKA_LIB_DIR") or str(ROOT / ".local" / "kafka" / "lib")
        self.lib_dir = lib_dir
        self._env = {
            **os.environ,
            "KAFKA_HOME": str(home),
            "KAFKA_LIB_DIR": lib_dir,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, command: str) -> None:
        result = subprocess.run(
            [str(ROOT / "services" / "kafka.sh"), command],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kafka.sh {command} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        """Starts the broker and waits until it serves (kafka.sh waits for its ready line)."""
        self._run("start")

    def stop(self) -> None:
        """Stops the broker by the pid kafka.sh recorded (SIGTERM, then SIGKILL after 30 s)."""
        self._run("stop")


def own_broker_or_skip(home: Path) -> OwnBroker:
    """A broker of the test's own, or a skip naming what is missing (java, or the jars that
    `make up` / `services/kafka.sh install` put in .local/kafka/lib; KAFKA_LIB_DIR points
    elsewhere)."""
    if shutil.which("java") is None:
        pytest.skip("no java: cannot start a broker of the test's own")
    broker = OwnBroker(home)
    if not (Path(broker.lib_dir) / ".installed").exists():
        pytest.skip(f"no Kafka jars in {broker.lib_dir} (services/kafka.sh install)")
    return broker
