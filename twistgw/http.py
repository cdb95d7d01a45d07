"""The listeners' HTTP/1.1 server: a lean, strict protocol on llhttp (``httptools``).

DESIGN.md planned the listeners on twisted.web with a hardened channel.  That worked, but
twisted.web's server objects cost more CPU per request than the whole gateway pipeline
on a MOCK route (bench/RESULTS.md, "lean HTTP server"): ``HTTPChannel`` parses line by
line in Python, each request builds a ``Request`` with a dozen structures and two
``Headers`` tables, and the response went back through ``setHeader``/``write``/``finish``.
This module replaces all of it with one protocol per connection that feeds whatever it
reads to llhttp (Node.js's parser, strict mode: it already refuses CL+TE, duplicate
``Content-Length``, bad chunk sizes, obs-fold, bare CR/LF/NUL, invalid methods and
versions), keeps only what the gateway needs (method, target, version, header pairs as
sent, body) and writes each response with one write (straight to the socket while
nothing is queued, see :mod:`twistgw.netio`): status line, headers, a per-second cached
``Date`` and the body.

What llhttp leaves to us, checked here before any application code runs:

* limits: an absolute header deadline (408), request line length (414), header count and
  bytes (431, also for an unterminated line that grows too long), the body cap (413, on
  ``Content-Length`` before any body byte or ``100 Continue``, on chunked bodies as soon
  as they cross it), the listener's connection cap, an idle timeout;
* framing: exactly one ``Host`` on HTTP/1.1 (at most one on 1.0), ``Transfer-Encoding``
  only as ``chunked`` and only on HTTP/1.1, HTTP/1.0 and 1.1 only, origin-form (or ``*``)
  targets only, header names with ``_`` dropped or refused (``underscore_headers``).

Every refusal is a complete ``Connection: close`` response (:meth:`HardenedHTTPChannel.reject`).
Pipelined requests are answered in order; at most :data:`MAX_PIPELINED` wait behind the one
being answered, and while one is answered further input is buffered up to
:data:`READ_AHEAD` bytes, then reading pauses.  Responses the client does not read pause
reading too (the channel is the transport's producer), so nothing grows without bound.
"""

from __future__ import annotations

import json
import time
import typing
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from twisted.internet import tcp
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.web.http import RESPONSES, datetimeToString
from zope.interface import implementer

from twistgw.limits import Limits
from twistgw.models import TlsInfo
from twistgw.netio import DirectWriter

if TYPE_CHECKING:
    from twisted.internet.base import DelayedCall
    from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime, ITransport
    from twisted.python.failure import Failure

__all__ = [
    "MAX_PIPELINED",
    "READ_AHEAD",
    "GatewaySite",
    "Handover",
    "HardenedHTTPChannel",
    "HttpRequest",
    "encode_headers",
    "http_date",
    "limits_error_body",
    "tls_info_of",
]

#: Complete requests that may wait behind the one being answered.  Input is parsed a few
#: requests at a time, so this is a safety net: beyond it the queued requests are
#: answered, the last with ``Connection: close``, and the rest is not read (RFC 9112
#: §9.3.2: clients retry unanswered requests).
MAX_PIPELINED: Final = 16
#: Bytes read ahead (not parsed) while a request is being answered; then reading pauses.
READ_AHEAD: Final = 16384
#: Request heads (blank lines) given to the parser at a time (see ``_run_queue``).
_HEADS_PER_FEED: Final = 8


class _TimeSource(typing.Protocol):
    """The part of ``IReactorTime`` the site uses."""

    def seconds(self) -> float:
        """Return the current time in seconds."""
        ...


_DEFAULT_LIMITS: Final = Limits()

#: Reason phrases of the statuses this layer produces (RFC 9110 wording, except 413,
#: which keeps the phrase Amazon's front door and Twisted use).
_REASONS: Final[dict[int, str]] = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
}

_VERSIONS: Final = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY: Final = frozenset((204, 304))
_status_lines: dict[tuple[bytes, int], bytes] = {}
_date_cache: list[Any] = [-1, b""]


def limits_error_body(status: int, max_body_bytes: int = _DEFAULT_LIMITS.max_body_bytes) -> bytes:
    """Return the body of an error response produced by this layer.

    413 copies Amazon API Gateway's front door byte for byte (clients written against AWS
    match on it); every other status uses API Gateway's JSON error shape.

    :param status: one of 400, 408, 413, 414 or 431.
    :param max_body_bytes: the configured body cap, quoted by the 413 text.
    :returns: the response body.
    """
    if status == 413:
        return f"HTTP content length exceeded {max_body_bytes} bytes.".encode("ascii")
    return json.dumps({"message": _REASONS[status]}, separators=(",", ":")).encode("ascii")


def http_date(now: float | None = None) -> bytes:
    """The ``Date`` header value for ``now`` (default: the current time), formatted once
    per second."""
    second = int(time.time() if now is None else now)
    cached = _date_cache
    if cached[0] != second:
        cached[0], cached[1] = second, datetimeToString(second)
    return cached[1]  # type: ignore[no-any-return]


def _error_response(status: int, max_body_bytes: int) -> bytes:
    """Serialise a complete ``Connection: close`` error response.

    :param status: one of the statuses in :data:`_REASONS`.
    :param max_body_bytes: the configured body cap (for the 413 text).
    """
    body = limits_error_body(status, max_body_bytes)
    content_type = b"text; charset=utf-8" if status == 413 else b"application/json"
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status].encode("ascii")),
            b"Date: %s\r\n" % (http_date(),),
            b"Content-Type: %s\r\n" % (content_type,),
            b"Content-Length: %d\r\n" % (len(body),),
            b"Connection: close\r\n\r\n",
            body,
        )
    )


#: An HTTP/1.0 client keeps the connection only when the response says so (RFC 9112 §C.2.2).
_KEEP_ALIVE_10: Final = b"Connection: keep-alive\r\n"


def _status_line(version: bytes, status: int) -> bytes:
    line = _status_lines.get((version, status))
    if line is None:
        reason = RESPONSES.get(status, b"Unknown Status")
        line = b"%s %d %s\r\n" % (version, status, reason)
        if len(_status_lines) < 1024:
            _status_lines[(version, status)] = line
    return line


def encode_headers(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``Name: value`` lines (CRLF-terminated) for :meth:`HttpRequest.respond`; the caller
    guarantees names are tokens and values free of CR, LF and NUL."""
    return b"".join([name + b": " + value + b"\r\n" for name, value in pairs])


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (a refusal, or too many pipelined
    requests); the reason is on the channel."""


class HttpRequest:
    """One parsed request, answered once with :meth:`respond` (or handed over).

    :ivar method: e.g. ``b"GET"``.
    :ivar target: the request-target as sent (origin-form or ``*``).
    :ivar version: ``b"HTTP/1.1"`` or ``b"HTTP/1.0"``.
    :ivar headers: ``(name, value)`` pairs as received, in order, decoded as latin-1
        (names keep the client's spelling; REST Lambda events show them).
    :ivar header_index: lower-cased name -> values in order (do not modify).
    :ivar body: the whole body (bounded by ``max_body_bytes``).
    :ivar keep_alive: whether the connection may stay open after the response.
    :ivar on_lost: called once if the connection closes before the response is written
        (the gateway cancels the pipeline and with it any integration call).
    :ivar finished: the response was written (or the request abandoned).
    """

    __slots__ = ("_channel", "body", "finished", "header_index", "headers", "keep_alive",
                 "method", "on_lost", "target", "version")

    def __init__(self, channel: HardenedHTTPChannel, method: bytes, target: bytes,
                 version: bytes, headers: list[tuple[str, str]],
                 header_index: dict[str, list[str]], keep_alive: bool) -> None:
        self._channel = channel
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.header_index = header_index
        self.body = b""
        self.keep_alive = keep_alive
        self.on_lost: Callable[[], object] | None = None
        self.finished = False

    @property
    def channel(self) -> HardenedHTTPChannel:
        """The connection this request arrived on."""
        return self._channel

    @property
    def peer(self) -> Any:
        """The client's address (``IAddress``)."""
        return self._channel.peer

    @property
    def host(self) -> Any:
        """Our address on this connection (``IAddress``)."""
        return self._channel.host

    @property
    def tls_info(self) -> TlsInfo | None:
        """What the TLS layer knows about this connection, or ``None`` over plain TCP."""
        return self._channel.tls_info

    @property
    def addresses(self) -> tuple[str, int, int]:
        """``(client ip, client port, our port)``; ``("", 0, 0)`` parts for transports
        without them (UNIX sockets)."""
        return self._channel.addresses

    @property
    def connected(self) -> bool:
        """The response can still be written."""
        return not self.finished and self._channel.transport is not None

    def respond(self, status: int, header_lines: bytes, body: bytes, *,
                date: bool = True) -> None:
        """Write the response in one write.

        :param status: the status code.
        :param header_lines: ``Name: value\\r\\n`` lines (see :func:`encode_headers`),
            without ``Content-Length`` and ``Connection``, which this layer writes.
        :param body: the body; not sent for ``HEAD`` and for 204 and 304.
        :param date: add a ``Date`` header (pass ``False`` when the lines carry one).
        """
        self._channel._respond(self, status, header_lines, body, date)


@implementer(IHalfCloseableProtocol, IPushProducer)
class HardenedHTTPChannel(Protocol):
    """One HTTP/1.1 connection of a :class:`GatewaySite` (see the module docstring).

    :ivar persistent: cleared by a drain: the next response carries ``Connection: close``
        and the connection closes after it.
    :ivar reject_linger: seconds a rejected client has to read the error response and
        close; after that the connection is aborted.
    """

    reject_linger: float = 5.0
    _log = Logger()
    #: Response writes (set when the connection is made).
    _writer: DirectWriter

    def __init__(self, site: GatewaySite) -> None:
        self._site = site
        self._handler = site.handler
        limits = site.limits
        self.limits = limits
        self._clock: Any = site.clock
        self._header_timeout = limits.header_timeout
        self._idle_timeout = limits.idle_timeout
        self._max_request_line = limits.max_request_line
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._max_body_bytes = limits.max_body_bytes
        self._check_underscore = limits.underscore_headers != "allow"
        self._drop_underscore = limits.underscore_headers == "drop"
        self._parser = HttpRequestParser(self)
        self.persistent = True
        self._queue: deque[HttpRequest] = deque()
        self._current: HttpRequest | None = None
        self._running = False
        self._buffer = b""
        self._read_paused = False
        self._write_paused = False
        self._rejected = False
        self._stop_status = 0  # set by a callback before raising _Stop
        self._discarding = False
        self._upgraded: IProtocol | None = None
        self._header_call: DelayedCall | None = None
        self._idle_call: DelayedCall | None = None
        self._abort_call: DelayedCall | None = None
        self._last_active = 0.0
        self._peer: Any = None
        self._host: Any = None
        self._tls: Any = self  # "not looked up yet"
        self._slot = False
        # The request being parsed.
        self._in_head = False
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_len = 0
        self._request: HttpRequest | None = None

    # -- addresses and TLS -------------------------------------------------------------

    @property
    def peer(self) -> Any:
        """The client's address, cached (it cannot change on a connection)."""
        peer = self._peer
        if peer is None:
            transport: Any = self.transport
            peer = self._peer = transport.getPeer()
        return peer

    @property
    def host(self) -> Any:
        """Our address on this connection, cached like :attr:`peer`."""
        host = self._host
        if host is None:
            transport: Any = self.transport
            host = self._host = transport.getHost()
        return host

    @property
    def addresses(self) -> tuple[str, int, int]:
        """``(client ip, client port, our port)``, computed once per connection."""
        found = self._addresses
        if found is None:
            peer, host = self.peer, self.host
            found = self._addresses = (getattr(peer, "host", ""), getattr(peer, "port", 0),
                                       getattr(host, "port", 0))
        return found

    _addresses: tuple[str, int, int] | None = None

    @property
    def tls_info(self) -> TlsInfo | None:
        """The connection's :class:`TlsInfo` when the transport is TLS (``ISSLTransport``,
        e.g. a ``TLSMemoryBIOProtocol`` a listener wrapper put around the site), read once
        per connection at its first request (after the handshake), else ``None``."""
        tls = self._tls
        if tls is self:
            transport = self.transport
            tls = None
            if transport is not None and ISSLTransport.providedBy(transport):
                tls = tls_info_of(transport)
            self._tls = tls
        return tls  # type: ignore[no-any-return]

    @property
    def max_body_bytes(self) -> int:
        """The request body cap in force on this connection."""
        return self._max_body_bytes

    # -- connection lifecycle ------------------------------------------------------------

    def connectionMade(self) -> None:
        """Take a slot of the listener's connection cap, register as the transport's
        producer (a client that does not read its responses pauses our reading) and start
        the idle timer."""
        self._site._connection_opened(self)
        self._slot = True
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self._registered = True
        self._writer = DirectWriter(transport)
        self._last_active = self._clock.seconds()
        self._idle_call = self._clock.callLater(self._idle_timeout, self._idle_check)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Stop the timers, give the slot back and abandon requests not answered."""
        upgraded = self._upgraded
        self._cancel_timers()
        self._release_slot()
        current, self._current = self._current, None
        self._queue.clear()
        self._buffer = b""
        if upgraded is not None:
            upgraded.connectionLost(reason)  # type: ignore[arg-type]
        if current is not None and not current.finished:
            current.finished = True
            on_lost, current.on_lost = current.on_lost, None
            if on_lost is not None:
                on_lost()
        self.transport = None

    def _release_slot(self) -> None:
        if self._slot:
            self._slot = False
            self._site._connection_closed(self)

    def _cancel_timers(self) -> None:
        for name in ("_header_call", "_idle_call", "_abort_call"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None and call.active():
                call.cancel()

    @property
    def idle(self) -> bool:
        """No request is being received or answered and nothing is buffered."""
        return (self._current is None and not self._queue and not self._in_head
                and not self._buffer)

    @property
    def upgraded(self) -> bool:
        """The connection left HTTP (:class:`Handover`)."""
        return self._upgraded is not None

    def close_when_idle(self) -> None:
        """Drain: close now when idle, else after the response being answered."""
        self.persistent = False
        if self.idle and self.transport is not None:
            self._close()

    # -- producer (flow control of our writes) -------------------------------------------

    def pauseProducing(self) -> None:
        """The transport's write buffer is full: stop reading until it drains."""
        self._write_paused = True
        self._pause_reading()

    def resumeProducing(self) -> None:
        """The client read its responses: read again."""
        self._write_paused = False
        if len(self._buffer) <= READ_AHEAD:
            self._resume_reading()

    def stopProducing(self) -> None:
        """The transport is going away; ``connectionLost`` cleans up."""

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            transport: Any = self.transport
            transport.pauseProducing()

    def _resume_reading(self) -> None:
        if self._read_paused and not self._write_paused and self.transport is not None:
            self._read_paused = False
            transport: Any = self.transport
            transport.resumeProducing()

    # -- input ---------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Parse ``data`` and answer what it completes (in order).

        The header deadline starts at the end of a read that leaves a request head
        incomplete, which is "from the first byte" to within one read; a head that arrives
        in one read (the normal case) costs no timer.

        :param data: bytes read from the transport.
        """
        if self._upgraded is not None:
            self._upgraded.dataReceived(data)
            return
        if self._rejected or self._discarding:
            return
        self._last_active = self._clock.seconds()
        if self._current is not None or self._queue or self._running:
            # Answering a request: keep the bytes for later, within READ_AHEAD.
            self._buffer += data
            if len(self._buffer) > READ_AHEAD:
                self._pause_reading()
            return
        self._buffer = data
        self._run_queue()

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as e:
            self._upgrade_pause(data[e.args[0]:])
        except (HttpParserError, _Stop):
            self._parse_stopped()
            return
        if self._in_head:
            self._head_incomplete(data)

    def _upgrade_pause(self, rest: bytes) -> None:
        """llhttp stops after a request asking to switch protocols (``Upgrade`` or
        ``CONNECT``); what follows belongs to the new protocol if the application takes
        the connection (:class:`Handover`), else to the next request (a new parser)."""
        self._parser = HttpRequestParser(self)
        self._buffer = rest + self._buffer

    def _parse_stopped(self) -> None:
        """The parser refused the input (400) or a callback stopped it."""
        status, self._stop_status = self._stop_status or 400, 0
        self._in_head = False
        self._cancel_header_deadline()
        if status == -1:
            # Too many pipelined requests: answer those queued, then close.
            self._discarding = True
            if self._queue:
                self._queue[-1].keep_alive = False
            return
        self._reject_when_idle(status)

    def _head_incomplete(self, data: bytes) -> None:
        """A request head is open at the end of a read: bound the line being received
        (llhttp buffers an unfinished header line without limit) and start the deadline."""
        lf = data.rfind(b"\n")
        if lf >= 0:
            partial = len(data) - lf - 1
        elif self._partial < 0:
            partial = 0  # the head began in this read: its request line, bounded by on_url
        else:
            partial = self._partial + len(data)
        self._partial = partial
        if (len(self._raw_headers) > self._max_headers
                or (self._header_bytes() + partial > self._max_header_bytes
                    and (partial > self._max_request_line or self._raw_headers))):
            # Not the request line: on_url already refused a long target.
            self._reject_when_idle(431)
            return
        if self._header_call is None:
            self._header_call = self._clock.callLater(self._header_timeout,
                                                      self._header_deadline_passed)

    _partial = 0

    # -- llhttp callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A new request starts (its first byte)."""
        if len(self._queue) >= MAX_PIPELINED:
            self._stop_status = -1
            raise _Stop
        self._in_head = True
        self._partial = -1
        self._url = b""
        self._raw_headers = []

    def on_url(self, url: bytes) -> None:
        """(A piece of) the request-target."""
        url = self._url + url if self._url else url
        self._url = url
        if len(url) > self._max_request_line:
            self._stop(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        """One complete header line: kept as is, checked with the whole head (or at the
        end of a read that leaves the head open, see :meth:`_head_incomplete`)."""
        self._raw_headers.append((name, value))

    def _header_bytes(self) -> int:
        """Bytes of the complete header lines of the open head (as counted by the limit)."""
        raw = self._raw_headers
        size = 2 * len(raw)
        for name, value in raw:
            size += len(name) + len(value)
        return size

    def on_headers_complete(self) -> None:
        """Validate the complete head before any body byte is read or 100 sent, and
        decode the headers once (pairs as sent, and the lower-cased index the gateway's
        :class:`~twistgw.models.Headers` would otherwise build again)."""
        self._in_head = False
        if self._header_call is not None:
            self._cancel_header_deadline()
        raw = self._raw_headers
        if len(raw) > self._max_headers:
            self._stop(431)
        pairs: list[tuple[str, str]] = []
        index: dict[str, list[str]] = {}
        size = 2 * len(raw)
        underscore = self._check_underscore
        for name_b, value_b in raw:
            size += len(name_b) + len(value_b)
            if underscore and b"_" in name_b:
                # X_Api_Key vs X-Api-Key: names that differ only by "_" / "-" collide in
                # CGI-style mappings (nginx drops, Envoy rejects).
                if self._drop_underscore:
                    continue
                self._stop(400)
            name = name_b.decode("latin-1")
            value = value_b.decode("latin-1")
            pairs.append((name, value))
            lower = name.lower()
            found = index.get(lower)
            if found is None:
                index[lower] = [value]
            else:
                found.append(value)
        if size > self._max_header_bytes:
            self._stop(431)
        parser = self._parser
        url = self._url
        version = _VERSIONS.get(parser.get_http_version())
        method = parser.get_method()
        if len(method) + len(url) + 10 > self._max_request_line:
            self._stop(414)
        hosts = index.get("host")
        if (version is None
                or (hosts is None and version == b"HTTP/1.1")
                or (hosts is not None and len(hosts) != 1)
                or (url[:1] != b"/" and url != b"*")):
            # Other versions; no Host on HTTP/1.1 or several (RFC 9112 §3.2);
            # absolute-form / authority-form (we are not a proxy, and routing on a URI
            # authority that differs from Host is a classic confusion vector).
            self._stop(400)
        te = index.get("transfer-encoding")
        if te is not None and (version != b"HTTP/1.1" or len(te) != 1
                               or te[0].lower() != "chunked"):
            # HTTP/1.0 framing is faulty with it (RFC 9112 §6.1); other codings we do
            # not speak.
            self._stop(400)
        cl = index.get("content-length")
        length = int(cl[0]) if cl is not None else 0  # llhttp allows digits only, once
        if length > self._max_body_bytes:
            self._stop(413)
        # llhttp's rule: HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
        # "Connection: keep-alive" (ApacheBench -k, older proxies and health checkers),
        # which the response then confirms (_KEEP_ALIVE_10).
        keep_alive = parser.should_keep_alive()
        self._request = HttpRequest(self, method, url, version, pairs, index, keep_alive)
        self._body = []
        self._body_len = 0
        if (version == b"HTTP/1.1" and (length or te is not None) and self._current is None
                and not self._queue):
            expect = index.get("expect")
            if expect is not None and expect[-1].lower() == "100-continue":
                self._writer.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        """A piece of the (de-chunked) body."""
        size = self._body_len + len(body)
        self._body_len = size
        if size > self._max_body_bytes:
            self._stop(413)
        self._body.append(body)

    def on_message_complete(self) -> None:
        """The request is complete: queue it."""
        request = self._request
        self._request = None
        if request is None:
            return
        body = self._body
        if body:
            request.body = body[0] if len(body) == 1 else b"".join(body)
            self._body = []
        self._queue.append(request)

    def _stop(self, status: int) -> typing.NoReturn:
        self._stop_status = status
        raise _Stop

    # -- dispatch and output -------------------------------------------------------------

    def _run_queue(self) -> None:
        """Hand queued requests to the application, one at a time, in order."""
        if self._running:
            return
        self._running = True
        try:
            while self.transport is not None:
                if self._current is not None:
                    return
                queue = self._queue
                if queue:
                    request = self._current = queue.popleft()
                    self._handler(request)
                    continue
                if self._pending_reject:
                    self.reject(self._pending_reject)
                    return
                if self._rejected or self._discarding or self._upgraded is not None:
                    return
                data = self._buffer
                if not data:
                    if self._read_paused:
                        self._resume_reading()
                    return
                # Parse at most _HEADS_PER_FEED request heads at a time: llhttp cannot
                # stop between requests, so a burst of pipelined requests is cut up here
                # and the queue never holds more than a few (they are answered between
                # two pieces, or the rest waits in the buffer).
                cut = 0
                if len(data) > 256:
                    for _ in range(_HEADS_PER_FEED):
                        cut = data.find(b"\r\n\r\n", cut)
                        if cut < 0:
                            break
                        cut += 4
                    else:
                        if cut < len(data):
                            self._buffer = data[cut:]
                            self._feed(data[:cut])
                            continue
                self._buffer = b""
                self._feed(data)
        finally:
            self._running = False

    _pending_reject = 0

    def _respond(self, request: HttpRequest, status: int, header_lines: bytes,
                 body: bytes, date: bool) -> None:
        if request.finished:
            return
        request.finished = True
        request.on_lost = None
        if request is not self._current:
            return
        transport: Any = self.transport
        if transport is None:
            return
        close = not (request.keep_alive and self.persistent)
        head = b"%s%s%sContent-Length: %d\r\n%s\r\n" % (
            _status_line(request.version, status),
            b"Date: " + http_date() + b"\r\n" if date else b"",
            header_lines, len(body),
            b"Connection: close\r\n" if close
            else _KEEP_ALIVE_10 if request.version == b"HTTP/1.0" else b"")
        if body and status not in _NO_BODY and request.method != b"HEAD":
            head += body
        self._writer.write(head)
        self._current = None
        if close:
            self._discarding = True
            self._queue.clear()
            self._buffer = b""
            self._close()
            return
        if not self._running:
            # Answered later than the read that completed it: idle from now.
            self._last_active = self._clock.seconds()
        if self._idle_call is None:
            self._idle_call = self._clock.callLater(self._idle_timeout, self._idle_check)
        if not self._running and (self._queue or self._buffer or self._pending_reject
                                  or self._read_paused):
            self._run_queue()

    # -- timers and refusals -------------------------------------------------------------

    def _idle_check(self) -> None:
        """The idle timer: close a connection with nothing received for ``idle_timeout``
        (one timer per connection, re-armed for the remainder instead of reset per read)."""
        self._idle_call = None
        if self.transport is None or self._upgraded is not None or self._rejected:
            return
        if self._current is not None:
            return  # re-armed when the response is written
        remaining = self._last_active + self._idle_timeout - self._clock.seconds()
        if remaining > 0:
            self._idle_call = self._clock.callLater(remaining, self._idle_check)
            return
        self._log.debug("Closing idle connection from {peer}", peer=str(self.peer))
        self._close()
        self._abort_call = self._clock.callLater(self.reject_linger, self._abort)

    def _header_deadline_passed(self) -> None:
        """The request head did not arrive within ``header_timeout``: answer 408."""
        self._header_call = None
        transport: Any = self.transport
        if transport is not None and not getattr(transport, "disconnecting", False):
            self._log.debug("Request head not received within {timeout}s from {peer}",
                            timeout=self._header_timeout, peer=str(self.peer))
            self._in_head = False
            self._reject_when_idle(408)

    def _cancel_header_deadline(self) -> None:
        call, self._header_call = self._header_call, None
        if call is not None and call.active():
            call.cancel()

    def _reject_when_idle(self, status: int) -> None:
        """Refuse now, or after the requests before this one are answered; either way
        nothing more is read."""
        self._discarding = True
        self._buffer = b""
        if self._current is None and not self._queue:
            self.reject(status)
        else:
            self._pending_reject = status

    def readConnectionLost(self) -> None:
        """The client closed its sending side (``shutdown(SHUT_WR)``, ``nc -N``).

        After a rejection, or with no complete request in hand, close once our output is
        flushed (answers computed at once, MOCK routes and refusals, are already written by
        then).  With a request still being answered (waiting on an integration), the client
        is taken as gone, as nginx does by default: the connection is aborted, which
        cancels the pipeline and with it the backend request.
        """
        transport: Any = self.transport
        if transport is None:
            return
        upgraded = self._upgraded
        if upgraded is not None:
            if IHalfCloseableProtocol.providedBy(upgraded):
                upgraded.readConnectionLost()
            else:
                transport.loseConnection()
            return
        if self._rejected or (self._current is None and not self._queue):
            self._close()
            return
        transport.abortConnection()

    def writeConnectionLost(self) -> None:
        """Our side finished sending (after a rejection): keep draining input until the
        client closes or ``reject_linger`` aborts."""

    def _close(self) -> None:
        """Close once the output is flushed.  The channel stops being the transport's
        producer first: a TLS transport does not send its close while one is registered."""
        transport: Any = self.transport
        if transport is not None:
            self._unregister()
            transport.loseConnection()

    def _unregister(self) -> None:
        """Stop being the transport's producer (once)."""
        if self._registered:
            self._registered = False
            transport: Any = self.transport
            transport.unregisterProducer()

    _registered = False

    def _abort(self) -> None:
        self._abort_call = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def reject(self, status: int) -> None:
        """Answer ``status`` with a complete error response and close the connection.

        The connection is half-closed on plain TCP (FIN after the response, further
        input read and discarded) so that a client still sending (a body over the cap,
        pipelined requests) reads our answer instead of a reset: closing a socket with
        unread input makes the kernel send RST, which can destroy the response in
        flight.  Other transports (TLS) are closed with ``loseConnection``.  Either way
        the connection is aborted if it is still open ``reject_linger`` seconds later.
        Only the first call on a connection has an effect.

        :param status: 400, 408, 413, 414 or 431.
        """
        if self._rejected:
            return
        self._rejected = True
        self._in_head = False
        self._buffer = b""
        self._cancel_header_deadline()
        self._site.rejected_requests[status] += 1
        transport: Any = self.transport
        if transport is None:
            return
        transport.write(_error_response(status, self._max_body_bytes))
        self._unregister()
        if isinstance(transport, tcp.Connection):
            transport.loseWriteConnection()
            transport.resumeProducing()
        else:
            transport.loseConnection()
        if self._abort_call is None:
            self._abort_call = self._clock.callLater(self.reject_linger, self._abort)

    # -- protocol switch -----------------------------------------------------------------

    def _hand_over(self, protocol: IProtocol, head: bytes) -> None:
        """Give the connection to ``protocol`` (see :class:`Handover`)."""
        transport: Any = self.transport
        self._cancel_timers()
        self._upgraded = protocol
        self._site._connection_upgraded(self)
        buffered, self._buffer = self._buffer, b""
        self._queue.clear()
        request, self._current = self._current, None
        if request is not None:
            request.finished = True
            request.on_lost = None
        self._unregister()
        if self._read_paused:
            self._read_paused = self._write_paused = False
            transport.resumeProducing()
        protocol.makeConnection(transport)
        if head:
            protocol.dataReceived(head)
        if buffered:
            protocol.dataReceived(buffered)


class Handover:
    """A connection leaving HTTP for another protocol (``101 Switching Protocols``).

    The server builds one when a response carries ``upgrade`` (see
    :class:`~twistgw.models.Response`); the plugin calls :meth:`take` with the protocol
    that owns the connection from then on.  The channel stays the transport's protocol
    and forwards bytes and the close to it, so the listener's connection count stays
    right; its HTTP timers stop (the new protocol bounds its own lifetime).
    """

    def __init__(self, request: HttpRequest) -> None:
        self._request = request

    @property
    def request_head(self) -> bytes:
        """The request line and header section as received (for protocol libraries,
        such as autobahn, that parse the opening handshake themselves)."""
        request = self._request
        lines = [b"%s %s HTTP/1.1" % (request.method, request.target)]
        lines += [(k + ": " + v).encode("latin-1") for k, v in request.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    @property
    def peer(self) -> IAddress:
        """The client's address."""
        address: IAddress = self._request.peer
        return address

    def take(self, protocol: IProtocol, *, replay_head: bool = False) -> None:
        """Give the connection to ``protocol`` (``makeConnection`` is called on it).

        :param replay_head: feed :attr:`request_head` to ``protocol.dataReceived`` first.
        :raises ConnectionError: the client is already gone.
        """
        request = self._request
        channel = request.channel
        if not request.connected or channel._current is not request:
            raise ConnectionError("the client closed the connection before the upgrade")
        channel._hand_over(protocol, self.request_head if replay_head else b"")


def _asn1_time(value: Any) -> str:
    return f"{value:%b} {value.day:2d} {value:%H:%M:%S %Y} GMT"


def tls_info_of(transport: Any) -> TlsInfo:
    """A :class:`~twistgw.models.TlsInfo` from a TLS transport (``ISSLTransport``).

    The client certificate (``getPeerCertificate()``) gives the PEM, the subject and
    issuer DNs (RFC 4514, e.g. ``CN=client,O=Example``), the serial number (decimal)
    and the validity in AWS's ``May 28 12:30:02 2019 GMT`` form.
    """
    from cryptography.hazmat.primitives.serialization import Encoding

    protocol = cipher = ""
    server_name: str | None = None
    conn = getattr(transport, "_tlsConnection", None)
    if conn is not None:
        protocol = conn.get_protocol_version_name() or ""
        cipher = conn.get_cipher_name() or ""
        sni = conn.get_servername()
        server_name = sni.decode("ascii", "replace") if sni else None
    peer = transport.getPeerCertificate()
    if peer is None:
        return TlsInfo(protocol=protocol, cipher=cipher, server_name=server_name)
    cert = peer.to_cryptography()
    return TlsInfo(
        protocol=protocol, cipher=cipher, server_name=server_name,
        client_cert_pem=cert.public_bytes(Encoding.PEM).decode("ascii"),
        subject_dn=cert.subject.rfc4514_string(),
        issuer_dn=cert.issuer.rfc4514_string(),
        serial_number=str(cert.serial_number),
        not_before=_asn1_time(cert.not_valid_before_utc),
        not_after=_asn1_time(cert.not_valid_after_utc),
    )


class _RefusedConnection(Protocol):
    """Stand-in protocol for a connection over the listener's cap: closes it at once.

    Returning ``None`` from ``buildProtocol`` would also close the socket, but a TLS
    wrapping factory would crash on it; a protocol that aborts in ``makeConnection``
    works under any wrapper.
    """

    def makeConnection(self, transport: ITransport) -> None:
        """Abort the connection before reading anything from it.

        :param transport: the freshly accepted connection.
        """
        conn: Any = transport
        abort = getattr(conn, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            conn.loseConnection()


#: What a listener serves: called once per request, in order per connection; it must
#: answer with :meth:`HttpRequest.respond` (or a :class:`Handover`), now or later.
Handler = Callable[[HttpRequest], object]


class GatewaySite(Factory):
    """The protocol factory of one listener: builds :class:`HardenedHTTPChannel` objects.

    :param handler: what answers the requests (the gateway's, or the admin listener's).
    :param limits: the listener's :class:`Limits`.
    :param clock: the time source for every timer of this listener (tests pass a
        :class:`twisted.internet.task.Clock`); defaults to the global reactor.
    :param name: the listener's name, used in log messages.

    :ivar channels: the open HTTP connections (not those handed over to another protocol).
    :ivar refused_connections: connections closed at accept time because the listener
        was at ``max_connections`` (monotonic, for metrics).
    :ivar rejected_requests: requests refused by the channel, by status
        (400/408/413/414/431; monotonic, for metrics).  These never reach the handler,
        so they are not in the gateway's access log.
    """

    protocol = HardenedHTTPChannel
    noisy = False
    _log = Logger()

    #: At most one "connection cap reached" log event per this many seconds.
    refusal_log_interval: float = 1.0

    def __init__(self, handler: Handler, limits: Limits, *,
                 clock: IReactorTime | None = None, name: str = "listener") -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.handler = handler
        self.limits = limits
        self.name = name
        self.clock = typing.cast(_TimeSource, clock)
        self.refused_connections = 0
        self.rejected_requests: Counter[int] = Counter()
        self.channels: set[HardenedHTTPChannel] = set()
        self._open_connections = 0
        self._refusals_not_logged = 0
        self._last_refusal_log: float | None = None

    @property
    def open_connections(self) -> int:
        """Connections of this listener that are currently open (upgraded ones too)."""
        return self._open_connections

    def acceptableProtocols(self) -> list[bytes]:
        """Advertise HTTP/1.1 only in ALPN.

        :returns: ``[b"http/1.1"]``.
        """
        return [b"http/1.1"]

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """Build a channel, or refuse the connection when at the cap.

        :param addr: the peer's address.
        :returns: a :class:`HardenedHTTPChannel`, or a protocol that closes the
            connection immediately when ``max_connections`` are already open.
        """
        if self._open_connections >= self.limits.max_connections:
            self._note_refusal(addr)
            return _RefusedConnection()
        channel = self.protocol(self)
        channel.factory = self
        return channel

    def _note_refusal(self, addr: IAddress | None) -> None:
        """Count a refused connection; log at most once per ``refusal_log_interval``."""
        self.refused_connections += 1
        self._refusals_not_logged += 1
        now = self.clock.seconds()
        last = self._last_refusal_log
        if last is None or now - last >= self.refusal_log_interval:
            self._log.warn(
                "Listener {name}: {count} connection(s) refused, {cap} already open "
                "(last from {peer})",
                name=self.name, count=self._refusals_not_logged,
                cap=self.limits.max_connections, peer=str(addr))
            self._last_refusal_log = now
            self._refusals_not_logged = 0

    def _connection_opened(self, channel: HardenedHTTPChannel) -> None:
        self._open_connections += 1
        self.channels.add(channel)

    def _connection_upgraded(self, channel: HardenedHTTPChannel) -> None:
        """No longer HTTP: the new protocol owns (and closes) the connection."""
        self.channels.discard(channel)

    def _connection_closed(self, channel: HardenedHTTPChannel) -> None:
        self._open_connections -= 1
        self.channels.discard(channel)
