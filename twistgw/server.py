"""The gateway's request handler: one call per request, from the listener's HTTP layer.

:mod:`twistgw.http` parses and vets HTTP/1.1; this module turns its
:class:`~twistgw.http.HttpRequest` into an immutable :class:`~twistgw.models.InboundRequest`,
runs the pipeline against the gateway's *current* deployment (read once per request, so
a reload never changes a request mid-flight), serialises the response headers once (the
HTTP layer adds the status line, ``Date``, ``Content-Length`` and ``Connection`` and writes
it all in one call) and notifies observers.  A client that disconnects cancels the
pipeline, and with it any integration call.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from .http import Handover, HttpRequest
from .models import Headers, InboundRequest
from .pipeline import Exchange, Pending
from .routing import parse_query

if TYPE_CHECKING:
    from .gateway import Gateway
    from .reload import Serving

__all__ = ["GatewayHandler", "inbound_from_http"]

#: Framing headers the transport owns; a response carrying them would corrupt framing.
_HOP_BY_HOP = frozenset((b"Content-Length", b"Transfer-Encoding", b"Connection"))

log = Logger()
_NO_KEYWORDS: dict[str, Any] = {}


def inbound_from_http(request: HttpRequest, listener: str, scheme: str = "http"
                      ) -> InboundRequest:
    """Build the immutable :class:`InboundRequest` from a parsed request.

    ``scheme`` is known per listener (TLS or not), which is cheaper than asking the
    transport on every request.
    """
    path, _sep, query = request.target.partition(b"?")
    client_ip, client_port, server_port = request.addresses
    raw_query = query.decode("latin-1") if query else ""
    # Positional, in the field order tests/core/test_models.py pins (keyword arguments
    # cost a quarter of the construction).
    return InboundRequest(
        request.method.decode("latin-1"), path.decode("latin-1") or "/", raw_query,
        parse_query(raw_query) if raw_query else (),
        Headers.indexed(tuple(request.headers), request.header_index), request.body,
        client_ip, client_port, listener, scheme, server_port,
        request.version.decode("latin-1"), time.time(), request.tls_info)


#: Canonical spellings of a few names (``Date`` replaces ours; the framing ones are
#: dropped whatever their spelling; the others keep the spelling clients always saw).
_CANONICAL = {
    "content-length": b"Content-Length",
    "transfer-encoding": b"Transfer-Encoding",
    "connection": b"Connection",
    "date": b"Date",
    "set-cookie": b"Set-Cookie",
    "last-modified": b"Last-Modified",
    "etag": b"ETag",
}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_encoded_names: dict[str, bytes | None] = {}


def _wire_name(name: str) -> bytes | None:
    """The header name as sent (AWS keeps spellings like ``x-amzn-RequestId``), or
    ``None`` for a name that is not an HTTP token (never sent: it could split the
    response).  Cached; bounded because names come from configs and backends."""
    found = _encoded_names.get(name, b"")
    if found != b"":
        return found
    canonical = _CANONICAL.get(name.lower())
    if canonical is not None:
        encoded: bytes | None = canonical
    elif _TOKEN.match(name):
        encoded = name.encode("ascii")
    else:
        log.warn("dropping response header with an invalid name {name!r}", name=name)
        encoded = None
    if len(_encoded_names) < 4096:
        _encoded_names[name] = encoded
    return encoded


def _wire_value(value: str) -> bytes:
    """Encode a header value; CR, LF and NUL become spaces (no response splitting)."""
    if "\r" in value or "\n" in value or "\x00" in value:
        value = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


#: Response header name -> the start of its line (``b"Name: "``); ``b""`` for a name never
#: written (not a token, or framing the transport owns); :data:`_DATE_PREFIX` for Date.
_prefixes: dict[str, bytes] = {}
_DATE_PREFIX = b"Date: "


def _prefix_of(name: str) -> bytes:
    """The line start for ``name`` (cached, bounded like :func:`_wire_name`)."""
    key = _wire_name(name)
    prefix = (b"" if key is None or key in _HOP_BY_HOP
              else _DATE_PREFIX if key == b"Date" else key + b": ")
    if len(_prefixes) < 4096:
        _prefixes[name] = prefix
    return prefix


def header_lines(items: tuple[tuple[str, str], ...]) -> tuple[bytes, bool]:
    """The response's header section (without the framing headers) and whether it
    carries its own ``Date``.  Repeated names are written as repeated lines."""
    lines: list[bytes] = []
    has_date = False
    prefixes = _prefixes
    for name, value in items:
        prefix = prefixes.get(name)
        if prefix is None:
            prefix = _prefix_of(name)
        if not prefix:
            continue
        if prefix is _DATE_PREFIX:
            if has_date:
                continue  # one Date only: the first wins
            has_date = True
        if value.isascii() and value.isprintable():
            lines.append(prefix + value.encode("ascii") + b"\r\n")
        else:
            lines.append(prefix + _wire_value(value) + b"\r\n")
    return b"".join(lines), has_date


_UNAVAILABLE = (b"Content-Type: application/json\r\nRetry-After: 1\r\n",
                b'{"message":"Service Unavailable"}')
_INTERNAL = (b"Content-Type: application/json\r\n"
             b"x-amzn-ErrorType: InternalServerErrorException\r\n",
             b'{"message": "Internal server error"}')


class GatewayHandler:
    """The request handler of one gateway listener (the :class:`~twistgw.http.GatewaySite`
    calls it once per request)."""

    def __init__(self, gateway: Gateway, listener: str, scheme: str = "http") -> None:
        self.gateway = gateway
        self.listener = listener
        self.scheme = scheme

    def __call__(self, request: HttpRequest) -> None:
        """Run the pipeline; write synchronously when it finished synchronously."""
        gateway = self.gateway
        if not gateway.ready:
            request.respond(503, *_UNAVAILABLE)
            return
        # Read once: a reload swaps gateway.serving, and this request stays on its
        # deployment, which is kept until the requests counted on it are done.
        serving = gateway.serving
        inbound = inbound_from_http(request, self.listener, self.scheme)
        serving.enter()
        try:
            result = gateway.pipeline.serve(serving.deployment, inbound)
        except Exception:
            log.failure("unhandled error in the request pipeline")
            request.respond(500, *_INTERNAL)
            serving.leave()
            return
        if not isinstance(result, Exchange):
            request.on_lost = result.cancel
            if isinstance(result, Pending):
                # Waiting on the integration (a proxied or Lambda request): the pipeline
                # calls back once the exchange is made, no Deferred chained to the call's.
                result.then(self._answered, self._unanswered, request, serving)
            else:
                # One callback pair (each leaves the deployment): a callback less to run.
                result.addCallbacks(self._answered, self._unanswered, (request, serving),
                                    _NO_KEYWORDS, (request, serving))
            return
        try:
            self._write(request, result)
        finally:
            serving.leave()

    def _answered(self, exchange: Exchange, request: HttpRequest, serving: Serving) -> None:
        try:
            self._write(request, exchange)
        finally:
            serving.leave()

    def _unanswered(self, failure: Failure, request: HttpRequest, serving: Serving) -> None:
        try:
            self._failed(request, failure)
        finally:
            serving.leave()

    def _write(self, request: HttpRequest, exchange: Exchange) -> None:
        if not request.connected:
            return
        response = exchange.response
        if response.upgrade is not None and response.status == 101:
            self._hand_over(request, exchange)
            return
        lines, has_date = header_lines(response.headers.items)
        request.respond(response.status, lines, response.body, date=not has_date)
        self.gateway.pipeline.finished(exchange)

    def _hand_over(self, request: HttpRequest, exchange: Exchange) -> None:
        """Give the connection to the response's ``upgrade`` (101: a WebSocket)."""
        upgrade = exchange.response.upgrade
        assert upgrade is not None
        try:
            upgrade(Handover(request))
        except Exception:
            log.failure("a protocol upgrade failed; closing the connection")
            transport: Any = request.channel.transport
            if transport is not None:
                transport.abortConnection()
        self.gateway.pipeline.finished(exchange)

    def _failed(self, request: HttpRequest, failure: Failure) -> None:
        if failure.check(CancelledError):
            log.debug("client went away; request cancelled")
            return
        log.failure("unhandled error in the request pipeline", failure)
        if request.connected:
            request.respond(500, *_INTERNAL)
