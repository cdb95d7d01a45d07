"""Draining a listener, driven through the real Site and channels over StringTransports.

The end-to-end drain (SIGTERM, twistd, sockets) is tests/acceptance/test_e2e_drain.py;
this pins the per-connection rules: idle connections close at once, a connection with a
request in flight answers it with ``Connection: close`` and closes after it, and the
request is counted on the deployment it started on until its response is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twistgw import IntegrationResponse, hookimpl
from twistgw.config import load_config
from twistgw.gateway import Gateway
from twistgw.models import Context, IntegrationRequest
from twistgw.testing import write_config

if TYPE_CHECKING:
    from conftest import LogCapture

DEFINITION = {
    "openapi": "3.0.1",
    "info": {"title": "t", "version": "1"},
    "paths": {p: {"get": {"x-amazon-apigateway-integration": {
        "type": "mock",
        "requestTemplates": {"application/json": '{"statusCode": 200}'},
        "responses": {"default": {"statusCode": "200"}},
    }}} for p in ("/fast", "/slow")},
}


class Held:
    """Answers /slow when the test fires ``pending``."""

    def __init__(self) -> None:
        self.pending: list[Deferred[IntegrationResponse]] = []

    @hookimpl(tryfirst=True)
    def integrate(self, ctx: Context, request: IntegrationRequest
                  ) -> Deferred[IntegrationResponse] | None:
        if not ctx.request.raw_path.endswith("/slow"):
            return None
        d: Deferred[IntegrationResponse] = Deferred()
        self.pending.append(d)
        return d


def _gateway(tmp_path: Path, held: Held) -> Gateway:
    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a1", "definition": "api.yaml", "stages": ["prod"]}],
        "plugins": {"enabled": ["mock", "mapping"]},
        "access_log": False,
    }, {"api.yaml": DEFINITION})
    gateway = Gateway(load_config(path), reactor=Clock(), extra_plugins=[("held", held)])
    gateway.ready = True
    return gateway


def _connect(gateway: Gateway, request: bytes) -> tuple[Any, StringTransport]:
    site: Any = gateway.sites["public"]
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    proto = site.buildProtocol(transport.getPeer())
    proto.makeConnection(transport)
    proto.dataReceived(request)
    return proto, transport


def test_drain_closes_idle_connections_and_answers_busy_ones_with_close(
        tmp_path: Path) -> None:
    held = Held()
    gateway = _gateway(tmp_path, held)
    site: Any = gateway.sites["public"]
    _idle, idle = _connect(gateway, b"GET /prod/fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.value().startswith(b"HTTP/1.1 200 ") and not idle.disconnecting
    _busy, busy = _connect(gateway, b"GET /prod/slow HTTP/1.1\r\nHost: x\r\n\r\n")
    serving = gateway.serving
    assert serving.inflight == 1 and busy.value() == b""
    assert site.open_channels() == 2

    site.drain()
    assert idle.disconnecting  # closed at once
    assert not busy.disconnecting  # its request is still being answered

    held.pending[0].callback(IntegrationResponse(status=200, body=b"{}"))
    head = busy.value().split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 200 OK"
    assert b"Connection: close" in head
    assert busy.disconnecting  # and closed after the response
    assert serving.inflight == 0


def test_without_drain_keep_alive_is_kept(tmp_path: Path) -> None:
    held = Held()
    gateway = _gateway(tmp_path, held)
    _busy, busy = _connect(gateway, b"GET /prod/slow HTTP/1.1\r\nHost: x\r\n\r\n")
    held.pending[0].callback(IntegrationResponse(status=200, body=b"{}"))
    assert b"Connection: close" not in busy.value() and not busy.disconnecting
    assert gateway.serving.inflight == 0


def test_a_client_that_goes_away_is_no_longer_counted(tmp_path: Path) -> None:
    held = Held()
    gateway = _gateway(tmp_path, held)
    proto, _busy = _connect(gateway, b"GET /prod/slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert gateway.serving.inflight == 1
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    proto.connectionLost(Failure(ConnectionLost()))
    assert gateway.serving.inflight == 0
    assert held.pending[0].called  # the integration call was cancelled


def test_an_upgraded_connection_is_forgotten_by_the_drain(tmp_path: Path) -> None:
    from twisted.internet.protocol import Protocol

    gateway = _gateway(tmp_path, Held())
    site: Any = gateway.sites["public"]
    proto, transport = _connect(gateway, b"GET /prod/fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert proto in site.channels
    proto._hand_over(Protocol(), b"")  # what http.Handover.take does
    assert proto not in site.channels  # no leak for connections that left HTTP
    site.drain()
    assert not transport.disconnecting  # the new protocol closes it, not the drain


def test_a_hanging_shutdown_hook_cannot_hold_the_stop(tmp_path: Path,
                                                      log_events: LogCapture) -> None:
    from twisted.internet.testing import MemoryReactorClock

    class Hangs:
        @hookimpl
        def shutdown(self, gateway: Gateway) -> Deferred[None]:
            return Deferred()

    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a1", "definition": "api.yaml", "stages": ["prod"]}],
        "plugins": {"enabled": ["mock", "mapping"]},
        "access_log": False, "shutdown_grace": 7,
    }, {"api.yaml": DEFINITION})
    reactor = MemoryReactorClock()
    gateway = Gateway(load_config(path), reactor=reactor, extra_plugins=[("hangs", Hangs())])
    gateway.startService()
    box: list[Any] = []
    gateway.stopService().addBoth(box.append)
    reactor.advance(6.9)
    assert box == []
    reactor.advance(0.2)
    assert box == [None] and not gateway.running
    assert any("shutdown hooks did not finish within 7s; stopping anyway" in t
               for t in log_events.texts())


def test_stopping_leaves_no_integration_timeout_timer_behind(tmp_path: Path) -> None:
    """A lane's timer stays armed after its last call answers (it re-arms or drops when it
    fires); the stop cancels it rather than let it outlive the service by up to 29 s."""
    from twisted.internet.testing import MemoryReactorClock

    from twistgw.deadlines import Lane

    held = Held()
    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a1", "definition": "api.yaml", "stages": ["prod"]}],
        "plugins": {"enabled": ["mock", "mapping"]},
        "access_log": False, "shutdown_grace": 1,
    }, {"api.yaml": DEFINITION})
    reactor = MemoryReactorClock()
    gateway = Gateway(load_config(path), reactor=reactor, extra_plugins=[("held", held)])
    gateway.startService()
    gateway.ready = True
    _busy, busy = _connect(gateway, b"GET /prod/slow HTTP/1.1\r\nHost: x\r\n\r\n")
    held.pending[0].callback(IntegrationResponse(status=200, body=b"{}"))
    assert busy.value().startswith(b"HTTP/1.1 200 ")
    lane_timers = [c for c in reactor.getDelayedCalls()
                   if isinstance(getattr(c.func, "__self__", None), Lane)]
    assert len(lane_timers) == 1 and lane_timers[0].active()  # armed, nothing left in it
    box: list[Any] = []
    gateway.stopService().addBoth(box.append)
    reactor.advance(1.1)  # the answered keep-alive connection is cut after the grace
    assert box == [None]
    assert not lane_timers[0].active()
