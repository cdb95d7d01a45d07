"""The twisted.web glue: request building and the response header table it writes.

Driven through the gateway's real Site and hardened channel over a StringTransport, so the
bytes asserted are the bytes a client would read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twistgw import Headers, Response, hookimpl
from twistgw.config import load_config
from twistgw.deployment import MEMO_LIMIT, memoize
from twistgw.gateway import Gateway
from twistgw.testing import write_config

DEFINITION = {
    "openapi": "3.0.1",
    "info": {"title": "t", "version": "1"},
    "paths": {"/x": {"get": {"x-amazon-apigateway-integration": {
        "type": "mock",
        "requestTemplates": {"application/json": '{"statusCode": 200}'},
        "responses": {"default": {"statusCode": "200",
                                  "responseTemplates": {"application/json": '{"ok": 1}'}}},
    }}}},
}


class HeaderPlugin:
    """Adds the response headers a test wants to see written (or refused)."""

    def __init__(self, extra: tuple[tuple[str, str], ...]) -> None:
        self.extra = extra

    @hookimpl
    def map_response(self, response: Response) -> Response:
        return attrs.evolve(response, headers=Headers(response.headers.items + self.extra))


def _exchange(tmp_path: Path, extra: tuple[tuple[str, str], ...],
              request: bytes = b"GET /prod/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
              spy: object = None) -> bytes:
    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a1", "definition": "api.yaml", "stages": ["prod"]}],
        "plugins": {"enabled": ["mock", "mapping"]},
        "access_log": False,
    }, {"api.yaml": DEFINITION})
    plugins: list[tuple[str, object]] = [("headers", HeaderPlugin(extra))]
    if spy is not None:
        plugins.append(("spy", spy))
    gateway = Gateway(load_config(path), reactor=Clock(), extra_plugins=plugins)
    gateway.ready = True
    site: Any = gateway.sites["public"]
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    proto = site.buildProtocol(transport.getPeer())
    proto.makeConnection(transport)
    proto.dataReceived(request)
    return transport.value()  # type: ignore[no-any-return]


def _head(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def test_aws_header_spellings_are_kept_on_the_wire(tmp_path: Path) -> None:
    """``x-amzn-RequestId`` goes out as AWS spells it, not Twisted's canonical casing."""
    lines = _head(_exchange(tmp_path, ()))
    assert lines[0] == b"HTTP/1.1 200 OK"
    names = [line.split(b":", 1)[0] for line in lines[1:]]
    assert b"x-amzn-RequestId" in names
    assert b"x-amz-apigw-id" in names
    assert names.count(b"Content-Length") == 1
    assert names.count(b"Date") == 1
    assert b"Server" not in names


def test_crlf_in_a_header_value_cannot_split_the_response(tmp_path: Path) -> None:
    """A value with CR/LF (from a backend or a plugin) is blanked, never a new header."""
    raw = _exchange(tmp_path, (("X-Evil", "a\r\nSet-Cookie: stolen=1"),))
    lines = _head(raw)
    assert b"X-Evil: a  Set-Cookie: stolen=1" in lines
    assert not any(line.lower().startswith(b"set-cookie") for line in lines)


def test_invalid_header_names_are_dropped(tmp_path: Path) -> None:
    """A name that is not an HTTP token is not written at all."""
    lines = _head(_exchange(tmp_path, (("Bad Name", "x"), ("Good-Name", "y"))))
    assert b"Good-Name: y" in lines
    assert not any(line.startswith(b"Bad") for line in lines)


def test_framing_headers_from_plugins_are_not_sent_twice(tmp_path: Path) -> None:
    """Content-Length/Transfer-Encoding/Connection belong to the transport."""
    raw = _exchange(tmp_path, (("content-length", "999"), ("Transfer-Encoding", "chunked")))
    lines = _head(raw)
    assert b"Content-Length: 9" in lines
    assert not any(line.lower().startswith(b"transfer-encoding") for line in lines)
    assert raw.endswith(b'{"ok": 1}')


def test_a_client_closing_gets_connection_close_back(tmp_path: Path) -> None:
    """A request with ``Connection: close`` (or HTTP/1.0 without keep-alive) is answered
    with ``Connection: close`` before the gateway closes, as RFC 9112 §9.6 asks."""
    for request in (b"GET /prod/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                    b"GET /prod/x HTTP/1.0\r\nHost: localhost\r\n\r\n"):
        lines = _head(_exchange(tmp_path, (), request))
        assert lines[0].endswith(b"200 OK"), lines
        assert b"Connection: close" in lines, lines
    kept = _head(_exchange(tmp_path, ()))
    assert not any(line.lower().startswith(b"connection") for line in kept)


def test_client_header_spelling_reaches_the_pipeline(tmp_path: Path) -> None:
    """The InboundRequest keeps header names as the client spelled them."""
    seen: list[tuple[str, str]] = []

    class Spy:
        @hookimpl
        def request_started(self, ctx: Any) -> None:
            seen.extend(ctx.request.headers.items)

    _exchange(tmp_path, (), b"GET /prod/x HTTP/1.1\r\nHost: localhost\r\ntEsT-HEADeR: v\r\n\r\n",
              Spy())
    assert ("tEsT-HEADeR", "v") in seen


def test_every_inbound_field_comes_from_the_wire(tmp_path: Path) -> None:
    """inbound_from_http's positional construction puts each value in its field."""
    seen: list[Any] = []

    class Spy:
        @hookimpl
        def request_started(self, ctx: Any) -> None:
            seen.append(ctx.request)

    _exchange(tmp_path, (), b"POST /prod/x?a=1;b=2 HTTP/1.0\r\nHost: h.test\r\n"
              b"Content-Length: 3\r\n\r\nabc", Spy())
    inbound = seen[0]
    assert (inbound.method, inbound.raw_path, inbound.raw_query) == ("POST", "/prod/x",
                                                                     "a=1;b=2")
    assert inbound.query == (("a", "1"), ("b", "2"))
    assert inbound.headers.get("host") == "h.test" and inbound.body == b"abc"
    assert (inbound.client_ip, inbound.client_port) == ("127.0.0.1", 40000)
    assert (inbound.listener, inbound.scheme, inbound.server_port) == ("public", "http", 8080)
    assert inbound.http_version == "HTTP/1.0" and inbound.received_at > 0
    assert inbound.tls is None


def test_memoize_is_bounded() -> None:
    """Request-chosen memo keys cannot grow a route's memo past MEMO_LIMIT."""

    class FakeRoute:
        memo: dict[Any, Any] = {}

    route: Any = FakeRoute()
    calls = 0

    def compute(n: int) -> int:
        nonlocal calls
        calls += 1
        return n * 2

    for n in range(MEMO_LIMIT * 3):
        assert memoize(route, ("k", n), lambda n=n: compute(n)) == n * 2
    assert len(route.memo) == MEMO_LIMIT
    before = calls
    assert memoize(route, ("k", 0), lambda: compute(0)) == 0
    assert calls == before  # a memoized key is not recomputed
    assert memoize(route, ("k", MEMO_LIMIT * 3 - 1), lambda: compute(1)) == 2
    assert calls == before + 1  # past the limit: computed, not stored


def _reference_lines(items: tuple[tuple[str, str], ...]) -> tuple[bytes, bool]:
    """header_lines' rules spelled out plainly: token names only (canonical spelling for
    a few), framing headers dropped, the first Date kept, CR/LF/NUL in values become
    spaces, latin-1 where it fits and UTF-8 otherwise."""
    import re

    canonical = {"content-length": "Content-Length", "transfer-encoding": "Transfer-Encoding",
                 "connection": "Connection", "date": "Date", "set-cookie": "Set-Cookie",
                 "last-modified": "Last-Modified", "etag": "ETag"}
    out = b""
    has_date = False
    for name, value in items:
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name) and \
                name.lower() not in canonical:
            continue
        spelled = canonical.get(name.lower(), name)
        if spelled in ("Content-Length", "Transfer-Encoding", "Connection"):
            continue
        if spelled == "Date":
            if has_date:
                continue
            has_date = True
        clean = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
        try:
            encoded = clean.encode("latin-1")
        except UnicodeEncodeError:
            encoded = clean.encode("utf-8")
        out += spelled.encode("ascii") + b": " + encoded + b"\r\n"
    return out, has_date


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["Content-Type", "date", "Date", "DATE", "x-amzn-RequestId", "ETag",
                     "etag", "Content-Length", "connection", "Transfer-Encoding", "bad name",
                     "bad:name", "Set-Cookie", "X-Custom"]),
    st.one_of(st.sampled_from(["v", "a b", "é", "x\r\ny", "\x00", "€", "tab\there", ""]),
              st.text(max_size=8))), max_size=8))
def test_header_lines_write_what_the_plain_rules_say(items: list[tuple[str, str]]) -> None:
    from twistgw.server import header_lines

    assert header_lines(tuple(items)) == _reference_lines(tuple(items))
