"""A broker and a PostgreSQL server of a test suite's own, on free loopback ports.

Started with the same scripts as the shared services (services/kafka.sh, services/postgres.sh)
but with other ports and state directories, so the suite can stop and restart them without
touching anything else. Each is stopped by the script, which stops only the pid it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.processes import ROOT, free_port

SCRIPT_TIMEOUT_S = 240


@dataclass
class PrivateService:
    script: str
    env: dict[str, str]
    state_dir: Path

    def _run(self, command: str) -> None:
        result = subprocess.run(
            [str(ROOT / "services" / self.script), command],
            env={**os.environ, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{self.script} {command} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def remove_state(self) -> None:
        real = self.state_dir.resolve()  # postgres.sh may have put it behind a symlink
        shutil.rmtree(real, ignore_errors=True)
        if self.state_dir.is_symlink():
            self.state_dir.unlink()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def private_kafka(base: Path) -> tuple[PrivateService, str]:
    port, controller_port = free_port(), free_port()
    state = base / "kafka"
    env = {
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_STATE_DIR": str(state),
    }
    return PrivateService("kafka.sh", env, state), f"127.0.0.1:{port}"


def private_postgres(base: Path) -> tuple[PrivateService, str]:
    port = free_port()
    state = base / "postgres"
    # On 4 kB pages: each private server would reserve another 558 MB of huge pages, for a
    # few statements.
    env = {"PG_PORT": str(port), "PG_STATE_DIR": str(state), "PG_HUGE_PAGES": "0"}
    return PrivateService("postgres.sh", env, state), f"postgresql://postgres@127.0.0.1:{port}"
