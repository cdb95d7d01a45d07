"""A lean HTTP/1.1 server for the Lambda Runtime API that workers poll.

Each invoke costs the gateway two Runtime API requests (the worker's ``GET .../next``,
answered with the event, and its ``POST .../response``), so their handling is on the hot
path of every Lambda route.  twisted.web's ``Site`` spent ~270 µs per pair on objects
this API never needs (sessions, forms, a ``Request`` with a dozen header structures);
this protocol parses the fixed shapes Runtime API clients send (the shipped worker,
awslambdaric's libcurl, a custom runtime's ``bootstrap``) and answers with one write.

It speaks enough HTTP/1.1 to be a correct server for those clients: keep-alive (unless
``Connection: close`` or HTTP/1.0), ``Content-Length`` and ``chunked`` bodies,
``Expect: 100-continue``, one request at a time per connection (later bytes wait while a
``/next`` is held).  Everything is bounded: the request head at 64 KiB (else 431 and
close), a body beyond Lambda's 6 MB plus 64 KiB is dropped as it arrives and the
request marked ``too_large``, malformed framing gets 400 and the connection closed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import protocol

from twistgw.netio import DirectWriter

__all__ = ["RuntimeRequest", "RuntimeApiProtocol", "RuntimeApiFactory", "MAX_HEAD",
           "MAX_BODY"]

#: The request line and headers together.
MAX_HEAD = 64 * 1024
#: Lambda's 6 MB payload limit plus room for framing; beyond it the body is dropped.
MAX_BODY = 6 * 1024 * 1024 + 65536

_REASONS = {100: b"Continue", 200: b"OK", 202: b"Accepted", 400: b"Bad Request",
            404: b"Not Found", 410: b"Gone", 413: b"Payload Too Large",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error"}


class RuntimeRequest:
    """One parsed request; answered once with :meth:`respond`."""

    __slots__ = (
        "_channel",
        "_keep_alive",
        "body",
        "finished",
        "headers",
        "long_poll",
        "method",
        "on_lost",
        "path",
        "too_large",
    )

    def __init__(self, channel: RuntimeApiProtocol, method: bytes, path: bytes,
                 headers: dict[bytes, bytes], keep_alive: bool) -> None:
        self.method = method
        self.path = path
        #: Header names lower-cased; a repeated header keeps its last value.
        self.headers = headers
        self.body = b""
        self.too_large = False
        self.finished = False
        self._channel: RuntimeApiProtocol | None = channel
        self._keep_alive = keep_alive
        #: Called (once) if the connection closes before the request is answered.
        self.on_lost: Callable[[], None] | None = None
        #: Set by a handler that holds the request (a ``/next`` poll): answers to the
        #: requests pipelined before it then leave with its answer (see ``_flush``).
        self.long_poll = False

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name)

    @property
    def transport(self) -> Any:
        return self._channel.transport if self._channel is not None else None

    @property
    def connected(self) -> bool:
        return self._channel is not None and not self.finished

    def respond(self, status: int, body: bytes,
                headers: Iterable[tuple[bytes, bytes]] = (), raw_headers: bytes = b"") -> None:
        """Send the answer in one write (JSON body); a closed connection ignores it.

        :param raw_headers: more header lines, already formatted (each ending CRLF).
        """
        channel = self._channel
        if self.finished or channel is None:
            return
        self.finished = True
        if headers:
            for pair in headers:
                raw_headers += b"%s: %s\r\n" % pair
        if not self._keep_alive:
            raw_headers += b"Connection: close\r\n"
        channel.answered(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n%s\r\n%s" % (
                             status, _REASONS.get(status, b"Status"), len(body), raw_headers,
                             body), self._keep_alive)

    def send(self, data: bytes) -> bool:
        """Answer with ``data``, a complete response written by the caller (head and
        body), if the connection stays open after it; False (nothing sent) otherwise, and
        the caller uses :meth:`respond`, which adds ``Connection: close``."""
        channel = self._channel
        if not self._keep_alive:
            return False
        if not self.finished and channel is not None:
            self.finished = True
            channel.answered(data, True)
        return True

    def respond_json(self, status: int, doc: Any) -> None:
        self.respond(status, json.dumps(doc).encode("utf-8"))

    def lost(self) -> None:
        self._channel = None
        callback, self.on_lost = self.on_lost, None
        if not self.finished and callback is not None:
            callback()


class RuntimeApiProtocol(protocol.Protocol):
    """One client connection to a worker's Runtime API endpoint."""

    def __init__(self, handle: Callable[[RuntimeRequest], None],
                 fast: Callable[[RuntimeApiProtocol, bytes], bool] | None = None) -> None:
        self.handle = handle
        #: Tried first on a read that starts a request with nothing else pending: takes
        #: the whole read and returns True, or leaves it untouched to the parser.
        self.fast = fast
        self._buffer = b""
        self._request: RuntimeRequest | None = None  # being read or waiting for an answer
        self._reading_body = False
        self._remaining = 0  # Content-Length bytes still to read
        self._chunked = False
        self._chunk_left = -1  # -1: a chunk-size line is next, -2: trailers
        self._parts: list[bytes] = []
        self._size = 0
        self._closing = False
        self._processing = False
        #: Answers go straight to the socket while nothing is queued (twistgw.netio).
        self._writer: DirectWriter | None = None
        #: Answers not sent yet (see :meth:`_flush`).
        self._out: list[bytes] = []
        #: Called (once) when the connection closes, after the bytes it brought were
        #: read (the worker that sends events ahead on it: ``runtime.Worker``).
        self.on_close: Callable[[], None] | None = None

    def connectionMade(self) -> None:
        self._writer = DirectWriter(self.transport)
        # Every answer is small and awaited (an event, a 202): it must leave now, not
        # when Nagle's algorithm lets it.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the client; sent once the input at hand is processed."""
        self._out.append(data)
        if not self._processing:
            self._flush()

    def _flush(self) -> None:
        """Send the queued answers in one write.

        The shipped worker pipelines an invocation's ``/response`` with its next
        ``/next`` poll; when the handler holds that poll (``long_poll``), the 202 for the
        first leaves with the answer to the second (the client is waiting for that one
        anyway): one send and one wake-up of the worker per invoke instead of two.
        """
        out = self._out
        if out:
            self._out = []
            # An answer is one small write on loopback, which the socket nearly always
            # takes whole (what it does not, a multi-MB event, is queued by the
            # transport, and so is everything after it, in order).
            writer = self._writer
            assert writer is not None
            writer.write(out[0] if len(out) == 1 else b"".join(out))

    # -- input -------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._buffer:
            self._buffer += data
        elif self._request is None and self.fast is not None and self.fast(self, data):
            return
        else:
            self._buffer = data
        self._process()

    def hold(self, request: RuntimeRequest, answer: bytes) -> None:
        """For a fast lane: the answer to a request it took (sent with the next one)
        and ``request``, the one that follows it in the same read, made current."""
        self._out.append(answer)
        self._request = request

    def _process(self) -> None:
        self._processing = True
        try:
            while not self._closing:
                if self._reading_body:
                    if not self._read_body():
                        return
                    continue
                if self._request is not None:
                    return  # one request at a time: the rest waits for the answer
                if not self._read_head():
                    return
        finally:
            self._processing = False
            request = self._request
            if request is None or not request.long_poll or self._reading_body:
                self._flush()
            # else a pipelined /next poll is held: earlier answers wait for its answer

    def _read_head(self) -> bool:
        """Parse one request head; a ``Content-Length`` body already in the buffer (the
        usual case: a worker writes head and body at once) is taken and the request
        dispatched in the same call."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._refuse(431, "request head too large")
            return False
        if end > MAX_HEAD:
            self._refuse(431, "request head too large")
            return False
        lines = buffer[:end].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._refuse(400, "malformed request line")
            return False
        method, path, version = parts
        headers: dict[bytes, bytes] = {}
        for i in range(1, len(lines)):
            name, sep, value = lines[i].partition(b":")
            if not sep or not name or name != name.strip():
                self._refuse(400, "malformed header")
                return False
            headers[name.lower()] = value.strip()
        connection = headers.get(b"connection")
        if connection is None:
            keep_alive = version == b"HTTP/1.1"
        else:
            connection = connection.lower()
            keep_alive = (version == b"HTTP/1.1" and connection != b"close") or \
                connection == b"keep-alive"
        if b"?" in path:
            path = path.split(b"?", 1)[0]
        request = RuntimeRequest(self, method, path, headers, keep_alive)
        self._request = request
        length = headers.get(b"content-length")
        encoding = headers.get(b"transfer-encoding")
        if encoding:
            if encoding.lower() != b"chunked" or length is not None:
                self._refuse(400, "unsupported transfer-encoding")
                return False
            self._chunked, self._chunk_left = True, -1
        elif length is not None:
            if not length.isdigit():
                self._refuse(400, "bad content-length")
                return False
            size = int(length)
            start = end + 4
            if size <= MAX_BODY and len(buffer) - start >= size \
                    and b"expect" not in headers:
                request.body = buffer[start:start + size]
                self._buffer = buffer[start + size:]
                self.handle(request)
                return True
            self._chunked, self._remaining = False, size
        else:
            self._buffer = buffer[end + 4:]
            self.handle(request)
            return True
        self._buffer = buffer[end + 4:]
        self._parts, self._size, self._reading_body = [], 0, True
        if headers.get(b"expect", b"").lower() == b"100-continue" and \
                self.transport is not None:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_BODY:
            assert self._request is not None
            self._request.too_large = True
            self._parts = []
        elif data:
            self._parts.append(data)

    def _read_body(self) -> bool:
        """Consume body bytes; True once the body is complete (and dispatched)."""
        if not self._chunked:
            take = self._buffer[:self._remaining]
            self._buffer = self._buffer[len(take):]
            self._remaining -= len(take)
            self._keep(take)
            if self._remaining:
                return False
            return self._body_done()
        while True:
            if self._chunk_left == -1:  # a chunk-size line
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > 1024:
                        self._refuse(400, "bad chunk size")
                    return False
                size_text = self._buffer[:end].split(b";", 1)[0].strip()
                self._buffer = self._buffer[end + 2:]
                try:
                    self._chunk_left = int(size_text, 16)
                except ValueError:
                    self._refuse(400, "bad chunk size")
                    return False
                if self._chunk_left == 0:
                    self._chunk_left = -2  # trailers follow
            if self._chunk_left == -2:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    return False
                line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
                if line:
                    continue  # a trailer field: ignored
                return self._body_done()
            if self._chunk_left > 0:
                take = self._buffer[:self._chunk_left]
                self._buffer = self._buffer[len(take):]
                self._chunk_left -= len(take)
                self._keep(take)
                if self._chunk_left:
                    return False
            if len(self._buffer) < 2:
                return False
            if self._buffer[:2] != b"\r\n":
                self._refuse(400, "bad chunk framing")
                return False
            self._buffer = self._buffer[2:]
            self._chunk_left = -1

    def _body_done(self) -> bool:
        assert self._request is not None
        self._request.body = b"".join(self._parts)
        self._parts, self._reading_body = [], False
        self._dispatch()
        return True

    def _dispatch(self) -> None:
        request = self._request
        assert request is not None
        self.handle(request)

    # -- output ------------------------------------------------------------------------

    def answered(self, data: bytes, keep_alive: bool) -> None:
        """Called by the current request's :meth:`RuntimeRequest.respond`."""
        self._request = None
        if not keep_alive:
            self._out.append(data)
            self._closing = True
            self._flush()
            assert self.transport is not None
            self.transport.loseConnection()
            return
        if self._processing:
            self._out.append(data)
            return  # the loop reads on and flushes
        out = self._out
        if self._buffer:
            out.append(data)
            self._process()
        elif out:  # _flush(), inline: the 202 held for the event that answers a poll
            out.append(data)
            self._out = []
            writer = self._writer
            assert writer is not None
            writer.write(b"".join(out))
        else:
            writer = self._writer
            assert writer is not None
            writer.write(data)

    def _refuse(self, status: int, problem: str) -> None:
        body = json.dumps({"errorMessage": problem, "errorType": "InvalidRequest"}).encode()
        self._closing = True
        self._buffer = b""
        self._out.append(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (status, _REASONS.get(status, b"Error"), len(body), body))
        self._flush()
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self._out = []
        request, self._request = self._request, None
        if request is not None:
            request.lost()
        callback, self.on_close = self.on_close, None
        if callback is not None:
            callback()


class RuntimeApiFactory(protocol.Factory):
    """Builds :class:`RuntimeApiProtocol` connections that hand requests to ``handle``."""

    noisy = False

    def __init__(self, handle: Callable[[RuntimeRequest], None],
                 fast: Callable[[RuntimeApiProtocol, bytes], bool] | None = None) -> None:
        self.handle = handle
        self.fast = fast

    def buildProtocol(self, addr: Any) -> RuntimeApiProtocol:
        return RuntimeApiProtocol(self.handle, self.fast)
