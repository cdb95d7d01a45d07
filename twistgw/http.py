"""Hardened HTTP/1.1 server layer: the listener's first line of defence.

Stock :mod:`twisted.web` is a correct but trusting HTTP/1.1 server (see
``reliability.md`` §2.2/§2.3): it has only an *idle* timer that every trickled byte
resets (so slowloris connections live forever), no body cap (50 MiB uploads are spooled
to a temporary file), no connection cap, and it silently drops a request line longer
than 16 KiB, accepts HTTP/1.1 requests without ``Host``, duplicate ``Host`` headers,
obs-fold continuation lines (even on ``Transfer-Encoding``), ``Transfer-Encoding`` on
HTTP/1.0, absolute-form targets and header names with ``_``.  Because the gateway
re-serialises requests towards integrations, everything ambiguous must be refused
here, before any application code sees it.

This module closes those gaps with the smallest possible overrides of Twisted's own
parser, so that the stock protections (CL+TE, duplicate Content-Length, strict chunk
sizes, bare CR/LF/NUL in values, in-order pipelining) keep working unchanged:

* :class:`GatewaySite` -- a :class:`~twisted.web.server.Site` that never advertises
  ``h2`` (Twisted's HTTP/2 has an open Rapid-Reset issue), writes no access log of its
  own (the gateway writes one), never parses POST form bodies into ``request.args``,
  and caps the number of open connections of the listener.
* :class:`HardenedHTTPChannel` -- the per-connection parser with an absolute header
  deadline (408), request line / header count / header bytes limits (414 / 431),
  request framing checks (400) and the body cap (413).
* :class:`GatewayRequest` -- keeps bodies in memory (never a temporary file) and
  enforces the body cap on chunked uploads as soon as they cross it.

Every rejection produced here is a complete, self-delimited response followed by a
close of the connection (see :meth:`HardenedHTTPChannel.reject`).  The per-request cost
on the hot path is a handful of integer comparisons and at most one ``callLater``
(only when a request head arrives in more than one read).
"""

from __future__ import annotations

import io
import json
import sys
import typing
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from twisted.internet import tcp
from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http import HTTPChannel, datetimeToString
from twisted.web.server import Request, Site
from zope.interface import implementer

from twistgw.limits import Limits
from twistgw.models import TlsInfo

if TYPE_CHECKING:
    from twisted.internet.base import DelayedCall
    from twisted.internet.interfaces import (
        IAddress,
        IProtocol,
        IReactorTime,
        ITransport,
    )
    from twisted.python.failure import Failure
    from twisted.web.resource import IResource

__all__ = [
    "GatewayRequest",
    "Handover",
    "GatewaySite",
    "HardenedHTTPChannel",
    "limits_error_body",
]

# Typing note: without the mypy-zope plugin mypy cannot call methods through a
# zope.interface type (it sees them as functions without ``self``), so transports and
# reactors are handled as ``Any`` (or through the small Protocol below) where we call
# them.  Parts of twisted.web are unannotated, hence the ``no-untyped-call`` ignores.


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

_SP_OR_HTAB: Final = b" \t"


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
            b"Date: %s\r\n" % (datetimeToString(),),
            b"Content-Type: %s\r\n" % (content_type,),
            b"Content-Length: %d\r\n" % (len(body),),
            b"Connection: close\r\n\r\n",
            body,
        )
    )


# The per-read and per-line paths call the base implementation directly: on CPython 3.11
# a zero-argument super() builds a proxy object on every call.
_base_data_received: Final[Callable[[HTTPChannel, bytes], None]] = HTTPChannel.dataReceived
_base_line_received: Final[Callable[[HTTPChannel, bytes], None]] = HTTPChannel.lineReceived
_base_header_received: Final[Callable[[HTTPChannel, bytes], bool]] = HTTPChannel.headerReceived


@implementer(IHalfCloseableProtocol)
class HardenedHTTPChannel(HTTPChannel):
    """An :class:`~twisted.web.http.HTTPChannel` that enforces :class:`Limits`.

    Twisted's parser is kept; this class only intercepts it at the narrowest points:

    * :meth:`dataReceived` starts one absolute *header deadline* (``header_timeout``)
      when a request head is still incomplete at the end of a read -- Twisted's idle
      timer is reset by every byte, so a client trickling one header byte every few
      seconds would otherwise never be evicted.  A head that arrives in one read (the
      normal case) costs no timer at all.  The deadline is cancelled in
      :meth:`allHeadersReceived`; when it fires the client gets 408.
    * :meth:`lineReceived` counts header lines and bytes (431), refuses obs-fold (400)
      and absolute-form targets (400) and applies the underscore policy (drop / 400).
      ``MAX_LENGTH`` follows the parser state (``max_request_line`` for the request
      line, ``max_header_bytes`` inside the head) and :meth:`lineLengthExceeded`
      answers 414 / 431 instead of Twisted's silent drop, so an over-long line is
      refused without ever being buffered in full.
    * :meth:`allHeadersReceived` checks ``Host`` (exactly one on HTTP/1.1, at most one
      otherwise), ``Transfer-Encoding`` (only ``chunked``, only on HTTP/1.1) and
      answers 413 for a ``Content-Length`` above ``max_body_bytes`` before reading any
      body byte (and before any ``100 Continue``).
    * :meth:`_respondToBadRequestAndDisconnect` (Twisted's own 400 path) is routed to
      :meth:`reject` so that every refusal has the same shape.

    The idle timeout between requests and between two reads of a body is Twisted's own
    ``timeOut`` (set to ``idle_timeout`` by :class:`GatewaySite`).

    Limits are copied into plain attributes by :meth:`apply_limits` (called by
    :class:`GatewaySite` for every connection) so the per-line checks are attribute
    reads, not attribute chains.

    :ivar limits: the limits in force on this connection.
    :ivar reject_linger: seconds a rejected client has to read the error response and
        close; after that the connection is aborted.
    """

    limits: Limits = _DEFAULT_LIMITS
    reject_linger: float = 5.0
    _log = Logger()

    def __init__(self) -> None:
        super().__init__()  # Twisted is unannotated here
        # Parser state of this layer.  ``_in_head`` is True between an accepted request
        # line and the blank line that ends its header section.
        self._in_head = False
        self._head_lines = 0
        self._head_bytes = 0
        self._header_call: DelayedCall | None = None
        self._rejected = False
        self._slot_owner: GatewaySite | None = None
        self._peer: Any = None
        self._host: Any = None
        self.apply_limits(self.limits)

    def getPeer(self) -> Any:
        """The client's address, cached: it cannot change on a connection, and Twisted's
        Request asks for it (a new address object each time) on every request, which
        showed in the proxy benchmark's profile."""
        peer = self._peer
        if peer is None:
            peer = self._peer = HTTPChannel.getPeer(self)
        return peer

    def getHost(self) -> Any:
        """Our address on this connection, cached like :meth:`getPeer`."""
        host = self._host
        if host is None:
            host = self._host = HTTPChannel.getHost(self)
        return host

    # -- configuration -------------------------------------------------------------------

    def apply_limits(self, limits: Limits) -> None:
        """Put ``limits`` in force on this channel (before it is connected).

        Twisted's own ``maxHeaders``/``totalHeadersSize`` stay as a backstop, set just
        above ours so that our precise 431 answers always come first.

        :param limits: the listener's limits.
        """
        self.limits = limits
        self._header_timeout = limits.header_timeout
        self._max_request_line = limits.max_request_line
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._max_body_bytes = limits.max_body_bytes
        self._check_underscore = limits.underscore_headers != "allow"
        self._drop_underscore = limits.underscore_headers == "drop"
        self.maxHeaders = limits.max_headers + 1
        self.totalHeadersSize = limits.max_request_line + limits.max_header_bytes + 1
        self.MAX_LENGTH = limits.max_request_line

    @property
    def max_body_bytes(self) -> int:
        """The request body cap in force on this connection."""
        return self._max_body_bytes

    # -- connection lifecycle ------------------------------------------------------------

    def connectionMade(self) -> None:
        """Take a slot of the listener's connection cap, then start as Twisted does."""
        if self._slot_owner is not None:
            self._slot_owner._connection_opened()
        super().connectionMade()  # Twisted is untyped here

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """Cancel our timer, give the connection slot back, then clean up as Twisted does.

        :param reason: why the connection was lost.
        """
        self._cancel_header_deadline()
        self._release_slot()
        super().connectionLost(reason)

    def _release_slot(self) -> None:
        """Return this connection's slot to the listener (idempotent)."""
        owner, self._slot_owner = self._slot_owner, None
        if owner is not None:
            owner._connection_closed()

    def _protocolUpgradeForWebsockets(self, protocol: IProtocol) -> None:
        """Keep the connection count right when Twisted hands the socket to a websocket.

        Twisted replaces ``connectionLost`` on the instance, so ours would never run; the
        slot is released through a wrapper around the new handler instead.

        :param protocol: the websocket protocol taking over the transport.
        """
        self._cancel_header_deadline()
        super()._protocolUpgradeForWebsockets(protocol)
        inner = self.connectionLost

        def connection_lost(reason: Failure) -> None:
            self._release_slot()
            inner(reason)

        self.connectionLost = connection_lost  # type: ignore[method-assign]

    # -- parsing -------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Parse ``data``; start the header deadline if a request head is still open.

        The deadline therefore starts at the end of the read that carried the first byte
        of a request, which is "from the first byte" to within one read.

        :param data: bytes read from the transport.
        """
        if self._rejected:
            # Draining a rejected client (see reject()): read and discard.
            return
        _base_data_received(self, data)
        if (
            self._header_call is None
            and self.line_mode
            and (self._in_head or self._buffer)
            and not self._rejected
        ):
            self._header_call = self.callLater(
                self._header_timeout, self._header_deadline_passed
            )

    def lineReceived(self, line: bytes) -> None:
        """Check a request line or header line against the limits, then let Twisted parse it.

        Header lines are vetted here rather than in ``headerReceived`` because Twisted
        delays that call by one line (to join obs-fold continuations, which we refuse)
        and because one Python call per line less matters on the hot path.

        :param line: one line of a request head, without its CRLF.
        """
        if self._in_head:
            if line:
                if line[0] in _SP_OR_HTAB:
                    # obs-fold: RFC 9112 §5.2 lets a server reject it; we forward headers,
                    # so joining lines would create values the client never sent.
                    self.reject(400)
                    return
                self._head_lines += 1
                self._head_bytes += len(line)
                if (
                    self._head_lines > self._max_headers
                    or self._head_bytes > self._max_header_bytes
                ):
                    self.reject(431)
                    return
                if self._check_underscore and b"_" in line:
                    colon = line.find(b":")
                    if colon > 0 and line.find(b"_", 0, colon) != -1:
                        # X_Api_Key vs X-Api-Key: names that differ only by "_" / "-"
                        # collide in CGI-style mappings (nginx drops, Envoy rejects).
                        if not self._drop_underscore:
                            self.reject(400)
                        return
            _base_line_received(self, line)
            return

        # Request line (or the one blank line Twisted tolerates between requests).
        if len(line) > self._max_request_line:
            self.reject(414)
            return
        if not line or not self.persistent:
            _base_line_received(self, line)
            return
        self._in_head = True
        self._head_lines = 0
        self._head_bytes = 0
        self.MAX_LENGTH = self._max_header_bytes
        _base_line_received(self, line)
        if self._rejected:
            return
        target: bytes = self._path
        if target[:1] != b"/" and target != b"*":
            # absolute-form / authority-form: we are not a forward proxy, and routing on a
            # URI authority that differs from Host is a classic confusion vector.
            self.reject(400)

    def lineLengthExceeded(self, line: bytes) -> None:
        """Answer an over-long line with 414 / 431 instead of Twisted's silent drop.

        Called by :class:`~twisted.protocols.basic.LineReceiver` as soon as a line (even
        an unterminated one) exceeds ``MAX_LENGTH``.

        :param line: the buffered data starting with the over-long line (ignored).
        """
        self.reject(431 if self._in_head else 414)

    def headerReceived(self, line: bytes) -> bool:
        """Let Twisted store the header, and keep its name as the client spelled it.

        :param line: one complete header line.
        :returns: whether the header was accepted.
        """
        accepted = _base_header_received(self, line)
        if accepted:
            request = self.requests[-1]
            pairs = getattr(request, "raw_header_pairs", None)
            if pairs is not None:
                name, _, value = line.partition(b":")
                pairs.append((name, value.strip(b" \t")))
        return accepted

    def allHeadersReceived(self) -> None:
        """Validate the complete request head before Twisted acts on it.

        Runs before Twisted's own ``allHeadersReceived`` so that a refused request never
        gets a ``100 Continue`` and never has a body byte read.
        """
        self._in_head = False
        self.MAX_LENGTH = self._max_request_line
        self._cancel_header_deadline()
        headers = self.requests[-1].requestHeaders
        http11 = self._version == b"HTTP/1.1"
        hosts = headers.getRawHeaders(b"host")
        if (hosts is None and http11) or (hosts is not None and len(hosts) != 1):
            # RFC 9112 §3.2: a request without Host, or with more than one, gets 400.
            self.reject(400)
            return
        if headers.hasHeader(b"transfer-encoding") and (not http11 or self.length is not None):
            # On HTTP/1.0 the framing is faulty (RFC 9112 §6.1); Twisted only chooses a
            # decoder for "chunked", so a non-None length means another coding
            # ("identity"), which we do not speak.
            self.reject(400)
            return
        length = self.length
        if length is not None and length > self._max_body_bytes:
            self.reject(413)
            return
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        """Hand the request to the application unless this layer refused it.

        Twisted calls this straight after :meth:`allHeadersReceived` for a request
        without body, whatever that method decided.
        """
        if self._rejected:
            return
        super().allContentReceived()

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Route Twisted's own 400 answers through :meth:`reject` (same shape, same close)."""
        self.reject(400)

    # -- timers and refusals -------------------------------------------------------------

    def _header_deadline_passed(self) -> None:
        """The request head did not arrive within ``header_timeout``: answer 408."""
        self._header_call = None
        transport: Any = self.transport
        if transport is not None and not getattr(transport, "disconnecting", False):
            self._log.debug(
                "Request head not received within {timeout}s from {peer}",
                timeout=self._header_timeout,
                peer=str(transport.getPeer()),
            )
            self.reject(408)

    def _cancel_header_deadline(self) -> None:
        """Cancel the header deadline if it is running."""
        call, self._header_call = self._header_call, None
        if call is not None and call.active():
            call.cancel()

    def readConnectionLost(self) -> None:
        """The client closed its sending side (``shutdown(SHUT_WR)``, ``nc -N``).

        Stock Twisted treats that as a full close and drops any answer still buffered, so
        a refused request would get no response.  Instead: after a rejection, or with no
        complete request in hand, close once our output is flushed (answers computed at
        once, MOCK routes and refusals, are already written by then).  With a request
        still being handled (waiting on an integration), the client is taken as gone, as
        nginx does by default: the connection is aborted, which cancels the pipeline and
        with it the backend request, instead of finishing work nobody will read.
        """
        transport: Any = self.transport
        if transport is None:
            return
        if self._rejected or not self._handlingRequest:
            transport.loseConnection()
            return
        transport.abortConnection()

    def writeConnectionLost(self) -> None:
        """Our side finished sending (after a rejection): keep draining input until the
        client closes or ``reject_linger`` aborts."""

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
        self._cancel_header_deadline()
        self.setTimeout(None)
        self.clearLineBuffer()
        if self._slot_owner is not None:
            self._slot_owner.rejected_requests[status] += 1
        transport: Any = self.transport
        if transport is None:
            return
        transport.write(_error_response(status, self._max_body_bytes))
        producer: Any = self._networkProducer
        producer.unregisterProducer()
        if isinstance(transport, tcp.Connection):
            transport.loseWriteConnection()
            transport.resumeProducing()
        else:
            transport.loseConnection()
        if self._abortingCall is None:
            self._abortingCall = self.callLater(
                self.reject_linger, self.forceAbortClient
            )


class GatewayRequest(Request):
    """A :class:`~twisted.web.server.Request` whose body is capped and kept in memory.

    Stock Twisted spools bodies of 100 000 bytes or more (and every chunked body) to a
    temporary file.  With a 10 MiB cap a :class:`io.BytesIO` is cheaper and avoids disk
    I/O on the event loop, so :meth:`gotLength` always uses one.  A declared
    ``Content-Length`` above the cap never gets here (the channel answers 413 first);
    :meth:`handleContentChunk` counts the bytes of chunked bodies and refuses the
    request the moment they cross the cap.
    """

    _body_budget: int = 0
    _hardened_channel: HardenedHTTPChannel | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``(name, value)`` exactly as received, in order: REST Lambda events and
        #: mappings show header names with the client's own spelling, which Twisted's
        #: ``requestHeaders`` canonicalises away.
        self.raw_header_pairs: list[tuple[bytes, bytes]] = []

    _tls_info: TlsInfo | None = None

    @property
    def tls_info(self) -> TlsInfo | None:
        """What the TLS layer knows about this connection, or ``None`` over plain TCP.

        Read once per connection from the transport (``ISSLTransport``: a
        ``TLSMemoryBIOProtocol`` that a listener wrapper put around the site) and kept
        on the channel, so keep-alive requests share it.  The client certificate fields
        are filled when the client presented one (mutual TLS listeners).
        """
        if self._tls_info is not None:
            return self._tls_info
        channel: Any = self.channel
        transport = getattr(channel, "transport", None)
        if transport is None or not ISSLTransport.providedBy(transport):
            return None
        info = getattr(channel, "_twistgw_tls_info", None)
        if info is None:
            info = tls_info_of(transport)
            channel._twistgw_tls_info = info
        return info

    @tls_info.setter
    def tls_info(self, value: TlsInfo | None) -> None:
        self._tls_info = value

    def gotLength(self, length: int | None) -> None:
        """Prepare an in-memory body buffer and the byte budget of this request.

        :param length: the declared ``Content-Length``, or ``None`` for chunked bodies.
        """
        self.content = io.BytesIO()
        channel = self.channel
        if isinstance(channel, HardenedHTTPChannel):
            self._hardened_channel = channel
            self._body_budget = channel.max_body_bytes
        else:
            # Not behind our channel (nothing could answer 413): no cap rather than a
            # silently truncated body.
            self._hardened_channel = None
            self._body_budget = sys.maxsize

    def handleContentChunk(self, data: bytes) -> None:
        """Store a piece of the body, or answer 413 once the body crosses the cap.

        :param data: the next bytes of the (de-chunked) body.
        """
        budget = self._body_budget - len(data)
        self._body_budget = budget
        if budget < 0:
            if self._hardened_channel is not None:
                self._hardened_channel.reject(413)
            return
        content: Any = self.content
        content.write(data)


class Handover:
    """A connection leaving HTTP for another protocol (``101 Switching Protocols``).

    The server builds one when a response carries ``upgrade`` (see
    :class:`~twistgw.models.Response`); the plugin calls :meth:`take` with the protocol
    that owns the connection from then on.  The hardened channel stays the transport's
    protocol and forwards bytes and the close to it, so the listener's connection count
    stays right; its HTTP timers stop (the new protocol bounds its own lifetime).
    """

    def __init__(self, request: Request) -> None:
        self._request = request

    @property
    def request_head(self) -> bytes:
        """The request line and header section as received (for protocol libraries,
        such as autobahn, that parse the opening handshake themselves)."""
        request = self._request
        pairs = getattr(request, "raw_header_pairs", None) or [
            (k, v) for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs]
        lines = [b"%s %s HTTP/1.1" % (request.method, request.uri)]
        lines += [k + b": " + v for k, v in pairs]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    @property
    def peer(self) -> IAddress:
        """The client's address."""
        address: IAddress = self._request.getClientAddress()
        return address

    def take(self, protocol: IProtocol, *, replay_head: bool = False) -> None:
        """Give the connection to ``protocol`` (``makeConnection`` is called on it).

        :param replay_head: feed :attr:`request_head` to ``protocol.dataReceived`` first.
        :raises ConnectionError: the client is already gone.
        """
        channel: Any = self._request.channel
        transport: Any = getattr(channel, "transport", None)
        if channel is None or transport is None or self._request._disconnected:
            raise ConnectionError("the client closed the connection before the upgrade")
        channel.setTimeout(None)
        buffered = b"".join(getattr(channel, "_dataBuffer", ()))
        channel._dataBuffer = []
        channel._protocolUpgradeForWebsockets(protocol)
        # The channel no longer produces anything; let the new protocol read.
        transport.unregisterProducer()
        transport.resumeProducing()
        head = self.request_head if replay_head else b""
        # The request is over for HTTP: let it (and what its Deferreds hold) go.
        channel.requests = []
        if head:
            protocol.dataReceived(head)
        if buffered:
            protocol.dataReceived(buffered)


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


class GatewaySite(Site):
    """The :class:`~twisted.web.server.Site` of one gateway listener.

    :param resource: the root resource (the gateway's router).
    :param limits: the listener's :class:`Limits`; ``idle_timeout`` becomes Twisted's
        idle ``timeOut``, the rest is enforced by :class:`HardenedHTTPChannel`.
    :param clock: the time source for every timer of this listener (tests pass a
        :class:`twisted.internet.task.Clock`); defaults to the global reactor.
    :param name: the listener's name, used in log messages.

    :ivar limits: the listener's limits.
    :ivar name: the listener's name.
    :ivar refused_connections: connections closed at accept time because the listener
        was at ``max_connections`` (monotonic, for metrics).
    :ivar rejected_requests: requests refused by :class:`HardenedHTTPChannel`, by status
        (400/408/413/414/431; monotonic, for metrics).  These never reach the resource,
        so they are not in the gateway's access log.
    """

    protocol = HardenedHTTPChannel  # type: ignore[assignment]  # HTTP/1.1 only: no h2 wrapper
    requestFactory = GatewayRequest
    displayTracebacks = False
    _log = Logger()

    #: At most one "connection cap reached" log event per this many seconds.
    refusal_log_interval: float = 1.0

    def __init__(
        self,
        resource: IResource,
        limits: Limits,
        *,
        clock: IReactorTime | None = None,
        name: str = "listener",
    ) -> None:
        super().__init__(
            resource,
            GatewayRequest,
            timeout=limits.idle_timeout,
            reactor=clock,
            # API Gateway never turns a body into query arguments, and parsing a 10 MiB
            # multipart body on the event loop is a cheap DoS.
            parsePOSTFormSubmission=False,
        )
        self.limits = limits
        self.name = name
        self.refused_connections = 0
        self.rejected_requests: Counter[int] = Counter()
        self._open_connections = 0
        self._refusals_not_logged = 0
        self._last_refusal_log: float | None = None
        self._clock = typing.cast(_TimeSource, self.reactor)

    @property
    def open_connections(self) -> int:
        """Connections of this listener that are currently open."""
        return self._open_connections

    def acceptableProtocols(self) -> list[bytes]:
        """Advertise HTTP/1.1 only in ALPN (Twisted's HTTP/2 is not Rapid-Reset safe).

        :returns: ``[b"http/1.1"]``.
        """
        return [b"http/1.1"]

    def log(self, request: object) -> None:
        """Write nothing: the gateway writes its own access log.

        :param request: the finished request (ignored).
        """

    def buildProtocol(self, addr: IAddress | None) -> Protocol:  # type: ignore[override]
        """Build a hardened channel, or refuse the connection when at the cap.

        :param addr: the peer's address.
        :returns: a :class:`HardenedHTTPChannel`, or a protocol that closes the
            connection immediately when ``max_connections`` are already open.
        """
        if self._open_connections >= self.limits.max_connections:
            self._note_refusal(addr)
            return _RefusedConnection()
        channel = super().buildProtocol(addr)
        if isinstance(channel, HardenedHTTPChannel):
            channel.apply_limits(self.limits)
            channel._slot_owner = self
        return channel  # type: ignore[no-any-return]

    def _note_refusal(self, addr: IAddress | None) -> None:
        """Count a refused connection; log at most once per ``refusal_log_interval``.

        :param addr: the refused peer's address.
        """
        self.refused_connections += 1
        self._refusals_not_logged += 1
        now = self._clock.seconds()
        last = self._last_refusal_log
        if last is None or now - last >= self.refusal_log_interval:
            self._log.warn(
                "Listener {name}: {count} connection(s) refused, {cap} already open "
                "(last from {peer})",
                name=self.name,
                count=self._refusals_not_logged,
                cap=self.limits.max_connections,
                peer=str(addr),
            )
            self._last_refusal_log = now
            self._refusals_not_logged = 0

    def _connection_opened(self) -> None:
        """Called by a channel of this site when its connection is made."""
        self._open_connections += 1

    def _connection_closed(self) -> None:
        """Called (once) by a channel of this site when its connection is gone."""
        self._open_connections -= 1
