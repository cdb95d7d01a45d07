"""The pipeline's paths: plain calls while hooks answer synchronously, a coroutine from a
pending ``authorize`` or ``map_request`` on, callbacks on a pending integration's Deferred
or :class:`~twistgw.answer.Answer`.

Every combination of "answers now" and "answers on a later reactor turn" for the four
request-path hooks, and a GatewayError raised at each stage (now or later), must give the
same response as the all-synchronous flow (the fast path), apart from the request ids;
and a client that goes away cancels the integration whichever path the request took.
A pending ``integrate`` answers through a Deferred or an Answer (``kind``) alike.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.defer import TimeoutError as TimeoutError_
from twisted.python.failure import Failure

from twistgw import Allow, IntegrationResponse, Principal, Response, hookimpl
from twistgw.answer import Answer
from twistgw.errors import GatewayError
from twistgw.models import Context, IntegrationRequest
from twistgw.pipeline import Exchange, Pending
from twistgw.testing import make_inbound

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw.testing import GatewayHarness

HOOKS = ("authorize", "map_request", "integrate", "map_response")
#: How a pending ``integrate`` answers: a Deferred or a twistgw Answer.
KINDS = ("deferred", "answer")


def _later(kind: str, clock: Any, delay: float, outcome: Any, canceller: Any = None
           ) -> Any:
    """A pending result of ``kind`` that gets ``outcome`` (an exception: fails with it)
    ``delay`` s later on ``clock``, unless it has one by then; ``delay=None``: never."""
    if kind == "deferred":
        d: Any = Deferred(canceller)

        def fire() -> None:
            if not d.called:
                d.errback(outcome) if isinstance(outcome, BaseException) else \
                    d.callback(outcome)
    else:
        d = Answer(canceller)

        def fire() -> None:
            d.settle(Failure(outcome) if isinstance(outcome, BaseException) else outcome)
    if delay is not None:
        clock.callLater(delay, fire)
    return d


@attrs.define
class Stages:
    """One plugin implementing the four hooks; each answers now or ``later`` (a
    Deferred fired 1 s later on the harness clock), and ``fail`` raises there."""

    clock: Any
    later: frozenset[str] = frozenset()
    fail: str | None = None
    hang: bool = False  # integrate never answers
    cancelled: list[str] = attrs.Factory(list)
    kind: str = "deferred"  # how a pending integrate answers (KINDS)

    def _answer(self, hook: str, value: Any) -> Any:
        if hook == self.fail:
            value = GatewayError(f"refused in {hook}")
            if hook not in self.later:
                raise value
        elif hook not in self.later:
            return value
        return _later(self.kind if hook == "integrate" else "deferred", self.clock, 1,
                      value, lambda _d: self.cancelled.append(hook))

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
            return _later(self.kind, self.clock, None, None,
                          lambda _d: self.cancelled.append("integrate"))
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


def _start(h: GatewayHarness, via: str, method: str, path: str, **kw: Any) -> Any:
    """Run one request through ``Pipeline.handle`` (what tests and embedders call) or
    ``Pipeline.serve`` (the gateway's server: a pending integration comes back as a
    ``Pending`` whose continuation is set with ``then``)."""
    if via == "handle":
        return h.exchange(method, path, **kw)
    inbound = make_inbound(method, path, listener=h.default_listener, **kw)
    return h.gateway.pipeline.serve(h.gateway.deployment, inbound)


def _collect(result: Any, box: list[Any]) -> None:
    """Put the exchange (or failure) of ``result`` into ``box`` when it comes."""
    if isinstance(result, Pending):
        result.then(box.append, box.append)
    elif isinstance(result, Deferred):
        result.addBoth(box.append)
    else:
        box.append(result)


def _run(make_harness: HarnessFactory, b: Builders, later: frozenset[str],
         fail: str | None, via: str = "handle", kind: str = "deferred"
         ) -> tuple[Response, Exchange | Deferred[Exchange] | Pending]:
    h, _stages = _harness(make_harness, b, later=later, fail=fail, kind=kind)
    result = _start(h, via, "POST", "/prod/x", body=b"in")
    box: list[Any] = []
    if not isinstance(result, Exchange):
        _collect(result, box)
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


@pytest.mark.parametrize("via", ["handle", "serve"])
@pytest.mark.parametrize(("later", "kind"), [
    # an Answer only where integrate answers later (else the case is the deferred one)
    (later, kind) for later in SUBSETS for kind in KINDS
    if kind == "deferred" or "integrate" in later],
    ids=lambda p: ("+".join(sorted(p)) or "all-sync") if isinstance(p, frozenset) else p)
@pytest.mark.parametrize("fail", [None, *HOOKS])
def test_every_path_gives_the_synchronous_flows_response(make_harness: HarnessFactory,
                                                         b: Builders, later: frozenset[str],
                                                         fail: str | None, via: str,
                                                         kind: str) -> None:
    expected, direct = _run(make_harness, b, frozenset(), fail)
    assert isinstance(direct, Exchange)  # all synchronous: no Deferred at all
    response, result = _run(make_harness, b, later, fail, via, kind)
    ran = HOOKS[:HOOKS.index(fail) + 1] if fail else HOOKS  # none after a failure
    assert (not isinstance(result, Exchange)) == bool(later.intersection(ran))
    if via == "handle":
        assert isinstance(result, (Exchange, Deferred))
    elif later.intersection(ran) == {"integrate"}:
        # only the integration waited: the server gets the Pending, no Deferred
        assert isinstance(result, Pending)
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
@pytest.mark.parametrize("via", ["handle", "serve"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_client_going_away_cancels_the_pending_integration(make_harness: HarnessFactory,
                                                             b: Builders,
                                                             later: frozenset[str],
                                                             via: str, kind: str) -> None:
    h, stages = _harness(make_harness, b, later=later, hang=True, kind=kind)
    result = _start(h, via, "POST", "/prod/x")
    assert isinstance(result, (Deferred, Pending))
    box: list[Any] = []
    _collect(result, box)
    h.clock.advance(1)
    h.clock.advance(1)  # authorize and map_request (if later) have answered
    assert box == [] and stages.cancelled == []
    result.cancel()
    assert stages.cancelled == ["integrate"]
    assert box[0].check(CancelledError)
    assert len(h.gateway.pipeline.deadlines) == 0


class _Later:
    """An ``integrate`` impl whose Deferred (or Answer: ``kind``) fires 1 s later with
    ``outcome`` (an exception is raised there)."""

    def __init__(self, outcome: Any, kind: str = "deferred") -> None:
        self.outcome = outcome
        self.kind = kind
        self.clock: Any = None

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
        return _later(self.kind, self.clock, 1, self.outcome)


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
@pytest.mark.parametrize("via", ["handle", "serve"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_pending_integrate_settles_like_a_synchronous_one(
        make_harness: HarnessFactory, b: Builders, outcome: Any, then: str | None,
        status: int, body: bytes, via: str, kind: str) -> None:
    first = _Later(outcome, kind)
    plugins: list[tuple[str, Any]] = [("first", first)]
    second = _Later(IntegrationResponse(status=201, body=b"later answered"), kind)
    if then == "now":
        plugins.append(("second", _Now()))
    elif then == "later":
        plugins.append(("second", second))
    doc = b.openapi({"/x": {"post": b.mock_op(200, timeoutInMillis=5000)}})
    h = make_harness(doc, plugins=plugins)
    first.clock = second.clock = h.clock
    result = _start(h, via, "POST", "/prod/x")
    assert isinstance(result, Deferred if via == "handle" else Pending)
    box: list[Any] = []
    _collect(result, box)
    h.clock.advance(1)
    h.clock.advance(1)
    exchange = box[0]
    assert (exchange.response.status, exchange.response.body) == (status, body)
    timed = [plugin for hook, plugin, _ in exchange.outcome.timings if hook == "integrate"]
    assert timed == (["first", "second"] if then else ["first"])
    assert [phase for phase, *_ in exchange.outcome.finish.phases] == ["integrate"]
    assert len(h.gateway.pipeline.deadlines) == 0


class _RaisesNow:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> None:
        raise self.error


@pytest.mark.parametrize(("error", "status", "body"), [
    (ValueError("bug"), 500, b'{"message": "Internal server error"}'),
    (TimeoutError_(), 504, b'{"message": "Endpoint request timed out"}'),
], ids=["raises", "timeout-error"])
@pytest.mark.parametrize("via", ["handle", "serve"])
def test_an_integrate_that_raises_at_once_answers_like_a_failed_deferred(
        make_harness: HarnessFactory, b: Builders, error: BaseException, status: int,
        body: bytes, via: str) -> None:
    """The same error gives the same answer whether the impl raises it or its Deferred
    fails with it (the pending cases above): Twisted's ``TimeoutError`` is a 504 both ways."""
    doc = b.openapi({"/x": {"post": b.mock_op(200, timeoutInMillis=5000)}})
    h = make_harness(doc, plugins=[("first", _RaisesNow(error))])
    box: list[Any] = []
    _collect(_start(h, via, "POST", "/prod/x"), box)
    exchange = box[0]
    assert (exchange.response.status, exchange.response.body) == (status, body)
    assert [hook for hook, _, _ in exchange.outcome.timings].count("integrate") == 1


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


class _Fired:
    """An ``integrate`` impl whose Deferred (or Answer) has its result before the call
    returns."""

    def __init__(self, outcome: Any, kind: str = "deferred") -> None:
        self.outcome = outcome
        self.kind = kind

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
        if self.kind == "answer":
            answer: Answer[Any] = Answer()
            answer.settle(Failure(self.outcome) if isinstance(self.outcome, BaseException)
                          else self.outcome)
            return answer
        if isinstance(self.outcome, BaseException):
            return fail(self.outcome)
        return succeed(self.outcome)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("via", ["handle", "serve"])
@pytest.mark.parametrize("outcome", [
    IntegrationResponse(status=201, body=b"fired"), GatewayError("refused"),
    ValueError("bug"), "nonsense"],
    ids=["answer", "gateway-error", "raises", "nonsense"])
def test_an_integration_answered_before_returning_gives_the_exchange_at_once(
        make_harness: HarnessFactory, b: Builders, outcome: Any, via: str, kind: str
) -> None:
    """An already-fired Deferred from ``integrate`` takes no Pending and no Deferred:
    the exchange comes back at once, as the plain value or exception would give it."""
    doc = b.openapi({"/x": {"post": b.mock_op(200, timeoutInMillis=5000)}})

    class _Plain:
        @hookimpl
        def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

    expected = _start(make_harness(doc, plugins=[("plain", _Plain())]), "handle", "POST",
                      "/prod/x")
    h = make_harness(doc, plugins=[("fired", _Fired(outcome, kind))])
    result = _start(h, via, "POST", "/prod/x")
    assert isinstance(expected, Exchange) and isinstance(result, Exchange)
    assert _comparable(result.response) == _comparable(expected.response)
    assert len(h.gateway.pipeline.deadlines) == 0
    assert h.clock.getDelayedCalls() == []  # no deadline was watched


class _Scripted:
    """Two ``integrate`` impls driven by a script keyed by the request's ``x-n`` header:
    the first abstains after ``used`` s (none when 0), the second answers after
    ``answer`` s from the request's start (never when None)."""

    def __init__(self, kind: str = "deferred") -> None:
        self.clock: Any = None
        self.kind = kind
        self.script: dict[str, tuple[int, int | None]] = {}

    def _later(self, delay: float | None, value: Any) -> Any:
        return _later(self.kind, self.clock, delay, value)

    @hookimpl(tryfirst=True)
    def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
        used, _answer = self.script[ctx.request.headers.get("x-n") or ""]
        return self._later(used, None) if used else None


class _ScriptedSecond:
    def __init__(self, first: _Scripted) -> None:
        self.first = first

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> Any:
        first = self.first
        used, answer = first.script[ctx.request.headers.get("x-n") or ""]
        if answer is None:
            return first._later(None, None)
        return first._later(answer - used,
                            IntegrationResponse(status=201, body=b"answered"))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["a", "b"]),
                          st.integers(0, 3), st.none() | st.integers(1, 5)),
                min_size=1, max_size=10), st.sampled_from(KINDS))
def test_pending_integrations_end_each_at_its_own_deadline(
        make_harness: HarnessFactory, b: Builders,
        plan: list[tuple[int, str, int, int | None]], kind: str) -> None:
    """Requests started over time on routes of 2 s and 3 s, some whose first impl
    abstains after part of the time (the second call's deadline is out of its lane's
    order), some answered: through ``serve`` (the inline lane registration) each ends
    with its answer before its deadline, else with the 504 exactly at the deadline."""
    first = _Scripted(kind)
    doc = b.openapi({"/a": {"get": b.mock_op(200, timeoutInMillis=2000)},
                     "/b": {"get": b.mock_op(200, timeoutInMillis=3000)}})
    h = make_harness(doc, plugins=[("first", first), ("second", _ScriptedSecond(first))])
    first.clock = clock = h.clock
    timeouts = {"a": 2, "b": 3}
    expected: list[tuple[int, float]] = []
    starts = []
    t = 0
    for n, (gap, route, used, answer) in enumerate(plan):
        t += gap
        starts.append(t)
        answer = max(answer, used + 1) if answer is not None else None
        first.script[str(n)] = (used, answer)
        deadline = t + timeouts[route]
        if used >= timeouts[route]:
            expected.append((504, deadline))  # the first call itself timed out
        elif answer is not None and answer < timeouts[route]:
            expected.append((200, t + answer))  # (the MOCK route's response mapping)
        else:
            expected.append((504, deadline))
    ended: list[list[tuple[int, float]]] = [[] for _ in plan]
    for now in range(t + 10):
        if now:
            clock.advance(1)
        for n, start in enumerate(starts):
            if start == now:
                result = _start(h, "serve", "GET", f"/prod/{plan[n][1]}",
                                headers=[("x-n", str(n))])
                assert isinstance(result, Pending)
                result.then(lambda exchange, at: at.append(
                    (exchange.response.status, clock.seconds())), print, ended[n])
    assert [at[0] if at else None for at in ended] == expected
    assert len(h.gateway.pipeline.deadlines) == 0
