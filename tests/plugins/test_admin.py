"""The admin plugin in-process: Prometheus metrics fed by ``request_finished``,
readiness checks, the usage report and the admin listener's config checks.

Metrics are read back the way Prometheus reads them: the text exposition is parsed with
``prometheus_client.parser``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest
import twistgw_access
import twistgw_admin
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from twistgw import hookimpl
from twistgw.config import ListenerConfig
from twistgw.errors import ConfigError

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw import Registry
    from twistgw.gateway import Gateway
    from twistgw.testing import GatewayHarness

KEY_A = "alpha-0123456789abcdefghij"


def samples(h: GatewayHarness) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the gateway's /metrics text, by (name, labels)."""
    text = generate_latest(twistgw_admin.metrics_for(h.gateway).metrics.registry).decode()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def labels(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


def pets_doc(b: Builders, keyed: bool = False) -> dict[str, Any]:
    paths: dict[str, Any] = {"/pets/{id}": {"get": b.mock_op(200)},
                             "/boom": {"get": b.mock_op(503)}}
    if keyed:  # needs the access plugin
        paths["/keyed"] = {"get": {**b.mock_op(200), "security": [{"api_key": []}]}}
    return b.openapi(
        paths, components={"securitySchemes": {
            "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}})


def harness(make_harness: HarnessFactory, b: Builders, *, plugins: list[str] | None = None,
            settings: Mapping[str, Any] | None = None,
            extra: list[tuple[str, Any]] | None = None) -> GatewayHarness:
    config = b.gateway_config(stages=[{"name": "prod"}, {"name": "beta"}])
    config["listeners"].append({"name": "ops", "endpoint": "tcp:0", "admin": True})
    config["plugins"] = {"enabled": plugins or ["mock", "mapping", "admin"],
                         "settings": dict(settings or {})}
    h = make_harness(pets_doc(b, "access" in (plugins or [])), config=config,
                     plugins=extra or [])
    twistgw_admin.metrics_for(h.gateway)  # what the startup hook does, without binding
    return h


def test_requests_are_counted_by_route_template_never_by_raw_path(
        make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b)
    for n in range(5):
        assert h.request("GET", f"/prod/pets/{n}").status == 200
    assert h.request("GET", "/beta/pets/9").status == 200
    assert h.request("GET", "/prod/nowhere").status == 403  # MISSING_AUTHENTICATION_TOKEN
    got = samples(h)
    route = "GET /pets/{id}"
    assert got[("twistgw_requests_total", labels(api="testapi", stage="prod", route=route,
                                                 status="200"))] == 5
    assert got[("twistgw_requests_total", labels(api="testapi", stage="beta", route=route,
                                                 status="200"))] == 1
    assert got[("twistgw_requests_total", labels(api="testapi", stage="prod", route="",
                                                 status="403"))] == 1
    assert got[("twistgw_4xx_errors_total", labels(api="testapi", stage="prod",
                                                   route=""))] == 1
    assert got[("twistgw_latency_seconds_count", labels(
        api="testapi", stage="prod", route=route, status="200"))] == 5
    values = {v for (_, lbls) in got for _, v in lbls}
    assert not any(v.startswith("/pets/") or "nowhere" in v for v in values)


def test_5xx_and_integration_latency(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b)
    assert h.request("GET", "/prod/boom").status == 503
    got = samples(h)
    lbl = {"api": "testapi", "stage": "prod", "route": "GET /boom"}
    assert got[("twistgw_5xx_errors_total", labels(**lbl))] == 1
    assert ("twistgw_4xx_errors_total", labels(**lbl)) not in got
    assert got[("twistgw_integration_latency_seconds_count",
                labels(**lbl, status="503"))] == 1
    assert got[("twistgw_integration_latency_seconds_bucket",
                labels(**lbl, status="503", le="+Inf"))] == 1


def test_throttled_requests_are_counted(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, plugins=["mock", "mapping", "access", "admin"], settings={
        "access": {"api_keys": [{"id": "a", "value": KEY_A}], "usage_plans": [
            {"id": "gold", "apis": [{"api": "testapi", "stage": "prod"}], "keys": ["a"],
             "throttle": {"rate": 1, "burst": 1}}]}})
    twistgw_access.startup(gateway=h.gateway)  # counts on the harness clock; binds nothing
    statuses = [h.request("GET", "/prod/keyed", headers={"x-api-key": KEY_A}).status
                for _ in range(3)]
    assert statuses == [200, 429, 429]
    got = samples(h)
    lbl = {"api": "testapi", "stage": "prod", "route": "GET /keyed"}
    assert got[("twistgw_throttled_requests_total", labels(**lbl))] == 2
    assert got[("twistgw_requests_total", labels(**lbl, status="429"))] == 2


def test_each_gateway_has_its_own_registry(make_harness: HarnessFactory, b: Builders) -> None:
    one, two = harness(make_harness, b), harness(make_harness, b)
    one.request("GET", "/prod/pets/1")
    key = ("twistgw_requests_total", labels(api="testapi", stage="prod",
                                            route="GET /pets/{id}", status="200"))
    assert samples(one)[key] == 1
    assert key not in samples(two)


def test_readiness_reports_gateway_listeners_and_plugin_checks(
        make_harness: HarnessFactory, b: Builders) -> None:
    state = {"reason": "pool cold"}

    class Warmup:
        @hookimpl
        def register(self, registry: Registry) -> None:
            registry.add_readiness_check("warmup", lambda gw: state["reason"])

    h = harness(make_harness, b, extra=[("warmup", Warmup())])
    ready, problems = twistgw_admin.readiness(h.gateway)
    # the harness binds nothing: the listener is reported, with the plugin's reason
    assert not ready
    assert problems == {"listeners": "not bound: public", "warmup": "pool cold"}
    h.gateway.ports["public"] = object()  # type: ignore[assignment]
    state["reason"] = None  # type: ignore[assignment]
    assert twistgw_admin.readiness(h.gateway) == (True, {})
    h.gateway.ready = False
    assert twistgw_admin.readiness(h.gateway)[1] == {
        "gateway": "starting: the startup hooks have not finished"}


def test_gauge_sources_are_scraped(make_harness: HarnessFactory, b: Builders) -> None:
    class Pools:
        @hookimpl
        def register(self, registry: Registry) -> None:
            registry.add_gauge_source(lambda gw: [
                ("pool_size", "Workers", {"function": "f1"}, 3.0),
                ("pool_size", "Workers", {"function": "f2"}, 1.0)])

    got = samples(harness(make_harness, b, extra=[("pools", Pools())]))
    assert got[("twistgw_pool_size", labels(function="f1"))] == 3
    assert got[("twistgw_pool_size", labels(function="f2"))] == 1
    assert got[("twistgw_ready", labels())] == 0  # nothing is bound in the harness
    assert got[("twistgw_listener_refused_connections_total", labels(listener="public"))] == 0


def test_lambda_readiness_check_and_pool_gauges_are_registered(
        make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, plugins=["mock", "mapping", "lambda", "admin"])
    names = [name for _, name, _ in h.gateway.pm.registry.readiness_checks]
    assert names == ["lambda"]
    assert [p for p, _ in h.gateway.pm.registry.gauge_sources] == ["lambda"]


@pytest.mark.parametrize(("endpoint", "bound"), [
    ("tcp:9100", "tcp:9100:interface=127.0.0.1"),
    ("tcp6:9100", "tcp6:9100:interface=::1"),
    ("tcp:9100:interface=0.0.0.0", "tcp:9100:interface=0.0.0.0"),
    ("unix:/tmp/admin.sock", "unix:/tmp/admin.sock"),
])
def test_admin_endpoint_is_loopback_unless_an_interface_is_named(endpoint: str,
                                                                 bound: str) -> None:
    listener = ListenerConfig(name="ops", endpoint=endpoint, admin=True)
    assert twistgw_admin.admin_endpoint(listener, "gw.yaml", "listeners[1]") == bound


@pytest.mark.parametrize("option", [{"tls": {"certificate": "c.pem", "key": "k.pem"}},
                                    {"allow_sources": ["10.0.0.0/8"]},
                                    {"endpoint": "ssl:9100"}])
def test_admin_listener_refuses_what_it_cannot_do(make_harness: HarnessFactory, b: Builders,
                                                  option: dict[str, Any]) -> None:
    config = b.gateway_config()
    config["listeners"].append({"name": "ops", "endpoint": "tcp:0", "admin": True, **option})
    config["plugins"] = {"enabled": ["mock", "mapping", "admin"]}
    with pytest.raises(ConfigError) as e:
        make_harness(pets_doc(b), config=config)
    key = next(iter(option))
    assert f"listeners[1].{key}" in str(e.value)


def test_admin_option_without_the_plugin_is_refused(make_harness: HarnessFactory,
                                                    b: Builders) -> None:
    config = b.gateway_config()
    config["listeners"].append({"name": "ops", "endpoint": "tcp:0", "admin": True})
    with pytest.raises(ConfigError, match=r"listeners\[1\]\.admin"):
        make_harness(pets_doc(b), config=config)


def _unused(gateway: Gateway) -> None:
    """(keeps the Gateway import used for type checkers)"""
