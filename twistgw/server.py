"""The twisted.web glue: one leaf resource that hands every request to the pipeline.

Twisted parses HTTP (through the hardened channel of :mod:`twistgw.http`); this module
turns its ``Request`` into an immutable :class:`~twistgw.models.InboundRequest`, runs the
pipeline against the gateway's *current* deployment (read once per request, so a reload
never changes a request mid-flight), writes the response and notifies observers.  A
client that disconnects cancels the pipeline, and with it any integration call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from .models import Headers, InboundRequest
from .pipeline import Exchange
from .routing import parse_query

if TYPE_CHECKING:
    from twisted.web.server import Request

    from .gateway import Gateway

__all__ = ["GatewayResource", "inbound_from_twisted"]

log = Logger()


def _latin1(value: bytes) -> str:
    return value.decode("latin-1")


def inbound_from_twisted(request: Request, listener: str) -> InboundRequest:
    """Build the immutable :class:`InboundRequest` from Twisted's request."""
    uri = request.uri
    path, _sep, query = uri.partition(b"?")
    raw_pairs = getattr(request, "raw_header_pairs", None)
    if raw_pairs is not None:
        headers = Headers(tuple((_latin1(k), _latin1(v)) for k, v in raw_pairs))
    else:
        headers = Headers(tuple((_latin1(k), _latin1(v))
                                for k, vs in request.requestHeaders.getAllRawHeaders()
                                for v in vs))
    peer: Any = request.getClientAddress()
    host_addr: Any = request.getHost()
    content = request.content
    body = b""
    if content is not None:
        content.seek(0)
        body = content.read()
    raw_query = _latin1(query)
    return InboundRequest(
        method=_latin1(request.method),
        raw_path=_latin1(path) or "/",
        raw_query=raw_query,
        query=parse_query(raw_query),
        headers=headers,
        body=body,
        client_ip=getattr(peer, "host", ""),
        client_port=getattr(peer, "port", 0),
        listener=listener,
        scheme="https" if request.isSecure() else "http",
        server_port=getattr(host_addr, "port", 0),
        http_version=_latin1(request.clientproto),
        received_at=getattr(request, "received_at", None) or time.time(),
        tls=getattr(request, "tls_info", None),
    )


@implementer(IResource)
class GatewayResource:
    """The one leaf resource of a listener's Site: every path ends here."""

    isLeaf = True

    def __init__(self, gateway: Gateway, listener: str) -> None:
        self.gateway = gateway
        self.listener = listener

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
        deployment = self.gateway.deployment
        inbound = inbound_from_twisted(request, self.listener)
        pipeline = self.gateway.pipeline
        try:
            result = pipeline.handle(deployment, inbound)
        except Exception:
            log.failure("unhandled error in the request pipeline")
            return self._internal_error(request)
        if isinstance(result, Deferred):
            finished = request.notifyFinish()
            finished.addErrback(lambda _f: result.cancel())
            result.addCallbacks(lambda ex: self._write(request, ex),
                                lambda f: self._failed(request, f))
            return NOT_DONE_YET
        self._write(request, result)
        return NOT_DONE_YET

    def _write(self, request: Request, exchange: Exchange) -> None:
        if request._disconnected:
            return
        response = exchange.response
        request.setResponseCode(response.status)
        headers = request.responseHeaders
        headers.removeHeader(b"server")
        for name, value in response.headers.items:
            headers.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        body = response.body
        headers.setRawHeaders(b"content-length", [str(len(body)).encode("ascii")])
        if body:
            request.write(body)
        request.finish()
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
        request.write(body)
        request.finish()
        return NOT_DONE_YET
