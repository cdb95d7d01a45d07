"""Protocol upgrades: an integration answers 101 with ``upgrade`` and takes the connection.

The core API the websocket plugin is built on (``IntegrationResponse.upgrade``,
:class:`twistgw.http.Handover`), checked with a plugin of its own over the real Site and
hardened channel on a StringTransport: the connection changes hands after the pipeline ran,
the listener keeps counting it until it closes, HTTP's timers no longer apply, and the
request is observed like any other (status 101).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twistgw import IntegrationResponse, hookimpl
from twistgw.config import load_config
from twistgw.gateway import Gateway
from twistgw.http import Handover
from twistgw.testing import write_config

DEFINITION = {
    "openapi": "3.0.1",
    "info": {"title": "t", "version": "1"},
    "paths": {"/chat": {"get": {"x-amazon-apigateway-integration": {
        "type": "http_proxy", "httpMethod": "GET", "uri": "http://echo.invalid/"}}}},
}


class Echo(Protocol):
    """The protocol after the upgrade: echoes bytes back, remembers what it saw."""

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        assert self.transport is not None
        if not data.startswith(b"GET "):
            self.transport.write(b"echo:" + data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True


class UpgradePlugin:
    """Claims ``HTTP_PROXY`` (no http plugin runs here) and switches its requests to
    :class:`Echo`."""

    def __init__(self) -> None:
        self.protocol = Echo()
        self.statuses: list[int] = []
        self.heads: list[bytes] = []

    @hookimpl
    def register(self, registry: Any) -> None:
        registry.add_integration_type("HTTP_PROXY")

    @hookimpl
    def integrate(self, ctx: Any) -> IntegrationResponse | None:
        if ctx.integration is None or ctx.integration.type != "HTTP_PROXY":
            return None

        def take(handover: Handover) -> None:
            self.heads.append(handover.request_head)
            handover.take(self.protocol, replay_head=True)

        return IntegrationResponse(status=101, upgrade=take)

    @hookimpl
    def request_finished(self, response: Any) -> None:
        self.statuses.append(response.status)


def test_a_101_with_upgrade_hands_the_connection_over(tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1",
                       "limits": {"idle_timeout": 5, "header_timeout": 2}}],
        "apis": [{"id": "a1", "definition": "api.yaml", "stages": ["prod"]}],
        "plugins": {"enabled": []},
        "access_log": False,
    }, {"api.yaml": DEFINITION})
    clock = Clock()
    plugin = UpgradePlugin()
    gateway = Gateway(load_config(path), reactor=clock, extra_plugins=[("upgrade", plugin)])
    gateway.ready = True
    site: Any = gateway.sites["public"]
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    channel = site.buildProtocol(transport.getPeer())
    channel.makeConnection(transport)
    assert site.open_connections == 1
    channel.dataReceived(b"GET /prod/chat HTTP/1.1\r\nHost: localhost\r\n"
                         b"X-Spelling: Kept\r\n\r\n")
    # Nothing HTTP was written: the new protocol owns the connection and got the head.
    assert transport.value() == b""
    assert plugin.heads == [b"GET /prod/chat HTTP/1.1\r\nHost: localhost\r\n"
                            b"X-Spelling: Kept\r\n\r\n"]
    assert plugin.protocol.received == plugin.heads[0]
    assert plugin.statuses == [101]
    channel.dataReceived(b"hello")
    assert transport.value() == b"echo:hello"
    # HTTP's idle and header timers no longer apply to the connection.
    clock.advance(60)
    assert not transport.disconnecting
    assert site.open_connections == 1
    # The listener counts it until it closes.
    channel.connectionLost(Failure(ConnectionError("gone")))
    assert plugin.protocol.lost
    assert site.open_connections == 0
