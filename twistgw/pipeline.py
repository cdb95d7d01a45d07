"""The request pipeline: resolve, authorize, map, integrate, map back, answer.

One call per request, against one frozen :class:`~twistgw.deployment.Deployment`.  The
order follows API Gateway's (aws-apigw-spec.md §A.2): API and stage resolution, route
match, ``authorize``, ``map_request``, ``integrate`` (bounded by the integration timeout),
``map_response``; any :class:`~twistgw.errors.GatewayError` on the way becomes a gateway
response through ``handle_error``.  Every response gets the request-id headers AWS adds
(§A.7).

The flow is plain calls while every hook answers synchronously, so a MOCK route completes
inside the call without a coroutine, a Deferred or a reactor turn.  A pending result hands
the rest over: a pending ``authorize`` or ``map_request`` to a coroutine (started with
:func:`~twistgw.dispatch.run_maybe_sync`), a pending ``integrate`` (every proxied or Lambda
request) to callbacks on the integration's own Deferred (or Answer), bounded by
:class:`~twistgw.deadlines.Deadlines` (one timer per timeout value, not one per call).
"""

from __future__ import annotations

import os
import re
import time
from binascii import b2a_base64 as _b2a_base64
from collections.abc import Callable, Coroutine, Mapping
from time import perf_counter
from types import CoroutineType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, cast

import attrs
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure

from .accesslog import AccessLog
from .answer import Answer
from .deadlines import Deadlines, Lane
from .dispatch import Later, call_impl, notify, pipe_now, plugin_failure, run_maybe_sync
from .errors import (
    ApiConfigurationError,
    GatewayError,
    HttpApiNotFound,
    IntegrationTimeout,
    MissingAuthenticationToken,
    PluginError,
    ResourceNotFound,
    StageNotFound,
    Unauthorized,
)
from .models import (
    EMPTY_MAPPING,
    Allow,
    Context,
    Deny,
    Headers,
    InboundRequest,
    IntegrationRequest,
    IntegrationResponse,
    Response,
)
from .variables import Finish

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from .deployment import (
        ApiDeployment,
        Deployment,
        ListenerTargets,
        Route,
        StageDeployment,
    )
    from .dispatch import HookPlan, Impl

    #: What the flow returns: the exchange, a Deferred of it, or a request waiting on its
    #: integration.
    _Flow: TypeAlias = "Exchange | Deferred[Exchange] | Pending"

__all__ = ["Pipeline", "Pending", "Outcome", "Exchange", "INGRESS_DROPPED_HEADERS",
           "substitute_stage_variables"]

log = Logger()

#: Headers API Gateway drops on ingress (§A.6): never visible to mappings or proxies.
INGRESS_DROPPED_HEADERS = frozenset(
    h.lower() for h in ("Connection", "Content-Length", "Content-MD5", "Expect",
                        "Max-Forwards", "Proxy-Authenticate", "Server", "TE",
                        "Transfer-Encoding", "Trailer", "Upgrade", "WWW-Authenticate",
                        "Keep-Alive", "Proxy-Connection")
)

#: The content type a response without one gets.
_JSON_CONTENT_TYPE = (("Content-Type", "application/json"),)

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{12}$")
_EXECUTE_API_RE = re.compile(r"^([A-Za-z0-9_-]+)\.execute-api\.")
_STAGE_VAR_RE = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_]+)\}")


def substitute_stage_variables(text: str, variables: Mapping[str, str]) -> str:
    """Replace ``${stageVariables.name}`` (unknown names become empty, as on AWS)."""
    if "${" not in text:
        return text
    return _STAGE_VAR_RE.sub(lambda m: variables.get(m.group(1), ""), text)


@attrs.define
class Outcome:
    """What happened to one request, for ``request_finished`` observers.

    :ivar timings: ``(hook, plugin, seconds)`` for every request-path impl called.
    """

    deployment: Deployment
    access_log: AccessLog | None
    finish: Finish = attrs.field(factory=Finish)
    timings: list[tuple[str, str, float]] = attrs.field(factory=list)

    @property
    def error(self) -> GatewayError | None:
        """The error that produced a gateway response, if any."""
        return self.finish.error


@attrs.frozen(slots=False)  # dict-backed: cheaper to build (see twistgw.models)
class Exchange:
    """The finished request: context, the response to write and the outcome."""

    ctx: Context
    response: Response
    outcome: Outcome


class _Random:
    """Random bytes read from ``os.urandom`` a block at a time: one system call per
    request was a measurable part of a MOCK request.  :func:`_new_ids` takes the next 27
    unused bytes (inline: a method call per request was measurable too)."""

    __slots__ = ("buffer", "offset")

    BLOCK = 27 * 256

    def __init__(self) -> None:
        self.buffer = b""
        self.offset = self.BLOCK


_random = _Random()
# A forked child must not hand out the ids its parent will also hand out.
os.register_at_fork(after_in_child=lambda: setattr(_random, "offset", _Random.BLOCK))


def _new_ids() -> tuple[str, str]:
    """A new extended request id (16 base64 characters) and a random (version 4) UUID
    string, from 27 fresh random bytes (cheaper than two draws, and than
    ``uuid.uuid4()``)."""
    random = _random
    offset = random.offset
    if offset >= _Random.BLOCK:
        random.buffer = os.urandom(_Random.BLOCK)
        offset = 0
    random.offset = offset + 27
    rand = random.buffer[offset:offset + 27]
    h = rand[:16].hex()
    uuid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[(rand[8] >> 4) & 3]}{h[17:20]}-{h[20:]}"
    return _b2a_base64(rand[16:], newline=False).decode("ascii"), uuid


#: Bounds on :meth:`Pipeline._resolve`'s per-listener cache (entries, key length).
_RESOLVE_CACHE_SIZE = 2048
_RESOLVE_CACHE_MAX_KEY = 512


class _Target(NamedTuple):
    """What resolution found (a NamedTuple: built on every request, attrs' frozen
    ``__init__`` was measurably slower)."""

    api: ApiDeployment | None = None
    stage: str | None = None
    path: str = "/"
    event_path: str = "/"
    base_path: str | None = None
    domain: str = ""
    error: GatewayError | None = None
    is_http: bool = False
    stage_deployment: StageDeployment | None = None


class Pipeline:
    """Runs requests against a deployment.

    :param clock: used for integration timeouts (a ``task.Clock`` in tests).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.deadlines = Deadlines(clock)

    # -- entry point ----------------------------------------------------------------------

    def handle(self, deployment: Deployment, inbound: InboundRequest
               ) -> Exchange | Deferred[Exchange]:
        """Process one request; synchronous when every hook answered synchronously."""
        result = self._run(deployment, inbound)
        if type(result) is Pending:
            return result.as_deferred()
        return result  # type: ignore[return-value]

    def serve(self, deployment: Deployment, inbound: InboundRequest) -> _Flow:
        """:meth:`handle` for the gateway's own server: a request waiting on its
        integration comes back as its :class:`Pending`, whose one continuation
        (:meth:`Pending.then`) the server sets, instead of as a Deferred chained to the
        integration's (a second callback pair, every proxied or Lambda request)."""
        return self._run(deployment, inbound)

    def finished(self, exchange: Exchange) -> None:
        """Notify ``request_finished`` observers (call after writing the response)."""
        ctx, outcome = exchange.ctx, exchange.outcome
        plan = ctx.route.plan if ctx.route is not None else outcome.deployment.base_plan
        fin = outcome.finish
        fin.response_latency_ms = int((time.time() - ctx.received_at) * 1000)
        notify(plan.request_finished, {"ctx": ctx, "response": exchange.response,
                                       "outcome": outcome})

    # -- the flow -------------------------------------------------------------------------

    def _run(self, deployment: Deployment, inbound: InboundRequest) -> _Flow:
        """The flow as plain calls while every hook answers synchronously (no coroutine
        per request); the first pending result hands the rest to a coroutine
        (``authorize``, ``map_request``) or to callbacks on the integration's Deferred."""
        # The lower-cased header index, read directly (Headers.get's last-value rule):
        # five lookups per request, a method call and a lower() each otherwise.
        headers = inbound.headers
        index = headers._index
        if index is None:
            index = headers._lookup()
        targets = deployment.listeners.get(inbound.listener)
        target = self._resolve(targets, inbound, index)
        api = target.api
        is_http = target.is_http
        extended, new_uuid = _new_ids()
        method = inbound.method
        if is_http:
            request_id = extended
        else:
            found = index.get("x-amzn-requestid")
            supplied = found[-1] if found else None
            request_id = supplied if supplied and _UUID_RE.match(supplied) else new_uuid
            found = index.get("x-http-method-override")
            if found and found[-1]:
                method = found[-1].upper()
        stage = target.stage_deployment
        error = target.error
        route: Route | None = None
        params: Mapping[str, str] = EMPTY_MAPPING
        if error is None:
            assert api is not None
            match = api.table.match(method, target.path)
            if match is None:
                error = HttpApiNotFound("Not Found") if is_http else MissingAuthenticationToken()
            else:
                route = match.route
                params = match.params
        # Positional (in the field order tests/core/test_models.py pins): keyword
        # arguments cost a quarter of constructing a Context.
        ctx = Context(
            inbound, request_id, extended, inbound.received_at or time.time(), api, stage,
            route, method, target.event_path, inbound.raw_path, params, None, target.domain,
            target.base_path, trace[-1] if (trace := index.get("x-amzn-trace-id")) else None)
        outcome = Outcome(deployment, (
            stage.access_log if stage is not None and stage.access_log is not None
            else deployment.access_log))
        plan: HookPlan = deployment.base_plan
        if plan.request_started:
            notify(plan.request_started, {"ctx": ctx})
        try:
            if error is not None:
                raise error
            assert route is not None
            plan = route.plan
            if plan.authorize or route.requires_auth:
                return cast("_Flow", run_maybe_sync(
                    self._authorized(ctx, outcome, plan, route, is_http)))
            return self._prepared(ctx, outcome, plan, route, is_http)
        except GatewayError as error:
            return self._recover(plan, ctx, error, outcome, is_http)

    async def _authorized(self, ctx: Context, outcome: Outcome, plan: HookPlan, route: Route,
                          is_http: bool) -> _Flow:
        """``authorize``, then the rest of the flow (a :class:`Pending` result becomes
        a Deferred if this coroutine was suspended: see :class:`~twistgw.dispatch.Later`)."""
        auth_started = time.time()
        try:
            try:
                ctx = await self._authorize(plan, ctx, outcome)
            finally:  # a Deny is a phase that ran too
                outcome.finish.phases.append(("authorize", auth_started, time.time()))
            return self._prepared(ctx, outcome, plan, route, is_http)
        except GatewayError as error:
            return self._recover(plan, ctx, error, outcome, is_http)

    def _prepared(self, ctx: Context, outcome: Outcome, plan: HookPlan, route: Route,
                  is_http: bool) -> _Flow:
        """The integration request through ``map_request``, then the integration.  A
        GatewayError raised here is the caller's to answer."""
        request = self._integration_request(ctx, route)
        if plan.map_request:
            request = pipe_now(plan.map_request, {"ctx": ctx, "request": request},
                               "request", outcome.timings)
            if type(request) is CoroutineType:
                return cast("_Flow", run_maybe_sync(
                    self._mapped_later(request, ctx, outcome, plan, is_http)))
        return self._integration(ctx, outcome, plan, request, is_http)

    async def _mapped_later(self, pending: Coroutine[Any, Any, IntegrationRequest],
                            ctx: Context, outcome: Outcome, plan: HookPlan, is_http: bool
                            ) -> _Flow:
        """A pending ``map_request``: await it, then the integration."""
        try:
            request = await pending
            return self._integration(ctx, outcome, plan, request, is_http)
        except GatewayError as error:
            return self._recover(plan, ctx, error, outcome, is_http)

    def _integration(self, ctx: Context, outcome: Outcome, plan: HookPlan,
                     request: IntegrationRequest, is_http: bool) -> _Flow:
        """Call ``integrate`` and make the response of its answer.  A GatewayError raised
        here is the caller's to answer."""
        started = time.monotonic()
        integration_started = time.time()
        try:
            answer = self._integrate(plan, ctx, request, outcome, started,
                                     integration_started, is_http)
        except BaseException:
            outcome.finish.phases.append(("integrate", integration_started, time.time()))
            raise
        if isinstance(answer, IntegrationResponse):
            return self._answered(answer, ctx, outcome, plan, started, integration_started,
                                  is_http)
        # Pending (a proxied or Lambda call): the rest runs from one callback pair on the
        # integration's Deferred, not as a suspended coroutine.
        if answer.early is None:
            return answer
        return answer.taken()

    def _integrated(self, answer: IntegrationResponse, ctx: Context, outcome: Outcome,
                    plan: HookPlan, started: float, integration_started: float) -> Any:
        """The method response made from the integration's answer (``map_response``
        applied), or a coroutine of it if an impl is pending."""
        fin = outcome.finish
        fin.phases.append(("integrate", integration_started, time.time()))
        fin.integration_latency_ms = int((time.monotonic() - started) * 1000)
        fin.integration_status = answer.status
        if not plan.map_response:
            # Nothing to map: the answer itself has the fields ``_finalize`` reads (status,
            # headers, body, upgrade), so no Response is built just to be copied there.
            return answer
        response = Response(answer.status, answer.headers, answer.body, answer.upgrade)
        return pipe_now(
            plan.map_response,
            {"ctx": ctx, "integration_response": answer, "response": response},
            "response", outcome.timings)

    def _answered(self, answer: IntegrationResponse, ctx: Context, outcome: Outcome,
                  plan: HookPlan, started: float, integration_started: float, is_http: bool
                  ) -> Exchange | Deferred[Exchange]:
        """A pending integration answered: the rest of the flow, synchronously if the
        ``map_response`` impls are."""
        try:
            response = self._integrated(answer, ctx, outcome, plan, started,
                                        integration_started)
        except GatewayError as error:
            return self._recover(plan, ctx, error, outcome, is_http)
        if type(response) is CoroutineType:
            return cast("Exchange | Deferred[Exchange]", run_maybe_sync(
                self._respond_later(response, plan, ctx, outcome, is_http)))
        return self._exchange(response, ctx, outcome, is_http)

    async def _respond_later(self, response: Coroutine[Any, Any, Response], plan: HookPlan,
                             ctx: Context, outcome: Outcome, is_http: bool) -> Exchange:
        try:
            answer = await response
        except GatewayError as error:
            answer = await self._error(plan, ctx, error, outcome)
        return self._exchange(answer, ctx, outcome, is_http)

    def _recover(self, plan: HookPlan, ctx: Context, error: GatewayError, outcome: Outcome,
                 is_http: bool) -> Exchange | Deferred[Exchange]:
        """The exchange for ``error``'s gateway response (``handle_error`` impls)."""
        response = run_maybe_sync(self._error(plan, ctx, error, outcome))
        if isinstance(response, Deferred):
            return response.addCallback(self._exchange, ctx, outcome, is_http)
        return self._exchange(response, ctx, outcome, is_http)

    def _exchange(self, response: Response | IntegrationResponse, ctx: Context,
                  outcome: Outcome, is_http: bool) -> Exchange:
        """The finished exchange: request-id headers added, the outcome completed."""
        response = self._finalize(ctx, response, is_http)
        fin = outcome.finish
        fin.status = response.status
        fin.response_length = len(response.body)
        return Exchange(ctx, response, outcome)

    def _resolve(self, targets: ListenerTargets | None, inbound: InboundRequest,
                 index: Mapping[str, list[str]]) -> _Target:
        """Find API and stage (see :meth:`_resolve_uncached`), cached per listener, Host,
        ``x-apigw-api-id`` and path: the same few are resolved over and over.  ``index``
        is the request's lower-cased header index."""
        if targets is None:
            return _Target(error=ResourceNotFound("Not Found"))
        raw_path = inbound.raw_path or "/"
        values = index.get("host")
        host = (values[-1] if values else "") or ""
        values = index.get("x-apigw-api-id")
        api_id = values[-1] if values else None
        key = (host, api_id, raw_path)
        cache = targets.resolved
        found: _Target | None = cache.get(key)
        if found is not None:
            return found
        found = self._resolve_uncached(targets, host, api_id, raw_path)
        api = found.api
        if api is not None:  # what every request of this target reads, looked up once
            found = found._replace(is_http=api.is_http, stage_deployment=api.stages.get(
                found.stage) if found.stage else None)
        # Errors are exceptions (raised, so never shared); keys are client-chosen: bounded.
        if found.error is None and len(raw_path) + len(host) <= _RESOLVE_CACHE_MAX_KEY:
            if len(cache) >= _RESOLVE_CACHE_SIZE:
                cache.clear()
            cache[key] = found
        return found

    def _resolve_uncached(self, targets: ListenerTargets, host: str, api_id: str | None,
                          raw_path: str) -> _Target:
        """Find API and stage: custom domain, x-apigw-api-id, execute-api host, only API."""
        host = host.lower()
        if host.startswith("["):
            host = host[: host.find("]") + 1]
        else:
            host = host.split(":", 1)[0]
        domain = targets.domains.get(host) if targets.domains else None
        if domain is not None:
            return self._resolve_domain(targets, domain, raw_path, host)
        api: ApiDeployment | None = None
        if api_id is None and ".execute-api." in host:
            m = _EXECUTE_API_RE.match(host)
            if m is not None:
                api_id = m.group(1)
        if api_id is not None:
            api = targets.apis.get(api_id)
            if api is None:
                return _Target(domain=host, error=ResourceNotFound(
                    f"The API id '{api_id}' does not correspond to a deployed API Gateway "
                    "API"))
        else:
            api = targets.only_api
            if api is None:
                return _Target(domain=host, error=ResourceNotFound(
                    "Not Found" if targets.apis else "No API is served on this listener"))
        segment, _sep, rest = raw_path[1:].partition("/")
        if api.is_http:
            if segment and segment in api.stages:
                return _Target(api=api, stage=segment, path="/" + rest,
                               event_path="/" + rest, domain=host)
            if "$default" in api.stages:
                return _Target(api=api, stage="$default", path=raw_path, event_path=raw_path,
                               domain=host)
            return _Target(api=api, domain=host, error=HttpApiNotFound("Not Found"))
        if not segment or segment not in api.stages:
            return _Target(api=api, domain=host, error=StageNotFound())
        rest = "/" + rest.lstrip("/") if rest.startswith("/") else "/" + rest
        return _Target(api=api, stage=segment, path=rest, event_path=rest, domain=host)

    def _resolve_domain(self, targets: ListenerTargets, domain: Any, raw_path: str, host: str
                        ) -> _Target:
        best = None
        stripped = raw_path.lstrip("/")
        for mapping in domain.mappings:
            base = mapping.base_path
            if base == "":
                if best is None:
                    best = mapping
                continue
            if stripped == base or stripped.startswith(base + "/"):
                if best is None or len(base) > len(best.base_path):
                    best = mapping
        if best is None:
            return _Target(domain=host, error=StageNotFound())
        api = targets.apis.get(best.api)
        if api is None:
            return _Target(domain=host, error=StageNotFound())
        rest = stripped[len(best.base_path):] if best.base_path else stripped
        path = "/" + rest.lstrip("/")
        return _Target(api=api, stage=best.stage, path=path, event_path=raw_path,
                       base_path=best.base_path or "(none)", domain=host)

    async def _authorize(self, plan: HookPlan, ctx: Context, outcome: Outcome) -> Context:
        allowed = False
        if plan.authorize:
            kwargs: dict[str, Any] = {"ctx": ctx}
            for impl in plan.authorize:
                verdict = await call_impl(impl, kwargs, outcome.timings)
                if verdict is None:
                    continue
                if isinstance(verdict, Deny):
                    raise verdict.error
                if isinstance(verdict, Allow):
                    allowed = True
                    if verdict.principal is not None:
                        ctx = attrs.evolve(ctx, principal=verdict.principal)
                        kwargs["ctx"] = ctx
                    continue
                log.error("plugin {plugin} returned {value!r} from authorize; expected Allow, "
                          "Deny or None", plugin=impl.plugin, value=verdict)
                raise PluginError(impl.plugin, "authorize")
        route = ctx.route
        if not allowed and route is not None and route.requires_auth:
            raise Unauthorized()
        return ctx

    def _integration_request(self, ctx: Context, route: Route) -> IntegrationRequest:
        integ = route.operation.integration
        assert integ is not None
        inbound = ctx.request
        method = integ.http_method if integ.http_method and integ.http_method != "ANY" \
            else ctx.method
        headers = inbound.headers
        index = headers._index  # built by _run already: no lower_names() call
        if index is None:
            index = headers._lookup()
        if not INGRESS_DROPPED_HEADERS.isdisjoint(index):
            headers = Headers(tuple((k, v) for k, v in headers.items
                                    if k.lower() not in INGRESS_DROPPED_HEADERS))
        uri = integ.uri
        if "${" in uri:
            uri = substitute_stage_variables(uri, ctx.stage_variables)
        return IntegrationRequest(method, uri, headers, inbound.query, ctx.path_params,
                                  inbound.body, route.timeout)

    def _integrate(self, plan: HookPlan, ctx: Context, request: IntegrationRequest,
                   outcome: Outcome, started: float, integration_started: float,
                   is_http: bool, first: int = 0, deadline: float | None = None
                   ) -> IntegrationResponse | Pending:
        """The first ``integrate`` answer, from impl ``first`` on: returned directly while
        results are plain values (a coroutine per request was measurable), else the
        pending one, bounded by ``deadline`` (the reactor clock's seconds; for the first
        call, ``started + request.timeout`` on the monotonic clock)."""
        kwargs = {"ctx": ctx, "request": request}
        timings = outcome.timings
        impls = plan.integrate
        for i in range(first, len(impls)):
            impl = impls[i]
            start = perf_counter()
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
            except (GatewayError, CancelledError):
                timings.append(("integrate", impl.plugin, perf_counter() - start))
                raise
            except TimeoutError as e:
                # as when a returned Deferred fails with it (``Deferred.addTimeout``):
                # a timed-out backend is AWS's 504, however the impl reports it
                timings.append(("integrate", impl.plugin, perf_counter() - start))
                raise IntegrationTimeout() from e
            except Exception as e:
                timings.append(("integrate", impl.plugin, perf_counter() - start))
                raise plugin_failure(impl, e) from e
            if result is None:
                timings.append(("integrate", impl.plugin, perf_counter() - start))
                continue
            if isinstance(result, IntegrationResponse):
                timings.append(("integrate", impl.plugin, perf_counter() - start))
                return result
            if isinstance(result, (Answer, Deferred)) or hasattr(result, "__await__"):
                return Pending(self, plan, ctx, request, outcome, started,
                               integration_started, is_http, i, start, result, deadline)
            timings.append(("integrate", impl.plugin, perf_counter() - start))
            log.error("plugin {plugin} returned {value!r} from integrate; expected an "
                      "IntegrationResponse", plugin=impl.plugin, value=result)
            raise PluginError(impl.plugin, "integrate")
        integ = ctx.integration
        log.error("no plugin answered the {type} integration of {route}",
                  type=integ.type if integ else "?",
                  route=ctx.route.operation.route_key if ctx.route else "?")
        raise ApiConfigurationError()

    async def _error(self, plan: HookPlan, ctx: Context, error: GatewayError,
                     outcome: Outcome) -> Response:
        outcome.finish.error = error

        kwargs = {"ctx": ctx, "error": error}
        for impl in plan.handle_error:
            try:
                result = await call_impl(impl, kwargs, outcome.timings)
            except GatewayError as nested:
                # A failing error handler must not leave the client without an answer:
                # fall back to the builtin rendering of the nested error.
                from .gateway_responses import handle_error as builtin

                outcome.finish.error = nested
                return builtin(ctx, nested)
            if isinstance(result, Response):
                return result
        from .gateway_responses import handle_error as builtin

        return builtin(ctx, error)

    def _finalize(self, ctx: Context, response: Response | IntegrationResponse,
                  is_http: bool) -> Response:
        """The response written: ``response``'s fields (an integration's answer when no
        ``map_response`` impl ran) with the request-id headers and a default
        Content-Type."""
        given = response.headers
        if is_http:
            ids: tuple[tuple[str, str], ...] = (("apigw-requestid", ctx.request_id),)
        else:
            ids = (("x-amzn-RequestId", ctx.request_id),
                   ("x-amz-apigw-id", ctx.extended_request_id))
        index = given._index
        if index is not None:
            typed = "content-type" in index
        else:  # a scan that lowers only 12-character names beats building the index
            typed = False
            for name, _value in given.items:
                if len(name) == 12 and name.lower() == "content-type":
                    typed = True
                    break
        if typed:
            headers = given.items + ids
        else:
            headers = given.items + ids + _JSON_CONTENT_TYPE
        return Response(response.status, Headers(headers), response.body, response.upgrade)


class Pending(Later):
    """A request waiting for its ``integrate`` impl's answer (every proxied or Lambda
    request), and what the flow needs when the answer comes.

    The core adds one callback to the integration's Deferred (:meth:`settled`, for
    both outcomes): it settles the impl (timings, its deadline lane, the impls after an
    abstaining one), runs the same synchronous tail as a synchronous answer and hands the
    finished :class:`Exchange` (or the Failure) to the one continuation set by
    :meth:`then`.  No Deferred is chained to the integration's for that: the gateway's
    server sets the continuation itself (:meth:`Pipeline.serve`), other callers get a
    Deferred from :meth:`as_deferred` (:meth:`Pipeline.handle`).
    """

    __slots__ = ("args", "callback", "ctx", "d", "deadline", "early", "errback", "index",
                 "integration_started", "is_http", "lane", "outcome", "pipeline", "plan",
                 "request", "start", "started")

    def __init__(self, pipeline: Pipeline, plan: HookPlan, ctx: Context,
                 request: IntegrationRequest, outcome: Outcome, started: float,
                 integration_started: float, is_http: bool, index: int, start: float,
                 pending: Any, deadline: float | None) -> None:
        """Watch the deadline and add the callback pair; an answer already there lands
        in :attr:`early` (see :meth:`taken`)."""
        self.pipeline = pipeline
        self.plan = plan
        self.ctx = ctx
        self.request = request
        self.outcome = outcome
        self.started = started
        self.integration_started = integration_started
        self.is_http = is_http
        self.index = index
        self.start = start
        self.callback: Callable[..., object] | None = None
        #: What came before :meth:`then` was called (an answer already there).
        self.early: Any = None
        #: What :meth:`cancel` cancels: the integration's Deferred or Answer, later the
        #: Deferred the rest of the flow waits on (a pending ``map_response`` or error
        #: handler).
        if isinstance(pending, Answer):
            d: Deferred[Any] | Answer[Any] = pending
            ready = pending.called
        else:
            d = pending if isinstance(pending, Deferred) else Deferred.fromCoroutine(pending)
            ready = d.called and not d.paused
        self.d = d
        if ready:
            self.lane: Lane | None = None
        else:
            timeout = request.timeout
            deadlines = pipeline.deadlines
            if deadline is None:  # the first call: the integration's start + timeout
                remaining = started + timeout - time.monotonic()
                deadline = deadlines._clock.seconds() + (
                    remaining if remaining > 0.001 else 0.001)
            lane = deadlines._lanes.get(timeout)
            # Deadlines.watch_until inlined for the usual case, once per proxied or Lambda
            # request: the lane is there, its timer armed, and this deadline is not
            # before any in the lane (``last`` is never below the last entry's).
            if lane is not None and lane._timer is not None and (
                    not lane._entries or deadline >= lane.last):
                lane._entries[d] = lane.last = deadline
            else:
                lane = deadlines.watch_until(d, timeout, deadline)
            self.lane = lane
        #: The call's deadline (the reactor clock's seconds), which a later impl's call
        #: keeps (None: not watched, the answer was already there).
        self.deadline = deadline
        # One callable for both outcomes: addBoth only appends, addCallbacks (four None
        # checks, keyword defaults) cost ~7k instructions more per request.
        if isinstance(d, Answer):
            d.always(self.settled)
        else:
            d.addBoth(self.settled)

    def taken(self) -> Exchange | Deferred[Exchange] | Pending:
        """The flow of an answer that was already there when the call returned."""
        early = self.early
        if isinstance(early, Failure):
            early.raiseException()
        return cast("Exchange | Deferred[Exchange] | Pending", early)

    def then(self, callback: Callable[..., object], errback: Callable[..., object],
             *args: Any) -> None:
        """Set the continuation: ``callback(exchange, *args)`` once the exchange is
        finished, or ``errback(failure, *args)`` (a cancellation, a bug).  Called once,
        right after the flow returned this object."""
        self.callback = callback
        self.errback = errback
        self.args = args
        early = self.early
        if early is not None:
            self.early = None
            self._deliver(early)

    def cancel(self) -> None:
        """The client went away: cancel what the request waits on."""
        self.d.cancel()

    def as_deferred(self) -> Deferred[Exchange]:
        """A Deferred of the exchange; cancelling it cancels the request."""
        d: Deferred[Exchange] = Deferred(self._cancelled)
        self.then(d.callback, d.errback)
        return d

    def _cancelled(self, _d: Deferred[Exchange]) -> None:
        self.d.cancel()

    def settled(self, result: Any) -> None:
        """The impl's Deferred fired: :meth:`failed` for a Failure, else the response
        of its answer, or ask the impls after it."""
        if isinstance(result, Failure):
            self.failed(result)
            return
        lane = self.lane
        if lane is not None:  # Lane.done inlined (a call less per request)
            entries = lane._entries
            entries.pop(self.d, None)
            if not entries and lane._owner is None:
                lane.stop()  # a lane of its own: its timer has nothing left to do
        plan = self.plan
        impl = plan.integrate[self.index]
        outcome = self.outcome
        outcome.timings.append(("integrate", impl.plugin, perf_counter() - self.start))
        try:
            if isinstance(result, IntegrationResponse):
                flow: Any = self.pipeline._answered(
                    result, self.ctx, outcome, plan, self.started, self.integration_started,
                    self.is_http)
            else:
                flow = self._next(result, impl)
        except BaseException:
            flow = Failure()
        callback = self.callback
        if type(flow) is Exchange and callback is not None:
            callback(flow, *self.args)  # _deliver's usual case, inline
        else:
            self._deliver(flow)

    def _next(self, result: Any, impl: Impl) -> Any:
        """The impl answered nonsense (a 500) or abstained (ask the impls after it)."""
        try:
            if result is not None:
                log.error("plugin {plugin} returned {value!r} from integrate; expected an "
                          "IntegrationResponse", plugin=impl.plugin, value=result)
                raise PluginError(impl.plugin, "integrate")
            rest = self.pipeline._integrate(
                self.plan, self.ctx, self.request, self.outcome, self.started,
                self.integration_started, self.is_http, self.index + 1, self.deadline)
        except GatewayError as error:
            return self._fail(error)
        if isinstance(rest, IntegrationResponse):
            return self.pipeline._answered(rest, self.ctx, self.outcome, self.plan,
                                           self.started, self.integration_started,
                                           self.is_http)
        if rest.early is None:
            return rest
        return rest.taken()

    def failed(self, failure: Failure) -> None:
        """The impl failed, timed out (504) or was cancelled (passed on)."""
        lane = self.lane
        in_time = lane is None or lane.done(self.d)
        impl = self.plan.integrate[self.index]
        self.outcome.timings.append(("integrate", impl.plugin, perf_counter() - self.start))
        error = failure.value
        try:
            if isinstance(error, TimeoutError) or (not in_time and isinstance(
                    error, CancelledError)):
                flow: Any = self._fail(IntegrationTimeout())
            elif isinstance(error, CancelledError):
                self.outcome.finish.phases.append(("integrate", self.integration_started,
                                                   time.time()))
                flow = failure
            else:
                if not isinstance(error, GatewayError):
                    assert error is not None
                    error = plugin_failure(impl, error)
                flow = self._fail(error)
        except BaseException:
            flow = Failure()
        self._deliver(flow)

    def _fail(self, error: GatewayError) -> Exchange | Deferred[Exchange]:
        self.outcome.finish.phases.append(("integrate", self.integration_started, time.time()))
        return self.pipeline._recover(self.plan, self.ctx, error, self.outcome, self.is_http)

    def _deliver(self, flow: Any) -> None:
        """Hand the finished exchange (or failure) to the continuation; a flow that
        still waits (a pending ``map_response`` or error handler, a later impl's call)
        gets the continuation as its callbacks, and :meth:`cancel` reaches it."""
        callback = self.callback
        if callback is None:
            self.early = flow  # attach or then picks it up
            return
        if type(flow) is Exchange:
            callback(flow, *self.args)
        elif isinstance(flow, Failure):
            self.errback(flow, *self.args)
        else:
            if isinstance(flow, Pending):
                flow = flow.as_deferred()
            self.d = flow
            flow.addCallbacks(callback, self.errback, self.args, None, self.args)
