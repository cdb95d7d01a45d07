"""SIGTERM drains a real ``twistd -n apigw`` (issue 8).

A slow HTTP backend the test starts holds 20 proxied requests until the test releases
it.  SIGTERM then must: close idle keep-alive connections and refuse new connections at
once (while the 20 are still held), let the 20 finish with ``Connection: close`` once
the backend answers, and exit 0.  Ordering is asserted, not timing.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from acceptance_support import (
    LOOPBACK_LISTENER,
    Reply,
    http_request,
    mock_operation,
    running_gateway,
    wait_for_log,
    write_config,
)

IN_FLIGHT = 20
GRACE = 20


class SlowBackend(ThreadingHTTPServer):
    """Answers every request once ``release`` is set; counts the requests it holds."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.arrived = 0


class _Handler(BaseHTTPRequestHandler):
    server: SlowBackend

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.arrived += 1
        self.server.release.wait(60)
        body = b'{"slow": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[SlowBackend]:
    server = SlowBackend()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def _config(root: Path, backend_port: int) -> Path:
    slow = {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "GET",
                "uri": f"http://127.0.0.1:{backend_port}/slow"}}
    return write_config(root, {
        "listeners": [LOOPBACK_LISTENER],
        "apis": [{"id": "drain", "definition": "api.yaml", "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping", "http"]},
        "access_log": False,
        "shutdown_grace": GRACE,
    }, {"api.yaml": {"openapi": "3.0.1", "info": {"title": "drain", "version": "1"},
                     "paths": {"/slow": {"get": slow},
                               "/fast": {"get": mock_operation(200, '{"fast": true}')}}}})


def _get(port: int, path: str, out: list[Reply | BaseException]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        out.append(Reply(status=resp.status, headers=tuple(resp.getheaders()),
                         body=resp.read()))
    except BaseException as e:
        out.append(e)
    finally:
        conn.close()


def _idle_keepalive(port: int) -> socket.socket:
    """A connection that served one request and now sits idle (keep-alive)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(b"GET /prod/fast HTTP/1.1\r\nHost: gw\r\n\r\n")
    data = b""
    while b'{"fast": true}' not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in data
    return sock


def _refused(port: int, timeout: float = 15.0) -> bool:
    """Whether new connections get refused (polled: the close is asynchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.02)
    return False


def test_sigterm_lets_twenty_requests_in_flight_finish_and_exits_0(
        tmp_path: Path, backend: SlowBackend) -> None:
    with running_gateway(_config(tmp_path, backend.server_address[1])) as gw:
        proc = gw.process
        assert proc is not None
        port = gw.port
        idle = _idle_keepalive(port)
        results: list[Reply | BaseException] = []
        threads = [threading.Thread(target=_get, args=(port, "/prod/slow", results),
                                    daemon=True) for _ in range(IN_FLIGHT)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while backend.arrived < IN_FLIGHT:
            assert time.monotonic() < deadline, f"only {backend.arrived} reached the backend"
            time.sleep(0.02)

        os.kill(proc.pid, signal.SIGTERM)
        # at once, while all 20 are still held by the backend: the idle keep-alive
        # connection is closed and new connections are refused
        idle.settimeout(15)
        assert idle.recv(65536) == b""
        idle.close()
        assert _refused(port)
        wait_for_log(gw, lambda t: f"{IN_FLIGHT} request(s) in flight" in t)
        assert results == [] and proc.poll() is None

        backend.release.set()
        for thread in threads:
            thread.join(60)
        assert len(results) == IN_FLIGHT
        for reply in results:
            assert isinstance(reply, Reply), reply
            assert reply.status == 200 and reply.json() == {"slow": True}
            assert reply.header("connection") == "close"
        assert proc.wait(GRACE + 30) == 0
        log = gw.log_text
        assert "drained: every request in flight finished" in log
        assert "cut" not in log


def test_sigterm_cuts_what_outlives_the_grace_and_still_exits_0(
        tmp_path: Path, backend: SlowBackend) -> None:
    path = _config(tmp_path, backend.server_address[1])
    text = path.read_text(encoding="utf-8").replace(f"shutdown_grace: {GRACE}",
                                                    "shutdown_grace: 1")
    path.write_text(text, encoding="utf-8")
    with running_gateway(path) as gw:
        proc = gw.process
        assert proc is not None
        results: list[Reply | BaseException] = []
        thread = threading.Thread(target=_get, args=(gw.port, "/prod/slow", results),
                                  daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while backend.arrived < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
        thread.join(30)
        assert len(results) == 1 and isinstance(results[0], http.client.RemoteDisconnected)
        assert "shutdown_grace of 1s is over: cut 1 connection(s)" in gw.log_text


def test_sigint_still_stops_the_daemon(tmp_path: Path, backend: SlowBackend) -> None:
    with running_gateway(_config(tmp_path, backend.server_address[1])) as gw:
        proc = gw.process
        assert proc is not None
        assert http_request(gw.url("/prod/fast")).status == 200
        os.kill(proc.pid, signal.SIGINT)
        # Twisted's own SIGINT handling: a drained stop, then twistd re-raises SIGINT
        assert proc.wait(60) == -signal.SIGINT
