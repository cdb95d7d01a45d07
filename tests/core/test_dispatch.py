"""The async-aware dispatcher and the request-path call semantics of the hooks.

Plain values, Deferreds (fired or not) and coroutines all work; an awaited ``None``
abstains; pipes run in order; ``authorize`` stops on Deny; a plugin's exception becomes a
500 that is logged with the plugin and the hook named; timeouts run on the harness clock.
"""

from __future__ import annotations

from collections.abc import Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock

from twistgw import (
    AccessDenied,
    Allow,
    Deny,
    IntegrationResponse,
    Principal,
    Registry,
    Throttled,
    hookimpl,
)
from twistgw.dispatch import (
    Impl,
    call_each,
    call_first,
    call_pipe,
    notify,
    pipe_now,
    run_maybe_sync,
)
from twistgw.errors import GatewayError, PluginError
from twistgw.models import Context, IntegrationRequest, Response
from twistgw.pipeline import Exchange

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory, LogCapture

    from twistgw.testing import GatewayHarness

OK = IntegrationResponse(status=200, body=b"answered")


def impl(function: Callable[..., Any], name: str = "p", hook: str = "h") -> Impl:
    return Impl(plugin=name, hook=hook, function=function,
                argnames=tuple(function.__code__.co_varnames[:function.__code__.co_argcount]))


# -- the dispatcher functions ------------------------------------------------------------------


def test_run_maybe_sync_returns_plain_results() -> None:
    async def coro() -> int:
        return await succeed(41) + 1

    assert run_maybe_sync(coro()) == 42


def test_run_maybe_sync_hands_over_to_a_deferred() -> None:
    clock = Clock()
    waiting: Deferred[int] = Deferred()
    clock.callLater(5, waiting.callback, 7)

    async def coro() -> int:
        first = await waiting
        second = await succeed(1)
        return first + second

    result = run_maybe_sync(coro())
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    clock.advance(4)
    assert box == []
    clock.advance(1)
    assert box == [8]


def test_run_maybe_sync_raises_failures_into_the_coroutine() -> None:
    waiting: Deferred[int] = Deferred()

    async def coro() -> str:
        try:
            await waiting
        except ValueError as e:
            return f"caught {e}"
        return "not raised"

    result = run_maybe_sync(coro())
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    waiting.errback(ValueError("boom"))
    assert box == ["caught boom"]
    # The coroutine handled it: the awaited Deferred holds no unhandled failure.
    after: list[Any] = []
    waiting.addBoth(after.append)
    assert after == [None]


def _awaiting(waiting: Deferred[int]) -> tuple[Deferred[int], list[Any]]:
    """run_maybe_sync of a coroutine that returns what ``waiting`` gives, and the list
    its outcome lands in."""
    async def coro() -> int:
        return await waiting

    result = run_maybe_sync(coro())
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    return result, box


def test_run_maybe_sync_passes_an_uncaught_failure_on() -> None:
    waiting: Deferred[int] = Deferred()
    _result, box = _awaiting(waiting)
    waiting.errback(ValueError("boom"))
    assert box[0].check(ValueError)


def test_cancelling_run_maybe_sync_cancels_what_it_awaits() -> None:
    cancelled: list[bool] = []
    result, box = _awaiting(Deferred(lambda d: cancelled.append(True)))
    result.cancel()
    assert cancelled == [True] and box[0].check(CancelledError)


def test_a_coroutine_that_survives_its_cancellation_is_dropped_quietly() -> None:
    """Cancelled while it awaits, the coroutine catches the CancelledError and awaits
    something else: the caller already got its CancelledError; the late result must not
    fire the Deferred twice."""
    first: Deferred[int] = Deferred()
    second: Deferred[int] = Deferred()

    async def coro() -> int:
        try:
            return await first
        except CancelledError:
            return await second

    result = run_maybe_sync(coro())
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    result.cancel()
    assert box[0].check(CancelledError)
    second.callback(5)  # no AlreadyCalledError
    assert len(box) == 1


def test_run_maybe_sync_refuses_awaiting_a_non_deferred() -> None:
    class Odd:
        def __await__(self) -> Any:
            yield "not a Deferred"

    async def coro() -> None:
        await Odd()

    result = run_maybe_sync(coro())
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addErrback(box.append)
    assert box[0].check(TypeError)


def test_call_first_skips_abstentions_of_every_kind() -> None:
    async def coro_none(x: int) -> None:
        return None

    def deferred_none(x: int) -> Deferred[None]:
        return succeed(None)

    def plain(x: int) -> int:
        return x * 2

    def never(x: int) -> int:
        raise AssertionError("called after an answer")

    impls = [impl(coro_none), impl(deferred_none), impl(plain), impl(never)]
    assert run_maybe_sync(call_first(impls, {"x": 21})) == 42
    assert run_maybe_sync(call_first([impl(coro_none)], {"x": 1})) is None


def test_call_pipe_passes_each_result_on() -> None:
    def add_a(value: str) -> str:
        return value + "a"

    def keep(value: str) -> None:
        return None

    async def add_b(value: str) -> str:
        return value + "b"

    def add_c(value: str) -> Deferred[str]:
        return succeed(value + "c")

    impls = [impl(add_a), impl(keep), impl(add_b), impl(add_c)]
    assert run_maybe_sync(call_pipe(impls, {"value": ""}, "value")) == "abc"


def test_call_each_stops_where_asked() -> None:
    calls: list[str] = []

    def first() -> str:
        calls.append("first")
        return "go"

    def second() -> None:
        calls.append("second")

    def third() -> str:
        calls.append("third")
        return "stop"

    def fourth() -> str:
        calls.append("fourth")
        return "never"

    impls = [impl(first), impl(second), impl(third), impl(fourth)]
    assert run_maybe_sync(call_each(impls, {}, lambda r: r == "stop")) == ["go", "stop"]
    assert calls == ["first", "second", "third"]


def test_call_impl_wraps_plain_exceptions_and_records_timings(log_events: LogCapture) -> None:
    def broken() -> None:
        raise KeyError("oops")

    timings: list[tuple[str, str, float]] = []
    with pytest.raises(PluginError) as info:
        run_maybe_sync(call_first([impl(broken, "bad", "integrate")], {}, timings))
    error = info.value
    assert (error.plugin, error.hook) == ("bad", "integrate")
    assert [(h, p) for h, p, _ in timings] == [("integrate", "bad")]
    (event,) = log_events.failures()
    assert (event["plugin"], event["hook"]) == ("bad", "integrate")
    assert event["log_failure"].check(KeyError)


def test_call_impl_lets_gateway_errors_through(log_events: LogCapture) -> None:
    def refuse() -> None:
        raise Throttled()

    with pytest.raises(Throttled):
        run_maybe_sync(call_first([impl(refuse)], {}))
    assert log_events.failures() == []


def test_notify_logs_and_swallows(log_events: LogCapture) -> None:
    seen: list[str] = []

    def boom(x: int) -> None:
        raise ValueError("observer bug")

    async def async_boom(x: int) -> None:
        raise RuntimeError("async observer bug")

    def failed_deferred(x: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.errback(ZeroDivisionError())
        return d

    def fine(x: int) -> None:
        seen.append("fine")

    notify([impl(boom, "a", "request_finished"), impl(async_boom, "b", "request_finished"),
            impl(failed_deferred, "c", "request_finished"),
            impl(fine, "d", "request_finished")], {"x": 1})
    assert seen == ["fine"]
    assert sorted((e["plugin"], e["hook"]) for e in log_events.failures()) == [
        ("a", "request_finished"), ("b", "request_finished"), ("c", "request_finished")]


# -- through the gateway ---------------------------------------------------------------------------


@attrs.define
class Integrator:
    """Answers MOCK routes with whatever ``answer`` produces (before the mock plugin)."""

    answer: Callable[[], Any]
    calls: int = 0

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
        self.calls += 1
        return self.answer()


def mock_harness(make_harness: HarnessFactory, b: Builders,
                 plugins: list[tuple[str, Any]], **integration: Any) -> GatewayHarness:
    doc = b.openapi({"/x": {"get": b.mock_op(200, **integration)},
                     "/y/{id}": {"post": b.mock_op(201)}})
    return make_harness(doc, plugins=plugins)


def test_plain_return(make_harness: HarnessFactory, b: Builders) -> None:
    h = mock_harness(make_harness, b, [("plain", Integrator(lambda: OK))])
    result = h.exchange("GET", "/prod/x")
    assert isinstance(result, Exchange)
    assert result.response.status == 200
    # The mapping plugin still maps the integration response (default: body passes).
    assert result.response.body == b"answered"


def test_deferred_already_fired_stays_synchronous(make_harness: HarnessFactory,
                                                  b: Builders) -> None:
    h = mock_harness(make_harness, b, [("fired", Integrator(lambda: succeed(OK)))])
    result = h.exchange("GET", "/prod/x")
    assert isinstance(result, Exchange)
    assert result.response.body == b"answered"


def test_deferred_fired_later(make_harness: HarnessFactory, b: Builders) -> None:
    holder: list[Deferred[IntegrationResponse]] = []

    def later() -> Deferred[IntegrationResponse]:
        d: Deferred[IntegrationResponse] = Deferred()
        holder.append(d)
        h.clock.callLater(2, d.callback, OK)
        return d

    h = mock_harness(make_harness, b, [("later", Integrator(later))])
    result = h.exchange("GET", "/prod/x")
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    h.clock.advance(1.9)
    assert box == []
    h.clock.advance(0.1)
    assert len(box) == 1 and isinstance(box[0], Exchange)
    assert box[0].response.body == b"answered"


def test_async_none_abstains_and_the_next_answers(make_harness: HarnessFactory,
                                                  b: Builders) -> None:
    class Abstains:
        calls = 0

        @hookimpl
        async def integrate(self, ctx: Context, request: IntegrationRequest) -> None:
            Abstains.calls += 1
            return None

    h = mock_harness(make_harness, b, [("abstains", Abstains()),
                                       ("answers", Integrator(lambda: OK))])
    response = h.request("GET", "/prod/x")
    assert response.body == b"answered"
    assert Abstains.calls == 1


def test_async_none_everywhere_falls_back_to_the_builtin(make_harness: HarnessFactory,
                                                         b: Builders) -> None:
    class Abstains:
        @hookimpl
        async def integrate(self, ctx: Context, request: IntegrationRequest) -> None:
            return None

    h = mock_harness(make_harness, b, [("abstains", Abstains())], body='"from mock"')
    assert h.request("GET", "/prod/x").body == b'"from mock"'


def test_async_impl_awaiting_the_clock(make_harness: HarnessFactory, b: Builders) -> None:
    class Slow:
        @hookimpl
        async def integrate(self, ctx: Context, request: IntegrationRequest
                            ) -> IntegrationResponse:
            d: Deferred[None] = Deferred()
            h.clock.callLater(3, d.callback, None)
            await d
            return IntegrationResponse(status=200, body=b"slow")

    h = mock_harness(make_harness, b, [("slow", Slow())])
    result = h.exchange("GET", "/prod/x")
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    h.clock.advance(3)
    assert box[0].response.body == b"slow"


def test_plugin_list_order_is_call_order(make_harness: HarnessFactory, b: Builders) -> None:
    h = mock_harness(make_harness, b, [
        ("first", Integrator(lambda: IntegrationResponse(body=b"first"))),
        ("second", Integrator(lambda: IntegrationResponse(body=b"second")))])
    assert h.request("GET", "/prod/x").body == b"first"


def test_map_request_and_map_response_pipe_in_order(make_harness: HarnessFactory,
                                                    b: Builders) -> None:
    seen: list[bytes] = []

    @attrs.define
    class Mapper:
        tag: str

        @hookimpl
        def map_request(self, ctx: Context, request: IntegrationRequest
                        ) -> IntegrationRequest | None:
            if self.tag == "keep":
                return None
            return attrs.evolve(request, headers=request.headers.with_added("X-Req", self.tag))

        @hookimpl
        async def map_response(self, ctx: Context, integration_response: IntegrationResponse,
                               response: Response) -> Response | None:
            if self.tag == "keep":
                return None
            seen.append(integration_response.body)
            return attrs.evolve(response, body=response.body + self.tag.encode())

    class Capture:
        headers: list[str] = []

        @hookimpl
        def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse:
            Capture.headers = request.headers.get_all("X-Req")
            return IntegrationResponse(body=b">")

    h = mock_harness(make_harness, b, [("a", Mapper("a")), ("keep", Mapper("keep")),
                                       ("b", Mapper("b")), ("capture", Capture())])
    response = h.request("GET", "/prod/x")
    assert Capture.headers == ["a", "b"]
    # The shipped mapping plugin builds the method response first (no template: the
    # integration body passes through); the plugins then refine it, in list order.
    assert seen == [b">", b">"]
    assert response.body == b">ab"


def test_map_response_of_a_proxy_route_pipes_in_order(make_harness: HarnessFactory,
                                                      b: Builders) -> None:
    @attrs.define
    class Suffix:
        tag: str

        @hookimpl
        def map_response(self, ctx: Context, integration_response: IntegrationResponse,
                         response: Response) -> Response:
            return attrs.evolve(response, body=response.body + self.tag.encode())

    h = make_harness(b.openapi({"/p": {"get": b.proxy_op()}}),
                     plugins=[("one", Suffix("1")), ("two", Suffix("2")),
                              ("echo", b.echo())])
    body = h.request("GET", "/prod/p").body
    assert body.endswith(b"}12")


def test_authorize_deny_stops(make_harness: HarnessFactory, b: Builders) -> None:
    calls: list[str] = []

    @attrs.define
    class Auth:
        name: str
        verdict: Any

        @hookimpl
        def authorize(self, ctx: Context) -> Any:
            calls.append(self.name)
            return self.verdict

    integrator = Integrator(lambda: OK)
    h = mock_harness(make_harness, b, [
        ("abstain", Auth("abstain", None)),
        ("allow", Auth("allow", Allow())),
        ("deny", Auth("deny", Deny(AccessDenied("no entry")))),
        ("late", Auth("late", Allow())),
        ("integrator", integrator)])
    response = h.request("GET", "/prod/x")
    assert (response.status, response.body) == (403, b'{"message":"no entry"}')
    assert calls == ["abstain", "allow", "deny"]
    assert integrator.calls == 0


def test_authorize_allow_sets_the_principal(make_harness: HarnessFactory,
                                            b: Builders) -> None:
    principals: list[Principal | None] = []

    class Who:
        @hookimpl
        async def authorize(self, ctx: Context) -> Allow:
            return Allow(Principal("alice", context={"tier": "gold"}))

    class Then:
        @hookimpl
        def authorize(self, ctx: Context) -> None:
            principals.append(ctx.principal)

        @hookimpl
        def map_request(self, ctx: Context, request: IntegrationRequest) -> None:
            principals.append(ctx.principal)

        @hookimpl
        def integrate(self, ctx: Context, request: IntegrationRequest) -> None:
            principals.append(ctx.principal)

    h = mock_harness(make_harness, b, [("who", Who()), ("then", Then())])
    assert h.request("GET", "/prod/x").status == 200
    assert [p.id if p else None for p in principals] == ["alice", "alice", "alice"]
    assert principals[0] is not None and principals[0].context["tier"] == "gold"


def test_authorize_returning_nonsense_is_a_plugin_error(make_harness: HarnessFactory,
                                                        b: Builders,
                                                        log_events: LogCapture) -> None:
    class Confused:
        @hookimpl
        def authorize(self, ctx: Context) -> bool:
            return True

    response = mock_harness(make_harness, b, [("confused", Confused())]).request(
        "GET", "/prod/x")
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')
    assert any("confused" in t and "authorize" in t for t in log_events.texts())


def test_integrate_returning_nonsense_is_a_plugin_error(make_harness: HarnessFactory,
                                                        b: Builders,
                                                        log_events: LogCapture) -> None:
    h = mock_harness(make_harness, b, [("confused", Integrator(lambda: {"status": 200}))])
    response = h.request("GET", "/prod/x")
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')
    assert any("confused" in t and "integrate" in t for t in log_events.texts())


HOOK_BREAKERS = ["authorize", "map_request", "integrate", "map_response", "handle_error"]


@attrs.define
class Broken:
    """Implements every request-path hook; the one named ``hook`` fails while ``on``.

    ``style`` says how it fails: raising, returning a failed Deferred, or from a coroutine.
    Every other hook abstains (in the same style).
    """

    hook: str
    style: str
    on: bool = True

    def _result(self, hook: str) -> Any:
        failing = self.on and hook == self.hook

        def outcome() -> None:
            if failing:
                raise ValueError(f"bug in {hook}")

        if self.style == "async":
            async def coro() -> None:
                outcome()
            return coro()
        if self.style == "deferred":
            d: Deferred[None] = Deferred()
            try:
                outcome()
            except ValueError as e:
                d.errback(e)
            else:
                d.callback(None)
            return d
        outcome()
        return None

    @hookimpl
    def authorize(self, ctx: Context) -> Any:
        return self._result("authorize")

    @hookimpl
    def map_request(self, ctx: Context, request: IntegrationRequest) -> Any:
        return self._result("map_request")

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
        return self._result("integrate")

    @hookimpl
    def map_response(self, ctx: Context, integration_response: IntegrationResponse,
                     response: Response) -> Any:
        return self._result("map_response")

    @hookimpl
    def handle_error(self, ctx: Context, error: GatewayError) -> Any:
        return self._result("handle_error")


@pytest.mark.parametrize("hook", HOOK_BREAKERS)
@pytest.mark.parametrize("style", ["plain", "async", "deferred"])
def test_a_raising_impl_gives_500_and_is_logged(make_harness: HarnessFactory, b: Builders,
                                                log_events: LogCapture, hook: str,
                                                style: str) -> None:
    broken = Broken(hook, style)
    # handle_error only runs when something failed: a second plugin raises THROTTLED.
    trigger = [("trigger", _Raiser(Throttled()))] if hook == "handle_error" else []
    h = mock_harness(make_harness, b, [("broken", broken), *trigger], body='"fine"')
    response = h.request("GET", "/prod/x")
    assert response.status == 500
    assert response.body == b'{"message": "Internal server error"}'
    assert response.headers.get("x-amzn-ErrorType") == "InternalServerErrorException"
    failures = [e for e in log_events.failures() if e.get("plugin") == "broken"]
    assert [(e["plugin"], e["hook"]) for e in failures] == [("broken", hook)]
    assert failures[0]["log_failure"].check(ValueError)
    assert any(f"plugin broken failed in hook {hook}" in t for t in log_events.texts())
    # The gateway keeps serving: the same route answers once the plugin behaves.
    broken.on = False
    response = h.request("GET", "/prod/x")
    if hook == "handle_error":
        assert (response.status, response.body) == (429, b'{"message":"Too Many Requests"}')
    else:
        assert (response.status, response.body) == (200, b'"fine"')


@attrs.define
class _Raiser:
    error: GatewayError

    @hookimpl
    def authorize(self, ctx: Context) -> None:
        raise self.error


def test_integration_timeout_on_the_clock(make_harness: HarnessFactory, b: Builders) -> None:
    cancelled: list[bool] = []

    def never() -> Deferred[IntegrationResponse]:
        return Deferred(lambda d: cancelled.append(True))

    integrator = Integrator(never)
    h = mock_harness(make_harness, b, [("never", integrator)], timeoutInMillis=1500)
    result = h.exchange("GET", "/prod/x")
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    h.clock.advance(1.4)
    assert box == [] and cancelled == []
    h.clock.advance(0.2)
    assert cancelled == [True]
    response = box[0].response
    assert response.status == 504
    assert response.body == b'{"message": "Endpoint request timed out"}'
    assert response.headers.get("x-amzn-ErrorType") == "InternalServerErrorException"
    integrator.answer = lambda: OK
    assert h.request("GET", "/prod/x").body == b"answered"


def test_async_integration_timeout_cancels_what_it_awaits(make_harness: HarnessFactory,
                                                          b: Builders) -> None:
    cancelled: list[bool] = []

    class Hangs:
        @hookimpl
        async def integrate(self, ctx: Context, request: IntegrationRequest
                            ) -> IntegrationResponse:
            try:
                await Deferred(lambda d: cancelled.append(True))
            except CancelledError:
                raise
            raise AssertionError("unreachable")

    h = mock_harness(make_harness, b, [("hangs", Hangs())], timeoutInMillis=50)
    result = h.exchange("GET", "/prod/x")
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    h.clock.advance(0.06)
    assert cancelled == [True]
    assert box[0].response.status == 504


def test_route_requiring_authorization_without_allow_is_401(make_harness: HarnessFactory,
                                                            b: Builders) -> None:
    class ClaimsTokenAuthorizers:
        calls = 0

        @hookimpl
        def register(self, registry: Registry) -> None:
            registry.add_authorizer_type("token")

        @hookimpl
        def authorize(self, ctx: Context) -> None:
            ClaimsTokenAuthorizers.calls += 1
            return None

    doc = b.openapi(
        {"/x": {"get": {**b.mock_op(200, '"secret"'), "security": [{"tok": []}]}},
         "/open": {"get": b.mock_op(200, '"open"')}},
        components={"securitySchemes": {"tok": {
            "type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {"type": "token", "authorizerUri": "arn:x"}}}})
    h = make_harness(doc, plugins=[("auth", ClaimsTokenAuthorizers())])
    response = h.request("GET", "/prod/x", headers={"Authorization": "anything"})
    assert (response.status, response.body) == (401, b'{"message":"Unauthorized"}')
    assert response.headers.get("x-amzn-ErrorType") == "UnauthorizedException"
    assert ClaimsTokenAuthorizers.calls == 1
    assert h.request("GET", "/prod/open").body == b'"open"'


def test_no_integrate_answer_is_500(make_harness: HarnessFactory, b: Builders,
                                    log_events: LogCapture) -> None:
    class ClaimsButNeverAnswers:
        @hookimpl
        def register(self, registry: Registry) -> None:
            registry.add_integration_type("HTTP_PROXY")

    h = make_harness(b.openapi({"/p": {"get": b.proxy_op()}}),
                     plugins=[("lazy", ClaimsButNeverAnswers())])
    response = h.request("GET", "/prod/p")
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')
    assert any("no plugin answered the HTTP_PROXY integration of GET /p" in t
               for t in log_events.texts())


def test_observers_never_change_the_response(make_harness: HarnessFactory, b: Builders,
                                             log_events: LogCapture) -> None:
    class Nosy:
        @hookimpl
        def request_started(self, ctx: Context) -> None:
            raise RuntimeError("started")

        @hookimpl
        async def request_finished(self, ctx: Context, response: Response,
                                   outcome: Any) -> None:
            raise RuntimeError("finished")

    h = mock_harness(make_harness, b, [("nosy", Nosy())], body='"fine"')
    response = h.request("GET", "/prod/x")
    assert (response.status, response.body) == (200, b'"fine"')
    assert sorted(e["hook"] for e in log_events.failures() if e.get("plugin") == "nosy") == [
        "request_finished", "request_started"]


def test_gateway_error_from_map_request(make_harness: HarnessFactory, b: Builders) -> None:
    class Refuses:
        @hookimpl
        def map_request(self, ctx: Context, request: IntegrationRequest) -> None:
            raise GatewayError("custom configuration message")

    response = mock_harness(make_harness, b, [("refuses", Refuses())]).request(
        "GET", "/prod/x")
    assert (response.status, response.body) == (
        500, b'{"message":"custom configuration message"}')


def test_pipe_now_stays_synchronous_until_a_result_must_be_awaited() -> None:
    def add_a(value: str) -> str:
        return value + "a"

    def add_b(value: str) -> Deferred[str]:
        return succeed(value + "b")

    async def add_c(value: str) -> str:
        return value + "c"

    def keep(value: str) -> None:
        return None

    timings: list[tuple[str, str, float]] = []
    assert pipe_now([impl(add_a), impl(keep)], {"value": ""}, "value", timings) == "a"
    assert [t[:2] for t in timings] == [("h", "p"), ("h", "p")]
    timings.clear()
    rest = pipe_now([impl(add_a), impl(add_b, "b"), impl(keep), impl(add_c, "c")],
                    {"value": ""}, "value", timings)
    assert isinstance(rest, CoroutineType)
    assert run_maybe_sync(rest) == "abc"
    assert [t[1] for t in timings] == ["p", "b", "p", "c"]


def test_pipe_now_failures(log_events: LogCapture) -> None:
    def boom(value: str) -> str:
        raise ValueError("bug")

    async def later_boom(value: str) -> str:
        raise ValueError("later bug")

    def denied(value: str) -> str:
        raise Throttled()

    timings: list[tuple[str, str, float]] = []
    with pytest.raises(PluginError):
        pipe_now([impl(boom, "buggy")], {"value": ""}, "value", timings)
    with pytest.raises(Throttled):
        pipe_now([impl(denied, "gate")], {"value": ""}, "value", timings)
    rest = pipe_now([impl(later_boom, "late")], {"value": ""}, "value", timings)
    with pytest.raises(PluginError):
        run_maybe_sync(rest)
    assert [t[1] for t in timings] == ["buggy", "gate", "late"]
