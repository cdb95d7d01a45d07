"""The Lambda hot path's shortcuts give exactly what the general code gives.

* the shipped worker drops the answer to a result (a 202, every invoke) after parsing
  only its framing, and falls back to the full parser for anything else;
* the worker's event decoding and the gateway's output decoding call json's C scanner
  directly and must agree with ``json.loads`` on every input, errors included.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twistgw_lambda import responses, worker

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) |
    st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) |
    st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)
AROUND = st.sampled_from([b"", b" ", b"\n", b"\xef\xbb\xbf", b"\x00", b"x"])


def _client(answers: bytes) -> tuple[worker._Client, socket.socket]:
    """A worker client whose Runtime API is the other end of a socketpair that has
    already sent ``answers``."""
    ours, theirs = socket.socketpair()
    client = worker._Client.__new__(worker._Client)
    client.sock, client.host, client.buffer = ours, b"h", b""
    client.next_request = b"GET /next HTTP/1.1\r\n\r\n"
    theirs.sendall(answers)
    return client, theirs


EVENT = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
         b"Lambda-Runtime-Aws-Request-Id: r-2\r\nContent-Length: 9\r\n\r\n{\"e\": 2}\n")


@pytest.mark.parametrize("first", [
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
    b"Content-Length: 16\r\n\r\n{\"status\": \"OK\"}",
    b"HTTP/1.1 202 Accepted\r\ncontent-length:  2 \r\n\r\n{}",
    b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
])
def test_the_answer_to_a_result_is_dropped_whatever_its_framing(first: bytes) -> None:
    client, server = _client(first + EVENT)
    try:
        status, headers, body = client.exchange(b"POST /r HTTP/1.1\r\n\r\n")
        assert (status, headers[b"lambda-runtime-aws-request-id"], body) == (
            200, b"r-2", b"{\"e\": 2}\n")
        assert client.buffer == b""
        sent = server.recv(4096)
        assert sent == b"POST /r HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n"
    finally:
        client.sock.close()
        server.close()


def test_an_answer_split_across_reads_is_dropped_whole() -> None:
    client, server = _client(b"HTTP/1.1 202 Accepted\r\nContent-Len")
    try:
        server.sendall(b"gth: 2\r\n\r\n{}" + EVENT)
        assert client.exchange(b"x")[2] == b"{\"e\": 2}\n"
    finally:
        client.sock.close()
        server.close()


def _outcome(decode: Any, raw: bytes) -> tuple[str, str]:
    try:
        return "ok", repr(decode(raw))  # repr: NaN is not equal to itself
    except responses.MalformedResponse:
        return "error", ""
    except ValueError:
        return "error", ""


@settings(max_examples=200, deadline=None)
@given(doc=JSON, before=AROUND, after=AROUND)
def test_decoding_agrees_with_json_loads(doc: Any, before: bytes, after: bytes) -> None:
    raw = before + json.dumps(doc, ensure_ascii=False).encode("utf-8") + after
    expected = _outcome(json.loads, raw)
    assert _outcome(worker._loads, raw) == expected
    assert _outcome(responses._loads, raw) == expected


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=12) | st.sampled_from([
    "{}".encode("utf-16"), "[1]".encode("utf-32"), b'"\xed\xa0\x80"', b"1 2", b"{} "]))
def test_decoding_agrees_with_json_loads_on_any_bytes(raw: bytes) -> None:
    expected = _outcome(json.loads, raw)
    assert _outcome(worker._loads, raw) == expected
    assert _outcome(responses._loads, raw) == expected


TRICKY = st.lists(st.text(st.sampled_from(["\\", "u", "0", "\x00", "a", "\"", "\u00e9",
                                           "\n", "\x7f", "\U0001f600"]), max_size=8),
                  max_size=6)


@settings(max_examples=500, deadline=None)
@given(strings=TRICKY)
def test_escaping_strings_together_equals_escaping_each(strings: list[str]) -> None:
    """The REST event escapes its per-request strings in one call and splits the result;
    NULs and the text ``\\u0000`` inside a string must not move a split."""
    from json.encoder import encode_basestring_ascii

    from twistgw_lambda.events import _escaped

    assert _escaped(list(strings)) == [encode_basestring_ascii(s)[1:-1] for s in strings]


HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6)


@settings(max_examples=200, deadline=None)
@given(status=st.integers(100, 599),
       headers=st.dictionaries(st.sampled_from(["A", "a", "Content-Type", "X-B"]),
                               HEADER_VALUE | st.booleans(), max_size=3),
       multi=st.dictionaries(st.sampled_from(["A", "x-b", "Set-Cookie"]),
                             st.lists(HEADER_VALUE, max_size=2), max_size=2),
       body=st.none() | st.text(max_size=6), trailer=st.sampled_from([(), (("T", "v"),)]))
def test_responses_built_by_position_equal_those_built_by_keyword(
        status: int, headers: dict[str, Any], multi: dict[str, list[str]],
        body: str | None, trailer: tuple[tuple[str, str], ...]) -> None:
    """parse_v1 and parse_v2 build their IntegrationResponse positionally (cheaper):
    every field must land where the keyword call puts it."""
    from twistgw import Headers, IntegrationResponse
    metadata = {"lambda_request_id": "r-1"}
    out = json.dumps({"statusCode": status, "headers": headers, "multiValueHeaders": multi,
                      "body": body}).encode()
    got = responses.parse_v1(out, decode_base64=False, trailer=trailer, metadata=metadata)
    want = IntegrationResponse(status=status, headers=Headers(got.headers.items),
                               body=(body or "").encode(), metadata=metadata)
    assert (got.status, got.headers, got.body, dict(got.metadata), got.upgrade) == \
        (want.status, want.headers, want.body, dict(want.metadata), want.upgrade)
    assert got == want and type(got.status) is int and type(got.body) is bytes
    assert got.headers.items[len(got.headers.items) - len(trailer):] == trailer
    out2 = json.dumps({"statusCode": status, "headers": {
        k: v for k, v in headers.items() if isinstance(v, str)}, "body": body}).encode()
    got2 = responses.parse_v2(out2, metadata)
    want2 = IntegrationResponse(status=status, headers=Headers(got2.headers.items),
                                body=(body or "").encode(), metadata=metadata)
    assert got2 == want2 and type(got2.status) is int and type(got2.body) is bytes


@settings(max_examples=300, deadline=None)
@given(headers=st.none() | st.dictionaries(
           st.sampled_from(["A", "a", "Content-Type", "content-type", "X-B", "x-b"]),
           st.none() | HEADER_VALUE | st.booleans() | st.integers(0, 2), max_size=4),
       multi=st.none() | st.just({}) | st.dictionaries(
           st.sampled_from(["A", "x-b"]), st.lists(HEADER_VALUE, max_size=2), max_size=2))
def test_v1_header_lines_without_multi_value_headers_equal_the_merge(
        headers: dict[str, Any] | None, multi: dict[str, list[str]] | None) -> None:
    """Without multiValueHeaders, parse_v1 takes ``headers``' pairs as they are unless a
    name repeats in another case: the lines (or the error) must be the merge's."""
    out = json.dumps({"statusCode": 200, "headers": headers,
                      "multiValueHeaders": multi}).encode()
    try:
        want: Any = responses._merged_lines(headers, multi)
    except responses.MalformedResponse as e:
        want = e.reason
    try:
        got: Any = list(responses.parse_v1(out, decode_base64=False).headers.items)
    except responses.MalformedResponse as e:
        got = e.reason
    assert got == want


@settings(max_examples=300, deadline=None)
@given(epoch=st.floats(0, 253402300799) | st.integers(0, 253402300799))
def test_request_time_needs_no_json_escaping(epoch: float) -> None:
    """rest_payload writes requestTime without escaping it: every time text, any date,
    must be what json.dumps writes between its quotes."""
    from twistgw.variables import request_time
    text = request_time(epoch)
    assert json.dumps(text) == f'"{text}"'


_FIELD = st.binary(max_size=12).filter(lambda b: b"\r\n" not in b and not b.endswith(b"\r"))


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(_FIELD, min_size=4, max_size=4),
       length=st.one_of(st.integers(0, 20).map(lambda n: b"%d" % n), _FIELD),
       names=st.just([b"Lambda-Runtime-Aws-Request-Id", b"Lambda-Runtime-Deadline-Ms",
                      b"Lambda-Runtime-Invoked-Function-Arn", b"Lambda-Runtime-Trace-Id"])
       | st.lists(st.sampled_from([
           b"Lambda-Runtime-Aws-Request-Id", b"Lambda-Runtime-Deadline-Ms",
           b"Lambda-Runtime-Invoked-Function-Arn", b"Lambda-Runtime-Trace-Id",
           b"lambda-runtime-trace-id", b"Lambda-Runtime-Trace-Id ", b"X-Other",
           b"Twistgw-Ahead"]),
           min_size=4, max_size=5),
       status=st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 200 Fine", b"HTTP/1.0 200 OK"]),
       body=st.binary(max_size=24))
def test_an_event_read_by_position_equals_the_parsed_response(
        fields: list[bytes], length: bytes, names: list[bytes], status: bytes,
        body: bytes) -> None:
    """The worker's positional read of the gateway's event head (``_Client.event``) gives
    what the general parser gives, for heads in the gateway's layout and around it."""
    lines = [status, b"Content-Type: application/json", b"Content-Length: " + length]
    lines += [name + b": " + value for name, value in zip(names, [*fields, b"x"], strict=False)]
    answer = b"\r\n".join(lines) + b"\r\n\r\n" + body + b"GET"  # + the next answer's start
    outcomes = []
    for read in (worker._Client.event, worker._Client.response):
        client, server = _client(answer)
        server.close()  # the body may run to the close
        try:
            client._fill()  # as exchange() does before reading (event() reads the buffer)
            outcomes.append((read(client), client.buffer))
        except (worker.RuntimeApiGone, ValueError) as e:
            outcomes.append((type(e), b""))
        finally:
            client.sock.close()
    assert outcomes[0] == outcomes[1]


class _Odd:
    """Not JSON serializable."""


@settings(max_examples=300, deadline=None)
@given(doc=JSON | st.builds(lambda d: {"a": [d, _Odd()]}, JSON) | st.floats()
       | st.builds(lambda d: (d, 1), JSON)
       | st.dictionaries(st.integers() | st.floats() | st.booleans() | st.none()
                         | st.tuples(st.integers()), JSON, max_size=3))
def test_the_workers_encoder_equals_json_dumps(doc: Any) -> None:
    """The worker encodes results with json.dumps' C encoder called directly: the same
    text, and the same error, for anything a handler returns."""
    outcomes = []
    for encode in (worker._dumps, json.dumps):
        try:
            outcomes.append(encode(doc))
        except (TypeError, ValueError) as e:
            outcomes.append(f"{type(e).__name__}: {e}")
    assert outcomes[0] == outcomes[1]


def test_the_workers_encoder_detects_cycles_as_json_dumps_does() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference detected"):
        worker._dumps(cycle)
    assert worker._dumps({"after": "a failed one"}) == '{"after": "a failed one"}'
