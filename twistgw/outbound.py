"""Pieces every outbound HTTP call of the gateway needs (HTTP backends, Lambda Invoke).

Bodies are already in memory and bounded on the way in, and must stay bounded on the way
back: :class:`BytesProducer` sends a request body in one write, :class:`BoundedBody`
collects a response body up to a limit and aborts the connection beyond it (or when the
waiting Deferred is cancelled, e.g. by an integration timeout).  Shared here so plugins
do not each carry a copy.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error as inet_error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

__all__ = ["BytesProducer", "BoundedBody", "BodyTooLarge"]

_DONE = Failure(inet_error.ConnectionDone())


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, written at once with a known length."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: the body was written in one go."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


class BodyTooLarge(Exception):
    """A response body exceeded the collector's limit."""


def _abort(transport: Any) -> None:
    """Stop a response body: Twisted's body transport aborts the connection."""
    if transport is not None:
        transport.stopProducing()


class BoundedBody(Protocol):
    """Collects a response body (``response.deliverBody``) up to ``limit`` bytes.

    ``finished`` fires with the body, fails with :class:`BodyTooLarge` as soon as the
    limit is crossed (the connection is aborted, nothing more is buffered), or with the
    transport's error; cancelling it aborts the connection.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _d: Deferred[bytes]) -> None:
        _abort(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.chunks = []
            self.finished.errback(BodyTooLarge())
            _abort(self.transport)
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)
