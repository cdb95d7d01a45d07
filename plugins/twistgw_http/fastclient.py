"""The fast path: a lean HTTP/1.1 client with keep-alive pools, on plain Twisted protocols.

Why not Twisted's ``Agent``: the proxy benchmark (bench/RESULTS.md) showed about half of
a proxied request's CPU in Agent's generic machinery -- an endpoint and an ``idna``
encoding per request, the URI parsed again, ``_newclient``'s state machine and about
nine Deferred callbacks per request.  This client does one request shape (bytes in,
bytes out, body in memory) with what the gateway needs and nothing else:

* a pool of idle connections per ``(scheme, host, port)``, most recently used first,
  at most ``max_idle_per_host`` kept, closed after ``idle_timeout`` seconds idle;
  concurrency and the queue are bounded by the backend's :class:`~.guard.HostGuard`;
* connections are made once per pooled connection (``HostnameEndpoint`` for names,
  plain TCP for address literals, TLS through the same verifying policy as Agent);
* the request head is built as one string and written with the body in one call;
* a small strict response parser: status line, headers (CRLF or bare LF lines, no
  obs-fold, at most 64 KiB), ``Content-Length`` (one value, digits only), ``chunked``
  (hex sizes only, extensions and trailers skipped within bounds), read-until-close
  otherwise; no body for HEAD, 1xx (skipped), 204 and 304;
* a body over ``max_response_bytes`` fails at once (a declared length before any body
  byte is read) and the connection is aborted;
* a connection goes back to the pool only when it is safe: HTTP/1.1, no ``Connection:
  close``, the response fully read and nothing more received (we never pipeline);
* a pooled connection that dies before any response byte arrives is retried once on a
  new connection, for idempotent methods only;
* cancelling the Deferred (integration timeout, client gone) aborts the connection,
  which is never reused.

Redirects are never followed: a 3xx is an answer like any other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import error as inet_error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from twistgw import ApiConfigurationError
from twistgw.netio import DirectWriter
from twistgw.outbound import BodyTooLarge

__all__ = ["FastPool", "HostPool", "Exchange", "RawAnswer", "BadResponse", "StaleConnection",
           "Target", "parse_target", "request_head", "checked_name", "request_names",
           "IDEMPOTENT"]

#: Methods a stale pooled connection may be retried for (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))
#: The response head (status line and headers) may not be larger than this.
MAX_HEAD_BYTES = 64 * 1024
#: Nor have more header lines than this.
MAX_HEADERS = 256
#: Bounds on a chunk-size line and on the trailer section of a chunked body.
MAX_CHUNK_LINE = 4096
MAX_TRAILER_BYTES = 16 * 1024
#: Headers about the connection, kept out of the answer (as Twisted's parser does);
#: ``content-length`` stays in a HEAD answer, where it describes the body not sent.
CONTROL_HEADERS = frozenset(("content-length", "connection", "keep-alive", "te", "trailers",
                             "transfer-encoding", "upgrade", "proxy-connection"))
#: Names the header loop looks at more closely: the control headers and
#: ``content-encoding`` (reported in :data:`RawAnswer`).
_SPECIAL_HEADERS = CONTROL_HEADERS | {"content-encoding"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,18}")
_STATUS = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: .*)?")
_DONE = Failure(inet_error.ConnectionDone())
#: Distinct backends whose parsed address is cached.
_MAX_TARGETS = 4096
_MAX_NAMES = 4096


class BadResponse(Exception):
    """The backend answered something that is not a valid HTTP/1.x response."""


class StaleConnection(Exception):
    """A pooled connection closed before any byte of the response arrived."""


RawAnswer = tuple[int, tuple[tuple[str, str], ...], bytes, int | None, bool]
"""``(status, headers, body, length, encoded)``: headers without connection-control ones,
``length`` the backend's Content-Length (0 for bodiless answers, ``None`` if unknown),
``encoded`` whether a ``Content-Encoding`` header is among them (so that the caller need
not scan the headers for one on every answer)."""


class Target:
    """The parsed ``scheme://authority`` part of a backend URL."""

    __slots__ = ("host", "host_header", "key", "port", "tls")

    def __init__(self, scheme: str, host: str, port: int, host_header: str) -> None:
        self.key = (scheme, host, port)
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        self.host_header = host_header


_targets: dict[str, Target] = {}


def parse_target(url: str) -> tuple[Target, str]:
    """``(target, request-target)`` of an absolute http(s) URL; the authority is cached.

    Raises :class:`ApiConfigurationError` for anything that is not a usable http(s) URL
    (AWS's "Invalid endpoint address").
    """
    start = url.find("://")
    if start < 0:
        raise ApiConfigurationError()
    slash = url.find("/", start + 3)
    query = url.find("?", start + 3)
    if slash < 0:
        cut = query if query >= 0 else len(url)
    else:
        cut = query if 0 <= query < slash else slash
    prefix = url[:cut]
    path = url[cut:]
    if not path.startswith("/"):
        path = "/" + path
    hash_at = path.find("#")
    if hash_at >= 0:
        path = path[:hash_at]
    if _BAD_TARGET.search(path) is not None:
        raise ApiConfigurationError()
    target = _targets.get(prefix)
    if target is None:
        target = _parse_authority(prefix)
        if len(_targets) >= _MAX_TARGETS:
            _targets.clear()
        _targets[prefix] = target
    return target, path


def _parse_authority(prefix: str) -> Target:
    parts = urlsplit(prefix)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or "@" in parts.netloc:
        raise ApiConfigurationError()
    try:
        port = parts.port
    except ValueError:
        raise ApiConfigurationError() from None
    host = parts.hostname or ""
    if not host:
        raise ApiConfigurationError()
    default = 443 if scheme == "https" else 80
    netloc = f"[{host}]" if ":" in host else host
    header = netloc if port is None or port == default else f"{netloc}:{port}"
    return Target(scheme, host, port or default, header)


#: Request header names found valid (tokens) -> lower-cased: the same few names are
#: sent over and over.
request_names: dict[str, str] = {}


def checked_name(name: str) -> str:
    """``name`` lower-cased, remembered in :data:`request_names`; a name that is not a
    token raises :class:`ApiConfigurationError` (as Twisted's Headers would refuse it)."""
    if _TOKEN.fullmatch(name) is None:
        raise ApiConfigurationError()
    if len(request_names) >= _MAX_NAMES:
        request_names.clear()
    lname = request_names[name] = name.lower()
    return lname


#: Valid response header names seen -> lower-cased: backends repeat the same few names,
#: and the checks and ``lower()`` per header showed in the proxy profile.
_header_names: dict[str, str] = {}


def request_head(method: str, path: str, host_header: str,
                 headers: Sequence[tuple[str, str]], body_length: int | None) -> bytes:
    """The request line and headers, ready to write.

    Header names must be tokens (an invalid one is a configuration error, as Twisted's
    Headers would raise); CR and LF in values become spaces, as Twisted does, so a value
    can never start a new header.
    """
    names = request_names
    for name, _value in headers:
        if name not in names:
            checked_name(name)
    fields = "".join([f"{k}: {v}\r\n" for k, v in headers])
    if body_length is None:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n{fields}\r\n"
        lines = len(headers) + 3
    else:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n{fields}"
                f"Content-Length: {body_length}\r\n\r\n")
        lines = len(headers) + 4
    # Exactly one CR and one LF per line we wrote: anything more came from a value.
    if head.count("\n") != lines or head.count("\r") != lines:
        clean = [(k, v.replace("\r\n", " ").replace("\r", " ").replace("\n", " "))
                 for k, v in headers]
        return request_head(method, path, host_header, clean, body_length)
    try:
        return head.encode("latin-1")
    except UnicodeEncodeError:
        raise ApiConfigurationError() from None


# -- the connection --------------------------------------------------------------------

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _IDLE = \
    range(8)


class _Connection(Protocol):
    """One backend connection: sends a request, parses the answer, goes back to the pool."""

    def __init__(self, pool: HostPool) -> None:
        self.pool = pool
        self.state = _IDLE
        self.buf = b""
        self.exchange: Exchange | None = None
        self.reused = False
        self.received = False
        self.dead = False
        self.idle_since = 0.0
        #: Requests go straight to the socket while nothing is queued (twistgw.netio).
        self._writer: DirectWriter | None = None
        self.head_request = False
        self.status = 0
        self.http11 = False
        self.close_after = False
        self.headers: tuple[tuple[str, str], ...] = ()
        self.encoded = False
        self.length: int | None = None
        self.remaining = 0
        self.chunks: list[bytes] = []
        self.size = 0

    def connectionMade(self) -> None:
        # One write per request, and the answer awaited: Nagle's algorithm can only add
        # delay (to the TLS handshake's last flight, or when a write is split).
        transport: Any = self.transport
        for layer in (transport, getattr(transport, "transport", None)):
            set_no_delay = getattr(layer, "setTcpNoDelay", None)
            if set_no_delay is not None:
                set_no_delay(True)
                break
        self._writer = DirectWriter(transport)

    # -- sending -----------------------------------------------------------------------

    def send(self, exchange: Exchange, data: bytes) -> None:
        """Write one request; the answer goes to ``exchange``.

        On a plain TCP connection with nothing queued, the request goes straight to the
        socket: ``transport.write`` would only queue it, ask epoll for writability and
        send it on the reactor's next turn (two ``epoll_ctl`` calls and a reactor event
        per request, a visible share of a proxied request in the live profile).  What the
        socket does not take (or an error) goes through ``transport.write`` as usual, and
        so does everything after it on this connection (:class:`twistgw.netio.DirectWriter`).
        """
        self.exchange = exchange
        # The fields of the previous answer are reset as the next one is parsed.
        self.head_request = exchange.method == "HEAD"
        self.state = _HEAD
        self.received = False
        self.buf = b""
        writer = self._writer
        assert writer is not None
        writer.write(data)

    def abort(self) -> None:
        """Drop the connection now (cancelled, failed or unsafe to reuse)."""
        self.dead = True
        self.exchange = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    # -- receiving ---------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.exchange is None:
            # Bytes nobody asked for (an idle connection, or after an answer): the stream
            # can no longer be trusted, so the connection is not reused.
            if not self.dead:
                self.pool.forget(self)
                self.abort()
            return
        self.received = True
        self.buf = self.buf + data if self.buf else data
        try:
            # The usual answer is one read with the whole head and body: parse the head
            # here, and go through the state loop only for what is left after it.
            if self.state != _HEAD or (self._parse_head() and self.exchange is not None):
                self._parse()
        except BodyTooLarge as e:
            self._fail(e)
        except BadResponse as e:
            self._fail(e)

    def _parse(self) -> None:
        while self.exchange is not None:
            state = self.state
            if state == _HEAD:
                if not self._parse_head():
                    return
            elif state == _LENGTH:
                # Body bytes are moved out of ``buf`` as they come (a large body arrives
                # in many reads; re-joining the buffer each time would be quadratic).
                if not self._take_body():
                    return
                self._finish(b"".join(self.chunks))
            elif state == _CHUNK_SIZE:
                if not self._parse_chunk_size():
                    return
            elif state == _CHUNK_DATA:
                if not self._take_body():
                    return
                self.state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(self.buf) < 2:
                    return
                if self.buf[:2] != b"\r\n":
                    raise BadResponse("chunk not followed by CRLF")
                self.buf = self.buf[2:]
                self.state = _CHUNK_SIZE
            elif state == _TRAILERS:
                if not self._parse_trailers():
                    return
            else:  # _UNTIL_CLOSE: everything until the backend closes is the body
                self._grow(len(self.buf))
                self.chunks.append(self.buf)
                self.buf = b""
                return

    def _take_body(self) -> bool:
        """Move up to ``remaining`` bytes from ``buf`` to ``chunks``; True when all came."""
        buf = self.buf
        take = self.remaining
        if len(buf) <= take:
            if buf:
                self.chunks.append(buf)
            self.remaining -= len(buf)
            self.buf = b""
        else:
            self.chunks.append(buf[:take])
            self.buf = buf[take:]
            self.remaining = 0
        return self.remaining == 0

    def _grow(self, n: int) -> None:
        self.size += n
        if self.size > self.pool.max_body:
            raise BodyTooLarge()

    def _parse_head(self) -> bool:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if 0 <= end <= _CACHED_HEAD_BYTES and not self.head_request:
            # A backend sends the same head over and over (the Date changes once a
            # second): a head seen before is not parsed again (_heads).
            raw = buf[:end]
            fields = _heads.get(raw)
            if fields is None:
                fields = _head_fields(raw.decode("latin-1"), True, False)
                if len(_heads) >= _MAX_HEADS:
                    _heads.clear()
                _heads[raw] = fields
            self.buf = buf[end + 4:]
        else:
            skip = 4
            if end < 0:
                end = buf.find(b"\n\n")
                skip = 2
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise BadResponse("response head too large")
                    return False
            if end > MAX_HEAD_BYTES:
                raise BadResponse("response head too large")
            fields = _head_fields(buf[:end].decode("latin-1"), skip == 4, self.head_request)
            self.buf = buf[end + skip:]
        status, http11, headers, length, encoded, close, transfer_encoding, chunked = fields
        if 100 <= status < 200:
            if status == 101:
                raise BadResponse("unexpected 101 Switching Protocols")
            return True  # an interim answer: the real one follows
        if self.head_request or status in (204, 304):
            self._complete((status, headers, b"", 0, encoded), close or not http11)
            return True
        if not transfer_encoding and length is not None:
            if length > self.pool.max_body:
                raise BodyTooLarge()
            rest = self.buf
            if len(rest) == length:  # the usual case: the whole body came with the head
                self.buf = b""
                self._complete((status, headers, rest, length, encoded), close or not http11)
                return True
        # The body comes in later reads: keep what the answer is made of.
        self.status = status
        self.http11 = http11
        self.close_after = close
        self.headers = headers
        self.encoded = encoded
        self.length = None
        self.size = 0
        if transfer_encoding:
            # A length next to a transfer coding is ignored (RFC 9112 §6.3) and the
            # connection not reused: that is how request smuggling starts.
            self.close_after = True
            if chunked:
                self.state = _CHUNK_SIZE
            else:
                self.state = _UNTIL_CLOSE
            return True
        if length is not None:
            self.length = self.remaining = length
            self.state = _LENGTH
            return True
        self.close_after = True
        self.state = _UNTIL_CLOSE
        return True

    def _parse_chunk_size(self) -> bool:
        buf = self.buf
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > MAX_CHUNK_LINE:
                raise BadResponse("chunk-size line too long")
            return False
        line = buf[:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        size_text = line.split(b";", 1)[0].rstrip(b" \t")
        if _HEX.fullmatch(size_text) is None:
            raise BadResponse(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        self.buf = buf[end + 1:]
        if size == 0:
            self.state = _TRAILERS
            self.remaining = 0
            return True
        self._grow(size)
        self.remaining = size
        self.state = _CHUNK_DATA
        return True

    def _parse_trailers(self) -> bool:
        while True:
            buf = self.buf
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) + self.remaining > MAX_TRAILER_BYTES:
                    raise BadResponse("trailers too large")
                return False
            self.remaining += end + 1
            if self.remaining > MAX_TRAILER_BYTES:
                raise BadResponse("trailers too large")
            line = buf[:end]
            self.buf = buf[end + 1:]
            if line in (b"", b"\r"):
                self._finish(b"".join(self.chunks))
                return True

    def _finish(self, body: bytes) -> None:
        """The answer read over several reads is complete (see :meth:`_complete`)."""
        self._complete((self.status, self.headers, body, self.length, self.encoded),
                       self.close_after or not self.http11)

    def _complete(self, answer: RawAnswer, close: bool) -> None:
        """Hand ``answer`` over, after pooling the connection or closing it (``close``:
        the answer said so, or was HTTP/1.0)."""
        exchange = self.exchange
        assert exchange is not None
        self.exchange = None
        self.state = _IDLE
        if self.buf or close:
            self.dead = True
            transport: Any = self.transport
            transport.loseConnection()
        else:
            self.pool.release(self)
        if self.chunks:
            self.chunks = []
        exchange.answered(answer)

    def _fail(self, reason: BaseException) -> None:
        exchange = self.exchange
        self.abort()
        if exchange is not None:
            exchange.failed(reason, self)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.dead = True
        self.pool.forget(self)
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        if self.state == _UNTIL_CLOSE and reason.check(inet_error.ConnectionDone):
            self.state = _IDLE
            body = b"".join(self.chunks) + self.buf
            self.chunks = []
            try:
                self._grow(len(self.buf))
            except BodyTooLarge as e:
                exchange.failed(e, self)
                return
            exchange.answered((self.status, self.headers, body, None, self.encoded))
            return
        if self.reused and not self.received:
            exchange.failed(StaleConnection(), self)
            return
        exchange.failed(reason.value or inet_error.ConnectionLost(), self)


def _one_length(known: str | None, value: str) -> str:
    """The Content-Length, refusing anything but one (possibly repeated) digit string."""
    if known is None and value.isascii() and value.isdigit() and len(value) <= 18:
        return value  # the usual case: one plain number
    values = {v.strip(" \t") for v in value.split(",")}
    if known is not None:
        values.add(known)
    if len(values) != 1:
        raise BadResponse("conflicting Content-Length values")
    (only,) = values
    if _DIGITS.fullmatch(only) is None:
        raise BadResponse(f"bad Content-Length {only[:20]!r}")
    return only


_HeadFields = tuple[int, bool, tuple[tuple[str, str], ...], "int | None", bool, bool, bool,
                    bool]
"""What a response head says: ``(status, http11, headers, length, encoded, close,
transfer_encoding, chunked)`` (headers without the connection-control ones; ``length``
the Content-Length; ``close``: ``Connection: close`` or HTTP/1.0)."""

#: Response heads (CRLF-terminated, not of a HEAD request, at most this long) already
#: parsed -> what :func:`_head_fields` made of them.  A backend repeats its head, with a
#: new Date once a second; the table is emptied when full.
_heads: dict[bytes, _HeadFields] = {}
_CACHED_HEAD_BYTES = 2048
_MAX_HEADS = 256


def _head_fields(head: str, crlf: bool, head_request: bool) -> _HeadFields:
    """Parse a response head (status line and header lines, without the blank line that
    ends it; ``crlf``: it ended with CRLF CRLF).  Depends on nothing else, so that its
    result can be kept for the next identical head.  Raises :class:`BadResponse`."""
    # CRLF lines (the norm) split as they are; bare-LF ones lose any stray CR below.
    lines = head.split("\r\n")
    if not crlf or head.count("\n") != len(lines) - 1:
        lines = [line.rstrip("\r") for line in head.split("\n")]
    status_line = lines[0]
    m = _STATUS.fullmatch(status_line)
    if m is None:
        raise BadResponse(f"bad status line {status_line[:80]!r}")
    version, code = m.groups()
    if len(lines) > MAX_HEADERS + 1:
        raise BadResponse("too many response headers")
    headers: list[tuple[str, str]] = []
    length: str | None = None
    chunked = False
    transfer_encoding = False
    close = version == "0"
    encoded = False
    known = _header_names
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        lname = known.get(name)
        if lname is None or not sep:
            if not sep or not name or name[0] in " \t" or name[-1] in " \t":
                raise BadResponse(f"bad header line {line[:80]!r}")
            lname = name.lower()
            if len(known) >= _MAX_NAMES:
                known.clear()
            known[name] = lname
        value = value.strip(" \t")
        if lname in _SPECIAL_HEADERS:
            if lname == "content-encoding":
                encoded = True
                headers.append((name, value))
            elif lname == "content-length":
                if head_request:
                    headers.append((name, value))
                length = _one_length(length, value)
            elif lname == "transfer-encoding":
                transfer_encoding = True
                chunked = value.rsplit(",", 1)[-1].strip(" \t").lower() == "chunked"
            elif lname == "connection":
                # The token scan only when the word is there at all (keep-alive is the
                # usual value).
                if "close" in value.lower() and "close" in [
                        t.strip(" \t") for t in value.lower().split(",")]:
                    close = True
            continue
        headers.append((name, value))
    return (int(code), version == "1", tuple(headers),
            None if length is None else int(length), encoded, close, transfer_encoding,
            chunked)


class _ConnectionFactory(Factory):
    def __init__(self, pool: HostPool) -> None:
        self.pool = pool

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self.pool)


# -- one request ---------------------------------------------------------------------------


def _raw(result: RawAnswer | BaseException) -> RawAnswer:
    """The default ``finish``: the answer as it is, or the failure raised."""
    if isinstance(result, BaseException):
        raise result
    return result


Finish = Callable[[RawAnswer | BaseException], Any]
"""Turns an exchange's outcome (the answer, or why there is none) into what its Deferred
fires with (or raises why it fails); called exactly once per exchange."""


class Exchange:
    """One request's way through the pool: the caller's Deferred and what it is using.

    :meth:`finish` turns the outcome into what the Deferred fires with; callers with
    bookkeeping of their own (slots, breaker) subclass it rather than wrap it, which
    saves an object and a call per request.
    """

    __slots__ = (
        "cancelled",
        "conn",
        "connect_retried",
        "connecting",
        "data",
        "deferred",
        "idempotent",
        "method",
        "pool",
        "retried",
        "settled",
    )

    def __init__(self, pool: HostPool, method: str, data: bytes) -> None:
        self.pool = pool
        self.method = method
        self.data = data
        self.idempotent = method in IDEMPOTENT
        self.settled = False
        self.deferred: Deferred[Any] = Deferred(self._cancel)
        self.conn: _Connection | None = None
        self.connecting: Deferred[Any] | None = None
        self.retried = False
        self.connect_retried = False
        #: Set first thing when cancelled: the connect attempt's own failure, which the
        #: cancellation causes, must not replace the caller's ``CancelledError``.
        self.cancelled = False

    def start(self) -> None:
        conn = self.pool.take()
        if conn is not None:
            self.conn = conn
            conn.send(self, self.data)
            return
        self._connect()

    def _connect(self) -> None:
        d = self.pool.connect()
        self.connecting = d
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, conn: _Connection) -> None:
        self.connecting = None
        if self.cancelled or self.deferred.called:  # cancelled meanwhile
            conn.abort()
            return
        conn.reused = False
        self.conn = conn
        conn.send(self, self.data)

    def _connect_failed(self, failure: Failure) -> None:
        self.connecting = None
        if self.cancelled or self.deferred.called:
            return
        if failure.check(CancelledError):
            return
        client = self.pool.client
        if (failure.check(inet_error.ConnectError, inet_error.DNSLookupError)
                and not self.connect_retried and client.may_retry_connect()):
            # No byte reached the backend, so a retry is safe for any method.
            self.connect_retried = True
            client.retries += 1
            client.retrying += 1
            d = self.pool.connect()
            self.connecting = d

            def done(result: Any) -> Any:
                client.retrying -= 1
                return result
            d.addBoth(done)
            d.addCallbacks(self._connected, self._connect_failed)
            return
        self._settle(failure.value or inet_error.ConnectError())

    def finish(self, result: RawAnswer | BaseException) -> Any:
        """What the Deferred fires with (or raise why it fails); called exactly once per
        exchange.  Here: the answer as it is, or the failure raised."""
        return _raw(result)

    def _settle(self, result: RawAnswer | BaseException) -> None:
        """Fire the caller's Deferred with what ``finish`` makes of ``result``: one call
        instead of a chain of callbacks (each link showed in the proxy profile)."""
        if self.settled:
            return
        self.settled = True
        try:
            value = self.finish(result)
        except BaseException:
            self.deferred.errback(Failure())
            return
        self.deferred.callback(value)

    def answered(self, answer: RawAnswer) -> None:
        self.conn = None
        if not self.deferred.called:
            self._settle(answer)

    def failed(self, reason: BaseException, conn: _Connection) -> None:
        self.conn = None
        if self.cancelled or self.deferred.called:
            return
        if isinstance(reason, StaleConnection) and self.idempotent and not self.retried \
                and self.pool.client.retry_idempotent:
            # The backend closed a kept-alive connection as we reused it: nothing was
            # answered, and the method may be repeated, so once more on a new connection.
            self.retried = True
            self.pool.client.retries += 1
            self._connect()
            return
        self._settle(reason)

    def _cancel(self, _d: Deferred[Any]) -> None:
        self.cancelled = True
        if not self.settled:
            self.settled = True
            # ``finish`` still learns how it ended; the Deferred fails with Twisted's own
            # CancelledError right after this canceller.
            try:
                self.finish(CancelledError())
            except BaseException:
                pass
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.cancel()


class _CallbackExchange(Exchange):
    """An exchange whose outcome goes through a given function (:meth:`FastPool.request`)."""

    __slots__ = ("callback",)

    def __init__(self, pool: HostPool, method: str, data: bytes, callback: Finish) -> None:
        super().__init__(pool, method, data)
        self.callback = callback

    def finish(self, result: RawAnswer | BaseException) -> Any:
        return self.callback(result)


# -- pools -----------------------------------------------------------------------------


class HostPool:
    """Idle connections to one ``(scheme, host, port)`` and how to make a new one."""

    def __init__(self, client: FastPool, target: Target) -> None:
        self.client = client
        self.target = target
        self.idle: list[_Connection] = []
        self.max_body = client.max_body
        self.factory = _ConnectionFactory(self)
        self._endpoint: IStreamClientEndpoint | None = None

    def endpoint(self) -> IStreamClientEndpoint:
        if self._endpoint is None:
            t, reactor, timeout = self.target, self.client.reactor, self.client.connect_timeout
            if isIPAddress(t.host):
                ep: IStreamClientEndpoint = TCP4ClientEndpoint(reactor, t.host, t.port,
                                                               timeout=timeout)
            elif isIPv6Address(t.host):
                ep = TCP6ClientEndpoint(reactor, t.host, t.port, timeout=timeout)
            else:
                ep = HostnameEndpoint(reactor, t.host.encode("idna"), t.port,
                                      timeout=timeout)
            if t.tls:
                creator = self.client.tls_creator(t.host.encode("idna"), t.port)
                ep = wrapClientTLS(creator, ep)
            self._endpoint = ep
        return self._endpoint

    def connect(self) -> Deferred[Any]:
        d: Deferred[Any] = self.endpoint().connect(self.factory)
        return d

    def take(self) -> _Connection | None:
        idle = self.idle
        now = self.client.reactor.seconds()
        limit = self.client.idle_timeout
        while idle:
            conn = idle.pop()
            if now - conn.idle_since <= limit and not conn.dead:
                conn.reused = True
                return conn
            conn.abort()
        return None

    def release(self, conn: _Connection) -> None:
        client = self.client
        if client.closed or len(self.idle) >= client.max_idle or client.idle_timeout <= 0:
            conn.dead = True
            transport: Any = conn.transport
            transport.loseConnection()
            return
        conn.idle_since = client.reactor.seconds()
        self.idle.append(conn)
        if client._sweep is None:
            client.schedule_sweep()

    def forget(self, conn: _Connection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def sweep(self, now: float) -> None:
        limit = self.client.idle_timeout
        keep = []
        for conn in self.idle:
            if now - conn.idle_since > limit:
                conn.dead = True
                transport: Any = conn.transport
                transport.loseConnection()
            else:
                keep.append(conn)
        self.idle = keep


class FastPool:
    """The pools of one :class:`~.client.BackendClient`; :meth:`request` sends one request.

    ``tls_creator(host, port)`` makes the TLS connection creator for https backends (the
    same verifying policy Agent uses).
    """

    def __init__(self, reactor: Any, *, connect_timeout: float, max_idle: int,
                 idle_timeout: float, max_body: int, retry_idempotent: bool,
                 connect_retries: int,
                 tls_creator: Callable[[bytes, int], Any],
                 in_flight: Callable[[], int]) -> None:
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_body = max_body
        self.retry_idempotent = retry_idempotent
        self.connect_retries = connect_retries
        self.tls_creator = tls_creator
        self._in_flight = in_flight
        self.hosts: dict[tuple[str, str, int], HostPool] = {}
        self.closed = False
        self.retries = 0
        self.retrying = 0
        self._sweep: Any = None

    def may_retry_connect(self) -> bool:
        """A connect retry is allowed: configured, and within the budget (at most 20 % of
        the requests in flight, at least 3, retrying at once)."""
        budget = max(3, self._in_flight() // 5)
        return self.connect_retries >= 1 and self.retrying < budget

    def request(self, target: Target, method: str, data: bytes, finish: Finish = _raw
                ) -> Deferred[Any]:
        """Send ``data`` (head and body) to ``target``; fires with what ``finish`` makes of
        the :data:`RawAnswer` or of the failure (by default the answer, or that failure)."""
        pool = self.host(target)
        exchange = Exchange(pool, method, data) if finish is _raw else \
            _CallbackExchange(pool, method, data, finish)
        exchange.start()
        return exchange.deferred

    def host(self, target: Target) -> HostPool:
        """The pool of ``target`` (made when first needed)."""
        pool = self.hosts.get(target.key)
        if pool is None:
            if len(self.hosts) >= _MAX_TARGETS:
                self._forget_idle_hosts()
            pool = self.hosts[target.key] = HostPool(self, target)
        return pool

    def _forget_idle_hosts(self) -> None:
        for key, pool in list(self.hosts.items()):
            if not pool.idle:
                del self.hosts[key]

    def idle_connections(self) -> int:
        """How many connections are idle in the pools (for tests and metrics)."""
        return sum(len(p.idle) for p in self.hosts.values())

    def schedule_sweep(self) -> None:
        # ``_sweep`` is set back to None when the sweep runs or is cancelled, so a set
        # one is pending (no ``active()`` call on every answer).
        if self._sweep is None:
            self._sweep = self.reactor.callLater(max(self.idle_timeout, 0.05), self._run_sweep)

    def _run_sweep(self) -> None:
        self._sweep = None
        now = self.reactor.seconds()
        for pool in self.hosts.values():
            pool.sweep(now)
        if any(p.idle for p in self.hosts.values()):
            self.schedule_sweep()

    def close(self) -> None:
        """Close every idle connection; connections in use close when their answer is in."""
        self.closed = True
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        for pool in self.hosts.values():
            for conn in pool.idle:
                conn.dead = True
                transport: Any = conn.transport
                transport.loseConnection()
            pool.idle = []
