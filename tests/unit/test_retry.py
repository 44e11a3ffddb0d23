"""A request retried on a dropped connection, against a real socket server that drops on cue."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from pipeline import retry

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"ok\": true}"


def dropping_server(drops: int) -> tuple[str, list[int]]:
    """A server that closes the first `drops` connections without a word, then answers OK."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    seen = [0]

    def serve() -> None:
        with listener:
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    seen[0] += 1
                    if seen[0] > drops:
                        conn.sendall(OK)
                        return

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/x", seen


def test_a_dropped_connection_is_retried():
    url, seen = dropping_server(drops=2)
    response = retry.post(url, json={}, backoff_s=0.01, timeout=5)
    assert response.json() == {"ok": True} and seen[0] == 3


def test_a_server_that_keeps_dropping_fails_after_the_last_attempt():
    url, seen = dropping_server(drops=99)
    with pytest.raises(httpx.RemoteProtocolError):
        retry.post(url, json={}, backoff_s=0.01, timeout=5)
    assert seen[0] == retry.ATTEMPTS


def test_an_http_error_status_is_not_retried():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    seen = []

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                seen.append(1)
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    response = retry.post(f"http://127.0.0.1:{listener.getsockname()[1]}/x", json={}, backoff_s=0.01, timeout=5)
    assert response.status_code == 503 and seen == [1]
