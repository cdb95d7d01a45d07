"""One test per hook (``test_hook_<name>``): each of the eleven hooks, end to end.

Lifecycle hooks run through :meth:`Gateway.startService` / :meth:`Gateway.stopService` on a
``MemoryReactorClock``: listeners "bind" in memory and timers run on the fake clock, so no
test here touches the global reactor or a socket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from twistgw import (
    AccessDenied,
    Allow,
    ConfigError,
    Deny,
    IntegrationResponse,
    Principal,
    Registry,
    StashKey,
    Throttled,
    hookimpl,
)
from twistgw.config import GatewayConfig, load_config
from twistgw.deployment import Deployment
from twistgw.errors import GatewayError
from twistgw.gateway import Gateway
from twistgw.hookspecs import REQUEST_PATH_HOOKS
from twistgw.models import Context, IntegrationRequest, Response
from twistgw.pipeline import Outcome
from twistgw.plugins import make_plugin_manager
from twistgw.reload import ReloadStep
from twistgw.testing import write_config

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory, LogCapture

ALL_HOOKS = ("register", "configure", "startup", "shutdown", "prepare_reload", "authorize",
             "map_request",
             "integrate", "map_response", "handle_error", "request_started",
             "request_finished")


def test_every_hook_has_a_test_here() -> None:
    import twistgw.hookspecs as specs

    declared = {name for name in dir(specs)
                if getattr(getattr(specs, name), "twistgw_spec", None) is not None}
    assert declared == set(ALL_HOOKS)
    assert set(REQUEST_PATH_HOOKS) <= declared
    for hook in ALL_HOOKS:
        assert f"test_hook_{hook}" in globals(), hook


def petstore(b: Builders) -> dict[str, Any]:
    return b.openapi({"/pets": {"get": b.mock_op(200, '[{"id": 1}]')},
                      "/pets/{id}": {"get": b.mock_op(200, '{"id": 1}')}})


def lifecycle_gateway(tmp_path: Path, b: Builders, plugins: list[tuple[str, Any]]
                      ) -> tuple[Gateway, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    path = write_config(tmp_path, b.gateway_config(), {"api.yaml": petstore(b)})
    return Gateway(load_config(path), reactor=reactor, extra_plugins=plugins), reactor


# -- set-up -----------------------------------------------------------------------------------


def test_hook_register(make_harness: HarnessFactory, b: Builders) -> None:
    """register: claims make the config check accept what the plugin provides."""
    claims: list[Registry] = []

    class Provider:
        @hookimpl
        def register(self, registry: Registry) -> None:
            claims.append(registry)
            registry.add_integration_type("http_proxy")
            registry.add_extension("x-amazon-apigateway-policy")
            registry.add_feature("mapping_templates")
            registry.add_authorizer_type("TOKEN")
            registry.add_listener_option("tls")
            with pytest.raises(ValueError, match="unknown feature"):
                registry.add_feature("teleportation")

        @hookimpl
        def integrate(self, ctx: Context, request: IntegrationRequest
                      ) -> IntegrationResponse | None:
            if ctx.integration is None or ctx.integration.type != "HTTP_PROXY":
                return None
            return IntegrationResponse(body=b"proxied")

    doc = b.openapi({"/p": {"get": b.proxy_op()}},
                    **{"x-amazon-apigateway-policy": {"Version": "2012-10-17"}})
    h = make_harness(doc, plugins=[("provider", Provider())])
    (registry,) = claims
    assert registry.integration_types["HTTP_PROXY"] == "provider"
    assert registry.extensions["x-amazon-apigateway-policy"] == "provider"
    assert registry.features["mapping_templates"] == "provider"
    assert registry.authorizer_types["token"] == "provider"
    assert registry.listener_options["tls"] == "provider"
    assert registry.integration_types["MOCK"] == "mock"
    assert registry.plugin == "<core>"
    assert h.gateway.deployment.apis["testapi"].definition.extensions[
        "x-amazon-apigateway-policy"] == {"Version": "2012-10-17"}
    assert h.request("GET", "/prod/p").body == b"proxied"


def test_register_route_filter_keeps_a_plugin_off_other_routes(
        make_harness: HarnessFactory, b: Builders) -> None:
    calls: list[str] = []

    class OnlyPets:
        @hookimpl
        def register(self, registry: Registry) -> None:
            registry.add_route_filter(lambda route: route.operation.path == "/pets")

        @hookimpl
        def authorize(self, ctx: Context) -> None:
            assert ctx.route is not None
            calls.append(ctx.route.operation.path)

    h = make_harness(petstore(b), plugins=[("only_pets", OnlyPets())])
    h.request("GET", "/prod/pets")
    h.request("GET", "/prod/pets/1")
    assert calls == ["/pets"]
    plans = {r.operation.path: r.plan for r in (
        h.gateway.deployment.apis["testapi"].table.match("GET", p).route  # type: ignore[union-attr]
        for p in ("/pets", "/pets/1"))}
    assert [i.plugin for i in plans["/pets"].authorize] == ["only_pets"]
    assert plans["/pets/{id}"].authorize == ()


def test_register_route_filter_of_named_hooks_leaves_the_others(
        make_harness: HarnessFactory, b: Builders) -> None:
    calls: list[tuple[str, str]] = []

    class ResponsesOnPets:
        @hookimpl
        def register(self, registry: Registry) -> None:
            registry.add_route_filter(lambda route: route.operation.path == "/pets",
                                      hooks=["map_response"])

        @hookimpl
        def authorize(self, ctx: Context) -> None:
            assert ctx.route is not None
            calls.append(("authorize", ctx.route.operation.path))

        @hookimpl
        def map_response(self, ctx: Context, response: Response) -> None:
            assert ctx.route is not None
            calls.append(("map_response", ctx.route.operation.path))

    h = make_harness(petstore(b), plugins=[("pets_only", ResponsesOnPets())])
    h.request("GET", "/prod/pets")
    h.request("GET", "/prod/pets/1")
    assert calls == [("authorize", "/pets"), ("map_response", "/pets"),
                     ("authorize", "/pets/{id}")]


def test_wrapper_impls_on_the_request_path_are_refused(tmp_path: Path, b: Builders) -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
            return (yield)

    path = write_config(tmp_path, b.gateway_config(), {"api.yaml": petstore(b)})
    with pytest.raises(ConfigError) as info:
        make_plugin_manager(load_config(path).plugins, extra=[("wrapper", Wrapper())],
                            source=str(path))
    assert "plugin 'wrapper' implements integrate as a wrapper" in str(info.value)


def test_hook_configure(tmp_path: Path, b: Builders) -> None:
    """configure: sees the whole config (with plugin settings); a ConfigError refuses it."""
    seen: list[GatewayConfig] = []

    @attrs.define
    class Checker:
        refuse: bool

        @hookimpl
        def configure(self, config: GatewayConfig) -> None:
            seen.append(config)
            settings = config.plugin_settings("checker")
            if self.refuse and settings.get("level") != "high":
                raise ConfigError(config.source, "plugins.settings.checker.level",
                                  "must be 'high'; set plugins.settings.checker.level: high")

    plugins = {"enabled": ["mock", "mapping"], "settings": {"checker": {"level": "low"}}}
    path = write_config(tmp_path, b.gateway_config(plugins=plugins),
                        {"api.yaml": petstore(b)})
    config = load_config(path)
    gateway = Gateway(config, reactor=MemoryReactorClock(),
                      extra_plugins=[("checker", Checker(refuse=False))])
    assert seen == [config]
    assert gateway.deployment.config is config
    with pytest.raises(ConfigError) as info:
        Gateway(config, reactor=MemoryReactorClock(),
                extra_plugins=[("checker", Checker(refuse=True))])
    assert str(info.value) == (f"{path}: plugins.settings.checker.level: must be 'high'; "
                               "set plugins.settings.checker.level: high")


# -- lifecycle --------------------------------------------------------------------------------


def test_hook_startup(tmp_path: Path, b: Builders, log_events: LogCapture) -> None:
    """startup: awaited (Deferred and async def) before the gateway reports ready."""
    pending: Deferred[None] = Deferred()
    started: list[str] = []

    class SlowStart:
        @hookimpl
        def startup(self, gateway: Gateway) -> Deferred[None]:
            started.append("slow")
            return pending

    class AsyncStart:
        @hookimpl
        async def startup(self, gateway: Gateway) -> None:
            started.append("async")

    gateway, reactor = lifecycle_gateway(tmp_path, b, [("slow", SlowStart()),
                                                       ("async", AsyncStart())])
    gateway.startService()
    assert sorted(started) == ["async", "slow"]
    assert [s[0] for s in reactor.tcpServers] == [0]
    assert gateway.running
    assert not gateway.ready
    pending.callback(None)
    assert gateway.ready
    texts = log_events.texts()
    assert any(t.startswith("serving http://localhost:0/prod/ -> REST API 'testapi'")
               for t in texts), texts
    assert "plugin loaded: slow==in-process" in texts
    gateway.stopService()


def test_startup_failure_stops_the_reactor(tmp_path: Path, b: Builders,
                                           log_events: LogCapture) -> None:
    class Broken:
        @hookimpl
        async def startup(self, gateway: Gateway) -> None:
            raise RuntimeError("no database")

    gateway, reactor = lifecycle_gateway(tmp_path, b, [("broken", Broken())])
    gateway.startService()
    assert not gateway.ready
    assert reactor.hasStopped
    assert any("startup hook failed" in t for t in log_events.texts())


def test_hook_shutdown(tmp_path: Path, b: Builders) -> None:
    """shutdown: runs after listeners stop; stopService waits for its Deferreds."""
    events: list[str] = []
    gateway_seen: list[Gateway] = []

    class Drains:
        @hookimpl
        def shutdown(self, gateway: Gateway) -> Deferred[None]:
            gateway_seen.append(gateway)
            events.append(f"shutdown ports={len(gateway.ports)} ready={gateway.ready}")
            d: Deferred[None] = Deferred()
            reactor.callLater(2, d.callback, None)
            return d

    class AsyncDrains:
        @hookimpl
        async def shutdown(self, gateway: Gateway) -> None:
            events.append("async shutdown")

    gateway, reactor = lifecycle_gateway(tmp_path, b, [("drains", Drains()),
                                                       ("async", AsyncDrains())])
    gateway.startService()
    assert gateway.ready and gateway.ports
    stopped = gateway.stopService()
    box: list[Any] = []
    stopped.addBoth(box.append)
    assert sorted(events) == ["async shutdown", "shutdown ports=0 ready=False"]
    assert gateway_seen == [gateway]
    assert box == [] and gateway.running
    reactor.advance(2)
    assert len(box) == 1
    assert not gateway.running


def test_hook_prepare_reload(tmp_path: Path, b: Builders, log_events: LogCapture) -> None:
    """prepare_reload: awaited before the switch; commit at the switch, retire once the old
    deployment's requests are done, abort (for every prepared step) when one refuses."""
    events: list[str] = []
    gate: list[Deferred[ReloadStep]] = []

    class Stepper:
        @hookimpl
        def prepare_reload(self, gateway: Gateway, deployment: Deployment) -> Any:
            old = gateway.deployment.apis["testapi"].definition.title
            new = deployment.apis["testapi"].definition.title
            events.append(f"prepare {old} -> {new}")
            d: Deferred[ReloadStep] = Deferred()
            gate.append(d)
            return d

    class Refuser:
        refuse = False

        @hookimpl
        def prepare_reload(self, gateway: Gateway, deployment: Deployment) -> None:
            if self.refuse:
                raise ConfigError(deployment.config.source, "plugins.settings.refuser",
                                  "not today; fix it")

    refuser = Refuser()
    gateway, reactor = lifecycle_gateway(tmp_path, b, [("stepper", Stepper()),
                                                       ("refuser", refuser)])
    gateway.startService()
    first = gateway.serving
    first.enter()  # a request in flight on the first deployment
    write_config(tmp_path, b.gateway_config(), {"api.yaml": b.openapi(
        {"/pets": {"get": b.mock_op(200, "[]")}}, info={"title": "v2", "version": "2"})})
    box: list[Any] = []
    gateway.reload().addBoth(box.append)
    assert events == ["prepare test api -> v2"] and box == []
    assert gateway.deployment is first.deployment  # nothing switches while preparing
    gate[0].callback(ReloadStep(commit=lambda: events.append("commit"),
                                abort=lambda: events.append("abort"),
                                retire=lambda: events.append("retire")))
    assert box == [True]
    assert gateway.deployment.apis["testapi"].definition.title == "v2"
    assert events[-1] == "commit"
    reactor.advance(0)
    assert events[-1] == "commit"  # the old deployment still has a request in flight
    first.leave()
    reactor.advance(0)
    assert events[-1] == "retire"

    refuser.refuse = True
    second = gateway.deployment
    write_config(tmp_path, b.gateway_config(), {"api.yaml": petstore(b)})
    gateway.reload().addBoth(box.append)
    gate[1].callback(ReloadStep(abort=lambda: events.append("abort 2")))
    assert box[-1] is False
    assert events[-1] == "abort 2"
    assert gateway.deployment is second
    assert any("reload 2 rejected, still serving the previous config: "
               f"{tmp_path / 'gateway.yaml'}: plugins.settings.refuser: not today; fix it"
               in t for t in log_events.texts()), log_events.texts()
    assert gateway.reloads == {"applied": 1, "rejected": 1}
    gateway.stopService()


# -- request path -------------------------------------------------------------------------------


def test_hook_authorize(make_harness: HarnessFactory, b: Builders) -> None:
    """authorize: Deny answers with its error; Allow names the caller for later hooks."""

    class Gate:
        @hookimpl
        def authorize(self, ctx: Context) -> Allow | Deny | None:
            user = ctx.request.headers.get("x-user")
            if user is None:
                return None
            if user == "mallory":
                return Deny(AccessDenied())
            return Allow(Principal(user, context={"role": "reader"}))

    class Greeter:
        @hookimpl
        def integrate(self, ctx: Context, request: IntegrationRequest
                      ) -> IntegrationResponse:
            who = ctx.principal.id if ctx.principal else "anonymous"
            return IntegrationResponse(body=f"hello {who}".encode())

    # No response template on this MOCK route: the integration's body reaches the client.
    h = make_harness(b.openapi({"/pets": {"get": b.mock_op(200)}}),
                     plugins=[("gate", Gate()), ("greeter", Greeter())])
    assert h.request("GET", "/prod/pets", headers={"x-user": "alice"}).body == b"hello alice"
    assert h.request("GET", "/prod/pets").body == b"hello anonymous"
    denied = h.request("GET", "/prod/pets", headers={"x-user": "mallory"})
    assert denied.status == 403
    assert denied.headers.get("x-amzn-ErrorType") == "AccessDeniedException"


def test_hook_map_request(make_harness: HarnessFactory, b: Builders) -> None:
    """map_request: the integration sees the evolved request."""

    class Signer:
        @hookimpl
        def map_request(self, ctx: Context, request: IntegrationRequest) -> IntegrationRequest:
            return attrs.evolve(request,
                                headers=request.headers.with_set("X-Signed", ctx.request_id),
                                uri=request.uri + "?signed=1")

    class Backend:
        @hookimpl
        def register(self, registry: Registry) -> None:
            registry.add_integration_type("HTTP_PROXY")

        @hookimpl
        def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse:
            doc = {"signed": request.headers.get("X-Signed") == ctx.request_id,
                   "uri": request.uri}
            return IntegrationResponse(body=json.dumps(doc).encode())

    h = make_harness(b.openapi({"/p": {"get": b.proxy_op(uri="http://backend/p")}}),
                     plugins=[("signer", Signer()), ("backend", Backend())])
    assert json.loads(h.request("GET", "/prod/p").body) == {
        "signed": True, "uri": "http://backend/p?signed=1"}


def test_hook_integrate(make_harness: HarnessFactory, b: Builders) -> None:
    """integrate: first answer wins; a proxy integration's answer reaches the client as is."""

    class Backend:
        @hookimpl
        def register(self, registry: Registry) -> None:
            registry.add_integration_type("HTTP_PROXY")

        @hookimpl
        async def integrate(self, ctx: Context, request: IntegrationRequest
                            ) -> IntegrationResponse | None:
            if ctx.integration is None or ctx.integration.type != "HTTP_PROXY":
                return None
            return IntegrationResponse(status=418, body=b"teapot",
                                       headers=request.headers.of({"X-Backend": "yes"}))

    h = make_harness(b.openapi({"/p": {"get": b.proxy_op()},
                                "/m": {"get": b.mock_op(200, '"mock"')}}),
                     plugins=[("backend", Backend())])
    response = h.request("GET", "/prod/p")
    assert (response.status, response.body) == (418, b"teapot")
    assert response.headers.get("X-Backend") == "yes"
    assert h.request("GET", "/prod/m").body == b'"mock"'


def test_hook_integrate_answer(make_harness: HarnessFactory, b: Builders) -> None:
    """integrate: an :class:`~twistgw.answer.Answer` (the light alternative to a
    Deferred) is awaited, bounded by the timeout and cancelled at it, its stages mapping
    the backend's reply; its canceller is how the backend call stops."""
    from twistgw.answer import Answer

    calls: list[Answer[bytes]] = []
    stopped: list[str] = []

    class Backend:
        @hookimpl
        def register(self, registry: Registry) -> None:
            registry.add_integration_type("HTTP_PROXY")

        @hookimpl
        def integrate(self, ctx: Context, request: IntegrationRequest) -> Answer[Any]:
            call: Answer[bytes] = Answer(lambda _a: stopped.append(request.uri))
            calls.append(call)
            return call.then(lambda body: IntegrationResponse(status=200, body=body))

    h = make_harness(b.openapi({"/p": {"get": b.proxy_op(uri="http://b/p",
                                                         timeoutInMillis=2000)}}),
                     plugins=[("backend", Backend())])
    pending = h.exchange("GET", "/prod/p")
    assert isinstance(pending, Deferred) and not pending.called
    calls[0].settle(b"from the backend")
    got: list[Any] = []
    pending.addBoth(got.append)
    assert (got[0].response.status, got[0].response.body) == (200, b"from the backend")
    assert stopped == []

    late = h.exchange("GET", "/prod/p")
    assert isinstance(late, Deferred)
    late.addBoth(got.append)
    h.clock.advance(2)
    assert stopped == ["http://b/p"]  # the canceller ran at the timeout
    assert (got[1].response.status, got[1].response.body) == (
        504, b'{"message": "Endpoint request timed out"}')
    assert calls[1].settle(b"too late") is False


def test_hook_map_response(make_harness: HarnessFactory, b: Builders) -> None:
    """map_response: a plugin changes a MOCK route's response (the issue's "done when")."""

    class Stamp:
        @hookimpl
        def map_response(self, ctx: Context, integration_response: IntegrationResponse,
                         response: Response) -> Response:
            return attrs.evolve(
                response, headers=response.headers.with_set("X-Stamp", "1"),
                body=json.dumps({"data": json.loads(response.body),
                                 "status": integration_response.status}).encode())

    h = make_harness(petstore(b), plugins=[("stamp", Stamp())])
    response = h.request("GET", "/prod/pets")
    assert response.status == 200
    assert response.headers.get("X-Stamp") == "1"
    assert json.loads(response.body) == {"data": [{"id": 1}], "status": 200}


def test_hook_handle_error(make_harness: HarnessFactory, b: Builders) -> None:
    """handle_error: first answer wins; ``None`` leaves the error to AWS's rendering."""
    errors: list[GatewayError] = []

    class Problem:
        @hookimpl
        def authorize(self, ctx: Context) -> None:
            if ctx.request.headers.get("x-throttle"):
                raise Throttled()

        @hookimpl
        async def handle_error(self, ctx: Context, error: GatewayError) -> Response | None:
            errors.append(error)
            if not isinstance(error, Throttled):
                return None
            return Response(status=429, headers=ctx.request.headers.of(
                {"Content-Type": "application/problem+json"}),
                body=b'{"title": "slow down"}')

    h = make_harness(petstore(b), plugins=[("problem", Problem())])
    response = h.request("GET", "/prod/pets", headers={"x-throttle": "1"})
    assert (response.status, response.body) == (429, b'{"title": "slow down"}')
    assert response.headers.get_all("Content-Type") == ["application/problem+json"]
    assert response.headers.get("x-amzn-RequestId")
    response = h.request("GET", "/prod/nope")
    assert (response.status, response.body) == (403,
                                                 b'{"message":"Missing Authentication Token"}')
    assert [type(e).__name__ for e in errors] == ["Throttled", "MissingAuthenticationToken"]


_STARTED: StashKey[str] = StashKey("test.started")


def test_hook_request_started(make_harness: HarnessFactory, b: Builders) -> None:
    """request_started: sees every request (even unroutable ones) and may use the stash."""
    started: list[tuple[str, bool]] = []
    carried: list[str | None] = []

    class Timer:
        @hookimpl
        def request_started(self, ctx: Context) -> None:
            started.append((ctx.request.raw_path, bool(ctx.request_id)))
            ctx.stash[_STARTED] = ctx.request_id

        @hookimpl
        def request_finished(self, ctx: Context, response: Response, outcome: Outcome
                             ) -> None:
            carried.append((ctx.stash.get(_STARTED, None) == ctx.request_id and ctx.request_id)
                           or None)

    h = make_harness(petstore(b), plugins=[("timer", Timer())])
    h.request("GET", "/prod/pets")
    h.request("GET", "/nostage")
    assert started == [("/prod/pets", True), ("/nostage", True)]
    assert len(carried) == 2 and all(carried)


def test_hook_request_finished(make_harness: HarnessFactory, b: Builders) -> None:
    """request_finished: the final response and the outcome (error, timings, latency)."""
    finished: list[tuple[int, bytes, Outcome]] = []

    class Metrics:
        @hookimpl
        def request_finished(self, ctx: Context, response: Response, outcome: Outcome
                             ) -> None:
            finished.append((response.status, response.body, outcome))

    h = make_harness(petstore(b), plugins=[("metrics", Metrics())])
    h.request("GET", "/prod/pets")
    h.request("GET", "/prod/nope")
    (ok_status, ok_body, ok), (err_status, _, err) = finished
    assert (ok_status, ok_body, ok.error) == (200, b'[{"id": 1}]', None)
    assert ok.finish.status == 200 and ok.finish.integration_status == 200
    assert ok.finish.response_length == len(ok_body)
    assert ok.finish.response_latency_ms is not None
    assert ("integrate", "mock") in [(hook, plugin) for hook, plugin, _ in ok.timings]
    assert err_status == 403
    assert type(err.error).__name__ == "MissingAuthenticationToken"
    assert err.finish.status == 403
