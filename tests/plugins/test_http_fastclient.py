"""The fast outbound client (``plugins.settings.http.client: fast``) against raw backends.

The backend is a scripted TCP server on 127.0.0.1 (a thread per connection) that writes
exactly the bytes a test asks for, so framing the stdlib server never produces can be
tested: chunked bodies with extensions and trailers, bodies read until close, interim
1xx answers, answers followed by stray bytes, connections closed while idle, invalid
heads.  It records every request with the number of the connection it came on, which
is how reuse (and non-reuse) of pooled connections is checked.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from twistgw.testing import RunningGateway, write_config

Script = Callable[[socket.socket, "Seen"], bool]
"""Answers one request on a connection; returns False to close the connection after."""


class Seen:
    """One request as the backend received it."""

    def __init__(self, conn_id: int, method: str, path: str, body: bytes) -> None:
        self.conn_id = conn_id
        self.method = method
        self.path = path
        self.body = body


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def _answer(path: str, seen: Seen, conn: socket.socket, nth_on_conn: int) -> bool:
    """The scripted answers, chosen by the request path; False closes the connection."""
    route = path.split("?")[0]
    if route == "/chunked":
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: text/plain\r\n\r\n"
                     b"5;ext=1\r\nhello\r\n")
        time.sleep(0.05)
        conn.sendall(b"7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
        return True
    if route == "/split":
        for part in (b"HTTP/1.1 200 OK\r\nCont", b"ent-Length: 10\r\n\r\n01234", b"56789"):
            conn.sendall(part)
            time.sleep(0.03)
        return True
    if route == "/until-close":
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        return False
    if route == "/conn-close":
        conn.sendall(ok(b"bye", b"Connection: close\r\n"))
        return False
    if route == "/stray":
        conn.sendall(ok(b"first") + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad")
        return True
    if route == "/head":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        return True
    if route == "/not-modified":
        conn.sendall(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
        return True
    if route == "/continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after 100"))
        return True
    if route == "/bad-status":
        conn.sendall(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n")
        return False
    if route == "/two-lengths":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
        return False
    if route == "/obs-fold":
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-A: a\r\n  folded\r\nContent-Length: 0\r\n\r\n")
        return False
    if route == "/bad-chunk":
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n")
        return False
    if route == "/big-declared":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n")
        time.sleep(0.2)
        return False
    if route == "/big-chunked":
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(40):
                conn.sendall(b"1000\r\n" + b"z" * 0x1000 + b"\r\n")
        except OSError:
            pass  # the gateway aborted the connection, as it should
        return False
    if route == "/redirect":
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /echo?followed\r\n"
                     b"Content-Length: 0\r\n\r\n")
        return True
    if route == "/bare-lf":
        conn.sendall(b"HTTP/1.1 200 OK\nContent-Length: 2\nX-Lf: yes\n\nok")
        return True
    if route == "/mixed-lf":
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Mixed: a\nContent-Length: 2\r\n\r\nok")
        return True
    if route == "/slow":
        time.sleep(0.1)
        conn.sendall(ok(f"slow {path}".encode()))
        return True
    if route == "/close-second":
        # Answer the first request; close a connection's later requests unanswered,
        # as a backend does when its keep-alive timer fires just as a request arrives.
        if nth_on_conn == 1:
            conn.sendall(ok(b"first"))
            return True
        return False
    conn.sendall(ok(f"{seen.method} {path} on {seen.conn_id}".encode()))
    return True


class RawBackend:
    """The scripted backend: accepts connections, reads requests, answers by path."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.seen: list[Seen] = []
        self.connections = 0
        #: Connections the gateway has open to us right now, and the ones it closed.
        self.open = 0
        self.closed: list[int] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open += 1
                conn_id = self.connections
            threading.Thread(target=self._serve, args=(conn, conn_id), daemon=True).start()

    def _serve(self, conn: socket.socket, conn_id: int) -> None:
        buf = b""
        nth = 0
        conn.settimeout(10)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                nth += 1
                seen = Seen(conn_id, method, path, body)
                with self.lock:
                    self.seen.append(seen)
                if not _answer(path, seen, conn, nth):
                    return
        except OSError:
            return
        finally:
            conn.close()
            with self.lock:
                self.open -= 1
                self.closed.append(conn_id)

    def requests_to(self, route: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path.split("?")[0] == route]

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture(scope="module")
def backend() -> Iterator[RawBackend]:
    server = RawBackend()
    yield server
    server.close()


class StuckListener:
    """A listening socket whose accept queue is full and never drained: connecting to it
    hangs (Linux drops the SYNs), so a request is cancelled while still connecting."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = int(self.sock.getsockname()[1])
        self.fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(filler)

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.sock.close()


@pytest.fixture(scope="module")
def stuck() -> Iterator[StuckListener]:
    listener = StuckListener()
    yield listener
    listener.close()


def start_gateway(backend: RawBackend, folder: Path, stuck_port: int = 9,
                  stuck_timeout_ms: int = 500, **settings: object) -> RunningGateway:
    integration = {"type": "http_proxy", "httpMethod": "ANY",
                   "uri": f"http://127.0.0.1:{backend.port}/{{proxy}}",
                   "timeoutInMillis": 3000,
                   "requestParameters": {
                       "integration.request.path.proxy": "method.request.path.proxy"}}
    connecting = {"type": "http_proxy", "httpMethod": "GET",
                  "timeoutInMillis": stuck_timeout_ms,
                  "uri": f"http://127.0.0.1:{stuck_port}/never"}
    doc = {"openapi": "3.0.1", "info": {"title": "fast", "version": "1"},
           "paths": {"/{proxy+}": {"x-amazon-apigateway-any-method": {
               "responses": {"200": {"description": "ok"}},
               "x-amazon-apigateway-integration": integration}},
               "/connecting": {"get": {"responses": {"200": {"description": "ok"}},
                                       "x-amazon-apigateway-integration": connecting}}}}
    config = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "fastapi", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["http"],
                    "settings": {"http": {"client": "fast", "max_response_bytes": 100_000,
                                          "max_idle_per_host": 4, **settings}}},
        "access_log": False,
    }
    return RunningGateway(write_config(folder, config, {"api.yaml": doc}))


@pytest.fixture(scope="module")
def gateway(backend: RawBackend, stuck: StuckListener,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with start_gateway(backend, tmp_path_factory.mktemp("fastclient"),
                       stuck_port=stuck.port) as gw:
        yield gw


def test_a_timeout_while_connecting_is_a_timeout_not_a_network_error(
        gateway: RunningGateway) -> None:
    status, _h, body = call(gateway, "GET", "/prod/connecting")
    assert (status, body) == (504, b'{"message": "Endpoint request timed out"}')


def test_connect_timeout_is_a_network_error_well_before_the_integration_timeout(
        backend: RawBackend, stuck: StuckListener,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("fastclient-connect")
    with start_gateway(backend, folder, stuck_port=stuck.port, stuck_timeout_ms=20000,
                       connect_timeout=0.3) as gw:
        status, _h, body = call(gw, "GET", "/prod/connecting")
    # A network error, not "Endpoint request timed out": the connect timeout (twice 0.3 s,
    # with the one connect retry) ended it long before the 20 s integration timeout.
    assert (status, body) == (504, NETWORK)


def test_requests_wait_in_the_queue_for_a_slot(backend: RawBackend,
                                               tmp_path_factory: pytest.TempPathFactory
                                               ) -> None:
    """One slot, a queue of ten: five concurrent requests are all answered, one at a time
    (so on one connection)."""
    folder = tmp_path_factory.mktemp("fastclient-queue")
    with start_gateway(backend, folder, max_concurrent_per_host=1,
                       max_pending_per_host=10) as gw:
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda n=n: statuses.append(
            call(gw, "GET", f"/prod/slow?q={n}-{gw.port}")[0])) for n in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert statuses == [200] * 5
    seen = [s for s in backend.requests_to("/slow") if s.path.endswith(f"-{gw.port}")]
    assert len(seen) == 5 and len({s.conn_id for s in seen}) == 1


def call(gw: RunningGateway, method: str, path: str, body: bytes | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


NETWORK = b'{"message": "Network error communicating with endpoint"}'


def test_keep_alive_connection_is_reused_for_sequential_requests(
        gateway: RunningGateway, backend: RawBackend) -> None:
    for i in range(5):
        assert call(gateway, "GET", f"/prod/echo?i={i}")[0] == 200
    conns = {s.conn_id for s in backend.requests_to("/echo")}
    assert len(conns) == 1


def test_a_request_larger_than_one_socket_send_arrives_whole_and_in_order(
        gateway: RunningGateway, backend: RawBackend) -> None:
    """The request is written straight to the socket when nothing is queued; what the
    socket does not take at once (6 MiB is more than a loopback send buffer) must follow
    through the transport, after it and exactly once."""
    body = bytes(range(256)) * (6 * 4096)
    status, _h, answer = call(gateway, "POST", f"/prod/big-post?{gateway.port}", body)
    assert (status, answer.split(b" on ")[0]) == (200, f"POST /big-post?{gateway.port}".encode())
    seen = [s for s in backend.requests_to("/big-post") if s.path.endswith(str(gateway.port))]
    assert len(seen) == 1 and len(seen[0].body) == len(body) and seen[0].body == body
    assert call(gateway, "GET", "/prod/echo?after-big")[0] == 200


def test_chunked_body_with_extensions_and_trailers(gateway: RunningGateway) -> None:
    status, headers, body = call(gateway, "GET", "/prod/chunked")
    assert (status, body) == (200, b"hello, world")
    assert "x-amzn-remapped-content-length" not in headers  # no length was declared
    assert "x-trailer" not in headers


def test_a_head_split_over_reads_and_a_body_in_pieces(gateway: RunningGateway) -> None:
    status, headers, body = call(gateway, "GET", "/prod/split")
    assert (status, body) == (200, b"0123456789")
    assert headers["x-amzn-remapped-content-length"] == "10"


def test_body_until_close_is_read_and_the_connection_not_reused(
        gateway: RunningGateway, backend: RawBackend) -> None:
    for _ in range(2):
        assert call(gateway, "GET", "/prod/until-close")[:3:2] == (200, b"all of it")
    first, second = backend.requests_to("/until-close")[-2:]
    assert first.conn_id != second.conn_id


def test_connection_close_is_honoured(gateway: RunningGateway, backend: RawBackend) -> None:
    assert call(gateway, "GET", "/prod/conn-close")[2] == b"bye"
    assert call(gateway, "GET", "/prod/conn-close")[2] == b"bye"
    first, second = backend.requests_to("/conn-close")[-2:]
    assert first.conn_id != second.conn_id


def test_stray_bytes_after_an_answer_make_the_connection_unusable(
        gateway: RunningGateway, backend: RawBackend) -> None:
    assert call(gateway, "GET", "/prod/stray")[:3:2] == (200, b"first")
    # Whatever came after the answer is never read as the next request's answer.
    status, _h, body = call(gateway, "GET", "/prod/echo?after-stray")
    assert status == 200 and body.startswith(b"GET /echo?after-stray on ")
    stray = backend.requests_to("/stray")[-1]
    after = [s for s in backend.requests_to("/echo") if s.path.endswith("after-stray")][-1]
    assert after.conn_id != stray.conn_id


def test_head_and_304_have_no_body_and_keep_the_connection(
        gateway: RunningGateway, backend: RawBackend) -> None:
    status, headers, body = call(gateway, "HEAD", "/prod/head")
    assert (status, body) == (200, b"")
    assert headers["x-amzn-remapped-content-length"] == "1234"
    status, headers, body = call(gateway, "GET", "/prod/not-modified")
    assert (status, body) == (304, b"")
    assert headers["etag"] == '"x"'
    status, _h, body = call(gateway, "GET", "/prod/echo?after-304")
    assert status == 200
    reused = backend.requests_to("/not-modified")[-1].conn_id
    assert body.endswith(f" on {reused}".encode())


def test_redirects_are_returned_not_followed(gateway: RunningGateway,
                                             backend: RawBackend) -> None:
    status, headers, body = call(gateway, "GET", "/prod/redirect")
    assert (status, headers["location"], body) == (302, "/echo?followed", b"")
    assert not [s for s in backend.requests_to("/echo") if s.path.endswith("followed")]


def test_heads_with_bare_lf_lines_are_read(gateway: RunningGateway) -> None:
    status, headers, body = call(gateway, "GET", "/prod/bare-lf")
    assert (status, body, headers["x-lf"]) == (200, b"ok", "yes")
    status, headers, body = call(gateway, "GET", "/prod/mixed-lf")
    assert (status, body, headers["x-mixed"]) == (200, b"ok", "a")


def test_interim_100_answer_is_skipped(gateway: RunningGateway) -> None:
    assert call(gateway, "POST", "/prod/continue", b"x")[:3:2] == (200, b"after 100")


@pytest.mark.parametrize("route", ["bad-status", "two-lengths", "obs-fold", "bad-chunk"])
def test_invalid_answers_are_network_errors(gateway: RunningGateway, route: str) -> None:
    status, headers, body = call(gateway, "GET", f"/prod/{route}")
    assert (status, body) == (504, NETWORK)
    assert headers["x-amzn-errortype"] == "InternalServerErrorException"


@pytest.mark.parametrize("route", ["big-declared", "big-chunked"])
def test_a_body_over_the_cap_is_502(gateway: RunningGateway, route: str) -> None:
    status, _h, body = call(gateway, "GET", f"/prod/{route}")
    assert status == 502
    assert body == b'{"message": "Internal server error"}'


def test_a_stale_pooled_connection_is_retried_once_for_get_only(
        gateway: RunningGateway, backend: RawBackend) -> None:
    # Make sure the pool holds exactly one connection to /close-second's backend
    # script: the first request on a connection is answered, later ones are dropped.
    assert call(gateway, "GET", "/prod/close-second?n=1")[2] == b"first"
    status, _h, body = call(gateway, "GET", "/prod/close-second?n=2")
    # The reused connection was closed unanswered; the GET went again on a new one.
    assert (status, body) == (200, b"first")
    gets = backend.requests_to("/close-second")
    assert [s.path for s in gets[-3:]] == ["/close-second?n=1", "/close-second?n=2",
                                          "/close-second?n=2"]
    assert gets[-2].conn_id == gets[-3].conn_id != gets[-1].conn_id
    # A POST on a reused connection that dies is not sent again: the pool's most
    # recent connection is the retry's, which answered once already.
    status, _h, body = call(gateway, "POST", "/prod/close-second?n=3", b"once")
    assert (status, body) == (504, NETWORK)
    posts = [s for s in backend.requests_to("/close-second") if s.path.endswith("n=3")]
    assert len(posts) == 1 and posts[0].conn_id == gets[-1].conn_id


def test_concurrent_requests_use_several_connections_and_all_answer(
        gateway: RunningGateway, backend: RawBackend) -> None:
    results: list[bytes] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(5):
            status, _h, body = call(gateway, "POST", f"/prod/echo?c={n}-{i}", b"x")
            with lock:
                results.append(body if status == 200 else b"")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.split(b" on ")[0] for r in results) == sorted(
        f"POST /echo?c={n}-{i}".encode() for n in range(8) for i in range(5))
    # Connections beyond max_idle_per_host (4) were closed when they went idle.
    deadline = time.monotonic() + 5
    while backend.open > 4:
        assert time.monotonic() < deadline, f"{backend.open} connections kept open"
        time.sleep(0.05)


def test_idle_connections_are_closed_after_idle_timeout(
        backend: RawBackend, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("fastclient-idle")
    with start_gateway(backend, folder, idle_timeout=0.3) as gw:
        status, _h, body = call(gw, "GET", f"/prod/echo?idle-{gw.port}")
        assert status == 200
        conn_id = int(body.rsplit(b" on ", 1)[1])
        # Closed by the gateway's sweep, without another request coming along.
        deadline = time.monotonic() + 5
        while conn_id not in backend.closed:
            assert time.monotonic() < deadline, "the idle connection was kept"
            time.sleep(0.05)
        status, _h, body = call(gw, "GET", f"/prod/echo?idle-again-{gw.port}")
        assert status == 200 and int(body.rsplit(b" on ", 1)[1]) != conn_id

