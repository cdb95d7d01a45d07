"""Gateway.reload and the drain bookkeeping, in-process on a ``MemoryReactorClock``.

The end-to-end behaviour (SIGHUP under load, SIGTERM with requests in flight) is in
tests/acceptance/test_e2e_reload.py and test_e2e_drain.py; these tests pin the rules:
which plugins see which ``configure`` calls, what is refused, what happens to listeners
and when a replaced deployment is released.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from twistgw import ConfigError, hookimpl
from twistgw.config import GatewayConfig, load_config
from twistgw.deployment import Deployment
from twistgw.gateway import Gateway
from twistgw.reload import ReloadStep, Serving
from twistgw.testing import write_config

if TYPE_CHECKING:
    from conftest import Builders, LogCapture


def _api(b: Builders, body: str) -> dict[str, Any]:
    return b.openapi({"/v": {"get": b.mock_op(200, body)}})


def _running(tmp_path: Path, b: Builders, extra: list[tuple[str, Any]] | None = None,
             **top: Any) -> tuple[Gateway, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    path = write_config(tmp_path, b.gateway_config(**top), {"api.yaml": _api(b, "1")})
    gateway = Gateway(load_config(path), reactor=reactor, extra_plugins=extra or [])
    gateway.startService()
    return gateway, reactor


def _reload(gateway: Gateway) -> Any:
    box: list[Any] = []
    gateway.reload().addBoth(box.append)
    assert len(box) == 1, "the reload did not finish synchronously"
    return box[0]


def test_plugins_without_prepare_reload_are_configured_again_only_at_the_switch(
        tmp_path: Path, b: Builders) -> None:
    seen: list[str] = []

    class Naive:
        @hookimpl
        def configure(self, config: GatewayConfig) -> None:
            seen.append(str(config.plugin_settings("naive").get("v")))

    def settings(v: str) -> dict[str, Any]:
        return {"enabled": ["mock", "mapping"], "settings": {"naive": {"v": v}}}

    gateway, _ = _running(tmp_path, b, [("naive", Naive())], plugins=settings("1"))
    assert seen == ["1"]
    write_config(tmp_path, b.gateway_config(plugins=settings("2")), {"api.yaml": _api(b, "2")})
    assert _reload(gateway) is True
    # checked with the new config, given back the serving one, then the new one at commit
    assert seen == ["1", "2", "1", "2"]

    seen.clear()
    write_config(tmp_path, b.gateway_config(plugins=settings("3"), strict="no"),
                 {"api.yaml": _api(b, "3")})
    assert _reload(gateway) is False  # the config loader refuses it: nobody is asked
    assert seen == []
    write_config(tmp_path, b.gateway_config(plugins=settings("4")),
                 {"api.yaml": b.openapi({"/v": {"get": {"responses": {}}}})})
    assert _reload(gateway) is False  # the deployment refuses it after configure ran
    assert seen == ["4", "2"]  # and the naive plugin is back on the serving config


def test_a_reload_cannot_change_the_loaded_plugins(tmp_path: Path, b: Builders,
                                                   log_events: LogCapture) -> None:
    gateway, _ = _running(tmp_path, b)
    before = gateway.deployment
    write_config(tmp_path, b.gateway_config(plugins={"enabled": ["mock"]}),
                 {"api.yaml": _api(b, "2")})
    assert _reload(gateway) is False
    assert gateway.deployment is before
    assert any("plugins.enabled: the plugins loaded cannot change on reload" in t
               and "restart twistd" in t for t in log_events.texts())


def test_a_step_of_the_wrong_type_rejects_the_reload(tmp_path: Path, b: Builders,
                                                     log_events: LogCapture) -> None:
    aborted: list[str] = []

    class Good:
        @hookimpl
        def prepare_reload(self, gateway: Gateway, deployment: Deployment) -> ReloadStep:
            return ReloadStep(abort=lambda: aborted.append("good"))

    class Sloppy:
        @hookimpl
        def prepare_reload(self, gateway: Gateway, deployment: Deployment) -> object:
            return "yes"

    gateway, _ = _running(tmp_path, b, [("good", Good()), ("sloppy", Sloppy())])
    assert _reload(gateway) is False
    assert aborted == ["good"]
    assert any("plugin 'sloppy': prepare_reload returned 'yes'" in t
               for t in log_events.texts())


def test_listeners_added_and_removed_by_a_reload(tmp_path: Path, b: Builders) -> None:
    one = [{"name": "public", "endpoint": "tcp:8001:interface=127.0.0.1"}]
    two = [*one, {"name": "extra", "endpoint": "tcp:8002:interface=127.0.0.1"}]
    gateway, reactor = _running(tmp_path, b, listeners=one)
    kept = gateway.ports["public"]
    write_config(tmp_path, b.gateway_config(listeners=two), {"api.yaml": _api(b, "2")})
    assert _reload(gateway) is True
    assert [s[0] for s in reactor.tcpServers] == [8001, 8002]
    assert gateway.ports["public"] is kept  # unchanged: the same socket
    assert set(gateway.sites) == {"public", "extra"}
    extra = gateway.sites["extra"]
    write_config(tmp_path, b.gateway_config(listeners=one), {"api.yaml": _api(b, "3")})
    assert _reload(gateway) is True
    assert set(gateway.ports) == {"public"} and set(gateway.sites) == {"public"}
    assert extra.draining  # type: ignore[attr-defined]


def test_a_reload_is_applied_once_the_listeners_it_dropped_have_closed(
        tmp_path: Path, b: Builders, log_events: LogCapture) -> None:
    """A TCP port stops listening a reactor turn after ``stopListening``; the reload
    says "applied" (and its Deferred fires) only then, so whoever acts on that line finds
    the dropped listener closed."""
    one = [{"name": "public", "endpoint": "tcp:8001:interface=127.0.0.1"}]
    two = [*one, {"name": "extra", "endpoint": "tcp:8002:interface=127.0.0.1"}]
    gateway, _ = _running(tmp_path, b, listeners=two)
    closed: Deferred[None] = Deferred()
    gateway.ports["extra"].stopListening = lambda: closed  # type: ignore[method-assign]
    write_config(tmp_path, b.gateway_config(listeners=one), {"api.yaml": _api(b, "2")})
    box: list[Any] = []
    gateway.reload().addBoth(box.append)
    assert box == [] and set(gateway.ports) == {"public"}
    assert not any("reload 1 applied" in t for t in log_events.texts())
    closed.callback(None)
    assert box == [True]
    assert any("reload 1 applied" in t for t in log_events.texts())


def test_a_replaced_deployment_is_released_after_the_grace_at_the_latest(
        tmp_path: Path, b: Builders, log_events: LogCapture) -> None:
    retired: list[str] = []

    class Tracks:
        @hookimpl
        def prepare_reload(self, gateway: Gateway, deployment: Deployment) -> ReloadStep:
            return ReloadStep(retire=lambda: retired.append("retired"))

    gateway, reactor = _running(tmp_path, b, [("tracks", Tracks())], shutdown_grace=5)
    stuck = gateway.serving
    stuck.enter()  # a request that never finishes
    assert _reload(gateway) is True
    reactor.advance(4.9)
    assert retired == []
    reactor.advance(0.2)
    assert retired == ["retired"]
    assert any("1 request(s) still in flight on the deployment a reload replaced after 5s"
               in t for t in log_events.texts())
    stuck.leave()
    reactor.advance(1)
    assert retired == ["retired"]  # once only


def test_a_sighup_during_a_reload_queues_one_more(tmp_path: Path, b: Builders) -> None:
    gate: list[Deferred[None]] = []
    calls: list[str] = []

    class Slow:
        @hookimpl
        def prepare_reload(self, gateway: Gateway, deployment: Deployment) -> Any:
            calls.append(deployment.apis["testapi"].definition.title)
            d: Deferred[None] = Deferred()
            gate.append(d)
            return d

    gateway, _ = _running(tmp_path, b, [("slow", Slow())])
    first: list[Any] = []
    gateway.reload().addBoth(first.append)
    more: list[Any] = []
    gateway.reload().addBoth(more.append)
    gateway.reload().addBoth(more.append)
    assert more == [None, None] and len(gate) == 1
    gate[0].callback(None)  # None: nothing to switch for this plugin
    assert first == [True]
    assert len(gate) == 2  # exactly one more reload started
    gate[1].callback(None)
    assert gateway.reloads == {"applied": 2, "rejected": 0}


def test_serving_counts_requests_and_calls_back_when_idle() -> None:
    serving = Serving(object())  # type: ignore[arg-type]
    idle: list[str] = []
    serving.enter()
    serving.enter()
    serving.when_idle(lambda: idle.append("idle"))
    assert serving.leave("passed") == "passed"
    assert idle == []
    serving.leave()
    assert idle == ["idle"] and serving.inflight == 0
    serving.when_idle(lambda: idle.append("now"))
    assert idle == ["idle", "now"]


@pytest.mark.parametrize("value", [-1, 3601, "30", True, None])
def test_shutdown_grace_is_checked(tmp_path: Path, b: Builders, value: Any) -> None:
    path = write_config(tmp_path, b.gateway_config(shutdown_grace=value),
                        {"api.yaml": _api(b, "1")})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: shutdown_grace: {value!r} is not a number of "
                               "seconds from 0 to 3600; the default is 30")


def test_shutdown_grace_defaults_to_30(tmp_path: Path, b: Builders) -> None:
    path = write_config(tmp_path, b.gateway_config(), {"api.yaml": _api(b, "1")})
    assert load_config(path).shutdown_grace == 30.0
    path = write_config(tmp_path, b.gateway_config(shutdown_grace=2.5),
                        {"api.yaml": _api(b, "1")})
    assert load_config(path).shutdown_grace == 2.5


def test_a_plugin_crashing_on_the_new_config_rejects_the_reload(
        tmp_path: Path, b: Builders, log_events: LogCapture) -> None:
    class Buggy:
        calls = 0

        @hookimpl
        def configure(self, config: GatewayConfig) -> None:
            self.calls += 1
            if self.calls == 2:
                raise KeyError("oops")

    gateway, _ = _running(tmp_path, b, [("buggy", Buggy())])
    before = gateway.deployment
    assert _reload(gateway) is False
    assert gateway.deployment is before
    assert any("reload 1 rejected, still serving the previous config: KeyError: 'oops'"
               in t for t in log_events.texts())
    assert _reload(gateway) is True  # the next one is fine


def test_a_reload_prepared_while_the_gateway_stops_is_dropped(tmp_path: Path,
                                                              b: Builders) -> None:
    gate: list[Deferred[ReloadStep]] = []
    aborted: list[str] = []

    class Slow:
        @hookimpl
        def prepare_reload(self, gateway: Gateway, deployment: Deployment) -> Any:
            d: Deferred[ReloadStep] = Deferred()
            gate.append(d)
            return d

    gateway, _ = _running(tmp_path, b, [("slow", Slow())])
    before = gateway.deployment
    box: list[Any] = []
    gateway.reload().addBoth(box.append)
    gateway.stopService()
    gate[0].callback(ReloadStep(abort=lambda: aborted.append("aborted")))
    assert box == [False] and aborted == ["aborted"]
    assert gateway.deployment is before
