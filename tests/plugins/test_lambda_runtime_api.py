"""The lean Runtime API HTTP server (twistgw_lambda.runtime_api): framing, bounds and the
held ``/next`` poll, over a StringTransport (real clients are in test_lambda_e2e and
test_lambda_ric: the shipped worker, awslambdaric's libcurl and a custom bootstrap)."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twistgw_lambda.runtime_api import MAX_BODY, MAX_HEAD, RuntimeApiFactory, RuntimeRequest


def connect(respond: bool = True) -> tuple[list[RuntimeRequest], StringTransport, object]:
    seen: list[RuntimeRequest] = []

    def handle(request: RuntimeRequest) -> None:
        seen.append(request)
        if respond:
            request.respond(202, b'{"ok": true}', ((b"X-Echo", request.method),))

    proto = RuntimeApiFactory(handle).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return seen, transport, proto


def test_content_length_body_and_keep_alive() -> None:
    seen, transport, proto = connect()
    proto.dataReceived(b"POST /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\n"  # type: ignore[attr-defined]
                       b"Host: h\r\nContent-Length: 5\r\n\r\nhel")
    assert seen == []
    proto.dataReceived(b"lo")  # type: ignore[attr-defined]
    assert [(r.method, r.path, r.body) for r in seen] == [
        (b"POST", b"/2018-06-01/runtime/invocation/x/response", b"hello")]
    assert transport.value() == (b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 12\r\nX-Echo: POST\r\n\r\n{\"ok\": true}")
    assert not transport.disconnecting


def test_chunked_body_with_extensions_and_trailers() -> None:
    seen, _t, proto = connect()
    proto.dataReceived(b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"  # type: ignore[attr-defined]
                       b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert seen[0].body == b"hello world"


def test_expect_continue_is_answered_before_the_body() -> None:
    seen, transport, proto = connect()
    proto.dataReceived(b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\n"  # type: ignore[attr-defined]
                       b"Content-Length: 2\r\n\r\n")
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.dataReceived(b"ok")  # type: ignore[attr-defined]
    assert seen[0].body == b"ok"


def test_a_held_request_makes_the_next_one_wait() -> None:
    seen, transport, proto = connect(respond=False)
    proto.dataReceived(b"GET /next HTTP/1.1\r\n\r\nGET /again HTTP/1.1\r\n\r\n")  # type: ignore[attr-defined]
    assert [r.path for r in seen] == [b"/next"]
    seen[0].respond(200, b"{}")
    assert [r.path for r in seen] == [b"/next", b"/again"]
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")


def test_connection_close_and_http_1_0_close_after_the_answer() -> None:
    for head in (b"GET /p HTTP/1.1\r\nConnection: close\r\n\r\n", b"GET /p HTTP/1.0\r\n\r\n"):
        _seen, transport, proto = connect()
        proto.dataReceived(head)  # type: ignore[attr-defined]
        assert b"Connection: close" in transport.value()
        assert transport.disconnecting


def test_a_body_over_the_limit_is_dropped_and_flagged() -> None:
    seen, _t, proto = connect()
    proto.dataReceived(b"POST /p HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 10))  # type: ignore[attr-defined]
    chunk = b"x" * 65536
    sent = 0
    while sent < MAX_BODY + 10:
        piece = chunk[:MAX_BODY + 10 - sent]
        proto.dataReceived(piece)  # type: ignore[attr-defined]
        sent += len(piece)
    assert seen[0].too_large and seen[0].body == b""


def test_malformed_requests_get_400_and_are_closed() -> None:
    for raw in (b"NONSENSE\r\n\r\n", b"GET /p HTTP/1.1\r\nno colon\r\n\r\n",
                b"POST /p HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        seen, transport, proto = connect()
        proto.dataReceived(raw)  # type: ignore[attr-defined]
        assert transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"), raw
        assert transport.disconnecting and seen == []


def test_a_head_over_64_kib_gets_431() -> None:
    seen, transport, proto = connect()
    proto.dataReceived(b"GET /p HTTP/1.1\r\nX: " + b"a" * MAX_HEAD)  # type: ignore[attr-defined]
    assert transport.value().startswith(b"HTTP/1.1 431 ")
    assert transport.disconnecting and seen == []


def test_a_connection_lost_while_held_tells_the_request() -> None:
    seen, _t, proto = connect(respond=False)
    proto.dataReceived(b"GET /next HTTP/1.1\r\n\r\n")  # type: ignore[attr-defined]
    lost: list[bool] = []
    seen[0].on_lost = lambda: lost.append(True)
    proto.connectionLost(None)  # type: ignore[attr-defined]
    assert lost == [True] and not seen[0].connected
    seen[0].respond(200, b"{}")  # answering a gone request is a no-op


def test_any_split_of_the_bytes_parses_the_same() -> None:
    raw = (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"
           b"0\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\n\r\n")
    seen, _t, proto = connect()
    for i in range(len(raw)):
        proto.dataReceived(raw[i:i + 1])  # type: ignore[attr-defined]
    assert [(r.path, r.body) for r in seen] == [(b"/a", b"abcde"), (b"/b", b"xyz"),
                                                (b"/c", b"")]


def test_an_answer_before_a_held_long_poll_leaves_with_its_answer() -> None:
    """A worker pipelines its result with the next poll: the 202 waits for the poll's
    answer and both go out in one write (what the client reads is unchanged)."""
    seen: list[RuntimeRequest] = []

    def handle(request: RuntimeRequest) -> None:
        seen.append(request)
        if request.method == b"POST":
            request.respond(202, b'{"status": "OK"}')
        else:
            request.long_poll = True  # held until an invocation arrives

    writes: list[bytes] = []
    transport = StringTransport()
    transport.write = writes.append  # type: ignore[method-assign]
    proto = RuntimeApiFactory(handle).buildProtocol(None)
    proto.makeConnection(transport)
    proto.dataReceived(b"POST /r/response HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"  # type: ignore[attr-defined]
                       b"GET /r/next HTTP/1.1\r\n\r\n")
    assert [r.path for r in seen] == [b"/r/response", b"/r/next"] and writes == []
    seen[1].respond(200, b'{"event": 1}')
    assert len(writes) == 1
    first, _sep, second = writes[0].partition(b'{"status": "OK"}')
    assert first.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert second.startswith(b"HTTP/1.1 200 OK\r\n") and second.endswith(b'{"event": 1}')


def test_an_answer_before_a_held_ordinary_request_is_sent_at_once() -> None:
    seen: list[RuntimeRequest] = []

    def handle(request: RuntimeRequest) -> None:
        seen.append(request)
        if request.path == b"/a":
            request.respond(202, b"{}")

    seen_t = StringTransport()
    proto = RuntimeApiFactory(handle).buildProtocol(None)
    proto.makeConnection(seen_t)
    proto.dataReceived(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")  # type: ignore[attr-defined]
    assert [r.path for r in seen] == [b"/a", b"/b"]
    assert seen_t.value().startswith(b"HTTP/1.1 202 Accepted\r\n")
