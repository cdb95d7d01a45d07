"""HTTP and HTTP_PROXY integrations against real backends on 127.0.0.1.

The gateway runs as the real ``twistd -n apigw`` (one per module: starting it is the slow
part); the backends are a stdlib ``http.server`` in a thread of the test process, so a
test can look at exactly what the backend received.  Scenarios: echo, a backend that
never answers, one that stalls mid-body, one that resets, one that is not listening,
bodies over the cap, gzip, binary, HEAD and 204.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from twistgw.testing import RunningGateway, write_config

BINARY = bytes(range(256)) * 4
BIG = 200_000  # over the max_response_bytes the gateway is configured with below


class Backend(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    #: socketserver's default backlog of 5 drops SYNs when many requests start at once
    #: (the retransmission, a second later, then races the 1 s integration timeouts).
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[dict[str, Any]] = []
        #: Query strings of /hang requests whose connection the gateway closed.
        self.hang_closed: list[str] = []
        self.stop_event = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo/1.0"
    sys_version = ""
    server: Backend

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        doc = {"method": self.command, "path": path, "query": query,
               "peer_port": self.client_address[1],
               "headers": [[k, v] for k, v in self.headers.items()],
               "body": base64.b64encode(self._body()).decode()}
        self.server.seen.append(doc)
        return doc

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_one(self) -> None:
        doc = self._record()
        path = doc["path"]
        if path.startswith("/hang"):
            # Wait until the gateway hangs up (or the test ends); note when it did.
            self.connection.settimeout(0.05)
            while not self.server.stop_event.is_set():
                try:
                    if self.connection.recv(1) == b"":
                        self.server.hang_closed.append(doc["query"])
                        break
                except TimeoutError:
                    continue
                except OSError:
                    self.server.hang_closed.append(doc["query"])
                    break
            self.close_connection = True
            return
        if path.startswith("/stall"):
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.server.stop_event.wait(5)
            self.close_connection = True
            return
        if path.startswith("/reset"):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if path.startswith("/big"):
            self._send(200, b"a" * BIG, {"Content-Type": "text/plain"})
            return
        if path.startswith("/gzip"):
            self._send(200, gzip.compress(b'{"zipped": true}'),
                       {"Content-Type": "application/json", "Content-Encoding": "gzip"})
            return
        if path.startswith("/binary"):
            self._send(200, BINARY, {"Content-Type": "application/octet-stream"})
            return
        if path.startswith("/nocontent"):
            self.send_response(204)
            self.end_headers()
            return
        status = 200
        if path.startswith("/status/"):
            status = int(path.split("/")[2])
        self._send(status, json.dumps(doc).encode(), {
            "Content-Type": "application/json",
            "X-Amzn-RequestId": "backend-id", "Via": "1.1 somewhere", "X-Backend": "yes"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_one


#: The integration timeout of routes whose backend answers at once: generous, so a busy
#: machine (CI beside other work) cannot turn a slow answer into a 504.  Only the routes
#: that test timeouts (/hang, /stall, the guarded /hang) have short ones.
ROOMY_MS = 20_000


def proxy(uri: str, timeout_ms: int = ROOMY_MS, **extra: Any) -> dict[str, Any]:
    integration: dict[str, Any] = {"type": "http_proxy", "httpMethod": "ANY", "uri": uri,
                                   "timeoutInMillis": timeout_ms}
    integration.update(extra)
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": integration}


def plain(uri: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    integration: dict[str, Any] = {"type": "http", "httpMethod": "POST", "uri": uri,
                                   "timeoutInMillis": ROOMY_MS, "responses": responses}
    integration.update(extra)
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": integration}


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


BACKEND = "http://${stageVariables.backend}"


def definition(dead_port: int) -> dict[str, Any]:
    greedy = {"integration.request.path.proxy": "method.request.path.proxy"}
    return {
        "openapi": "3.0.1", "info": {"title": "http", "version": "1"},
        "paths": {
            "/{proxy+}": {"x-amazon-apigateway-any-method": proxy(
                f"{BACKEND}/{{proxy}}", requestParameters=greedy)},
            "/hang": {"get": proxy(f"{BACKEND}/hang", timeout_ms=1000)},
            "/stall": {"get": proxy(f"{BACKEND}/stall", timeout_ms=1000)},
            "/longhang": {"get": proxy(f"{BACKEND}/hang", timeout_ms=10000)},
            "/refused": {"get": proxy(f"http://127.0.0.1:{dead_port}/x")},
            "/mapped/{id}": {"get": proxy(f"{BACKEND}/echo/items/{{id}}", requestParameters={
                "integration.request.path.id": "method.request.path.id",
                "integration.request.querystring.testVar": "'bar'",
                "integration.request.querystring.fromHeader": "method.request.header.X-Q",
                "integration.request.header.X-Mapped": "method.request.querystring.m",
                "integration.request.header.X-Stage": "stageVariables.name",
                "integration.request.header.X-Ctx": "context.stage",
            })},
            "/posted": {"get": proxy(f"{BACKEND}/echo/posted", httpMethod="POST")},
            "/plain": {"post": plain(f"{BACKEND}/echo/plain", {
                "default": {"statusCode": "200",
                            "responseParameters": {
                                "method.response.header.X-From-Backend":
                                    "integration.response.header.X-Backend"}}},
                requestParameters={
                    "integration.request.header.X-Mapped": "'yes'",
                    "integration.request.querystring.q": "method.request.querystring.q"},
                requestTemplates={"application/json": '{"templated": true}'})},
            "/overridden/{id}": {"post": plain(f"{BACKEND}/echo/over/{{id}}", {
                "default": {"statusCode": "200"}},
                requestParameters={
                    "integration.request.path.id": "method.request.path.id",
                    "integration.request.header.X-Mapped": "'mapped'",
                    "integration.request.querystring.q": "'mapped'"},
                requestTemplates={"application/json": (
                    '#set($context.requestOverride.header.X-Mapped = "overridden")\n'
                    '#set($context.requestOverride.querystring.q = "over")\n'
                    '#set($context.requestOverride.path.id = "42")\n'
                    '{"templated": "$input.params(\'id\')"}')})},
            "/plain400": {"post": plain(f"{BACKEND}/status/400", {
                "default": {"statusCode": "200"}})},
            "/plain418": {"post": plain(f"{BACKEND}/status/400", {
                "default": {"statusCode": "200"},
                "4\\d{2}": {"statusCode": "418"}})},
        },
    }


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    server = Backend()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.stop_event.set()
    server.shutdown()
    server.server_close()


#: Every HTTP_PROXY/HTTP test runs against both outbound clients (``client`` setting).
CLIENTS = ["fast", "agent"]


@pytest.fixture(scope="module", params=CLIENTS)
def gateway(backend: Backend, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[RunningGateway]:
    folder: Path = tmp_path_factory.mktemp("http-gw")
    config = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "httpapi", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod", "variables": {
                      "backend": f"127.0.0.1:{backend.port}", "name": "prod-stage"}}]}],
        "plugins": {"enabled": ["mock", "mapping", "http"],
                    "settings": {"http": {"max_response_bytes": 100_000,
                                          "connect_timeout": 2,
                                          "client": request.param}}},
        "access_log": False,
    }
    path = write_config(folder, config, {"api.yaml": definition(closed_port())})
    with RunningGateway(path) as gw:
        yield gw


def call(gw: RunningGateway, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None
         ) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=ROOMY_MS / 1000 + 10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def echoed(body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    return doc


def header(doc: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


# -- HTTP_PROXY ---------------------------------------------------------------------------


def test_proxy_forwards_method_path_query_headers_and_body(gateway: RunningGateway) -> None:
    status, _headers, body = call(
        gateway, "PUT", "/prod/echo/a%20b/c?x=1&x=2&y=%2F", body=b'{"k": 1}',
        headers={"Content-Type": "application/json", "X-Custom": "hello",
                 "X-Forwarded-For": "6.6.6.6"})
    assert status == 200
    doc = echoed(body)
    assert doc["method"] == "PUT"
    assert doc["path"] == "/echo/a%20b/c"  # raw, not re-encoded
    assert doc["query"] == "x=1&x=2&y=%2F"
    assert base64.b64decode(doc["body"]) == b'{"k": 1}'
    assert header(doc, "X-Custom") == ["hello"]
    assert header(doc, "Content-Type") == ["application/json"]
    assert header(doc, "Host") == [f"127.0.0.1:{gateway_backend_port(doc)}"]
    # The client's X-Forwarded-For is not trusted by default: the real peer replaces it.
    assert header(doc, "X-Forwarded-For") == ["127.0.0.1"]
    assert header(doc, "X-Forwarded-Proto") == ["http"]
    assert header(doc, "X-Forwarded-Port") == [str(gateway.port)]
    assert header(doc, "X-Amzn-Apigateway-Api-Id") == ["httpapi"]
    assert header(doc, "X-Amzn-Trace-Id")[0].startswith("Root=1-")
    assert header(doc, "Connection") in ([], ["keep-alive"])


def gateway_backend_port(doc: dict[str, Any]) -> str:
    return header(doc, "Host")[0].rsplit(":", 1)[1]


def test_proxy_returns_backend_status_and_remaps_headers(gateway: RunningGateway) -> None:
    status, headers, body = call(gateway, "GET", "/prod/status/404")
    assert status == 404
    assert echoed(body)["path"] == "/status/404"
    assert headers["X-Backend"] == "yes"
    assert headers["x-amzn-Remapped-Server"] == "echo/1.0"
    assert headers["x-amzn-Remapped-X-Amzn-Requestid"] == "backend-id"
    assert headers["x-amzn-Remapped-Date"]
    assert headers["x-amzn-Remapped-Content-Length"] == str(len(body))
    assert "Via" not in headers
    assert headers["x-amzn-RequestId"] != "backend-id"
    assert headers["Content-Type"] == "application/json"


def test_proxy_integration_method_overrides_client_method(gateway: RunningGateway) -> None:
    status, _h, body = call(gateway, "GET", "/prod/posted")
    assert status == 200
    assert echoed(body)["method"] == "POST"


def test_proxy_request_parameters_fill_path_and_merge_query_and_headers(
        gateway: RunningGateway) -> None:
    status, _h, body = call(gateway, "GET", "/prod/mapped/42?testVar=foobar&m=mv",
                            headers={"X-Q": "hq"})
    assert status == 200
    doc = echoed(body)
    assert doc["path"] == "/echo/items/42"
    # AWS appends mapped values to the client's (recorded testVar=foobar,bar).
    assert doc["query"] == "testVar=foobar&m=mv&testVar=bar&fromHeader=hq"
    assert header(doc, "X-Mapped") == ["mv"]
    assert header(doc, "X-Stage") == ["prod-stage"]
    assert header(doc, "X-Ctx") == ["prod"]
    assert header(doc, "X-Q") == ["hq"]  # client headers still forwarded


def test_proxy_head_204_binary_and_gzip(gateway: RunningGateway) -> None:
    status, headers, body = call(gateway, "HEAD", "/prod/echo/head")
    assert status == 200 and body == b""
    # The backend's Content-Length for the body it would have sent, remapped once.
    assert len(headers.get_all("x-amzn-Remapped-Content-Length") or []) == 1
    status, headers, body = call(gateway, "GET", "/prod/nocontent")
    assert status == 204 and body == b""
    status, headers, body = call(gateway, "GET", "/prod/binary")
    assert status == 200 and body == BINARY
    assert headers["Content-Type"] == "application/octet-stream"
    status, headers, body = call(gateway, "GET", "/prod/gzip",
                                 headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert json.loads(body) == {"zipped": True}
    assert "Content-Encoding" not in headers


def test_backend_connections_are_pooled_and_reused(gateway: RunningGateway,
                                                   backend: Backend) -> None:
    before = len(backend.seen)
    for i in range(30):
        status, _h, _b = call(gateway, "GET", f"/prod/echo/pooled?i={i}")
        assert status == 200
    ports = {d["peer_port"] for d in backend.seen[before:]}
    assert len(ports) <= 2, f"{len(ports)} connections for 30 sequential requests"


def test_concurrent_requests_all_answered(gateway: RunningGateway) -> None:
    results: list[Any] = []  # True, or what went wrong
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(10):
            try:
                status, _h, body = call(gateway, "POST", f"/prod/echo/c{n}?i={i}",
                                        body=f"{n}-{i}".encode())
                ok: Any = (status == 200 and base64.b64decode(echoed(body)["body"])
                           == f"{n}-{i}".encode()) or (n, i, status, body[:200])
            except Exception as e:  # shown in the assertion below
                ok = (n, i, repr(e))
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 180  # a bound for a very busy machine, not a timing test
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert results == [True] * 100


def test_proxy_timeout_is_504_endpoint_request_timed_out(gateway: RunningGateway) -> None:
    started = time.monotonic()
    status, headers, body = call(gateway, "GET", "/prod/hang")
    assert time.monotonic() - started < 5
    assert status == 504
    assert json.loads(body) == {"message": "Endpoint request timed out"}
    assert headers["x-amzn-ErrorType"] == "InternalServerErrorException"


def test_proxy_stall_mid_body_times_out(gateway: RunningGateway) -> None:
    status, _h, body = call(gateway, "GET", "/prod/stall")
    assert status == 504
    assert json.loads(body) == {"message": "Endpoint request timed out"}


def test_proxy_reset_and_refused_are_network_errors(gateway: RunningGateway) -> None:
    for path in ("/prod/reset", "/prod/refused"):
        status, headers, body = call(gateway, "GET", path)
        assert status == 504, path
        assert body == b'{"message": "Network error communicating with endpoint"}'
        assert headers["x-amzn-ErrorType"] == "InternalServerErrorException"


def test_proxy_body_over_the_cap_is_502(gateway: RunningGateway) -> None:
    status, _h, body = call(gateway, "GET", "/prod/big")
    assert status == 502
    assert json.loads(body)["message"] == "Internal server error"


@pytest.mark.parametrize("how", ["reset", "fin"])
def test_proxy_backend_request_cancelled_when_client_disconnects(
        gateway: RunningGateway, backend: Backend, how: str) -> None:
    conn = socket.create_connection(("127.0.0.1", gateway.port))
    # The module runs once per client, on one backend: the query names this run.
    who = f"who=cancel-{how}-{gateway.port}"
    conn.sendall(f"GET /prod/longhang?{who} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    deadline = time.monotonic() + 5
    while not any(d["path"] == "/hang" and d["query"] == who for d in backend.seen):
        assert time.monotonic() < deadline, "the backend never got the request"
        time.sleep(0.02)
    if how == "reset":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    else:
        # A FIN while the answer is still being waited for: the client is gone (as
        # nginx sees it); the gateway closes its side too.
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(5)
        try:
            assert conn.recv(1024) == b""
        except ConnectionResetError:
            pass  # aborted: a reset is as good as a close here
        conn.close()
    # The route's timeout is 10 s: a close within 3 s is the cancellation, not the timeout.
    deadline = time.monotonic() + 3
    while who not in backend.hang_closed:
        assert time.monotonic() < deadline, "the backend request was not cancelled"
        time.sleep(0.02)


def test_gateway_keeps_serving_after_failures(gateway: RunningGateway) -> None:
    status, _h, _b = call(gateway, "GET", "/prod/echo/again")
    assert status == 200


# -- HTTP (non-proxy) ---------------------------------------------------------------------


def test_http_sends_only_mapped_headers_and_defaults(gateway: RunningGateway) -> None:
    status, headers, body = call(gateway, "POST", "/prod/plain?q=7&other=1",
                                 body=b'{"client": 1}',
                                 headers={"Content-Type": "application/json",
                                          "X-Custom": "not forwarded"})
    assert status == 200
    doc = echoed(body)
    assert doc["method"] == "POST"
    assert doc["query"] == "q=7"
    assert base64.b64decode(doc["body"]) == b'{"templated": true}'
    assert header(doc, "X-Custom") == []
    assert header(doc, "X-Mapped") == ["yes"]
    assert header(doc, "Accept") == ["application/json"]
    assert header(doc, "User-Agent") == ["AmazonAPIGateway_httpapi"]
    assert header(doc, "Content-Type") == ["application/json"]
    assert header(doc, "X-Amzn-Apigateway-Api-Id") == ["httpapi"]
    assert header(doc, "X-Forwarded-For") == []
    assert headers["X-From-Backend"] == "yes"
    assert "X-Backend" not in headers  # unmapped integration headers are discarded


def test_http_request_overrides_win_over_mappings(gateway: RunningGateway) -> None:
    """$context.requestOverride from the template replaces mapped header, query and path
    values (applied after requestParameters, as on AWS)."""
    status, _h, body = call(gateway, "POST", "/prod/overridden/7", body=b"{}",
                            headers={"Content-Type": "application/json"})
    assert status == 200
    doc = echoed(body)
    assert doc["path"] == "/echo/over/42"
    assert doc["query"] == "q=over"
    assert header(doc, "X-Mapped") == ["overridden"]
    assert base64.b64decode(doc["body"]).strip() == b'{"templated": "7"}'


def test_http_backend_status_not_passed_through_unless_mapped(
        gateway: RunningGateway) -> None:
    status, _h, body = call(gateway, "POST", "/prod/plain400", body=b"{}",
                            headers={"Content-Type": "application/json"})
    assert status == 200
    assert echoed(body)["path"] == "/status/400"
    status, _h, _b = call(gateway, "POST", "/prod/plain418", body=b"{}",
                          headers={"Content-Type": "application/json"})
    assert status == 418


# -- bounded concurrency and the circuit breaker -------------------------------------------


@pytest.fixture(scope="module", params=CLIENTS)
def guarded(backend: Backend, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[RunningGateway]:
    """A gateway allowing one request per backend, no queue, a breaker after 2 failures."""
    folder: Path = tmp_path_factory.mktemp("http-guarded")
    dead = closed_port()
    doc = {"openapi": "3.0.1", "info": {"title": "guarded", "version": "1"},
           "paths": {
               "/hang": {"get": proxy(f"{BACKEND}/hang", timeout_ms=1500)},
               "/echo": {"get": proxy(f"{BACKEND}/echo/guarded")},
               "/refused": {"get": proxy(f"http://127.0.0.1:{dead}/x")}}}
    config = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "guarded", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod", "variables": {
                      "backend": f"127.0.0.1:{backend.port}"}}]}],
        "plugins": {"enabled": ["mock", "mapping", "http"],
                    "settings": {"http": {"max_concurrent_per_host": 1,
                                          "max_pending_per_host": 0,
                                          "breaker_failures": 2,
                                          "breaker_open_seconds": 1,
                                          "client": request.param}}},
        "access_log": False,
    }
    path = write_config(folder, config, {"api.yaml": doc})
    with RunningGateway(path) as gw:
        yield gw


def test_a_full_backend_answers_503_at_once(guarded: RunningGateway, backend: Backend
                                            ) -> None:
    results: list[int] = []
    who = f"who=slot-{guarded.port}"  # the module runs once per client, on one backend
    hanging = threading.Thread(target=lambda: results.append(
        call(guarded, "GET", f"/prod/hang?{who}")[0]))
    hanging.start()
    deadline = time.monotonic() + 5
    while not any(d["query"] == who for d in backend.seen):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    status, headers, body = call(guarded, "GET", "/prod/echo")
    # Answered while the hanging request still holds the slot (it ends with its 1.5 s
    # timeout): refused at once, not queued (a causal check, not a clock one).
    assert results == []
    assert status == 503
    assert body == b'{"message": "Service Unavailable"}'
    assert headers["x-amzn-ErrorType"] == "InternalServerErrorException"
    hanging.join(10)
    assert results == [504]
    assert call(guarded, "GET", "/prod/echo")[0] == 200  # the slot came back


def test_the_breaker_opens_after_failures_and_probes_after_the_pause(
        guarded: RunningGateway) -> None:
    network = b'{"message": "Network error communicating with endpoint"}'
    assert call(guarded, "GET", "/prod/refused")[2] == network
    assert call(guarded, "GET", "/prod/refused")[2] == network
    status, _h, body = call(guarded, "GET", "/prod/refused")
    assert (status, body) == (503, b'{"message": "Service Unavailable"}')
    # Another backend is not affected.
    assert call(guarded, "GET", "/prod/echo")[0] == 200
    time.sleep(1.1)
    assert call(guarded, "GET", "/prod/refused")[2] == network  # the half-open probe
    assert call(guarded, "GET", "/prod/refused")[0] == 503  # open again


# -- HTTP APIs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_api(backend: Backend, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[RunningGateway]:
    """An HTTP API (v2) with an HTTP_PROXY $default route on the $default stage."""
    folder: Path = tmp_path_factory.mktemp("http-v2")
    integration = {"type": "http_proxy", "httpMethod": "ANY", "payloadFormatVersion": "1.0",
                   "uri": f"{BACKEND}/{{proxy}}", "timeoutInMillis": ROOMY_MS}
    doc = {"openapi": "3.0.1", "info": {"title": "v2", "version": "1"},
           "paths": {"/{proxy+}": {"x-amazon-apigateway-any-method": {
               "responses": {"default": {"description": "ok"}},
               "x-amazon-apigateway-integration": integration}}}}
    config = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "v2api", "type": "HTTP", "definition": "api.yaml",
                  "stages": [{"name": "$default", "variables": {
                      "backend": f"127.0.0.1:{backend.port}"}}]}],
        "plugins": {"enabled": ["mock", "mapping", "http"]},
        "access_log": False,
    }
    path = write_config(folder, config, {"api.yaml": doc})
    with RunningGateway(path) as gw:
        yield gw


def test_http_api_proxies_with_its_own_request_id_header(http_api: RunningGateway) -> None:
    status, headers, body = call(http_api, "DELETE", "/echo/v2?a=1", body=b"x")
    assert status == 200
    doc = echoed(body)
    assert (doc["method"], doc["path"], doc["query"]) == ("DELETE", "/echo/v2", "a=1")
    assert header(doc, "X-Amzn-Apigateway-Api-Id") == ["v2api"]
    assert headers["apigw-requestid"]
    assert "x-amzn-RequestId" not in headers
