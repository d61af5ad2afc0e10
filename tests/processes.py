"""Running the API and consumers as real processes, as an operator would."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from consumer.settings import ConsumerSettings
from ingest.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


# Ports a pytest-xdist worker hands out: a range of its own below the kernel's ephemeral
# ports, so that no other worker's connection or free_port() can take one between the moment
# it is handed out and the moment its server binds it. Another run on the machine (a second
# checkout's suite) has workers of the same names: each port handed out is also claimed with
# a lock file, which the other run's workers skip, kept while the port may still be unbound.
_WORKER_PORTS = 1000
_FIRST_WORKER_PORT = 20000
_CLAIMS_KEPT = 64
_next_offset = 0  # in this process's range (a worker is one process)
_claims: collections.deque[int] = collections.deque()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _claim(port: int) -> bool:
    """Whether this process now holds the machine's claim on `port` (a lock on a file of a
    directory only this user can write)."""
    folder = Path(tempfile.gettempdir()) / f"analytics-test-ports-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / f"{port}.lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _claims.append(fd)
    if len(_claims) > _CLAIMS_KEPT:  # bound by now, or never will be
        os.close(_claims.popleft())
    return True


def free_port() -> int:
    """A loopback port nothing is bound to now, for a server a test starts."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else -1
    first = _FIRST_WORKER_PORT + _WORKER_PORTS * index
    if index < 0 or first + _WORKER_PORTS > _ephemeral_start():
        with socket.socket() as s:  # one process (or too many workers): any free port
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    global _next_offset
    for _ in range(_WORKER_PORTS):
        port = first + _next_offset
        _next_offset = (_next_offset + 1) % _WORKER_PORTS
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            if _claim(port):
                return port
    raise RuntimeError(f"no free port in {first}-{first + _WORKER_PORTS - 1} for {worker}")


def _env(**values: str) -> dict[str, str]:
    env = {**os.environ, **values}
    env["PYTHONUNBUFFERED"] = "1"
    # No zone builds mid-test (they hold batches for a moment); tests that want them set it.
    env.setdefault("AUTO_ZONES_PER_SITE", "0")
    return env


class Process:
    """A child process with its output in a log file, stopped by its own pid."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, timeout_s: float = 20) -> int:
        """SIGTERM, wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()
        return int(self.popen.returncode)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()


def start_api(settings: Settings, log_dir: Path, **extra_env: str) -> tuple[Process, str]:
    port = free_port()
    env = _env(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        DATABASE_URL=settings.database_url,
        EVENTS_TOPIC=settings.events_topic,
        DLQ_TOPIC=settings.dlq_topic,
        TOPIC_PARTITIONS=str(settings.topic_partitions),
        PORT=str(port),
        MAX_PAST_DAYS=str(settings.max_past_days),
        BODY_READ_TIMEOUT_S=str(settings.body_read_timeout_s),
        KEEP_ALIVE_TIMEOUT_S=str(settings.keep_alive_timeout_s),
        MAX_CONNECTIONS=str(settings.max_connections),
        MAX_CONNECTIONS_PER_CLIENT=str(settings.max_connections_per_client),
        VISITOR_KEY=settings.visitor_key,
        TRUSTED_PROXY_HOPS=str(settings.trusted_proxy_hops),
        **extra_env,
    )
    process = Process(f"api-{port}", [sys.executable, "-m", "ingest"], env, log_dir)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"API exited early:\n{process.log_tail()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"API did not answer within 60s:\n{process.log_tail()}")


def start_consumer(
    settings: ConsumerSettings, log_dir: Path, name: str = "consumer", **extra_env: str
) -> Process:
    env = _env(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        DATABASE_URL=settings.database_url,
        EVENTS_TOPIC=settings.events_topic,
        DLQ_TOPIC=settings.dlq_topic,
        CONSUMER_GROUP=settings.group_id,
        TOPIC_PARTITIONS=str(settings.topic_partitions),
        MAX_BATCH_AGE_S=str(settings.max_batch_age_s),
        SESSION_TIMEOUT_MS=str(settings.session_timeout_ms),
        RETRY_INITIAL_S=str(settings.retry_initial_s),
        RETRY_MAX_S=str(settings.retry_max_s),
        **extra_env,
    )
    return Process(name, [sys.executable, "-m", "consumer"], env, log_dir)
