"""Tests of the hardened HTTP/1.1 layer (:mod:`twistgw.http`).

Most tests talk to a real listener over loopback sockets: ``_hardened_server.py`` runs
a :class:`~twistgw.http.GatewaySite` on the real reactor in a subprocess (one per set of
limits, shared by the tests of this module) and the tests are plain blocking socket
clients, so what is asserted is exactly what a client sees on the wire.  A few
timer-driven behaviours are also checked deterministically with ``StringTransport`` and
``task.Clock``.
"""

from __future__ import annotations

import io
import select
import socket
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistgw.http import GatewaySite, HardenedHTTPChannel, HttpRequest, limits_error_body
from twistgw.limits import Limits

HELPER = Path(__file__).with_name("_hardened_server.py")
TEN_MIB = 10 * 1024 * 1024

# ---------------------------------------------------------------------------------------
# Real-socket harness
# ---------------------------------------------------------------------------------------


@attrs.define
class Response:
    """One parsed HTTP response."""

    status_line: bytes
    headers: dict[bytes, list[bytes]]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(b" ", 2)[1])

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def read_response(stream: BinaryIO) -> Response | None:
    """Read one response from ``stream``; ``None`` at end of stream.

    Every response of the server carries a Content-Length, so this is exact.
    """
    status_line = stream.readline().rstrip(b"\r\n")
    if not status_line:
        return None
    headers: dict[bytes, list[bytes]] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.rstrip(b"\r\n").partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if status_line.split(b" ")[1].startswith(b"1"):
        return Response(status_line, headers, b"")  # 100 Continue: kept so tests see it
    length = int(headers.get(b"content-length", [b"0"])[0])
    return Response(status_line, headers, stream.read(length))


def parse_responses(data: bytes) -> list[Response]:
    """Split ``data`` (everything a connection returned) into responses."""
    stream = io.BytesIO(data)
    responses = []
    while (response := read_response(stream)) is not None:
        responses.append(response)
    return responses


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the server closes (EOF or reset); fail if it does not in ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"server did not close; got {b''.join(chunks)!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def recv_responses(sock: socket.socket, count: int, timeout: float = 5.0) -> list[Response]:
    """Read exactly ``count`` responses from a connection that stays open."""
    sock.settimeout(timeout)
    with sock.makefile("rb") as stream:
        responses = [read_response(stream) for _ in range(count)]
    assert None not in responses, "connection closed early"
    return typing.cast(list[Response], responses)


class Server:
    """A running ``_hardened_server.py`` subprocess."""

    def __init__(self, tmp: Path, options: dict[str, object]) -> None:
        port_file = tmp / "port"
        argv = [sys.executable, str(HELPER), "--port-file", str(port_file)]
        for key, value in options.items():
            argv += ["--" + key.replace("_", "-"), str(value)]
        self.process = subprocess.Popen(argv, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read().decode())  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError("helper server did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def exchange(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send ``data`` on a new connection; return all bytes until the server closes."""
        with self.connect() as sock:
            sock.sendall(data)
            return recv_until_closed(sock, timeout)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Start (once per set of options) and return helper servers."""
    running: dict[tuple[tuple[str, object], ...], Server] = {}

    def get(**options: object) -> Server:
        key = tuple(sorted(options.items()))
        if key not in running:
            running[key] = Server(tmp_path_factory.mktemp("srv"), options)
        return running[key]

    yield get
    for server in running.values():
        server.stop()


@pytest.fixture(scope="module")
def server(servers: Callable[..., Server]) -> Server:
    """Default limits (10 MiB body, 100 headers, 16 KiB headers, 8 KiB request line),
    except a 1 s header deadline so the slowloris test is quick."""
    return servers(header_timeout=1)


@pytest.fixture(scope="module")
def small(servers: Callable[..., Server]) -> Server:
    """A 1000-byte body cap and a 1 s idle timeout."""
    return servers(max_body_bytes=1000, idle_timeout=1)


def only_response(data: bytes) -> Response:
    responses = parse_responses(data)
    assert len(responses) == 1, data
    return responses[0]


def assert_json_error(data: bytes, status: int, message: str) -> None:
    """``data`` is exactly one JSON error response of this layer, then EOF."""
    body = b'{"message":"' + message.encode() + b'"}'
    response = only_response(data)
    assert response.status_line == b"HTTP/1.1 %d %s" % (status, message.encode())
    assert response.header(b"content-type") == b"application/json"
    assert response.header(b"connection") == b"close"
    assert response.header(b"content-length") == b"%d" % len(body)
    assert response.body == body


GET = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"


# ---------------------------------------------------------------------------------------
# Normal traffic still works
# ---------------------------------------------------------------------------------------


def test_get_ok(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(GET)
        (response,) = recv_responses(sock, 1)
    assert response.status == 200
    assert response.body == b"ok"
    assert response.header(b"connection") is None


def test_keep_alive_pipeline_answered_in_order(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(
            b"GET /headers HTTP/1.1\r\nHost: a\r\nX-First: 1\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        first, second = recv_responses(sock, 2)
        assert (first.status, second.status) == (200, 200)
        assert b"x-first" in first.body.split(b"\n")
        assert second.body == b"ok"
        # The connection is still usable afterwards.
        sock.sendall(GET)
        (third,) = recv_responses(sock, 1)
        assert third.body == b"ok"


def test_post_bodies_within_cap(small: Server) -> None:
    at_cap = b"x" * 1000
    data = small.exchange(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n"
        b"Connection: close\r\n\r\n" + at_cap
    )
    assert only_response(data).body == b"1000"
    chunked = small.exchange(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n"
        b"Connection: close\r\n\r\n"
        b"1f4\r\n" + b"y" * 500 + b"\r\n1f4\r\n" + b"y" * 500 + b"\r\n0\r\n\r\n"
    )
    assert only_response(chunked).body == b"1000"


def test_http10_without_host_is_fine(server: Server) -> None:
    response = only_response(server.exchange(b"GET / HTTP/1.0\r\n\r\n"))
    assert response.status == 200


def test_http10_keep_alive_is_honoured_and_confirmed(server: Server) -> None:
    """An HTTP/1.0 request with ``Connection: keep-alive`` (ApacheBench -k, older proxies)
    keeps the connection and is told so; the next one without it closes it."""
    data = server.exchange(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                           b"GET / HTTP/1.0\r\n\r\n")
    first, second = parse_responses(data)
    assert first.status == 200 and first.header(b"connection") == b"keep-alive"
    assert second.status == 200 and second.header(b"connection") == b"close"


def test_asterisk_form_still_works(server: Server) -> None:
    data = server.exchange(b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert only_response(data).status == 200


# ---------------------------------------------------------------------------------------
# Size limits: 414 / 431 / 413
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        # just over max_request_line (8192), complete line
        b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        # 17 KiB: stock Twisted drops this silently (over LineReceiver.MAX_LENGTH)
        b"GET /" + b"a" * 17 * 1024 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        # an unterminated line is refused as soon as it is too long
        b"GET /" + b"a" * 9000,
    ],
    ids=["8k+", "17k", "unterminated"],
)
def test_request_line_too_long_gets_414(server: Server, request_bytes: bytes) -> None:
    assert_json_error(server.exchange(request_bytes), 414, "URI Too Long")


def test_request_line_at_limit_is_accepted(server: Server) -> None:
    line = b"GET /" + b"a" * (8192 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 8192
    data = server.exchange(line + b"\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert only_response(data).status == 200


def _headers(count: int) -> bytes:
    return b"".join(b"X-H%d: v\r\n" % i for i in range(count))


def test_header_count_limit(server: Server) -> None:
    # Host + Connection + 98 = 100 header lines: allowed.
    ok = server.exchange(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + _headers(98) + b"\r\n"
    )
    assert only_response(ok).status == 200
    too_many = server.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + _headers(100) + b"\r\n")
    assert_json_error(too_many, 431, "Request Header Fields Too Large")
    # Stock Twisted answered 400 above 500 headers; we say 431.
    way_too_many = server.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + _headers(501) + b"\r\n")
    assert_json_error(way_too_many, 431, "Request Header Fields Too Large")


@pytest.mark.parametrize(
    "head",
    [
        # 20 KiB spread over 20 lines
        b"".join(b"X-Big%d: %s\r\n" % (i, b"v" * 1000) for i in range(20)),
        # one 17 KiB header line (longer than the whole budget)
        b"X-Huge: " + b"v" * 17 * 1024 + b"\r\n",
    ],
    ids=["20k-total", "17k-line"],
)
def test_header_bytes_limit_gets_431(server: Server, head: bytes) -> None:
    data = server.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n")
    assert_json_error(data, 431, "Request Header Fields Too Large")


def test_unterminated_huge_header_gets_431(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Huge: " + b"v" * 20000)
        assert_json_error(recv_until_closed(sock), 431, "Request Header Fields Too Large")


def test_content_length_over_cap_gets_413_before_body(server: Server) -> None:
    # 50 MiB announced, not a single body byte sent: the answer must come anyway.
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 52428800\r\n\r\n")
        data = recv_until_closed(sock)
    response = only_response(data)
    assert response.status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert response.header(b"content-type") == b"text; charset=utf-8"
    assert response.header(b"connection") == b"close"
    assert response.body == b"HTTP content length exceeded 10485760 bytes."
    assert response.header(b"content-length") == b"%d" % len(response.body)


def test_expect_continue_over_cap_gets_413_not_100(server: Server) -> None:
    data = server.exchange(
        b"PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10485761\r\nExpect: 100-continue\r\n\r\n"
    )
    assert only_response(data).status == 413


def test_chunked_body_crossing_cap_gets_413(small: Server) -> None:
    chunk = b"z" * 600
    data = small.exchange(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"258\r\n" + chunk + b"\r\n") * 2
        + b"0\r\n\r\n"
    )
    response = only_response(data)
    assert response.status == 413
    assert response.body == b"HTTP content length exceeded 1000 bytes."


def test_chunked_upload_that_keeps_streaming_still_reads_413(small: Server) -> None:
    """The client is still sending when we refuse; it must see the 413, not a reset."""
    with small.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"4000\r\n" + b"q" * 0x4000 + b"\r\n"
        received = b""
        sock.setblocking(False)
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in received and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.05)
            if writable:
                try:
                    sock.send(chunk)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    pass
            if readable:
                received += sock.recv(65536)
        sock.setblocking(True)
        received += recv_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]


# ---------------------------------------------------------------------------------------
# Framing: 400 for ambiguous requests, stock rejections kept
# ---------------------------------------------------------------------------------------

FRAMING_400 = {
    # added by this layer
    "no-host-http11": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n",
    "obs-fold-te": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "te-on-http10": b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-identity": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n"
    b"Content-Length: 1\r\n\r\nx",
    "absolute-form": b"GET http://other.test/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "authority-form": b"CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n",
    # kept from stock Twisted
    "cl-te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-cl": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n0\r\n\r\n",
    "dup-cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "dup-cl-same": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "cl-list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    "cl-plus": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    "cl-hex": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n"
    b"\r\n0\r\n\r\n",
    "te-xchunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-twice": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "space-before-colon": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc",
    "bare-lf-in-value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n",
    "bare-cr-in-value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n",
    "chunk-size-hex-prefix": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "lf-in-chunk-ext": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n3;a\nb\r\nabc\r\n0\r\n\r\n",
    "chunk-longer-than-size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n3\r\nabcdef\r\n0\r\n\r\n",
    "bad-method-byte": b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
    "space-in-path": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "http-2.0": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "http-1.x": b"GET / HTTP/1.x\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("raw", FRAMING_400.values(), ids=FRAMING_400.keys())
def test_ambiguous_requests_get_400_and_close(server: Server, raw: bytes) -> None:
    # Exactly one response (no second request parsed from the leftovers), then EOF.
    assert_json_error(server.exchange(raw), 400, "Bad Request")


def test_te_chunked_is_case_insensitive(server: Server) -> None:
    data = server.exchange(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert only_response(data).body == b"3"


def test_bad_request_after_good_one_in_pipeline(server: Server) -> None:
    data = server.exchange(GET + b"GET / HTTP/1.1\r\n\r\n")
    first, second = parse_responses(data)
    assert first.status == 200 and first.body == b"ok"
    assert second.status == 400


# ---------------------------------------------------------------------------------------
# Underscore policy
# ---------------------------------------------------------------------------------------

UNDERSCORE_REQUEST = (
    b"GET /headers HTTP/1.1\r\nHost: a\r\nX_Api_Key: secret\r\nX-Api-Key: real\r\n"
    b"X-Value: has_underscore\r\nConnection: close\r\n\r\n"
)


def test_underscore_headers_dropped_by_default(server: Server) -> None:
    names = only_response(server.exchange(UNDERSCORE_REQUEST)).body.split(b"\n")
    assert b"x_api_key" not in names
    assert b"x-api-key" in names
    assert b"x-value" in names  # an underscore in a value is fine


def test_underscore_headers_rejected(servers: Callable[..., Server]) -> None:
    data = servers(underscore_headers="reject").exchange(UNDERSCORE_REQUEST)
    assert_json_error(data, 400, "Bad Request")


def test_underscore_headers_allowed(servers: Callable[..., Server]) -> None:
    data = servers(underscore_headers="allow").exchange(UNDERSCORE_REQUEST)
    assert b"x_api_key" in only_response(data).body.split(b"\n")


# ---------------------------------------------------------------------------------------
# Timers and the connection cap
# ---------------------------------------------------------------------------------------


def test_slowloris_gets_408(server: Server) -> None:
    """One header byte every 0.3 s, header_timeout=1: 408 within ~1-2 s of the first byte."""
    trickle = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 100
    with server.connect() as sock:
        started = time.monotonic()
        received = b""
        for byte in trickle:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            readable, _, _ = select.select([sock], [], [], 0.3)
            if readable:
                received = recv_until_closed(sock)
                break
        elapsed = time.monotonic() - started
    assert_json_error(received, 408, "Request Timeout")
    assert elapsed < 2.5


def test_idle_keep_alive_connection_is_closed(small: Server) -> None:
    with small.connect() as sock:
        sock.sendall(GET)
        assert recv_responses(sock, 1)[0].status == 200
        started = time.monotonic()
        assert recv_until_closed(sock, timeout=5) == b""
        assert time.monotonic() - started < 4


def test_silent_new_connection_is_closed_by_idle_timeout(small: Server) -> None:
    with small.connect() as sock:
        assert recv_until_closed(sock, timeout=5) == b""


def _refused_or_status(server: Server, timeout: float) -> int | None:
    """GET / on a new connection: the status, or ``None`` if the server just closed it.

    A refused connection may surface as EOF or as a reset at any step -- even inside
    ``connect()``, which reports a reset that arrived before it returned.
    """
    try:
        with server.connect() as sock:
            try:
                sock.sendall(GET)
            except (BrokenPipeError, ConnectionResetError):
                pass
            data = recv_until_closed(sock, timeout)
    except ConnectionResetError:
        return None
    return parse_responses(data)[0].status if data else None


def test_connection_cap(servers: Callable[..., Server]) -> None:
    capped = servers(max_connections=2)
    first, second = capped.connect(), capped.connect()
    try:
        for sock in (first, second):
            sock.sendall(GET)
            assert recv_responses(sock, 1)[0].status == 200
        # The third is closed at once, without an answer.
        started = time.monotonic()
        assert _refused_or_status(capped, timeout=3) is None
        assert time.monotonic() - started < 2
        # The first two still work.
        for sock in (first, second):
            sock.sendall(GET)
            assert recv_responses(sock, 1)[0].status == 200
        # Closing one frees its slot (once the server has seen the close).
        first.close()
        deadline = time.monotonic() + 5
        close = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        while True:
            try:
                status = only_response(capped.exchange(close, timeout=2)).status
            except (ConnectionResetError, AssertionError):
                status = None
            if status == 200:
                break
            assert time.monotonic() < deadline, "slot was not released"
            time.sleep(0.05)
    finally:
        first.close()
        second.close()


# ---------------------------------------------------------------------------------------
# Deterministic unit tests: StringTransport + task.Clock
# ---------------------------------------------------------------------------------------


def _ok(request: HttpRequest) -> None:
    """``ok``; for POST the body length, so a test sees the whole body arrived."""
    body = b"%d" % len(request.body) if request.method == b"POST" else b"ok"
    request.respond(200, b"", body)


ADDR = IPv4Address("TCP", "127.0.0.1", 40000)


def _connect(
    limits: Limits, clock: task.Clock, handler: Callable[[HttpRequest], None] = _ok
) -> tuple[GatewaySite, HardenedHTTPChannel, StringTransport]:
    site = GatewaySite(handler, limits, clock=clock, name="unit")
    channel = site.buildProtocol(ADDR)
    assert isinstance(channel, HardenedHTTPChannel)
    transport = StringTransport(peerAddress=ADDR)
    channel.makeConnection(transport)
    return site, channel, transport


def test_site_basics() -> None:
    site = GatewaySite(_ok, Limits(), clock=task.Clock())
    assert site.acceptableProtocols() == [b"http/1.1"]
    assert site.protocol is HardenedHTTPChannel


def test_error_bodies() -> None:
    assert limits_error_body(431) == b'{"message":"Request Header Fields Too Large"}'
    assert limits_error_body(414) == b'{"message":"URI Too Long"}'
    assert limits_error_body(408) == b'{"message":"Request Timeout"}'
    assert limits_error_body(413) == b"HTTP content length exceeded 10485760 bytes."
    assert limits_error_body(413, 1000) == b"HTTP content length exceeded 1000 bytes."


def test_header_deadline_is_absolute_with_clock() -> None:
    clock = task.Clock()
    _, channel, transport = _connect(Limits(header_timeout=10, idle_timeout=60), clock)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHo")
    for _ in range(9):
        clock.advance(1)
        channel.dataReceived(b"s")  # every byte resets the idle timer, not the deadline
    assert transport.value() == b""
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert transport.disconnecting
    # Later bytes are ignored, the response is not repeated.
    channel.dataReceived(b"t: a\r\n\r\n")
    assert transport.value().count(b"HTTP/1.1") == 1


def test_head_in_one_read_costs_no_timer() -> None:
    clock = task.Clock()
    delays: list[float] = []
    call_later = clock.callLater

    def spy(delay: float, *args: Any, **kwargs: Any) -> Any:
        delays.append(delay)
        return call_later(delay, *args, **kwargs)

    clock.callLater = spy  # type: ignore[method-assign]
    _, channel, transport = _connect(Limits(header_timeout=7, idle_timeout=60), clock)
    channel.dataReceived(GET)
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    assert 7 not in delays
    channel.dataReceived(b"GET / HTTP/1.1\r\n")  # now a head spans two reads
    assert 7 in delays


def test_deadline_cancelled_when_headers_complete() -> None:
    clock = task.Clock()
    _, channel, transport = _connect(Limits(header_timeout=5, idle_timeout=60), clock)
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    channel.dataReceived(b"Host: a\r\n\r\n")
    clock.advance(30)
    assert transport.value().count(b"HTTP/1.1 ") == 1
    assert b" 408 " not in transport.value()
    assert not transport.disconnecting


def test_idle_timeout_with_clock() -> None:
    clock = task.Clock()
    _, channel, transport = _connect(Limits(idle_timeout=3), clock)
    channel.dataReceived(GET)
    clock.advance(2.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting


def test_rejected_client_is_aborted_after_linger() -> None:
    clock = task.Clock()
    site, channel, transport = _connect(Limits(), clock)
    channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert site.rejected_requests == {400: 1}
    assert not getattr(transport, "disconnected", False)
    clock.advance(channel.reject_linger)
    assert getattr(transport, "disconnected", False)  # StringTransport.abortConnection


def test_bodies_stay_in_memory() -> None:
    clock = task.Clock()
    _, channel, transport = _connect(Limits(max_body_bytes=TEN_MIB), clock)
    body = b"b" * 300_000  # stock Twisted would use a TemporaryFile above 100 000 bytes
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
    for i in range(0, len(body), 65536):  # as the reactor delivers it
        channel.dataReceived((head if i == 0 else b"") + body[i:i + 65536])
    assert transport.value().endswith(b"\r\n\r\n300000")


def test_connection_cap_counting_and_log_rate_limit() -> None:
    clock = task.Clock()
    events: list[dict[str, Any]] = []
    site = GatewaySite(_ok, Limits(max_connections=2), clock=clock)
    site._log = Logger(observer=events.append)  # type: ignore[misc]
    channels = []
    for _ in range(2):
        channel = site.buildProtocol(ADDR)
        channel.makeConnection(StringTransport())
        channels.append(channel)
    assert site.open_connections == 2

    for _ in range(3):
        refused = site.buildProtocol(ADDR)
        assert not isinstance(refused, HardenedHTTPChannel)
        transport = StringTransport()
        refused.makeConnection(transport)
        assert transport.disconnecting and transport.value() == b""
    assert site.refused_connections == 3
    assert len(events) == 1  # at most one log event per second
    clock.advance(1)
    site.buildProtocol(ADDR)
    assert len(events) == 2 and events[1]["count"] == 3

    channels[0].connectionLost(Failure(ConnectionDone()))
    assert site.open_connections == 1
    assert isinstance(site.buildProtocol(ADDR), HardenedHTTPChannel)


def test_expect_continue_within_cap_gets_100_then_the_answer() -> None:
    _, channel, transport = _connect(Limits(), task.Clock())
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                         b"Expect: 100-continue\r\n\r\n")
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    channel.dataReceived(b"abc")
    responses = parse_responses(transport.value())
    assert [r.status for r in responses] == [100, 200]
    assert responses[1].body == b"3"


def test_head_is_answered_without_body() -> None:
    _, channel, transport = _connect(Limits(), task.Clock())
    channel.dataReceived(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    raw = transport.value()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 2\r\n" in raw and raw.endswith(b"\r\n\r\n")


class _Held:
    """A handler that answers only when the test says so."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []

    def __call__(self, request: HttpRequest) -> None:
        self.requests.append(request)

    def answer(self) -> None:
        self.requests.pop(0).respond(200, b"", b"ok")


def _connect_held(clock: task.Clock) -> tuple[_Held, HardenedHTTPChannel, StringTransport]:
    held = _Held()
    _, channel, transport = _connect(Limits(), clock, held)
    return held, channel, transport


def test_a_burst_of_pipelined_requests_is_answered_in_order() -> None:
    """Far more requests in one read than may be queued: they are parsed a few at a time
    and all answered, in order, on a connection that stays open."""
    from twistgw.http import MAX_PIPELINED

    held, channel, transport = _connect_held(task.Clock())
    count = MAX_PIPELINED * 4
    channel.dataReceived(b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i
                                  for i in range(count)))
    assert len(held.requests) == 1
    targets = []
    while held.requests:
        assert len(channel._queue) < MAX_PIPELINED  # never more queued than the bound
        targets.append(held.requests[0].target)
        held.answer()
    assert targets == [b"/%d" % i for i in range(count)]
    assert transport.value().count(b"HTTP/1.1 200 OK\r\n") == count
    assert not transport.disconnecting


def test_queue_overflow_answers_what_is_queued_then_closes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net behind the cutting up: should a read ever complete more than
    MAX_PIPELINED requests at once, those are answered, the last with Connection: close,
    and the rest is not parsed."""
    import twistgw.http
    from twistgw.http import MAX_PIPELINED

    monkeypatch.setattr(twistgw.http, "_HEADS_PER_FEED", 1000)
    held, channel, transport = _connect_held(task.Clock())
    channel.dataReceived(GET)  # in flight: what follows is queued
    channel.dataReceived(b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i
                                  for i in range(MAX_PIPELINED + 5)))
    held.answer()
    assert len(channel._queue) == MAX_PIPELINED - 1
    while held.requests:
        held.answer()
    responses = parse_responses(transport.value())
    assert len(responses) == MAX_PIPELINED + 1
    assert responses[-1].header(b"connection") == b"close"
    assert transport.disconnecting


def test_reading_pauses_while_a_request_is_answered_and_resumes_after() -> None:
    from twistgw.http import READ_AHEAD

    held, channel, transport = _connect_held(task.Clock())
    channel.dataReceived(GET)
    assert len(held.requests) == 1 and transport.producerState == "producing"
    channel.dataReceived(GET * (READ_AHEAD // len(GET) + 1))  # read ahead, not parsed
    assert len(held.requests) == 1 and transport.producerState == "paused"
    held.answer()
    # The buffered requests are parsed in order once the first is answered.
    assert len(held.requests) == 1
    while held.requests:
        held.answer()
    assert transport.producerState == "producing"
    assert transport.value().count(b"HTTP/1.1 200 OK") == READ_AHEAD // len(GET) + 2


def test_a_client_not_reading_its_responses_pauses_reading() -> None:
    _, channel, transport = _connect(Limits(), task.Clock())
    assert transport.producer is channel  # the transport pauses us when its buffer fills
    channel.pauseProducing()
    assert transport.producerState == "paused"
    channel.resumeProducing()
    assert transport.producerState == "producing"


def test_idle_timer_counts_from_a_late_answer() -> None:
    clock = task.Clock()
    held, _channel, transport = _connect_held(clock)
    _channel.dataReceived(GET)
    clock.advance(50)  # idle_timeout is 60: the request is still being answered
    held.answer()
    clock.advance(59)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_client_gone_calls_on_lost_once() -> None:
    held, channel, _transport = _connect_held(task.Clock())
    channel.dataReceived(GET)
    lost: list[bool] = []
    held.requests[0].on_lost = lambda: lost.append(True)
    channel.connectionLost(Failure(ConnectionDone()))
    assert lost == [True]
    assert not held.requests[0].connected


def test_idle_timer_after_a_rejection_is_harmless() -> None:
    clock = task.Clock()
    _, channel, transport = _connect(Limits(idle_timeout=3), clock)
    channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")  # 400: no Host
    clock.advance(10)  # the idle timer and the linger abort both come due
    assert transport.value().count(b"HTTP/1.1 ") == 1
    assert getattr(transport, "disconnected", False)
