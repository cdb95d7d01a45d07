"""The HTTP_PROXY hot path's shortcuts give exactly what the general code gives.

* :func:`twistgw_http.outbound_head` builds the backend request head in one pass; it must
  be byte for byte ``request_head(method, path, host, outbound_headers(...), length)``,
  errors included (names that are not tokens, text that is not latin-1), for proxy and
  non-proxy integrations, trusted hops or not, values with CR or LF;
* the response parser's ``Connection`` and ``Content-Encoding`` shortcuts decide what a
  full token scan decides.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twistgw_http import outbound_head, outbound_headers
from twistgw_http.client import HttpSettings, parse_settings
from twistgw_http.fastclient import _Connection, parse_target, request_head

from twistgw import ApiConfigurationError, Headers, IntegrationRequest
from twistgw.definition import Integration
from twistgw.testing import make_context, make_inbound

NAMES = st.sampled_from([
    "Accept", "X-Custom", "x-forwarded-for", "X-Forwarded-Proto", "x-FORWARDED-port",
    "X-Amzn-Apigateway-Api-Id", "x-amzn-trace-id", "Content-Type", "Cookie", "Bad Name",
    "Caf\u00e9", "X-\u20ac", "", "Host",
]) | st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}", fullmatch=True)
VALUES = st.text(alphabet=st.sampled_from(["a", " ", "\t", "\r", "\n", "\xe9", "\u20ac",
                                           ",", "1", "="]), max_size=12)
TRUSTED = parse_settings({"trusted_proxies": ["10.0.0.0/8"]}, "gw.yaml")


def _context(inbound_headers: list[tuple[str, str]], client_ip: str, trace: str | None,
             proxy: bool) -> Any:
    inbound = make_inbound("POST", "/prod/x", headers=inbound_headers, client_ip=client_ip)
    integration = Integration(type="HTTP_PROXY" if proxy else "HTTP", uri="http://b/x")
    route = SimpleNamespace(operation=SimpleNamespace(integration=integration))
    return make_context(inbound, deployment_api=SimpleNamespace(id="abc123"), route=route,
                        trace_id=trace)


def _both(ctx: Any, request: IntegrationRequest, settings_: HttpSettings, proxy: bool,
          url: str) -> tuple[Any, Any]:
    target, path = parse_target(url)
    body = request.body
    length = len(body) if body or request.method in ("POST", "PUT", "PATCH") else None
    results = []
    for build in (
            lambda: outbound_head(ctx, request, settings_, proxy, target, path),
            lambda: request_head(request.method, path, target.host_header,
                                 outbound_headers(ctx, request, settings_, proxy), length)):
        try:
            results.append(build())
        except ApiConfigurationError:
            results.append("ApiConfigurationError")
    return results[0], results[1]


@settings(max_examples=400, deadline=None)
@given(headers=st.lists(st.tuples(NAMES, VALUES), max_size=6),
       inbound_forwarded=st.lists(VALUES, max_size=2),
       method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
       body=st.sampled_from([b"", b"x", b"{\"a\": 1}"]),
       proxy=st.booleans(), trusted=st.booleans(),
       client_ip=st.sampled_from(["10.1.2.3", "192.0.2.7", "::1"]),
       trace=st.sampled_from([None, "Root=1-5e000000-abc", "Root=1-5e000000-abc;Parent=1"]),
       url=st.sampled_from(["http://b/x", "http://127.0.0.1:9/a/b?q=1&r",
                            "https://h.example:8443/p%20q"]))
def test_outbound_head_is_the_general_head(
        headers: list[tuple[str, str]], inbound_forwarded: list[str], method: str,
        body: bytes, proxy: bool, trusted: bool, client_ip: str, trace: str | None,
        url: str) -> None:
    inbound = [("X-Forwarded-For", v.replace("\r", "").replace("\n", ""))
               for v in inbound_forwarded]
    ctx = _context(inbound, client_ip, trace, proxy)
    request = IntegrationRequest(method=method, uri=url, headers=Headers(tuple(headers)),
                                 body=body)
    fast, general = _both(ctx, request, TRUSTED if trusted else HttpSettings(), proxy, url)
    assert fast == general


def test_outbound_head_of_a_plain_proxied_get() -> None:
    ctx = _context([("X-Forwarded-For", "1.1.1.1")], "10.1.2.3", "Root=1-5e000000-abc",
                   True)
    request = IntegrationRequest(method="GET", uri="http://b:8080/x",
                                 headers=Headers((("Accept", "*/*"),
                                                  ("X-Amzn-Trace-Id", "spoofed"))))
    target, path = parse_target("http://b:8080/x?y=1")
    head = outbound_head(ctx, request, TRUSTED, True, target, path)
    assert head == (b"GET /x?y=1 HTTP/1.1\r\nHost: b:8080\r\nAccept: */*\r\n"
                    b"X-Forwarded-For: 1.1.1.1, 10.1.2.3\r\nX-Forwarded-Proto: http\r\n"
                    b"X-Forwarded-Port: 0\r\nX-Amzn-Apigateway-Api-Id: abc123\r\n"
                    b"X-Amzn-Trace-Id: Root=1-5e000000-abc\r\n\r\n")


# -- the response parser's shortcuts -------------------------------------------------------


class _Exchange:
    method = "GET"

    def __init__(self) -> None:
        self.answers: list[Any] = []

    def answered(self, answer: Any) -> None:
        self.answers.append(answer)

    def failed(self, reason: BaseException, conn: Any) -> None:
        self.answers.append(reason)


class _Pool:
    max_body = 1 << 20

    def __init__(self) -> None:
        self.released: list[Any] = []

    def release(self, conn: Any) -> None:
        self.released.append(conn)

    def forget(self, conn: Any) -> None:
        pass


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def loseConnection(self) -> None:
        self.closed = True

    abortConnection = loseConnection


def _parse(head: bytes) -> tuple[Any, bool]:
    """(what the exchange got, whether the connection went back to the pool)."""
    pool = _Pool()
    conn = _Connection(pool)  # type: ignore[arg-type]
    conn.transport = _Transport()  # type: ignore[assignment]
    exchange = _Exchange()
    conn.exchange = exchange  # type: ignore[assignment]
    conn.state = 0  # _HEAD
    conn.dataReceived(head)
    assert len(exchange.answers) == 1
    return exchange.answers[0], bool(pool.released)


TOKENS = st.sampled_from(["close", "Close", "CLOSE", "keep-alive", "upgrade", "closed",
                          "x-close", " close ", "\tclose", "", "te"])


@settings(max_examples=300, deadline=None)
@given(connection=st.lists(st.lists(TOKENS, min_size=1, max_size=3), max_size=2),
       encodings=st.lists(st.sampled_from(["Content-Encoding", "content-encoding",
                                           "CONTENT-ENCODING", "Content-Encodings",
                                           "X-Content-Encoding"]), max_size=2))
def test_connection_close_and_content_encoding_are_found_as_a_token_scan_would(
        connection: list[list[str]], encodings: list[str]) -> None:
    lines = [f"Connection: {','.join(tokens)}" for tokens in connection]
    lines += [f"{name}: gzip" for name in encodings]
    head = ("HTTP/1.1 200 OK\r\n" + "".join(f"{line}\r\n" for line in lines)
            + "Content-Length: 2\r\n\r\nok").encode("latin-1")
    answer, reused = _parse(head)
    status, headers, body, length, encoded = answer
    close = any(t.strip(" \t").lower() == "close" for tokens in connection for t in tokens)
    assert (status, body, length) == (200, b"ok", 2)
    assert reused is not close
    assert encoded is any(name.lower() == "content-encoding" for name in encodings)
    assert [k for k, _ in headers] == [n for n in encodings]


@pytest.mark.parametrize(("head", "encoded"), [
    (b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n", True),
    (b"HTTP/1.0 200 OK\r\nX: y\r\nContent-Length: 0\r\n\r\n", False),
])
def test_bodiless_answers_report_their_encoding_too(head: bytes, encoded: bool) -> None:
    answer, _reused = _parse(head)
    assert answer[4] is encoded


# -- the response head table --------------------------------------------------------------

STATUS_LINES = st.sampled_from([
    "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.0 200 OK", "HTTP/1.1 204 No Content",
    "HTTP/1.1 304 Not Modified", "HTTP/1.1 100 Continue", "HTTP/1.1 101 Switching",
    "HTTP/1.1 200", "HTTP/2 200 OK", "HTTP/1.1 2000 OK", "garbage"])
_GOOD_NAMES = st.sampled_from(["Content-Length", "content-length", "Transfer-Encoding",
                               "Connection", "Content-Encoding", "Server", "Date", "X-A"])
_GOOD_VALUES = st.sampled_from(["2", " 2", "3", "2, 2", "chunked", "gzip, chunked", "close",
                                "keep-alive", "nginx"])
# Invalid names and values (and values invalid for some names) a fifth of the time.
ANSWER_HEADERS = st.lists(st.tuples(
    st.one_of(_GOOD_NAMES, _GOOD_NAMES, _GOOD_NAMES, _GOOD_NAMES,
              st.sampled_from([" X-B", "X-C ", ""])),
    st.one_of(_GOOD_VALUES, _GOOD_VALUES, _GOOD_VALUES, _GOOD_VALUES,
              st.sampled_from(["x", "a:b", "", "\r"]))), max_size=4)


def _feed(data: bytes, method: str) -> tuple[Any, ...]:
    """Everything a connection does with ``data`` as the answer to a ``method`` request:
    what the exchange got (errors by type and text), pooled or closed, parser state."""
    pool = _Pool()
    conn = _Connection(pool)  # type: ignore[arg-type]
    transport = _Transport()
    conn.transport = transport  # type: ignore[assignment]
    exchange = _Exchange()
    exchange.method = method  # type: ignore[misc]
    conn.exchange = exchange  # type: ignore[assignment]
    conn.head_request = method == "HEAD"
    conn.state = 0  # _HEAD
    conn.dataReceived(data)
    answers = [(type(a).__name__, str(a)) if isinstance(a, BaseException) else a
               for a in exchange.answers]
    return (answers, bool(pool.released), transport.closed, conn.state, conn.buf,
            conn.status, conn.headers, conn.length, conn.remaining, conn.close_after)


@settings(max_examples=400, deadline=None)
@example(status="HTTP/1.1 200 OK", headers=[("Content-Length", "2")], eol="\r\n", body=b"ok",
         method="HEAD")
@example(status="HTTP/1.1 200 OK", headers=[("Content-Length", "4")], eol="\r\n", body=b"ok",
         method="GET")
@example(status="HTTP/1.1 100 Continue", headers=[], eol="\r\n", body=b"HTTP", method="GET")
@given(status=STATUS_LINES, headers=ANSWER_HEADERS, eol=st.sampled_from(["\r\n", "\n"]),
       body=st.binary(max_size=4), method=st.sampled_from(["GET", "HEAD", "POST"]))
def test_a_head_parsed_before_gives_what_parsing_it_gives(
        status: str, headers: list[tuple[str, str]], eol: str, body: bytes, method: str
        ) -> None:
    from twistgw_http import fastclient

    head = status + eol + "".join(f"{k}:{v}{eol}" for k, v in headers) + eol
    data = head.encode("latin-1") + body
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fastclient, "_CACHED_HEAD_BYTES", -1)  # the table off: always parsed
        expected = _feed(data, method)
    fastclient._heads.clear()
    assert _feed(data, method) == expected  # parsed, and kept if it could be
    assert _feed(data, method) == expected  # from the table when kept


def test_the_head_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from twistgw_http import fastclient

    monkeypatch.setattr(fastclient, "_MAX_HEADS", 4)
    fastclient._heads.clear()
    for i in range(10):
        _feed(b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 0\r\n\r\n" % i, "GET")
        assert len(fastclient._heads) <= 4
    big = b"HTTP/1.1 200 OK\r\nX: " + b"y" * 3000 + b"\r\nContent-Length: 0\r\n\r\n"
    assert _feed(big, "GET")[0][0][0] == 200
    assert all(len(raw) <= fastclient._CACHED_HEAD_BYTES for raw in fastclient._heads)


@settings(max_examples=200, deadline=None)
@given(headers=st.lists(st.tuples(st.sampled_from(["Date", "Server", "Via", "x-amzn-RequestId",
                                                  "Content-Type", "X-A", "Connection",
                                                  "Keep-Alive", "transfer-encoding"]),
                                 st.sampled_from(["a", "b", ""])), max_size=5),
       length=st.none() | st.integers(0, 99))
def test_remapped_headers_kept_for_a_head_seen_before_are_what_remapping_gives(
        headers: list[tuple[str, str]], length: int | None) -> None:
    from twistgw_http import _remap, _remapped, proxy_response_headers

    expected = _remap(list(headers), length)
    _remapped.clear()
    assert proxy_response_headers(tuple(headers), length) == expected  # remapped, kept
    assert proxy_response_headers(tuple(headers), length) == expected  # kept
    assert proxy_response_headers(list(headers), length) == expected  # a list: not kept
    assert len(_remapped) == 1


def test_the_remapped_headers_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import twistgw_http

    monkeypatch.setattr(twistgw_http, "_MAX_REMAPPED", 3)
    twistgw_http._remapped.clear()
    for i in range(10):
        twistgw_http.proxy_response_headers((("X-N", str(i)),), i)
        assert len(twistgw_http._remapped) <= 3


def test_the_plugins_positional_constructions_match_the_models_fields() -> None:
    """integration_request and the answer's ``respond`` build IntegrationRequest and
    IntegrationResponse by position (cheaper per request than keywords): the fields must
    be in the order passed."""
    import attrs

    from twistgw import IntegrationResponse

    assert [f.name for f in attrs.fields(IntegrationRequest) if f.init][:8] == [
        "method", "uri", "headers", "query", "path_params", "body", "timeout", "extras"]
    assert [f.name for f in attrs.fields(IntegrationResponse) if f.init][:4] == [
        "status", "headers", "body", "metadata"]
