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


def _connect(address: tuple[str, int], source: str = "127.0.0.1") -> socket.socket:
    conn = socket.create_connection(address, timeout=30, source_address=(source, 0))
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


@pytest.fixture
def crowded(api_settings: Settings, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The API with room for 6 connections, 3 per client address, and idle connections
    kept for 30 s (so that the sockets a test holds stay open while it runs)."""
    settings = msgspec.structs.replace(
        api_settings, max_connections=6, max_connections_per_client=3, keep_alive_timeout_s=30
    )
    api, base_url = start_api(settings, tmp_path)
    try:
        host, port = base_url.removeprefix("http://").split(":")
        yield host, int(port)
    finally:
        api.terminate()


def _json_answer(answer: bytes) -> tuple[bytes, dict[str, str], dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    return status.encode(), headers, json.loads(body)


def _post(conn: socket.socket) -> bytes:
    body = json.dumps(event(timestamp=now().isoformat())).encode()
    conn.sendall(_head(len(body)).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body)
    return _read_all(conn)


def test_one_client_cannot_hold_every_connection(crowded: tuple[str, int]) -> None:
    idle = [_connect(crowded) for _ in range(3)]
    try:
        # The fourth connection of the same address: answered at once, unasked, and closed.
        with _connect(crowded) as fourth:
            status, headers, body = _json_answer(_read_all(fourth))
        assert status == b"HTTP/1.1 429 Too Many Requests"
        assert body["code"] == "too_many_connections"
        assert "MAX_CONNECTIONS_PER_CLIENT" in str(body["message"])
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        assert headers["content-type"].startswith("application/json")
        # Another client is served meanwhile.
        with _connect(crowded, source="127.0.0.2") as other:
            assert _post(other).startswith(b"HTTP/1.1 202 ")
    finally:
        for conn in idle:
            conn.close()
    # Once the idle ones are gone, the first address is served again (the server notices
    # the closes asynchronously: a few attempts, each a fresh connection).
    for _ in range(50):
        with _connect(crowded) as conn:
            answer = _post(conn)
        if not answer.startswith(b"HTTP/1.1 429 "):
            break
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:200]


def test_past_max_connections_the_answer_is_json_with_retry_after(
    crowded: tuple[str, int],
) -> None:
    idle = [_connect(crowded, source=f"127.0.0.{1 + i // 3}") for i in range(5)]
    try:
        with _connect(crowded, source="127.0.0.3") as sixth:
            status, headers, body = _json_answer(_post(sixth))
    finally:
        for conn in idle:
            conn.close()
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert body["code"] == "overloaded" and "MAX_CONNECTIONS" in str(body["message"])
    assert headers["retry-after"] == "1" and headers["connection"] == "close"
    assert headers["content-type"].startswith("application/json")
