"""The websocket plugin without sockets: definition checks, route selection, settings."""

from __future__ import annotations

from typing import Any

import pytest
from twistgw_websocket.definition import WsApi, WsRoute, evaluate_selection, select_route
from twistgw_websocket.settings import parse_settings

from twistgw.errors import ConfigError
from twistgw.testing import GatewayHarness

LAMBDA = "arn:aws:lambda:us-east-1:123456789012:function:"


def harness(definition: Any, *, enabled: tuple[str, ...] = ("lambda", "auth", "access",
                                                              "websocket"),
            settings: Any = None) -> GatewayHarness:
    return GatewayHarness({
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "chat", "type": "WEBSOCKET", "definition": "chat.yaml",
                  "stages": ["prod"]}],
        "functions": {"Echo": {"handler": "app.echo", "code": ".", "runtime": "python"}},
        "plugins": {"enabled": list(enabled),
                    "settings": {"websocket": settings} if settings is not None else {}},
    }, definitions={"chat.yaml": definition})


def good() -> dict[str, Any]:
    return {"route_selection_expression": "$request.body.action", "routes": {
        "$default": {"integration": {"type": "MOCK", "response": "hi"},
                     "route_response_selection_expression": "$default"},
        "echo": {"integration": {"type": "AWS_PROXY", "uri": LAMBDA + "Echo"}}}}


def refusal(definition: Any, **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        harness(definition, **kw)
    return info.value


def test_a_good_definition_serves_connect_and_the_management_api() -> None:
    h = harness(good())
    api = h.gateway.deployment.apis["chat"]
    keys = sorted(r.operation.route_key for r in (
        api.table.match(m, p).route for m, p in (  # type: ignore[union-attr]
            ("GET", "/"), ("POST", "/@connections/abc"), ("GET", "/@connections/abc"),
            ("DELETE", "/%40connections/abc%3D"))))
    assert keys == ["DELETE /%40connections/{connectionId}", "GET /",
                    "GET /@connections/{connectionId}", "POST /@connections/{connectionId}"]


@pytest.mark.parametrize(("change", "where", "words"), [
    (lambda d: d.pop("route_selection_expression"), "(top level)",
     "route_selection_expression"),
    (lambda d: d.update(extra=1), "extra", "unknown key"),
    (lambda d: d["routes"].update({"$foo": {"integration": {"type": "MOCK"}}}),
     "routes.$foo", "reserved"),
    (lambda d: d["routes"].update({"x": {}}), "routes.x", "integration"),
    (lambda d: d["routes"]["echo"]["integration"].update(uri=LAMBDA + "Nope"),
     "routes.echo.integration.uri", "not declared under functions"),
    (lambda d: d["routes"]["echo"]["integration"].update(type="SQS"),
     "routes.echo.integration.type", "AWS_PROXY"),
    (lambda d: d["routes"]["echo"]["integration"].update(timeout_ms=30000),
     "routes.echo.integration.timeout_ms", "29000"),
    (lambda d: d["routes"]["echo"].update(route_response_selection_expression="$x"),
     "routes.echo.route_response_selection_expression", "$default"),
    (lambda d: d["routes"].update({"$connect": {
        "route_response_selection_expression": "$default"}}),
     "routes.$connect.route_response_selection_expression", "no route response"),
    (lambda d: d["routes"].update({"$connect": {"authorization_type": "CUSTOM",
                                                "authorizer": "Missing"}}),
     "routes.$connect.authorizer", "define it under authorizers"),
    (lambda d: d["routes"]["echo"].update(api_key_required=True),
     "routes.echo.api_key_required", "unknown key"),
    (lambda d: d.update(authorizers={"A": {"uri": LAMBDA + "Echo",
                                           "identity_source": ["header.x"]}}),
     "authorizers.A.identity_source[0]", "route.request.header"),
    (lambda d: d["routes"].update({"ping": {"integration": {
        "type": "HTTP_PROXY", "uri": "http://127.0.0.1:1/",
        "request_parameters": {"integration.request.header.id": "body.x"}}}}),
     "routes.ping.integration.request_parameters.integration.request.header.id",
     "context.NAME"),
])
def test_bad_definitions_are_refused_naming_file_and_key(change: Any, where: str,
                                                         words: str) -> None:
    doc = good()
    change(doc)
    error = refusal(doc)
    assert error.file.endswith("chat.yaml")
    assert error.path == where
    assert words in str(error)


def test_websocket_apis_need_the_plugin() -> None:
    error = refusal(good(), enabled=("lambda",))
    assert error.path == "apis[0].type"
    assert "websocket plugin" in str(error)


def test_the_connections_api_needs_iam_from_the_auth_plugin() -> None:
    error = refusal(good(), enabled=("lambda", "websocket"))
    assert error.path == "@connections.x-amazon-apigateway-auth"
    assert "'aws_iam' feature" in str(error)


@pytest.mark.parametrize(("settings", "where"), [
    ({"idle_timeout": 0}, "plugins.settings.websocket.idle_timeout"),
    ({"max_frame_bytes": 1.5}, "plugins.settings.websocket.max_frame_bytes"),
    ({"max_frame_bytes": 200000}, "plugins.settings.websocket.max_frame_bytes"),
    ({"redis": {"url": "http://x"}}, "plugins.settings.websocket.redis.url"),
    ({"redis": {"url": "redis://h", "db": 1}}, "plugins.settings.websocket.redis.db"),
    ({"nope": 1}, "plugins.settings.websocket.nope"),
])
def test_bad_settings_are_refused(settings: Any, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(settings, "gw.yaml")
    assert info.value.path == where


def test_settings_default_to_aws_limits() -> None:
    s = parse_settings({}, "gw.yaml")
    assert (s.idle_timeout, s.max_lifetime, s.max_frame_bytes, s.max_message_bytes) == (
        600.0, 7200.0, 32768, 131072)
    assert s.redis is None


@pytest.mark.parametrize(("expression", "body", "value"), [
    ("$request.body.action", {"action": "join"}, "join"),
    ("$request.body.a.b", {"a": {"b": "deep"}}, "deep"),
    ("${request.body.action}", {"action": "join"}, "join"),
    ("${request.body.service}/${request.body.action}", {"service": "s", "action": "a"},
     "s/a"),
    ("${request.body.action}-${request.body.invalidPath}", {"action": "join"}, "join-"),
    ("$request.body.action", {"action": ["item1", "item2"]}, "[item1, item2]"),
    ("$request.body.action", {"action": 7}, "7"),
    ("$request.body.action", {"other": 1}, ""),
    ("$request.body.action", "not an object", None),
    ("\\$default", {"action": "x"}, "$default"),
    ("static", {}, "static"),
])
def test_route_selection_expressions(expression: str, body: Any, value: str | None) -> None:
    assert evaluate_selection(expression, body) == value


def test_select_route_falls_back_to_default_and_never_to_reserved_keys() -> None:
    default = WsRoute(key="$default", integration=None)
    join = WsRoute(key="join", integration=None)
    api = WsApi(id="a", source="s", title="t", selection_expression="$request.body.action",
                routes={"$default": default, "join": join,
                        "$connect": WsRoute(key="$connect", integration=None)})
    assert select_route(api, b'{"action": "join"}') is join
    assert select_route(api, b'{"action": "JOIN"}') is default  # exact match only
    assert select_route(api, b'{"action": "$connect"}') is default
    assert select_route(api, b"not json") is default
    assert select_route(api, b"\xff\xfe") is default
    no_default = WsApi(id="a", source="s", title="t",
                       selection_expression="$request.body.action", routes={"join": join})
    assert select_route(no_default, b'{"action": "leave"}') is None


def test_new_connections_are_rate_limited_per_second() -> None:
    from twisted.internet.task import Clock
    from twistgw_websocket.connection import Hub

    clock = Clock()
    h = harness(good())
    hub = Hub(h.config, parse_settings({"new_connections_per_second": 2}, "gw.yaml"), clock)
    assert [hub.admit() for _ in range(3)] == [True, True, False]
    clock.advance(0.5)  # one token back
    assert [hub.admit(), hub.admit()] == [True, False]
    clock.advance(10)  # never more than the burst (= the rate)
    assert [hub.admit() for _ in range(3)] == [True, True, False]


def test_failure_logs_are_throttled_with_a_count() -> None:
    from twisted.internet.task import Clock
    from twistgw_websocket.connection import Throttled

    clock = Clock()
    lines: list[int] = []
    throttled = Throttled(clock, 10.0)
    for _ in range(5):
        throttled(lines.append)
    clock.advance(10)
    throttled(lines.append)
    assert lines == [0, 4]  # the first line, then one saying four were not written
