"""Registry.add_listener_wrapper: plugins shape each listener's endpoint and factory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from twisted.internet.protocol import Factory

from twistgw import ConfigError, Registry, hookimpl
from twistgw.config import ListenerConfig, load_config
from twistgw.gateway import Gateway
from twistgw.http import GatewaySite
from twistgw.testing import write_config

if TYPE_CHECKING:
    from ..conftest import Builders


class Wrapped(Factory):
    def __init__(self, inner: Any) -> None:
        self.inner = inner


class Wrapper:
    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.refuse = refuse

    @hookimpl
    def register(self, registry: Registry) -> None:
        registry.add_listener_wrapper(self.wrap)

    def wrap(self, listener: ListenerConfig, endpoint: Any, factory: Any,
             reactor: Any) -> tuple[Any, Any]:
        self.calls.append((listener.name, factory, reactor))
        if self.refuse:
            raise ConfigError("<test>", "listeners[0]", "refused by the wrapper")
        return endpoint, Wrapped(factory)


def config(tmp_path: Path, b: Builders) -> Path:
    definition = b.openapi({"/pets": {"get": b.mock_op(200)}})
    doc = b.gateway_config()
    doc["listeners"] = [{"name": "main", "endpoint": "tcp:0:interface=127.0.0.1"}]
    return write_config(tmp_path, doc, {"api.yaml": definition})


def test_wrapper_gets_listener_site_and_reactor_and_what_it_returns_is_bound(
        tmp_path: Path, b: Builders) -> None:
    from twisted.internet import reactor

    first, second = Wrapper(), Wrapper()
    gateway = Gateway(load_config(config(tmp_path, b)),
                      extra_plugins=[("first", first), ("second", second)])
    gateway.privilegedStartService()
    try:
        port: Any = gateway.ports["main"]
        assert len(first.calls) == len(second.calls) == 1
        inner, outer = sorted([first.calls[0], second.calls[0]],
                              key=lambda c: not isinstance(c[1], GatewaySite))
        name, factory, got_reactor = inner
        assert name == "main" and got_reactor is reactor
        assert isinstance(factory, GatewaySite) and factory is gateway.sites["main"]
        # the other wrapper sees what the first returned; the port binds the outermost
        assert isinstance(outer[1], Wrapped) and outer[1].inner is factory
        assert isinstance(port.factory, Wrapped) and port.factory.inner is outer[1]
    finally:
        for p in gateway.ports.values():
            p.stopListening()


def test_wrapper_refusal_stops_the_listener_from_binding(tmp_path: Path, b: Builders) -> None:
    gateway = Gateway(load_config(config(tmp_path, b)),
                      extra_plugins=[("refuser", Wrapper(refuse=True))])
    with pytest.raises(ConfigError, match="refused by the wrapper"):
        gateway.privilegedStartService()
    assert gateway.ports == {}
