"""Helpers for the end-to-end tests: real sockets, real subprocesses, no twistgw internals.

The acceptance tests treat twistgw as an operator does: they write config files, run the
installed ``twistd`` and ``twistgw`` commands and talk HTTP to the daemon.  Everything here
is plain stdlib plus :class:`twistgw.testing.RunningGateway`.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import pytest

from twistgw.testing import RunningGateway, write_config

__all__ = [
    "LOOPBACK_LISTENER",
    "Reply",
    "command",
    "http_request",
    "mock_operation",
    "raw_exchange",
    "require_sample_plugin",
    "run_command",
    "running_gateway",
    "wait_for_log",
    "write_config",
]

#: A listener on a free loopback port; the gateway logs the port it got.
LOOPBACK_LISTENER: dict[str, str] = {"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}

#: Generous bound for anything that starts a process (slow CI machines).
PROCESS_TIMEOUT = 30.0


@attrs.frozen
class Reply:
    """One HTTP response as the client saw it."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of ``name`` (case-insensitive), or ``None``."""
        lname = name.lower()
        found = [v for k, v in self.headers if k.lower() == lname]
        return found[-1] if found else None

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


def http_request(url: str, method: str = "GET", *, headers: Mapping[str, str] | None = None,
                 body: bytes | None = None, timeout: float = 10.0) -> Reply:
    """Send one request over a fresh connection (any status is returned, not raised)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Reply(status=resp.status, headers=tuple(resp.getheaders()), body=resp.read())
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 10.0, *,
                 half_close: bool = False) -> bytes:
    """Write ``data`` to a new connection and read until the server closes it.

    :param half_close: shut down our sending side after ``data`` (as ``nc -N`` does).
    """
    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):  # answered and closed mid-send
            pass
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def parse_raw_response(data: bytes) -> Reply:
    """Split a raw HTTP/1.1 response (Content-Length framed) into a :class:`Reply`."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = tuple((k.strip(), v.strip()) for k, _, v in
                    (line.partition(":") for line in lines[1:]))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), len(rest))
    return Reply(status=status, headers=headers, body=rest[:length])


def command(name: str) -> list[str]:
    """The installed console script ``name`` next to this interpreter, as argv."""
    script = Path(sys.executable).with_name(name)
    if not script.exists():
        pytest.fail(f"{script} is missing: install twistgw (non-editable) into this "
                    f"environment first: pip install .")
    return [str(script)]


def run_command(argv: list[str], *, cwd: Path | None = None,
                timeout: float = PROCESS_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion, stdout and stderr merged into ``stdout``."""
    return subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, check=False)


def twistd(*args: str) -> list[str]:
    """argv for the installed ``twistd`` running in the foreground without a pidfile."""
    return [*command("twistd"), "-n", "--pidfile=", *args]


@contextmanager
def running_gateway(config: Path | None, **kw: Any) -> Iterator[RunningGateway]:
    """:class:`RunningGateway` that shows the daemon's log when it fails to start."""
    gw = RunningGateway(config, timeout=PROCESS_TIMEOUT, **kw)
    try:
        try:
            gw.start()
        except RuntimeError as e:
            pytest.fail(f"the gateway did not start: {e}")
        yield gw
    finally:
        gw.__exit__(None, None, None)  # stops the daemon (if still running), removes its log


def wait_for_log(gw: RunningGateway, predicate: Callable[[str], bool],
                 timeout: float = PROCESS_TIMEOUT) -> str:
    """Poll the daemon's log until ``predicate`` holds; return the log text (the bound
    is generous: it only matters when the text never comes, or on a very busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        text = gw.log_text
        if predicate(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"the expected log text did not appear; the log:\n{text}")
        time.sleep(0.05)


def mock_operation(status: int = 200, body: str | None = None,
                   headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An OpenAPI operation with a MOCK integration answering ``status`` and ``body``."""
    response: dict[str, Any] = {"statusCode": str(status)}
    if body is not None:
        response["responseTemplates"] = {"application/json": body}
    if headers:
        response["responseParameters"] = {
            f"method.response.header.{k}": f"'{v}'" for k, v in headers.items()}
    return {
        "responses": {str(status): {"description": "mocked"}},
        "x-amazon-apigateway-integration": {
            "type": "mock",
            "requestTemplates": {"application/json": f'{{"statusCode": {status}}}'},
            "responses": {"default": response},
        },
    }


def require_sample_plugin() -> None:
    """Fail (never skip) when the sample plugin package is not installed."""
    names = {ep.name for ep in metadata.entry_points(group="twistgw")}
    if "sample" not in names:
        pytest.fail("the sample plugin is not installed; run "
                    "pip install ./tests/sample_plugins (tox does this)")
