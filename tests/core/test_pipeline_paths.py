"""The pipeline's paths: plain calls while hooks answer synchronously, a coroutine from a
pending ``authorize`` or ``map_request`` on, callbacks on a pending integration's Deferred.

Every combination of "answers now" and "answers on a later reactor turn" for the four
request-path hooks, and a GatewayError raised at each stage (now or later), must give the
same response as the all-synchronous flow (the fast path), apart from the request ids;
and a client that goes away cancels the integration whichever path the request took.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as TimeoutError_

from twistgw import Allow, IntegrationResponse, Principal, Response, hookimpl
from twistgw.errors import GatewayError
from twistgw.models import Context, IntegrationRequest
from twistgw.pipeline import Exchange

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw.testing import GatewayHarness

HOOKS = ("authorize", "map_request", "integrate", "map_response")


@attrs.define
class Stages:
    """One plugin implementing the four hooks; each answers now or ``later`` (a
    Deferred fired 1 s later on the harness clock), and ``fail`` raises there."""

    clock: Any
    later: frozenset[str] = frozenset()
    fail: str | None = None
    hang: bool = False  # integrate never answers
    cancelled: list[str] = attrs.Factory(list)

    def _answer(self, hook: str, value: Any) -> Any:
        if hook == self.fail:
            error = GatewayError(f"refused in {hook}")
            if hook not in self.later:
                raise error
            d: Deferred[Any] = Deferred(lambda _d: self.cancelled.append(hook))
            self.clock.callLater(1, lambda: d.called or d.errback(error))
            return d
        if hook not in self.later:
            return value
        d = Deferred(lambda _d: self.cancelled.append(hook))
        self.clock.callLater(1, lambda: d.called or d.callback(value))
        return d

    @hookimpl
    def authorize(self, ctx: Context) -> Any:
        return self._answer("authorize", Allow(Principal(id="caller")))

    @hookimpl
    def map_request(self, ctx: Context, request: IntegrationRequest) -> Any:
        return self._answer("map_request", attrs.evolve(
            request, headers=request.headers.with_added("X-Mapped", ctx.principal.id
                                                         if ctx.principal else "-")))

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
        if self.hang:
            return Deferred(lambda _d: self.cancelled.append("integrate"))
        mapped = request.headers.get("X-Mapped") or ""
        return self._answer("integrate", IntegrationResponse(
            status=202, body=b"integrated for " + mapped.encode()))

    @hookimpl
    def map_response(self, ctx: Context, integration_response: IntegrationResponse,
                     response: Response) -> Any:
        return self._answer("map_response", attrs.evolve(
            response, body=response.body + b"+mapped"))


def _comparable(response: Response) -> tuple[int, list[tuple[str, str]], bytes]:
    ids = {"x-amzn-requestid", "x-amz-apigw-id"}
    return (response.status,
            [(k, v) for k, v in response.headers.items if k.lower() not in ids],
            response.body)


class _Delegate:
    """The registered plugin; its :class:`Stages` is made once the harness's clock is."""

    stages: Stages

    @hookimpl
    def authorize(self, ctx: Context) -> Any:
        return self.stages.authorize(ctx)

    @hookimpl
    def map_request(self, ctx: Context, request: IntegrationRequest) -> Any:
        return self.stages.map_request(ctx, request)

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
        return self.stages.integrate(ctx, request)

    @hookimpl
    def map_response(self, ctx: Context, integration_response: IntegrationResponse,
                     response: Response) -> Any:
        return self.stages.map_response(ctx, integration_response, response)


def _harness(make_harness: HarnessFactory, b: Builders, **stages: Any
             ) -> tuple[GatewayHarness, Stages]:
    delegate = _Delegate()
    doc = b.openapi({"/x": {"post": b.mock_op(200, timeoutInMillis=5000)}})
    h = make_harness(doc, plugins=[("stages", delegate)])
    delegate.stages = Stages(h.clock, **stages)
    return h, delegate.stages


def _run(make_harness: HarnessFactory, b: Builders, later: frozenset[str],
         fail: str | None) -> tuple[Response, Exchange | Deferred[Exchange]]:
    h, _stages = _harness(make_harness, b, later=later, fail=fail)
    result = h.exchange("POST", "/prod/x", body=b"in")
    box: list[Any] = []
    if isinstance(result, Deferred):
        result.addBoth(box.append)
        for _ in range(10):
            if box:
                break
            h.clock.advance(1)
    else:
        box.append(result)
    assert isinstance(box[0], Exchange), box[0]
    return box[0].response, result


SUBSETS = [frozenset(c) for n in range(len(HOOKS) + 1)
           for c in itertools.combinations(HOOKS, n)]


@pytest.mark.parametrize("later", SUBSETS, ids=lambda s: "+".join(sorted(s)) or "all-sync")
@pytest.mark.parametrize("fail", [None, *HOOKS])
def test_every_path_gives_the_synchronous_flows_response(make_harness: HarnessFactory,
                                                         b: Builders, later: frozenset[str],
                                                         fail: str | None) -> None:
    expected, direct = _run(make_harness, b, frozenset(), fail)
    assert isinstance(direct, Exchange)  # all synchronous: no Deferred at all
    response, result = _run(make_harness, b, later, fail)
    ran = HOOKS[:HOOKS.index(fail) + 1] if fail else HOOKS  # none after a failure
    assert isinstance(result, Deferred) == bool(later.intersection(ran))
    assert _comparable(response) == _comparable(expected)
    if fail is None:
        # (the MOCK route's integration response mapping gives the 200)
        assert response.status == 200 and response.body == b"integrated for caller+mapped"
    else:
        assert response.status == 500
        assert response.body == f'{{"message":"refused in {fail}"}}'.encode()


@pytest.mark.parametrize("later", [frozenset({"integrate"}),
                                   frozenset({"authorize", "integrate"}),
                                   frozenset({"map_request", "integrate"}),
                                   frozenset({"authorize", "map_request", "integrate"})],
                         ids=lambda s: "+".join(sorted(s)))
def test_a_client_going_away_cancels_the_pending_integration(make_harness: HarnessFactory,
                                                             b: Builders,
                                                             later: frozenset[str]) -> None:
    h, stages = _harness(make_harness, b, later=later, hang=True)
    result = h.exchange("POST", "/prod/x")
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    h.clock.advance(1)
    h.clock.advance(1)  # authorize and map_request (if later) have answered
    assert box == [] and stages.cancelled == []
    result.cancel()
    assert stages.cancelled == ["integrate"]
    assert box[0].check(CancelledError)
    assert len(h.gateway.pipeline.deadlines) == 0


class _Later:
    """An ``integrate`` impl whose Deferred fires 1 s later with ``outcome`` (an
    exception is raised there)."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.clock: Any = None

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        outcome = self.outcome

        def fire() -> None:
            if isinstance(outcome, BaseException):
                d.errback(outcome)
            else:
                d.callback(outcome)

        self.clock.callLater(1, fire)
        return d


class _Now:
    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse:
        return IntegrationResponse(status=201, body=b"next answered")


@pytest.mark.parametrize(("outcome", "then", "status", "body"), [
    ("nonsense", None, 500, b'{"message": "Internal server error"}'),
    (ValueError("bug"), None, 500, b'{"message": "Internal server error"}'),
    (TimeoutError_(), None, 504, b'{"message": "Endpoint request timed out"}'),
    (None, "now", 200, b"next answered"),
    (None, "later", 200, b"later answered"),
], ids=["nonsense", "raises", "timeout-error", "abstains-then-now", "abstains-then-later"])
def test_a_pending_integrate_settles_like_a_synchronous_one(
        make_harness: HarnessFactory, b: Builders, outcome: Any, then: str | None,
        status: int, body: bytes) -> None:
    first = _Later(outcome)
    plugins: list[tuple[str, Any]] = [("first", first)]
    second = _Later(IntegrationResponse(status=201, body=b"later answered"))
    if then == "now":
        plugins.append(("second", _Now()))
    elif then == "later":
        plugins.append(("second", second))
    doc = b.openapi({"/x": {"post": b.mock_op(200, timeoutInMillis=5000)}})
    h = make_harness(doc, plugins=plugins)
    first.clock = second.clock = h.clock
    result = h.exchange("POST", "/prod/x")
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    h.clock.advance(1)
    h.clock.advance(1)
    exchange = box[0]
    assert (exchange.response.status, exchange.response.body) == (status, body)
    timed = [plugin for hook, plugin, _ in exchange.outcome.timings if hook == "integrate"]
    assert timed == (["first", "second"] if then else ["first"])
    assert [phase for phase, *_ in exchange.outcome.finish.phases] == ["integrate"]
    assert len(h.gateway.pipeline.deadlines) == 0


_NAMES = ["Content-Type", "content-type", "CONTENT-TYPE", "Content-type", "X-Request-Id",
          "Content-Typo", "Content-Length", "X-Custom", "content-type "]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(["a", "text/plain"])),
                max_size=6),
       st.booleans(), st.booleans())
def test_finalize_adds_json_content_type_exactly_when_none_is_given(
        items: list[tuple[str, str]], indexed: bool, is_http: bool) -> None:
    """The finalize scan (no index built) decides as the Headers lookup does."""
    from twisted.internet.task import Clock

    from twistgw.models import Headers, InboundRequest
    from twistgw.pipeline import Pipeline

    given_headers = Headers(tuple(items))
    if indexed:
        given_headers.get("x")  # builds the index: the other branch
    ctx = Context(InboundRequest(method="GET", raw_path="/"), "rid", "ext", 1.0)
    final = Pipeline(Clock())._finalize(ctx, Response(headers=given_headers), is_http)
    ids = [("apigw-requestid", "rid")] if is_http else [("x-amzn-RequestId", "rid"),
                                                         ("x-amz-apigw-id", "ext")]
    expected = list(items) + ids
    if "content-type" not in Headers(tuple(items)):
        expected.append(("Content-Type", "application/json"))
    assert list(final.headers.items) == expected


_HEADER_NAMES = ["Content-Type", "content-type", "X-Custom", "Set-Cookie", "Content-Length"]


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=200, max_value=599),
       st.lists(st.tuples(st.sampled_from(_HEADER_NAMES),
                          st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                  max_size=8)), max_size=5),
       st.binary(max_size=16), st.booleans())
def test_an_answer_without_map_response_impls_is_written_as_one_mapped_unchanged(
        status: int, items: list[tuple[str, str]], body: bytes, is_http: bool) -> None:
    """With no ``map_response`` impl the integration's answer goes straight to the final
    response (no intermediate Response): the same response and outcome as when an impl
    ran and left the response as it was."""
    from twisted.internet.task import Clock

    from twistgw.dispatch import HookPlan, Impl
    from twistgw.models import Headers, InboundRequest
    from twistgw.pipeline import Outcome, Pipeline

    seen: list[Response] = []

    def unchanged(response: Response) -> None:
        seen.append(response)

    def run(plan: HookPlan) -> Exchange:
        ctx = Context(InboundRequest(method="GET", raw_path="/"), "rid", "ext", 1.0)
        answer = IntegrationResponse(status=status, headers=Headers(tuple(items)), body=body)
        outcome = Outcome(deployment=None, access_log=None)  # type: ignore[arg-type]
        exchange = Pipeline(Clock())._answered(answer, ctx, outcome, plan, 0.0, 0.0, is_http)
        assert isinstance(exchange, Exchange)
        return exchange

    direct = run(HookPlan())
    mapped = run(HookPlan(map_response=(
        Impl("noop", "map_response", unchanged, ("response",)),)))
    assert len(seen) == 1  # the general path did build and pass a Response
    assert type(direct.response) is Response
    assert (direct.response.status, direct.response.headers.items, direct.response.body) \
        == (mapped.response.status, mapped.response.headers.items, mapped.response.body)
    assert direct.response.upgrade is mapped.response.upgrade is None
    for fin in (direct.outcome.finish, mapped.outcome.finish):
        assert (fin.status, fin.integration_status, fin.response_length) \
            == (status, status, len(body))
