"""The twisted.web glue: one leaf resource that hands every request to the pipeline.

Twisted parses HTTP (through the hardened channel of :mod:`twistgw.http`); this module
turns its ``Request`` into an immutable :class:`~twistgw.models.InboundRequest`, runs the
pipeline against the gateway's *current* deployment (read once per request, so a reload
never changes a request mid-flight), writes the response and notifies observers.  A
client that disconnects cancels the pipeline, and with it any integration call.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from .http import Handover
from .models import Headers, InboundRequest
from .pipeline import Exchange
from .routing import parse_query

if TYPE_CHECKING:
    from twisted.web.server import Request

    from .gateway import Gateway

__all__ = ["GatewayResource", "inbound_from_twisted"]

#: Framing headers the transport owns; a response carrying them would corrupt framing.
_HOP_BY_HOP = frozenset((b"Content-Length", b"Transfer-Encoding", b"Connection"))

log = Logger()


def inbound_from_twisted(request: Request, listener: str, scheme: str = "http"
                         ) -> InboundRequest:
    """Build the immutable :class:`InboundRequest` from Twisted's request.

    ``scheme`` is known per listener (TLS or not), which is cheaper than asking the
    transport on every request.
    """
    path, _sep, query = request.uri.partition(b"?")
    raw_pairs = getattr(request, "raw_header_pairs", None)
    if raw_pairs is None:
        raw_pairs = [(k, v) for k, vs in request.requestHeaders.getAllRawHeaders()
                     for v in vs]
    headers = Headers(tuple([(k.decode("latin-1"), v.decode("latin-1"))
                             for k, v in raw_pairs]))
    peer: Any = request.client
    host_addr: Any = request.host
    content = request.content
    body = b""
    if content is not None:
        content.seek(0)
        body = content.read()
    raw_query = query.decode("latin-1")
    return InboundRequest(
        method=request.method.decode("latin-1"),
        raw_path=path.decode("latin-1") or "/",
        raw_query=raw_query,
        query=parse_query(raw_query) if raw_query else (),
        headers=headers,
        body=body,
        client_ip=getattr(peer, "host", ""),
        client_port=getattr(peer, "port", 0),
        listener=listener,
        scheme=scheme,
        server_port=getattr(host_addr, "port", 0),
        http_version=request.clientproto.decode("latin-1"),
        received_at=getattr(request, "received_at", None) or time.time(),
        tls=getattr(request, "tls_info", None),
    )


#: Names Twisted itself looks up in response headers by their canonical spelling; ours
#: must use that spelling so Twisted sees them (and never adds a second one).
_TWISTED_CANONICAL = {
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
_date_cache: list[Any] = [-1, b""]


def _wire_name(name: str) -> bytes | None:
    """The header name as sent (AWS keeps spellings like ``x-amzn-RequestId``), or
    ``None`` for a name that is not an HTTP token (never sent: it could split the
    response).  Cached; bounded because names come from configs and backends."""
    found = _encoded_names.get(name, b"")
    if found != b"":
        return found
    canonical = _TWISTED_CANONICAL.get(name.lower())
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


def _http_date(now: float) -> bytes:
    second = int(now)
    cached = _date_cache
    if cached[0] != second:
        cached[0], cached[1] = second, datetimeToString(second)
    return cached[1]  # type: ignore[no-any-return]


def _closing(request: Request, raw: dict[bytes, list[bytes]]) -> None:
    """Answer with ``Connection: close`` and close after this response (draining)."""
    raw[b"Connection"] = [b"close"]
    channel: Any = request.channel
    if channel is not None:
        channel.persistent = False


@implementer(IResource)
class GatewayResource:
    """The one leaf resource of a listener's Site: every path ends here."""

    isLeaf = True
    #: Set when the listener drains (shutdown, or removed by a reload): every response
    #: then carries ``Connection: close`` and the connection closes after it.
    draining = False

    def __init__(self, gateway: Gateway, listener: str, scheme: str = "http") -> None:
        self.gateway = gateway
        self.listener = listener
        self.scheme = scheme

    def getChildWithDefault(self, name: bytes, request: Request) -> IResource:
        """Never called for a leaf; present for the interface."""
        return self

    def putChild(self, path: bytes, child: IResource) -> None:
        """A leaf has no children."""
        raise NotImplementedError("GatewayResource is a leaf")

    def render(self, request: Request) -> Any:
        """Run the pipeline; write synchronously when it finished synchronously."""
        if not self.gateway.ready:
            return self._unavailable(request)
        # Read once: a reload swaps gateway.serving, and this request stays on its
        # deployment, which is kept until the requests counted on it are done.
        serving = self.gateway.serving
        inbound = inbound_from_twisted(request, self.listener, self.scheme)
        pipeline = self.gateway.pipeline
        serving.enter()
        try:
            result = pipeline.handle(serving.deployment, inbound)
        except Exception:
            log.failure("unhandled error in the request pipeline")
            self._internal_error(request)
            return serving.leave(NOT_DONE_YET)
        if isinstance(result, Deferred):
            finished = request.notifyFinish()
            finished.addErrback(lambda _f: result.cancel())
            finished.addBoth(serving.leave)
            result.addCallbacks(lambda ex: self._write(request, ex),
                                lambda f: self._failed(request, f))
            return NOT_DONE_YET
        try:
            self._write(request, result)
        finally:
            serving.leave()
        return NOT_DONE_YET

    def _write(self, request: Request, exchange: Exchange) -> None:
        if request._disconnected:
            return
        response = exchange.response
        if response.upgrade is not None and response.status == 101:
            self._hand_over(request, exchange)
            return
        request.setResponseCode(response.status)
        # Build Twisted's header table in one pass (its per-call API re-validates every
        # name and value, which showed in profiles) and keep AWS's spellings.
        raw: dict[bytes, list[bytes]] = {b"Date": [_http_date(time.time())]}
        for name, value in response.headers.items:
            key = _wire_name(name)
            if key is None or key in _HOP_BY_HOP:
                continue
            found = raw.get(key)
            if found is None or key == b"Date":
                raw[key] = [_wire_value(value)]
            else:
                found.append(_wire_value(value))
        body = response.body
        raw[b"Content-Length"] = [str(len(body)).encode("ascii")]
        # Twisted decided persistence before render (a request's "Connection: close", an
        # HTTP/1.0 client without keep-alive) and put the header in the table replaced
        # below; say it again so the client knows the close is deliberate.
        channel: Any = request.channel
        if self.draining or (channel is not None and not channel.persistent):
            _closing(request, raw)
        headers = TwistedHeaders()
        headers._rawHeaders = raw
        request.responseHeaders = headers
        # The pipeline always sets a Content-Type, in whatever spelling the backend used
        # (a Lambda's "content-type"); Twisted only sees "Content-Type" and would add a
        # second one, text/html, which clients then read instead.
        request.defaultContentType = None
        if body:
            request.write(body)
        request.finish()
        self.gateway.pipeline.finished(exchange)

    def _hand_over(self, request: Request, exchange: Exchange) -> None:
        """Give the connection to the response's ``upgrade`` (101: a WebSocket)."""
        upgrade = exchange.response.upgrade
        assert upgrade is not None
        try:
            upgrade(Handover(request))
        except Exception:
            log.failure("a protocol upgrade failed; closing the connection")
            transport: Any = request.channel.transport if request.channel else None
            if transport is not None:
                transport.abortConnection()
        self.gateway.pipeline.finished(exchange)

    def _failed(self, request: Request, failure: Failure) -> None:
        if failure.check(CancelledError):
            log.debug("client went away; request cancelled")
            return
        log.failure("unhandled error in the request pipeline", failure)
        if not request._disconnected:
            self._internal_error(request)

    def _unavailable(self, request: Request) -> Any:
        body = b'{"message":"Service Unavailable"}'
        request.setResponseCode(503)
        request.responseHeaders.removeHeader(b"server")
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"retry-after", b"1")
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()
        return NOT_DONE_YET

    def _internal_error(self, request: Request) -> Any:
        body = b'{"message": "Internal server error"}'
        request.setResponseCode(500)
        request.responseHeaders.removeHeader(b"server")
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-amzn-errortype", b"InternalServerErrorException")
        request.setHeader(b"content-length", str(len(body)).encode())
        if self.draining:
            _closing(request, request.responseHeaders._rawHeaders)
        request.write(body)
        request.finish()
        return NOT_DONE_YET
