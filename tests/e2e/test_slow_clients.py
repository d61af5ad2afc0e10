"""Slow, idle and greedy clients against the API served by uvicorn, on loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from ingest.settings import Settings
from tests.ingest.support import event, now
from tests.processes import start_api

pytestmark = pytest.mark.kafka


@pytest.fixture
def served(api_settings: Settings, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The API as a process with short limits; yields its (host, port)."""
    settings = msgspec.structs.replace(
        api_settings, body_read_timeout_s=1.0, keep_alive_timeout_s=1
    )
    api, base_url = start_api(settings, tmp_path)
    try:
        host, port = base_url.removeprefix("http://").split(":")
        yield host, int(port)
    finally:
        api.terminate()


def _connect(address: tuple[str, int]) -> socket.socket:
    conn = socket.create_connection(address, timeout=30)
    return conn


def _read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (at most 30 s)."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _head(length: int) -> bytes:
    return (
        f"POST /event HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_body_sent_too_slowly_is_refused_with_408(served: tuple[str, int]) -> None:
    body = json.dumps(event(timestamp=now().isoformat())).encode()
    with _connect(served) as conn:
        conn.sendall(_head(len(body)) + body[:10])  # ... and the rest never comes
        answer = _read_all(conn)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    assert b"connection: close" in rest.lower()
    assert b'"code":"body_timeout"' in answer
    # The server still serves whole requests.
    with _connect(served) as conn:
        conn.sendall(_head(len(body)).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body)
        assert _read_all(conn).startswith(b"HTTP/1.1 202 ")


def test_a_silent_connection_is_closed(served: tuple[str, int]) -> None:
    with _connect(served) as conn:
        assert _read_all(conn) == b""  # closed by the server, nothing sent


def test_a_head_sent_a_byte_at_a_time_is_cut_off(served: tuple[str, int]) -> None:
    head = _head(2)
    with _connect(served) as conn:
        conn.settimeout(0.5)
        closed = False
        for byte in head[:-4]:  # bounded: ~60 bytes, 0.5 s each at most
            try:
                conn.sendall(bytes([byte]))
                if conn.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    assert closed


def test_a_head_past_the_header_limit_is_refused(served: tuple[str, int]) -> None:
    huge = b"X-Padding: " + b"a" * (20 * 1024) + b"\r\n"
    with _connect(served) as conn:
        conn.sendall(_head(2).replace(b"Host: ingest\r\n", b"Host: ingest\r\n" + huge) + b"{}")
        answer = _read_all(conn)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
