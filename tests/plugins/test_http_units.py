"""The http plugin without sockets: load-time checks, settings, header and URL rules, guards.

What needs a real backend is in test_http_proxy.py; here the pieces are driven directly
(``make_context``, a ``task.Clock``) or through the in-process harness, whose requests
never reach the network because the refusals happen before any connection.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.http_headers import Headers as TwistedHeaders
from twistgw_http import (
    build_url,
    integration_request,
    outbound_headers,
    proxy_response_headers,
)
from twistgw_http.client import HttpSettings, parse_settings
from twistgw_http.guard import HostGuard

from twistgw import (
    ApiConfigurationError,
    ConfigError,
    Context,
    Headers,
    IntegrationFailure,
    IntegrationRequest,
    IntegrationResponse,
    hookimpl,
)
from twistgw.config import load_config
from twistgw.definition import Integration
from twistgw.gateway import Gateway
from twistgw.testing import GatewayHarness, make_context, make_inbound, write_config

if TYPE_CHECKING:
    from ..conftest import Builders, HarnessFactory

ENABLED = {"enabled": ["mock", "mapping", "http"]}


def proxy_definition(b: Builders, **params: str) -> dict[str, Any]:
    op = b.proxy_op("http://127.0.0.1:9/{proxy}", requestParameters={
        "integration.request.path.proxy": "method.request.path.proxy", **params})
    return b.openapi({"/{proxy+}": {"get": op}})


# -- load-time checks ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["Content-Length", "Transfer-Encoding", "X-Amzn-Trace-Id",
                                    "x-amzn-apigateway-api-id"])
def test_mapping_to_a_forbidden_header_is_refused_at_load_time(
        make_harness: HarnessFactory, b: Builders, target: str) -> None:
    key = f"integration.request.header.{target}"
    with pytest.raises(ConfigError) as info:
        make_harness(proxy_definition(b, **{key: "'1'"}),
                     config=b.gateway_config(plugins=ENABLED))
    message = str(info.value)
    assert "api.yaml" in message
    assert f"x-amazon-apigateway-integration.requestParameters.{key}" in message
    assert "does not allow mapping" in message


@pytest.mark.parametrize(("key", "source", "problem"), [
    ("integration.request.header.X", "method.request.body.a[?(@.x)]",
     "unsupported JSONPath"),
    ("integration.request.header.X", "method.request.cookie.a", "unknown source"),
    ("integration.request.header.X", "context.noSuchThing", "unknown context variable"),
    ("integration.request.body.X", "'a'", "keys must look like"),
    ("integration.request.header.bad name", "'a'", "keys must look like"),
    ("append:querystring.x", "'a'", "mixes REST keys"),
])
def test_unservable_mappings_are_refused_at_load_time(
        make_harness: HarnessFactory, b: Builders, key: str, source: str,
        problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_harness(proxy_definition(b, **{key: source}),
                     config=b.gateway_config(plugins=ENABLED))
    assert problem in str(info.value)


@pytest.mark.parametrize(("tls", "key", "problem"), [
    ({"insecureSkipVerification": "yes"}, "tlsConfig.insecureSkipVerification",
     "expected true or false"),
    ({"serverNameToVerify": "x.example"}, "tlsConfig.serverNameToVerify",
     "only insecureSkipVerification"),
])
def test_bad_tls_config_is_refused_at_load_time(
        make_harness: HarnessFactory, b: Builders, tls: dict[str, Any], key: str,
        problem: str) -> None:
    op = b.proxy_op("https://127.0.0.1:9/", tlsConfig=tls)
    with pytest.raises(ConfigError) as info:
        make_harness(b.openapi({"/x": {"get": op}}), config=b.gateway_config(plugins=ENABLED))
    assert key in str(info.value)
    assert problem in str(info.value)


def test_unknown_client_setting_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"client": "curl"}, "gw.yaml")
    assert "plugins.settings.http.client" in str(info.value)
    assert parse_settings({"client": "agent"}, "gw.yaml").client == "agent"


def test_forbidden_mapping_under_strict_false_fails_every_request_like_aws(
        make_harness: HarnessFactory, b: Builders) -> None:
    h = make_harness(proxy_definition(b, **{"integration.request.header.Content-Length":
                                            "'1'"}),
                     config=b.gateway_config(plugins=ENABLED, strict=False))
    assert any("Content-Length" in w for w in h.gateway.deployment.warnings)
    response = h.request("GET", "/prod/anything")
    assert response.status == 500
    assert response.body == b'{"message": "Internal server error"}'


def test_http_plugin_claims_request_parameters_and_both_types(
        make_harness: HarnessFactory, b: Builders) -> None:
    h = make_harness(proxy_definition(b), config=b.gateway_config(plugins=ENABLED))
    registry = h.gateway.pm.registry
    assert registry.integration_types["HTTP"] == "http"
    assert registry.integration_types["HTTP_PROXY"] == "http"
    assert registry.features["request_parameters"] == "http"


# -- settings -------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = parse_settings({}, "gw.yaml")
    assert s == HttpSettings()
    assert s.max_response_bytes == 10 * 1024 * 1024
    assert s.idle_timeout < 5  # below Node's keep-alive
    assert not s.trusts("127.0.0.1")


@pytest.mark.parametrize(("settings", "key", "problem"), [
    ({"conect_timeout": 1}, "plugins.settings.http.conect_timeout", "unknown setting"),
    ({"connect_timeout": 0}, "plugins.settings.http.connect_timeout", "at least"),
    ({"max_response_bytes": "big"}, "plugins.settings.http.max_response_bytes", "number"),
    ({"retry_idempotent": "yes"}, "plugins.settings.http.retry_idempotent", "true or false"),
    ({"ca_file": "missing.pem"}, "plugins.settings.http.ca_file", "does not exist"),
    ({"connect_retries": 2}, "plugins.settings.http.connect_retries", "0 (no retry) or 1"),
    ({"client_key": "gateway.yaml"}, "plugins.settings.http.client_key",
     "needs client_cert"),
    ({"client_cert": "gateway.yaml"}, "plugins.settings.http.client_cert",
     "cannot load the client certificate"),
    ({"trusted_proxies": ["10.0.0.0/8", "nope"]}, "plugins.settings.http.trusted_proxies[1]",
     "not an address"),
])
def test_bad_settings_are_refused_naming_the_key(
        tmp_path: Path, b: Builders, settings: dict[str, Any], key: str,
        problem: str) -> None:
    config = b.gateway_config(plugins={**ENABLED, "settings": {"http": settings}})
    path = write_config(tmp_path, config, {"api.yaml": proxy_definition(b)})
    with pytest.raises(ConfigError) as info:
        Gateway(load_config(path))
    assert f"{path}: {key}: " in str(info.value)
    assert problem in str(info.value)


# -- request and response rules ----------------------------------------------------------


def context(headers: dict[str, str], client_ip: str = "10.1.2.3", *, query: str = "",
            integration_type: str = "HTTP_PROXY", parameters: dict[str, str] | None = None,
            **kw: Any) -> Any:
    inbound = make_inbound("POST", "/prod/x", headers=headers, client_ip=client_ip,
                           query=query)
    integration = Integration(type=integration_type, uri="http://b/x",
                              request_parameters=parameters or {})
    route = SimpleNamespace(operation=SimpleNamespace(integration=integration))
    return make_context(inbound, deployment_api=SimpleNamespace(id="abc123"), route=route,
                        **kw)


def request(ctx: Any, uri: str = "http://b/x") -> IntegrationRequest:
    return IntegrationRequest(method="POST", uri=uri, headers=ctx.request.headers,
                              query=ctx.request.query, path_params=ctx.path_params)


def sent_by_proxy(ctx: Any, settings: HttpSettings | None = None,
                  uri: str = "http://b/x") -> list[tuple[str, str]]:
    mapped = integration_request(ctx, request(ctx, uri), True)
    return outbound_headers(ctx, mapped, settings or HttpSettings(), True)


def test_forwarded_for_is_replaced_unless_the_peer_is_a_trusted_hop() -> None:
    ctx = context({"X-Forwarded-For": "1.1.1.1", "X-Keep": "k", "Host": "gw",
                   "Proxy-Authorization": "secret", "X-Forwarded-Port": "1"})
    untrusted = dict(sent_by_proxy(ctx))
    assert untrusted["X-Forwarded-For"] == "10.1.2.3"
    assert untrusted["X-Forwarded-Port"] == "0"
    assert untrusted["X-Keep"] == "k"
    assert "Host" not in untrusted and "Proxy-Authorization" not in untrusted
    assert untrusted["X-Amzn-Apigateway-Api-Id"] == "abc123"
    trusted = parse_settings({"trusted_proxies": ["10.0.0.0/8"]}, "gw.yaml")
    hops = dict(sent_by_proxy(ctx, trusted))
    assert hops["X-Forwarded-For"] == "1.1.1.1, 10.1.2.3"


def test_client_trace_id_is_continued() -> None:
    ctx = context({"X-Amzn-Trace-Id": "Root=1-5e000000-abc"},
                  trace_id="Root=1-5e000000-abc")
    sent = sent_by_proxy(ctx)
    assert [v for k, v in sent if k == "X-Amzn-Trace-Id"] == ["Root=1-5e000000-abc"]


def test_mapped_header_replaces_the_client_one_in_a_proxy() -> None:
    ctx = context({"X-A": "client"},
                  parameters={"integration.request.header.x-a": "'mapped'"})
    sent = sent_by_proxy(ctx)
    assert [v for k, v in sent if k.lower() == "x-a"] == ["mapped"]


def test_url_placeholders_take_raw_path_values_and_encode_others() -> None:
    uri = "http://b/base/{proxy}?fixed=1"
    ctx = context({}, path_params={"proxy": "a%2Fb/c d"}, query="y=%2F+1")
    mapped = integration_request(ctx, request(ctx, uri), True)
    assert build_url(ctx, mapped, True) == "http://b/base/a%2Fb/c%20d?fixed=1&y=%2F+1"
    ctx = context({}, path_params={"proxy": "a%2Fb/c d"}, query="y=%2F+1", parameters={
        "integration.request.path.proxy": "'m'",
        "integration.request.querystring.q": "'a b&'"})
    mapped = integration_request(ctx, request(ctx, uri), True)
    assert build_url(ctx, mapped, True) == "http://b/base/m?fixed=1&y=%2F+1&q=a%20b%26"
    # Non-proxy integrations fill placeholders only from mappings and send no client query.
    ctx = context({}, path_params={"proxy": "p"}, query="y=1", integration_type="HTTP")
    mapped = integration_request(ctx, request(ctx, uri), False)
    assert build_url(ctx, mapped, False) == "http://b/base/?fixed=1"


def test_placeholder_values_keep_raw_bytes_and_encode_unicode_as_utf8() -> None:
    uri = "http://b/{a}/{b}"
    ctx = context({}, path_params={"a": "caf\xc3\xa9"}, parameters={
        "integration.request.path.b": "'\u20ac'"})  # a: raw UTF-8 bytes as latin-1 text
    mapped = integration_request(ctx, request(ctx, uri), True)
    assert mapped.uri == "http://b/caf%C3%A9/%E2%82%AC"


def test_http_keeps_what_earlier_map_request_impls_added() -> None:
    ctx = context({"X-Client": "c", "Content-Type": "text/plain"}, query="c=1",
                  integration_type="HTTP",
                  parameters={"integration.request.header.X-Over": "'mapped'",
                              "integration.request.header.X-Map": "'m'"})
    before = request(ctx)
    before = IntegrationRequest(
        method="POST", uri=before.uri,
        headers=before.headers.with_added("X-Over", "override"),
        query=(*before.query, ("added", "1")))
    mapped = integration_request(ctx, before, False)
    assert mapped.headers.get("X-Client") is None
    assert mapped.headers.get_all("X-Over") == ["override"]
    assert mapped.headers.get("X-Map") == "m"
    assert mapped.headers.get("Content-Type") == "text/plain"
    assert mapped.headers.get("User-Agent") == "AmazonAPIGateway_abc123"
    assert mapped.query == (("added", "1"),)


def test_proxy_response_header_remapping() -> None:
    out = proxy_response_headers((("Date", "d"), ("Server", "s"), ("X-Amzn-Requestid", "r"),
                                  ("Via", "v"), ("X-Ok", "1")), 12)
    assert out == Headers((("x-amzn-Remapped-Date", "d"), ("x-amzn-Remapped-Server", "s"),
                           ("x-amzn-Remapped-X-Amzn-Requestid", "r"), ("X-Ok", "1"),
                           ("x-amzn-Remapped-Content-Length", "12")))


# -- guards ----------------------------------------------------------------------------------


def guard(clock: Clock, **kw: Any) -> HostGuard:
    params: dict[str, Any] = {"max_concurrent": 1, "max_pending": 1, "failures": 5,
                              "open_seconds": 30.0}
    params.update(kw)
    return HostGuard(clock, **params)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=4), st.lists(st.booleans(), max_size=3),
       st.integers(min_value=0, max_value=6), st.one_of(st.none(), st.floats(0, 100)),
       st.booleans())
def test_answered_is_release_then_succeeded(active: int, waiters: list[bool], failures: int,
                                            opened_at: float | None, probing: bool) -> None:
    """``HostGuard.answered`` (the fast client's usual answer) leaves the guard, and its
    queue, exactly as ``release()`` then ``succeeded()`` did."""
    def state(g: HostGuard, queued: list[Deferred[None]]) -> tuple[Any, ...]:
        return (g.active, len(g.waiting), g.consecutive_failures, g.opened_at, g.probing,
                [d.called for d in queued])

    ends = []
    for combined in (True, False):
        g = guard(Clock(), max_concurrent=active, max_pending=4)
        g.active = active
        queued: list[Deferred[None]] = []
        for cancelled in waiters:
            d = g.acquire()
            assert d is not None
            if cancelled:  # a waiter that gave up (its Deferred fired) is skipped
                d.callback(None)
            queued.append(d)
        g.consecutive_failures, g.opened_at, g.probing = failures, opened_at, probing
        if combined:
            g.answered()
        else:
            g.release()
            g.succeeded()
        ends.append(state(g, queued))
    assert ends[0] == ends[1]
    assert ends[0][2:5] == (0, None, False)


def test_slots_queue_and_immediate_503_when_full() -> None:
    g = guard(Clock())
    assert g.acquire() is None
    waiter = g.acquire()
    assert waiter is not None and not waiter.called
    with pytest.raises(IntegrationFailure) as info:
        g.acquire()
    assert info.value.status == 503
    assert json.dumps({"message": info.value.message}) == '{"message": "Service Unavailable"}'
    g.release()
    assert waiter.called and g.active == 1
    g.release()
    assert g.active == 0


def test_a_cancelled_wait_leaves_the_queue() -> None:
    g = guard(Clock())
    g.acquire()
    waiter = g.acquire()
    assert waiter is not None
    waiter.cancel()
    waiter.addErrback(lambda f: f.trap(CancelledError))
    assert not g.waiting
    assert g.acquire() is not None  # the queue has room again


def test_breaker_opens_after_consecutive_failures_then_probes() -> None:
    clock = Clock()
    g = guard(clock)
    for _ in range(4):
        assert g.admit()
        g.failed()
    g.succeeded()  # an answer resets the count
    for _ in range(5):
        assert g.admit()
        g.failed()
    assert g.state == "open" and not g.admit()
    clock.advance(30)
    assert g.state == "half-open"
    assert g.admit()  # the probe
    assert not g.admit()  # only one
    g.failed()
    assert g.state == "open"
    clock.advance(30)
    assert g.admit()
    g.succeeded()
    assert g.state == "closed" and g.admit() and g.admit()


def test_breaker_off_with_zero_failures() -> None:
    g = guard(Clock(), failures=0)
    for _ in range(50):
        assert g.admit()
        g.failed()
    assert g.state == "closed"


def test_guard_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from twistgw_http import client as client_module

    monkeypatch.setattr(client_module, "_MAX_GUARDS", 3)
    backend = client_module.BackendClient(Clock(), HttpSettings())
    busy = backend.guard_for("http://busy:1/")
    busy.acquire()
    for i in range(10):
        backend.guard_for(f"http://host{i}:80/x")
    assert len(backend.guards) <= 3
    assert backend.guard_for("http://busy:1/") is busy


# -- connect retries ---------------------------------------------------------------------------


class FakeResponse:
    code = 200
    length = 2
    headers = TwistedHeaders({b"Content-Type": [b"text/plain"]})

    def deliverBody(self, protocol: Any) -> None:
        protocol.dataReceived(b"ok")
        protocol.connectionLost(Failure(ResponseDone()))


class FakeAgent:
    """Fails the first ``failures`` requests with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[bytes] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None,
                producer: Any = None) -> Deferred[Any]:
        self.calls.append(method)
        if len(self.calls) <= self.failures:
            return fail(self.error)
        return succeed(FakeResponse())


def run(coro: Any) -> Any:
    d = Deferred.fromCoroutine(coro)
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the fake exchange should complete synchronously"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def fake_client(agent: FakeAgent, **settings: Any) -> Any:
    from twistgw_http.client import BackendClient

    client = BackendClient(Clock(), HttpSettings(**{"client": "agent", **settings}))
    fake: Any = lambda insecure=False: agent  # noqa: E731
    client.agent = fake  # type: ignore[method-assign]
    return client


def test_a_connect_failure_is_retried_once_even_for_post() -> None:
    agent = FakeAgent(1, ConnectionRefusedError())
    client = fake_client(agent)
    answer = run(client.request("POST", "http://b:1/x", [], b"body"))
    assert (answer.status, answer.body) == (200, b"ok")
    assert agent.calls == [b"POST", b"POST"] and client.retries == 1


def test_only_one_retry_and_none_when_disabled() -> None:
    agent = FakeAgent(2, ConnectionRefusedError())
    with pytest.raises(IntegrationFailure) as info:
        run(fake_client(agent).request("GET", "http://b:1/x", [], b""))
    assert info.value.message == "Network error communicating with endpoint"
    assert len(agent.calls) == 2
    agent = FakeAgent(1, ConnectionRefusedError())
    with pytest.raises(IntegrationFailure):
        run(fake_client(agent, connect_retries=0).request("GET", "http://b:1/x", [], b""))
    assert len(agent.calls) == 1


def test_a_failure_after_connecting_is_not_retried() -> None:
    agent = FakeAgent(1, ResponseNeverReceived([Failure(ConnectionLost())]))
    with pytest.raises(IntegrationFailure):
        run(fake_client(agent).request("POST", "http://b:1/x", [], b"body"))
    assert len(agent.calls) == 1


class Spy:
    """Adds a header before the http plugin maps, records what it built, answers."""

    def __init__(self) -> None:
        self.seen: list[IntegrationRequest] = []

    @hookimpl
    def map_request(self, ctx: Context, request: IntegrationRequest) -> IntegrationRequest:
        return IntegrationRequest(method=request.method, uri=request.uri,
                                  headers=request.headers.with_added("X-Added", "1"),
                                  query=request.query, path_params=request.path_params,
                                  body=request.body, timeout=request.timeout)

    @hookimpl(trylast=True, specname="map_request")
    def record(self, ctx: Context, request: IntegrationRequest) -> None:
        self.seen.append(request)

    @hookimpl(tryfirst=True)
    def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse:
        return IntegrationResponse(status=200, body=b"spied")


def test_map_request_order_with_other_plugins(make_harness: HarnessFactory,
                                              b: Builders) -> None:
    op = b.proxy_op("http://127.0.0.1:9/items/{id}", type="http", httpMethod="POST",
                    requestParameters={"integration.request.path.id": "method.request.path.id",
                                       "integration.request.querystring.q": "'1'"},
                    responses={"default": {"statusCode": "200"}})
    spy = Spy()
    h = make_harness(b.openapi({"/items/{id}": {"get": op}}), plugins=[("spy", spy)],
                     config=b.gateway_config(plugins=ENABLED))
    assert h.request("GET", "/prod/items/7?z=2", headers={"X-Client": "c"}).body == b"spied"
    (seen,) = spy.seen
    assert seen.method == "POST"
    assert seen.uri == "http://127.0.0.1:9/items/7"
    assert seen.query == (("q", "1"),)
    assert seen.headers.get("X-Added") == "1"
    assert seen.headers.get("X-Client") is None


# -- body sources (REST) and HTTP API parameter mapping ------------------------------------


def spied(make_harness: HarnessFactory, b: Builders, params: dict[str, str],
          api_type: str = "REST", uri: str = "http://127.0.0.1:9/items/{id}"
          ) -> tuple[GatewayHarness, Spy]:
    op = b.proxy_op(uri, requestParameters=params)
    if api_type == "HTTP":
        op["x-amazon-apigateway-integration"]["payloadFormatVersion"] = "1.0"
    spy = Spy()
    h = make_harness(b.openapi({"/items/{id}": {"post": op}}), plugins=[("spy", spy)],
                     config=b.gateway_config(plugins=ENABLED, api_type=api_type))
    return h, spy


def test_body_sources_map_the_whole_body_and_json_paths(make_harness: HarnessFactory,
                                                        b: Builders) -> None:
    h, spy = spied(make_harness, b, {
        "integration.request.path.id": "method.request.path.id",
        "integration.request.header.X-Body": "method.request.body",
        "integration.request.header.X-Name": "method.request.body.pets[0].name",
        "integration.request.header.X-Obj": "method.request.body.owner",
        "integration.request.querystring.n": "method.request.body.count",
        "integration.request.querystring.missing": "method.request.body.nothing.here"})
    body = b'{"pets": [{"name": "rex"}], "owner": {"id": 1, "ok": true}, "count": 3}'
    assert h.request("POST", "/prod/items/7", body=body,
                     headers={"Content-Type": "application/json"}).body == b"spied"
    seen = spy.seen[-1]
    assert seen.headers.get("X-Body") == body.decode()
    assert seen.headers.get("X-Name") == "rex"
    assert seen.headers.get("X-Obj") == '{"id":1,"ok":true}'
    assert ("n", "3") in seen.query
    assert all(k != "missing" for k, _ in seen.query)
    # A body that is not JSON leaves the JSONPath targets unset.
    h.request("POST", "/prod/items/7", body=b"not json")
    seen = spy.seen[-1]
    assert seen.headers.get("X-Name") is None
    assert seen.headers.get("X-Body") == "not json"


def test_http_api_mapping_overwrites_appends_and_removes(make_harness: HarnessFactory,
                                                         b: Builders) -> None:
    h, spy = spied(make_harness, b, {
        "overwrite:header.X-Over": "$request.header.x-in",
        "append:header.X-App": "$context.stage",
        "remove:header.X-Gone": "''",
        "overwrite:querystring.q": "$request.querystring.src",
        "append:querystring.q2": "static",
        "remove:querystring.drop": "''",
        "append:header.X-Combined": "${request.path.id}-${stageVariables.none}-$x",
        "overwrite:header.X-Body": "$request.body.user.name",
    }, api_type="HTTP")
    response = h.request("POST", "/items/7?q=old&src=new&drop=1&keep=k",
                         body=b'{"user": {"name": "ana"}}',
                         headers={"X-In": "in", "X-Over": "client", "X-App": "first",
                                  "X-Gone": "bye", "Content-Type": "application/json"})
    assert response.body == b"spied"
    seen = spy.seen[-1]
    assert seen.headers.get_all("X-Over") == ["in"]
    assert seen.headers.get_all("X-App") == ["first,$default"]
    assert seen.headers.get("X-Gone") is None
    assert seen.headers.get("X-Combined") == "7--$x"
    assert seen.headers.get("X-Body") == "ana"
    assert seen.query == (("src", "new"), ("keep", "k"), ("q", "new"), ("q2", "static"))
    assert seen.uri == "http://127.0.0.1:9/items/7"


def test_http_api_overwrite_path(make_harness: HarnessFactory, b: Builders) -> None:
    h, spy = spied(make_harness, b, {"overwrite:path": "/v2${request.path}/x"},
                   api_type="HTTP", uri="http://127.0.0.1:9/ignored?fixed=1")
    h.request("POST", "/items/a%20b")
    assert spy.seen[-1].uri == "http://127.0.0.1:9/v2/items/a%20b/x?fixed=1"


@pytest.mark.parametrize(("key", "source", "problem"), [
    ("overwrite:header.Authorization", "'x'", "reserved header"),
    ("append:header.x-amzn-thing", "'x'", "reserved header"),
    ("overwrite:header.X", "$request.cookie.a", "unknown source"),
    ("overwrite:header.X", "${context.nothing}", "unknown context variable"),
    ("prepend:header.X", "'x'", "HTTP API keys look like"),
    ("overwrite:path", "relative", "must start with '/'"),
])
def test_bad_http_api_mappings_are_refused_at_load_time(
        make_harness: HarnessFactory, b: Builders, key: str, source: str,
        problem: str) -> None:
    op = b.proxy_op("http://127.0.0.1:9/", requestParameters={key: source})
    with pytest.raises(ConfigError) as info:
        make_harness(b.openapi({"/x": {"get": op}}),
                     config=b.gateway_config(plugins=ENABLED, api_type="HTTP"))
    assert problem in str(info.value)
    assert key in str(info.value)


# -- the fast client's request side ----------------------------------------------------------


def test_request_head_cannot_be_split_by_header_values() -> None:
    from twistgw_http.fastclient import request_head

    head = request_head("GET", "/x", "b:1", [("X-A", "one\r\nX-Evil: 1"), ("X-B", "two\rthree"),
                                           ("X-C", "four\nfive")], None)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[:5] == ["GET /x HTTP/1.1", "Host: b:1", "X-A: one X-Evil: 1",
                         "X-B: two three", "X-C: four five"]
    assert head.endswith(b"\r\n\r\n") and head.count(b"\n") == 6


def test_request_head_refuses_names_that_are_not_tokens() -> None:
    from twistgw_http.fastclient import request_head

    with pytest.raises(ApiConfigurationError):
        request_head("GET", "/", "b", [("Bad Name", "v")], None)
    assert b"Content-Length: 3\r\n" in request_head("POST", "/", "b", [], 3)


@pytest.mark.parametrize(("url", "key", "host", "path"), [
    ("http://127.0.0.1:8080/a/b?q=1", ("http", "127.0.0.1", 8080), "127.0.0.1:8080",
     "/a/b?q=1"),
    ("http://Example.com?x=/y", ("http", "example.com", 80), "example.com", "/?x=/y"),
    ("https://h.example:443", ("https", "h.example", 443), "h.example", "/"),
    ("http://[::1]:9/p#frag", ("http", "::1", 9), "[::1]:9", "/p"),
])
def test_parse_target_splits_authority_and_request_target(
        url: str, key: tuple[str, str, int], host: str, path: str) -> None:
    from twistgw_http.fastclient import parse_target

    target, request_target = parse_target(url)
    assert (target.key, target.host_header, request_target) == (key, host, path)


@pytest.mark.parametrize("url", ["ftp://h/x", "http://user@h/x", "http://h:99999/",
                                 "http://h/a b", "no-scheme", "http:///x"])
def test_parse_target_refuses_unusable_urls(url: str) -> None:
    from twistgw_http.fastclient import parse_target

    with pytest.raises(ApiConfigurationError):
        parse_target(url)
