"""Open WebSocket connections: autobahn's protocol, AWS's limits, routing and pushes.

autobahn implements the protocol (handshake, framing, masking, close handshake, the
1009 close for frames over ``max_frame_bytes`` and messages over
``max_message_bytes``); this module adds what API Gateway adds: the idle timeout (no
message for ``idle_timeout``) and the maximum lifetime, both closing with 1001; binary
frames closing with 1003; route selection and integrations per message, with route
responses and AWS's error frames; ``$disconnect`` after the close; and a bounded send
buffer (pushes beyond ``send_buffer_bytes`` waiting for a slow reader are refused).

A :class:`Hub` holds one gateway's connections by id and answers the ``@connections``
operations for them, locally or through the Redis :mod:`.cluster` when the connection
lives on another gateway process.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from txaio.tx import make_logger
from zope.interface import implementer

from .definition import select_route
from .events import Handshake, disconnect_event, message_event, new_id
from .integrations import HttpClient, call_integration

if TYPE_CHECKING:
    from twistgw.config import GatewayConfig
    from twistgw.http import Handover

    from .cluster import Cluster
    from .definition import WsApi
    from .settings import WsSettings

__all__ = ["Connection", "Hub", "WsProtocol", "Throttled", "iso_time"]

log = Logger()

#: Messages a connection may have in its integrations at once (more get an error frame).
MAX_IN_FLIGHT = 64
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003


class Throttled:
    """A log line written at most once per ``interval`` seconds, with how many were not.

    Integration failures, ``$disconnect`` failures and dropped pushes happen per message
    or per connection: a client (or a shutdown closing 10,000 connections) must not be
    able to flood the log.
    """

    def __init__(self, clock: Any, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self.last: float | None = None
        self.skipped = 0

    def __call__(self, emit: Callable[[int], None]) -> None:
        """Call ``emit(count of lines skipped since the last one)`` unless too soon."""
        now = float(self.clock.seconds())
        if self.last is not None and now - self.last < self.interval:
            self.skipped += 1
            return
        emit(self.skipped)
        self.last = now
        self.skipped = 0


def iso_time(ms: int) -> str:
    """``2024-01-20T11:54:57.419Z`` (the management API's timestamps)."""
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ms % 1000:03d}Z"


@implementer(IPushProducer)
class _Flow:
    """Told by the transport when its write buffer is full (pause) and drained."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def pauseProducing(self) -> None:
        self.conn.paused = True

    def resumeProducing(self) -> None:
        self.conn.paused = False
        self.conn.flush()

    def stopProducing(self) -> None:
        self.conn.paused = True


class WsProtocol(WebSocketServerProtocol):
    """autobahn's server protocol bound to one :class:`Connection`."""

    #: autobahn warns once per misbehaving client (an oversize frame, a bad handshake):
    #: clients could flood the gateway's log that way, so only its errors are kept (the
    #: close code reaches ``$disconnect`` anyway).
    log = make_logger(level="error")

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    def onConnect(self, request: Any) -> Any:
        """Agree on the subprotocol the ``$connect`` integration chose, if offered."""
        chosen = self.conn.subprotocol
        if chosen is not None and chosen in (request.protocols or []):
            return chosen
        return None

    def onOpen(self) -> None:
        # The opening handshake is done: drop what autobahn kept of it (about a KB per
        # idle connection); the events have what they need in the Connection.
        self.http_request_data = b""
        self.http_response_data = ""
        self.http_headers = {}
        self.http_request_params = {}
        self.conn.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.conn.received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.conn.closed(code, reason)


class Connection:
    """One client connection: what ``$connect`` saw, its timers and its send buffer.

    Slotted, and the send queue exists only while the client reads slowly: thousands of
    idle connections are the normal case.
    """

    __slots__ = ("_deadline", "_gone", "_last_message", "_opened_at", "api", "api_id",
                 "api_key", "authorizer",
                 "closing", "connected_at_ms", "domain_name", "headers", "hub", "id",
                 "identity", "in_flight", "last_active_ms", "paused", "proto", "query",
                 "queue", "queued_bytes", "stage", "stage_variables", "subprotocol")

    def __init__(self, hub: Hub, api: WsApi, handshake: Handshake) -> None:
        self.hub = hub
        self.api = api
        self.api_id = api.id
        self.id = handshake.id
        self.stage = handshake.stage
        self.stage_variables = handshake.stage_variables
        self.domain_name = handshake.domain_name
        self.headers = handshake.headers
        self.query = handshake.query
        self.identity = handshake.identity
        self.api_key = handshake.api_key
        self.authorizer = handshake.authorizer
        self.connected_at_ms = handshake.connected_at_ms
        self.last_active_ms = self.connected_at_ms
        self.subprotocol: str | None = None
        self.proto: WsProtocol | None = None
        self.paused = False
        self.queue: deque[bytes] | None = None
        self.queued_bytes = 0
        self.in_flight = 0
        self.closing = False
        self._gone = False
        self._deadline: Any = None
        self._opened_at = 0.0
        self._last_message = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    def attach(self, handover: Handover) -> None:
        """Take the connection over from HTTP and let autobahn finish the handshake."""
        proto = WsProtocol(self)
        proto.factory = self.hub.factory
        handover.take(proto, replay_head=True)

    def opened(self, proto: WsProtocol) -> None:
        self.proto = proto
        # Only $connect sees the handshake's headers and query string (as on AWS).
        self.headers = self.query = ()
        reactor = self.hub.reactor
        settings = self.hub.settings
        self._opened_at = self._last_message = float(reactor.seconds())
        self._deadline = reactor.callLater(min(settings.idle_timeout, settings.max_lifetime),
                                           self._check_deadlines)
        proto.registerProducer(_Flow(self), True)
        self.hub.add(self)

    def _check_deadlines(self) -> None:
        """One timer per connection for both limits: it fires at the earlier deadline
        as last set, and sleeps again if a message moved the idle one (no timer reset per
        message)."""
        self._deadline = None
        settings = self.hub.settings
        reactor = self.hub.reactor
        now = float(reactor.seconds())
        due = min(self._opened_at + settings.max_lifetime,
                  self._last_message + settings.idle_timeout)
        if now >= due:
            self.close(CLOSE_GOING_AWAY, "Going away")
        else:
            self._deadline = reactor.callLater(due - now, self._check_deadlines)

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake (autobahn drops the connection if it stalls)."""
        if self.closing or self.proto is None:
            return
        self.closing = True
        # sendClose accepts only 1000 and 3000-4999; API Gateway closes with 1001 (idle,
        # lifetime) and 1003 (binary), which the frame-level call sends as they are.
        self.proto.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123],
                                  isReply=False)

    def closed(self, code: int | None, reason: str | None) -> None:
        """The connection is gone: stop timers, unregister, run ``$disconnect``."""
        if self._gone:
            return
        self._gone = True
        call, self._deadline = self._deadline, None
        if call is not None and call.active():
            call.cancel()
        self.queue = None
        self.queued_bytes = 0
        if self.proto is None:
            return  # the handshake never completed: no $disconnect, as on AWS
        self.hub.remove(self)
        defer.ensureDeferred(self.hub.disconnected(self, code or 1006, reason or ""))

    @property
    def gone(self) -> bool:
        return self._gone

    # -- inbound ------------------------------------------------------------------------

    def received(self, payload: bytes, is_binary: bool) -> None:
        self.last_active_ms = int(time.time() * 1000)
        self._last_message = float(self.hub.reactor.seconds())
        self.hub.touched(self)
        if is_binary:
            self.close(CLOSE_UNSUPPORTED, "Binary frames are not supported")
            return
        request_id = new_id()
        if self.in_flight >= MAX_IN_FLIGHT:
            self.error_frame("Too Many Requests", request_id)
            return
        route = select_route(self.api, payload)
        if route is None or route.integration is None:
            self.error_frame("Forbidden", request_id)
            return
        integration = route.integration
        if integration.type == "MOCK":  # answered in place: no event, no Deferred
            if route.route_response and integration.response is not None:
                self.send(integration.response.encode("utf-8"))
            return
        self.in_flight += 1
        d = defer.ensureDeferred(self._route(route, payload, request_id))
        d.addErrback(lambda f: log.failure("WebSocket message handling failed", f))

    async def _route(self, route: Any, payload: bytes, request_id: str) -> None:
        try:
            body = payload.decode("utf-8")
            event = message_event(self, route.key, body, request_id, new_id())
            outcome = await call_integration(self.hub.config, route.integration, self, event,
                                             payload, self.hub.http,
                                             self.hub.settings.max_message_bytes)
        finally:
            self.in_flight -= 1
        if outcome.error is not None:
            error = outcome.error
            self.hub.log_failure(lambda skipped: log.error(
                "({request_id}) {route} on {conn}: {error} ({skipped} more not logged)",
                request_id=request_id, route=route.key, conn=self.id, error=error,
                skipped=skipped))
            self.error_frame("Internal server error", request_id)
            return
        if route.route_response and outcome.body is not None:
            self.send(outcome.body)

    def error_frame(self, message: str, request_id: str) -> None:
        """AWS's error message frame (§4.4)."""
        self.send(json.dumps({"message": message, "connectionId": self.id,
                              "requestId": request_id}).encode("utf-8"))

    # -- outbound -----------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Send one message; False when the send buffer is full (or the connection gone)."""
        if self._gone or self.closing or self.proto is None:
            return False
        if self.paused or self.queue:
            if self.queued_bytes + len(data) > self.hub.settings.send_buffer_bytes:
                return False
            if self.queue is None:
                self.queue = deque()
            self.queue.append(data)
            self.queued_bytes += len(data)
            return True
        self._write(data)
        return True

    def _write(self, data: bytes) -> None:
        assert self.proto is not None
        try:
            data.decode("utf-8")
            binary = False
        except UnicodeDecodeError:
            binary = True
        self.proto.sendMessage(data, isBinary=binary)

    def flush(self) -> None:
        queue = self.queue
        while queue and not self.paused and not self._gone:
            data = queue.popleft()
            self.queued_bytes -= len(data)
            self._write(data)
        if not queue:
            self.queue = None

    def info(self) -> dict[str, Any]:
        """The GetConnection answer."""
        return {"connectedAt": iso_time(self.connected_at_ms),
                "identity": {"sourceIp": self.identity["sourceIp"],
                             "userAgent": self.identity["userAgent"]},
                "lastActiveAt": iso_time(self.last_active_ms)}


class Hub:
    """One gateway's WebSocket connections, limits and (optional) cluster membership."""

    def __init__(self, config: GatewayConfig, settings: WsSettings, reactor: Any) -> None:
        self.config = config
        self.settings = settings
        self.reactor = reactor
        self.connections: dict[str, Connection] = {}
        self.http = HttpClient(reactor)
        self.cluster: Cluster | None = None
        #: Failures of integrations, $disconnect and relayed pushes: one line a 10 s.
        self.log_failure = Throttled(reactor, 10.0)
        self._tokens = float(settings.new_connections_per_second)
        self._refilled = float(reactor.seconds())
        factory = WebSocketServerFactory(server="twistgw")
        factory.setProtocolOptions(
            maxFramePayloadSize=settings.max_frame_bytes,
            maxMessagePayloadSize=settings.max_message_bytes,
            openHandshakeTimeout=settings.close_timeout,
            closeHandshakeTimeout=settings.close_timeout,
            perMessageCompressionAccept=lambda _offers: None,
            failByDrop=False,
            echoCloseCodeReason=False,
        )
        factory.reactor = reactor
        self.factory = factory

    @property
    def full(self) -> bool:
        return len(self.connections) >= self.settings.max_connections

    def admit(self) -> bool:
        """Take a token of the new-connection bucket (AWS: 500 new connections a second,
        burst as much): False when the handshake must be refused with 429."""
        rate = float(self.settings.new_connections_per_second)
        now = float(self.reactor.seconds())
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        if self.cluster is not None:
            self.cluster.register(conn)

    def remove(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        if self.cluster is not None:
            self.cluster.unregister(conn)

    def touched(self, conn: Connection) -> None:
        if self.cluster is not None:
            self.cluster.touched(conn)

    async def disconnected(self, conn: Connection, code: int, reason: str) -> None:
        """Run ``$disconnect`` (best effort, as on AWS: failures are only logged)."""
        route = conn.api.routes.get("$disconnect")
        if route is None or route.integration is None:
            return
        request_id = new_id()
        event = disconnect_event(conn, code, reason, request_id)
        outcome = await call_integration(self.config, route.integration, conn, event, b"",
                                         self.http, self.settings.max_message_bytes)
        if outcome.error is not None:
            error = outcome.error
            self.log_failure(lambda skipped: log.warn(
                "({request_id}) $disconnect of {conn}: {error} ({skipped} more not logged)",
                request_id=request_id, conn=conn.id, error=error, skipped=skipped))

    # -- the @connections operations ----------------------------------------------------

    # Each API stage's callback URL manages that stage's connections only: ``where`` is
    # the ``(api id, stage)`` the call came in on.

    def _local(self, connection_id: str, where: tuple[str, str]) -> Connection | None:
        conn = self.connections.get(connection_id)
        if conn is not None and (conn.api_id, conn.stage) != where:
            return None
        return conn

    async def post(self, connection_id: str, data: bytes, where: tuple[str, str]) -> str:
        """``"ok"``, ``"gone"`` or ``"full"`` (the send buffer is full)."""
        conn = self._local(connection_id, where)
        if conn is not None:
            return "ok" if conn.send(data) else ("gone" if conn.gone else "full")
        if self.cluster is not None and connection_id not in self.connections:
            return await self.cluster.relay(connection_id, "post", data, where)
        return "gone"

    async def info(self, connection_id: str, where: tuple[str, str]
                   ) -> dict[str, Any] | None:
        conn = self._local(connection_id, where)
        if conn is not None:
            return conn.info()
        if self.cluster is not None and connection_id not in self.connections:
            return await self.cluster.info(connection_id, where)
        return None

    async def delete(self, connection_id: str, where: tuple[str, str]) -> bool:
        conn = self._local(connection_id, where)
        if conn is not None:
            conn.close(1000, "")
            return True
        if self.cluster is not None and connection_id not in self.connections:
            return await self.cluster.relay(connection_id, "delete", b"", where) == "ok"
        return False

    def deliver(self, op: str, connection_id: str, data: bytes) -> None:
        """A relayed operation arrived from another gateway (through Redis)."""
        conn = self.connections.get(connection_id)
        if conn is None:
            return
        if op == "post":
            if not conn.send(data):
                self.log_failure(lambda skipped: log.warn(
                    "relayed message to {conn} dropped: send buffer full ({skipped} more "
                    "not logged)", conn=connection_id, skipped=skipped))
        elif op == "delete":
            conn.close(1000, "")

    def close_all(self) -> None:
        for conn in list(self.connections.values()):
            conn.close(CLOSE_GOING_AWAY, "Going away")

    def stop(self) -> Any:
        self.close_all()
        if self.cluster is not None:
            self.cluster.stop()
        return self.http.close()
