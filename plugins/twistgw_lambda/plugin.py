"""The Lambda plugin's hook implementations (re-exported by the package).

``AWS_PROXY`` routes get the proxy event for their API type and payload format, invoke the
function named by the integration URI in its warm worker pool (or through the Invoke API
for ``remote:`` functions), and map the output back by aws-apigw-spec.md §2, with AWS's
error statuses and execution-log wording.

``AWS`` (non-proxy) routes whose URI is a Lambda function's send the integration request
body (the mapping plugin's rendered template, or the client's body passed through) as the
event; the function's output is the integration response body with status 200, and a
function error arrives the same way with ``metadata["error_message"]`` set, so the mapping
plugin selects the integration response by ``selectionPattern`` on ``errorMessage``
(§3.7, §3.8).  ``AWS`` integrations with any other service are refused at load time.
Their ``requestParameters`` may set Invoke API headers; ``X-Amz-Invocation-Type``
(``'Event'``, or mapped from a method request header) makes the invoke asynchronous: the
function is queued, the integration response is Lambda's 202 with an empty body, and the
default integration response gives the client its status (§3.7).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twistgw_http.response_params import apply_response_parameters, check_response_parameters

from twistgw import (
    ApiConfigurationError,
    ConfigError,
    Headers,
    IntegrationFailure,
    IntegrationResponse,
    RequestTooLarge,
    hookimpl,
)
from twistgw.variables import ACCOUNT_ID

from . import reload
from .arn import FunctionRef, parse_function_uri
from .events import event_for, http_v2_payload, rest_payload, trace_header
from .functions import FunctionConfig, parse_functions
from .invocation import check_invoke_parameters, invocation_type, mapped_headers
from .remote import (
    EndpointUnreachable,
    InvokeFailed,
    NoCredentials,
    RemoteFunction,
    resolve_credentials,
)
from .responses import (
    MALFORMED_LOG,
    BadBase64,
    MalformedResponse,
    first_accept_is_binary,
    parse_v1,
    parse_v2,
)
from .runtime import MAX_PAYLOAD_BYTES, FunctionPool, InvokeResult, LambdaRuntime

if TYPE_CHECKING:
    from twistgw import Context, IntegrationRequest, Registry, Response
    from twistgw.config import GatewayConfig
    from twistgw.deployment import ApiDeployment, Deployment, Route
    from twistgw.gateway import Gateway

__all__ = ["register", "configure", "startup", "shutdown", "prepare_reload", "integrate",
           "map_response", "use_runtime",
           "invoke", "FunctionNotFound", "InvokeResult"]

log = Logger()

#: Integration types this plugin serves (``AWS`` only for Lambda function URIs).
TYPES = frozenset(("AWS_PROXY", "AWS"))
#: AWS's message for an endpoint it could not talk to (§3.7, the recorded 56-byte body).
NETWORK_ERROR = "Network error communicating with endpoint"


class _State:
    """Module state: functions of the config being built, runtimes of running gateways.

    ``configure`` runs right before the deployment is built (where the route filter checks
    function names), so ``checking`` is the config under construction.  Runtimes are keyed
    by the gateway config they serve; a request finds its runtime through
    ``ctx.deployment_api.gateway``.
    """

    def __init__(self) -> None:
        self.checking: tuple[GatewayConfig, dict[str, FunctionConfig]] | None = None
        self.runtimes: dict[int, tuple[GatewayConfig, Any]] = {}


_state = _State()


def _is_lambda_route(route: Route) -> bool:
    """Route filter: Lambda routes only; also where unknown function names are refused.

    Route filters run once per route while the deployment is built, right after
    ``configure``, which is the one moment the plugin sees both the ``functions:`` it
    checked and every integration URI.  Under ``strict: false`` the refusal becomes a
    warning and the route answers 500 at request time.
    """
    integration = route.integration
    if integration is None or integration.type not in TYPES:
        return False
    uri = integration.uri
    if integration.type == "AWS" and parse_function_uri(uri) is None:
        return False  # another AWS service: refused by _check_aws_service
    checking = _state.checking
    if checking is not None and "${" not in uri:
        try:
            _check_uri(route, uri, *checking)
        except ConfigError as e:
            if checking[0].strict:
                raise
            log.warn("{error} (strict is false: the route answers 500)", error=str(e))
    return True


def _check_uri(route: Route, uri: str, config: GatewayConfig,
               functions: dict[str, FunctionConfig]) -> None:
    """Refuse a URI that is not a Lambda URI or names an undeclared function."""
    file, _, where = route.operation.where.rpartition(": ")
    where = f"{where}.x-amazon-apigateway-integration.uri"
    ref = parse_function_uri(uri)
    if ref is None:
        raise ConfigError(file or config.source, where,
                          f"{uri!r} is not a Lambda function URI; write arn:aws:apigateway:"
                          "{region}:lambda:path/2015-03-31/functions/arn:aws:lambda:"
                          "{region}:{account}:function:{Name}/invocations")
    if ref.name not in functions:
        known = ", ".join(sorted(functions)) or "none"
        raise ConfigError(file or config.source, where,
                          f"the function {ref.name!r} is not declared under functions: "
                          f"in {config.source} (declared: {known}); add "
                          f"functions.{ref.name} or fix the name")


def _check_aws_service(route: Route) -> None:
    """Route check: an ``AWS`` integration must invoke a Lambda function; other AWS
    services (S3, SQS, DynamoDB, ...) are not implemented, so refuse them at load time."""
    integration = route.integration
    if integration is not None and integration.type == "AWS_PROXY" and \
            integration.request_parameters:
        check_invoke_parameters(integration)  # header mappings join the event (§3.2)
        return
    if integration is None or integration.type != "AWS":
        return
    file, _, where = route.operation.where.rpartition(": ")
    if parse_function_uri(integration.uri) is not None:
        check_invoke_parameters(integration)
        return
    raise ConfigError(file or "<definition>", f"{where}.x-amazon-apigateway-integration.uri",
                      f"{integration.uri!r} is an AWS service integration other than "
                      "Lambda, which twistgw does not implement; AWS integrations must "
                      "invoke a function (arn:aws:apigateway:{region}:lambda:path/"
                      "2015-03-31/functions/arn:aws:lambda:{region}:{account}:function:"
                      "{Name}/invocations), or use an http integration against the "
                      "service's endpoint")


def _check_response_parameters(route: Route) -> None:
    """Route check: an HTTP API ``AWS_PROXY`` integration's ``responseParameters``."""
    integration = route.integration
    if integration is not None and integration.type in TYPES and \
            integration.response_parameters:
        check_response_parameters(integration)


@hookimpl
def register(registry: Registry) -> None:
    """Claim ``AWS_PROXY``, ``AWS`` (Lambda only) and ``functions:``; stay out of
    non-Lambda routes."""
    registry.add_integration_type("AWS_PROXY")
    registry.add_integration_type("AWS")
    registry.add_feature("functions")
    # Lambda AWS integrations map Invoke API headers (X-Amz-Invocation-Type).
    registry.add_feature("request_parameters")
    registry.add_route_filter(_is_lambda_route)
    registry.add_route_check(_check_aws_service)
    registry.add_route_check(_check_response_parameters)
    registry.add_readiness_check("lambda", _pools_warm)
    registry.add_gauge_source(_pool_gauges)


def _pools_warm(gateway: Gateway) -> str | None:
    """Readiness: every local pool has ``min_workers`` workers past init."""
    if not gateway.config.functions:
        return None
    runtime = _runtime_of(gateway.config)
    if runtime is None:
        return "the function pools have not started"
    cold = [name for name, pool in runtime.pools.items() if isinstance(pool, FunctionPool)
            and sum(w.state in ("idle", "busy", "between") for w in pool.workers)
            < pool.config.min_workers]
    return f"not warm yet: {', '.join(sorted(cold))}" if cold else None


def _pool_gauges(gateway: Gateway) -> Any:
    """Metrics: workers per function and state, and invocations queued per function."""
    runtime = _runtime_of(gateway.config) if gateway.config.functions else None
    for name, pool in (runtime.pools.items() if runtime is not None else ()):
        if not isinstance(pool, FunctionPool):
            continue  # a remote function has no local pool
        for state in ("starting", "idle", "busy", "between", "retiring"):
            yield ("lambda_pool_workers", "Lambda workers per function and state",
                   {"function": name, "state": state},
                   float(sum(w.state == state for w in pool.workers)))
        yield ("lambda_pool_queued", "Invocations waiting for a Lambda worker",
               {"function": name}, float(len(pool.queue)))


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Check ``functions:`` (every key, with the fix in the message)."""
    functions = parse_functions(config.functions, config.source, Path(config.base_dir))
    for name, fn in functions.items():
        if fn.remote is not None and fn.remote.credentials is None:
            try:
                resolve_credentials(None, fn.remote.profile)
            except NoCredentials as e:
                raise ConfigError(config.source, f"functions.{name}.remote.credentials",
                                  str(e)) from None
    _state.checking = (config, functions)


@hookimpl
def startup(gateway: Gateway) -> Any:
    """Start the pools of the gateway's functions; listeners open once ``min_workers``
    finished init (bounded by Lambda's 10 s init limit)."""
    config = gateway.config
    functions = parse_functions(config.functions, config.source, Path(config.base_dir))
    runtime = LambdaRuntime(functions, gateway.reactor, regions=_regions(gateway.deployment))
    _state.runtimes[id(config)] = (config, runtime)
    reload.remember(runtime)
    return runtime.start()


@hookimpl
def prepare_reload(gateway: Gateway, deployment: Deployment) -> Any:
    """Keep the pools of unchanged functions, warm new and changed ones (see
    :mod:`twistgw_lambda.reload`)."""
    return reload.prepare(gateway, deployment, _state.runtimes, _regions(deployment))


def _regions(deployment: Deployment) -> dict[str, str]:
    """Each function's region as its integration ARNs name it (``AWS_REGION`` in the
    worker, as a function deployed there sees it)."""
    regions: dict[str, str] = {}
    for api in deployment.apis.values():
        for op in api.definition.operations:
            integration = op.integration
            if integration is None or integration.type not in TYPES:
                continue
            ref = parse_function_uri(integration.uri)
            if ref is not None and "${" not in ref.name:
                regions.setdefault(ref.name, ref.region)
    return regions


@hookimpl
def shutdown(gateway: Gateway) -> Any:
    """Stop every worker of the gateway's functions."""
    entry = _state.runtimes.pop(id(gateway.config), None)
    if entry is None:
        return None
    return entry[1].stop()


def use_runtime(config: GatewayConfig, runtime: Any) -> Callable[[], None]:
    """Serve ``config``'s functions from ``runtime`` (anything with ``pools[name].invoke``).

    For tests that drive the pipeline in-process (no reactor, no processes): a fake pool
    returns canned outputs.  Returns the function that undoes it.
    """
    _state.runtimes[id(config)] = (config, runtime)
    return lambda: _state.runtimes.pop(id(config), None) and None


def _runtime_of(config: GatewayConfig | None) -> Any:
    if config is not None:
        entry = _state.runtimes.get(id(config))
        if entry is not None and entry[0] is config:
            return entry[1]
    if len(_state.runtimes) == 1:
        return next(iter(_state.runtimes.values()))[1]
    return None


class FunctionNotFound(LookupError):
    """:func:`invoke` was asked for a function that ``functions:`` does not declare (or
    whose gateway is not running)."""


async def invoke(config: GatewayConfig, function_name: str, payload: bytes, *,
                 arn: str | None = None, trace: str = "",
                 timeout: float | None = None) -> InvokeResult:
    """Run ``function_name`` of ``config``'s ``functions:`` with ``payload`` (the JSON
    event) on the Lambda plugin's runtime: the same warm worker pool (or Invoke API, for
    ``remote:`` functions) integrations use.  For other plugins, e.g. Lambda authorizers.

    :param arn: the function ARN the invocation is for (the worker's
        ``invoked_function_arn``); defaults to the function's ARN in account
        ``123456789012``, region ``us-east-1``.
    :param trace: the ``X-Amzn-Trace-Id`` value passed to the function.
    :param timeout: give up after this many seconds (``defer.TimeoutError``); the
        function's own ``timeout`` applies regardless.
    :returns: the :class:`~twistgw_lambda.runtime.InvokeResult`; a function error is a
        result with ``function_error`` set, not an exception.
    :raises FunctionNotFound: no such function is declared or running.
    :raises twistgw_lambda.remote.InvokeFailed, EndpointUnreachable: a ``remote:``
        function's Invoke API failed.
    """
    runtime = _runtime_of(config)
    pool = runtime.pools.get(function_name) if runtime is not None else None
    if pool is None:
        raise FunctionNotFound(function_name)
    if arn is None:
        arn = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{function_name}"
    d: defer.Deferred[InvokeResult] = defer.maybeDeferred(pool.invoke, payload, arn, trace)
    reactor = getattr(runtime, "reactor", None)
    if timeout is not None and reactor is not None:
        d.addTimeout(timeout, reactor)
    result: InvokeResult = await d
    return result


@functools.lru_cache(maxsize=4096)
def _function_ref(uri: str) -> tuple[FunctionRef, str] | None:
    """The function a (stage-variable-substituted) URI invokes, with the account filled
    in, and its ARN; made once per distinct URI, as every request of a route sends the
    same one."""
    ref = parse_function_uri(uri)
    if ref is None:
        return None
    ref = attrs.evolve(ref, account=ref.account or ACCOUNT_ID)
    return ref, ref.arn


def _fail(ctx: Context, message: str, status: int) -> None:
    log.error("({request_id}) {message}", request_id=ctx.request_id, message=message)
    log.error("({request_id}) Method completed with status: {status}",
              request_id=ctx.request_id, status=status)


def _throttled(ctx: Context, lambda_id: str) -> IntegrationFailure:
    """Lambda's 429 ``TooManyRequestsException`` (the function at its concurrency): API
    Gateway answers 500 ``Internal server error`` (HTTP APIs: 500 ``Internal Server
    Error``, §4.4) as an INTEGRATION_FAILURE gateway response, whatever the integration
    responses say.  aws-apigw-spec.md §4.1 has no row for it; the status and log lines
    follow AWS's answers in re:Post "API Gateway proxy integration does not forward Lambda
    throttling" and Stack Overflow 36363280 (a 429 "will always be considered as 500")."""
    _fail(ctx, f"Lambda invocation failed with status: 429. Lambda request id: {lambda_id}",
          500)
    _fail(ctx, "Execution failed due to configuration error: Rate Exceeded.", 500)
    return IntegrationFailure(status=500)


def _invoke(ctx: Context, pool: Any, payload: bytes, arn: str, trace: str,
            kind: str = "RequestResponse") -> defer.Deferred[InvokeResult]:
    """Invoke; what stops the function from running fails with AWS's answers.

    A Deferred chain rather than a coroutine: this is every Lambda route's hot path, and
    the coroutine machinery cost more than the rest of the plugin's work."""
    if kind == "RequestResponse":  # the plain call: test doubles need no keyword
        d: defer.Deferred[InvokeResult] = defer.maybeDeferred(pool.invoke, payload, arn,
                                                              trace)
    else:
        d = defer.maybeDeferred(pool.invoke, payload, arn, trace, invocation_type=kind)
    return d.addCallbacks(_invoked, _invoke_failed, callbackArgs=(ctx,),
                          errbackArgs=(ctx, arn))


def _invoked(result: InvokeResult, ctx: Context) -> InvokeResult:
    if result.function_error == "Throttled":
        raise _throttled(ctx, result.request_id)
    return result


def _invoke_failed(failure: Failure, ctx: Context, arn: str) -> Failure:
    e = failure.value
    if isinstance(e, EndpointUnreachable):
        _fail(ctx, f"Execution failed due to a network error communicating with the Lambda "
                   f"endpoint: {e}", 504)
        raise IntegrationFailure(NETWORK_ERROR)
    if isinstance(e, InvokeFailed):
        if e.status == 429:
            raise _throttled(ctx, e.request_id)
        _fail(ctx, f"Lambda invocation failed with status: {e.status}. {e.message}"
              if e.status != 404 else
              f"Lambda invocation failed with status: 404. Function not found: {arn}",
              500 if e.status in (401, 403, 404) else 413 if e.status == 413 else 502)
        if e.status in (401, 403, 404):
            _fail(ctx, "Execution failed due to configuration error: Invalid permissions on "
                       "Lambda function", 500)
            raise ApiConfigurationError()
        if e.status == 413:
            raise RequestTooLarge()
        raise IntegrationFailure(status=502)
    return failure


@hookimpl
def integrate(ctx: Context, request: IntegrationRequest) -> Any:
    """Invoke the function of an ``AWS_PROXY`` or Lambda ``AWS`` integration and map its
    output (§1, §2, §3.7); returns ``None`` (not ours) or a Deferred."""
    route = ctx.route  # ctx.integration, without the property call (every request)
    integration = route.operation.integration if route is not None else None
    if integration is None or integration.type not in TYPES:
        return None
    api = ctx.deployment_api
    assert api is not None
    is_http = api.config.type == "HTTP"
    kind = "proxy" if integration.type == "AWS_PROXY" else "custom"
    if not is_http and integration.http_method and integration.http_method.upper() != "POST":
        _fail(ctx, f"Execution failed due to configuration error: the integration httpMethod "
                   f"of a Lambda {kind} integration must be POST", 500)
        raise ApiConfigurationError()
    target = _function_ref(request.uri)
    if target is None:
        _fail(ctx, "Execution failed due to configuration error: Invalid endpoint address",
              500)
        raise ApiConfigurationError()
    ref, arn = target
    runtime = _runtime_of(api.gateway)
    pool = runtime.pools.get(ref.name) if runtime is not None else None
    if pool is None:
        _fail(ctx, f"Lambda invocation failed with status: 404. Function not found: "
                   f"{arn}", 500)
        _fail(ctx, "Execution failed due to configuration error: Invalid permissions on "
                   "Lambda function", 500)
        raise ApiConfigurationError()
    if integration.type == "AWS":
        return defer.Deferred.fromCoroutine(_integrate_custom(ctx, request, pool, arn))
    output = "rest" if not is_http else "2.0" if \
        (integration.payload_format_version or "1.0") == "2.0" else "1.0"
    if integration.request_parameters or output == "1.0":
        event = event_for(ctx, request)
        if integration.request_parameters:
            _merge_mapped_headers(ctx, integration, event)
        payload = json.dumps(event).encode("utf-8")
    elif output == "2.0":
        payload = http_v2_payload(ctx, request)
    else:
        payload = rest_payload(ctx, request)
    if len(payload) > MAX_PAYLOAD_BYTES:
        _fail(ctx, f"Lambda invocation failed with status: 413. Request payload size "
                   f"({len(payload)} bytes) exceeded maximum allowed payload size "
                   f"({MAX_PAYLOAD_BYTES} bytes).", 413)
        raise RequestTooLarge()
    trace = trace_header(ctx)
    if type(pool) is FunctionPool:
        # The invocation is the answer (a twistgw Answer, not a Deferred): the core
        # takes the mapped result from it, and cancels it at the timeout or when the
        # client goes away.
        return pool.submit(payload, arn, trace).always(_proxy_outcome, ctx, trace,
                                                       output, api, arn)
    try:  # pool.invoke directly (not maybeDeferred): one call fewer on every invoke
        d = pool.invoke(payload, arn, trace)
    except Exception:
        d = defer.fail()
    if not isinstance(d, defer.Deferred):
        d = defer.succeed(d)
    # One callable for both outcomes: addCallbacks' keyword defaults and None checks cost
    # more on every invoke; what either raises reaches the next callback as before.
    return d.addBoth(_proxy_outcome, ctx, trace, output, api, arn)


def _proxy_outcome(result: InvokeResult | Failure, ctx: Context, trace: str, output: str,
                   api: ApiDeployment, arn: str) -> IntegrationResponse | Failure:
    """:func:`_proxy_response` of a result, :func:`_invoke_failed` of a failure."""
    if isinstance(result, Failure):
        return _invoke_failed(result, ctx, arn)
    return _proxy_response(result, ctx, trace, output, api)


def _proxy_response(result: InvokeResult, ctx: Context, trace: str, output: str,
                    api: ApiDeployment) -> IntegrationResponse:
    """The proxy integration's response from the function's output (§2): ``output`` is
    ``"rest"``, or the HTTP API's payload format, ``"1.0"`` or ``"2.0"``."""
    if result.function_error is not None:
        if result.function_error == "Throttled":
            raise _throttled(ctx, result.request_id)
        _fail(ctx, f"Lambda execution failed with status 200 due to customer function "
                   f"error: {result.error_message}. Lambda request id: {result.request_id}",
              502)
        raise IntegrationFailure(status=502)
    metadata = MappingProxyType({"lambda_request_id": result.request_id})
    try:
        if output == "2.0":
            return parse_v2(result.payload, metadata)
        if output == "1.0":
            return parse_v1(result.payload, decode_base64=True, metadata=metadata)
        binary_types = api.definition.binary_media_types
        return parse_v1(result.payload, decode_base64=bool(binary_types) and
                        first_accept_is_binary(ctx.request.headers.get("accept"),
                                               binary_types),
                        trailer=(("X-Amzn-Trace-Id", trace),), metadata=metadata)
    except MalformedResponse as e:
        shown = result.payload.decode("utf-8", "replace")
        if len(shown) > 1024:
            shown = shown[:1024] + " [TRUNCATED]"
        log.error("({request_id}) {line}", request_id=ctx.request_id,
                  line=MALFORMED_LOG.replace("{payload}", shown))
        log.debug("({request_id}) malformed because {reason}", request_id=ctx.request_id,
                  reason=e.reason)
        _fail(ctx, "Execution failed due to configuration error: Malformed Lambda proxy "
                   "response", 502)
        raise IntegrationFailure(status=502) from None
    except BadBase64:
        _fail(ctx, "Execution failed due to configuration error: Unable to base64 decode the "
                   "body.", 500)
        raise ApiConfigurationError() from None


@hookimpl
def map_response(ctx: Context, integration_response: IntegrationResponse,
                 response: Response) -> Response | None:
    """Apply an HTTP API ``AWS_PROXY`` integration's ``responseParameters`` (§6.16) to
    the parsed proxy response (payload 1.0 or 2.0): ``integrate`` already turned the
    function's output into the integration response, so the mapping sees its status,
    headers and body whatever the format."""
    route = ctx.route  # ctx.integration, without the property call (every request)
    if route is None:
        return None
    integration = route.operation.integration
    if integration is None or not integration.response_parameters:
        return None
    return apply_response_parameters(ctx, integration, integration_response, response)


def _merge_mapped_headers(ctx: Context, integration: Any, event: dict[str, Any]) -> None:
    """``integration.request.header.*`` mappings of an ``AWS_PROXY`` integration are merged
    into the event's headers, a mapped value replacing the client's (aws-apigw-spec.md
    §3.2, recorded ``"foobar": "mapped-value"``)."""
    _path, _query, mapped = mapped_headers(ctx, integration)
    if not mapped:
        return
    v2 = event.get("version") == "2.0"
    headers = event.get("headers") or {}
    for name, value in mapped:
        headers[name.lower() if v2 else name] = value
    event["headers"] = headers
    if not v2:
        multi = event.get("multiValueHeaders") or {}
        for name, value in mapped:
            multi[name] = [value]
        event["multiValueHeaders"] = multi


async def _integrate_custom(ctx: Context, request: IntegrationRequest, pool: Any, arn: str
                            ) -> IntegrationResponse:
    """The non-proxy Lambda integration (§3.7): the body is the event, the output the
    integration response body; a function error is a 200 carrying ``error_message`` for
    the mapping plugin's ``selectionPattern`` match (§3.8)."""
    kind = invocation_type(ctx, ctx.integration)
    if kind not in ("RequestResponse", "Event", "DryRun"):
        _fail(ctx, f"Lambda invocation failed with status: 400. 1 validation error "
                   f"detected: Value '{kind}' at 'invocationType' failed to satisfy "
                   f"constraint: Member must satisfy enum value set: [Event, "
                   f"RequestResponse, DryRun]", 500)
        raise IntegrationFailure(status=500)
    payload = request.body.strip() or b"{}"  # Lambda takes an empty payload as {}
    if len(payload) > MAX_PAYLOAD_BYTES:
        _fail(ctx, f"Lambda invocation failed with status: 413. Request payload size "
                   f"({len(payload)} bytes) exceeded maximum allowed payload size "
                   f"({MAX_PAYLOAD_BYTES} bytes).", 413)
        raise RequestTooLarge()
    if not isinstance(pool, RemoteFunction):  # the Invoke API checks this itself
        try:
            json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            _fail(ctx, f"Lambda invocation failed with status: 400. Could not parse request "
                       f"body into json: {e}", 502)
            raise IntegrationFailure(status=502) from None
    result = await _invoke(ctx, pool, payload, arn, trace_header(ctx), kind)
    if kind != "RequestResponse":
        # Lambda's 202 (Event: queued) or 204 (DryRun) with no body; no errorMessage, so
        # the default integration response answers (§3.7, set-up-lambda-integration-async).
        log.info("({request_id}) Lambda {kind} invocation accepted with status {status}. "
                 "Lambda request id: {lambda_id}", request_id=ctx.request_id, kind=kind,
                 status=result.status, lambda_id=result.request_id)
        return IntegrationResponse(
            status=result.status,
            headers=Headers((("Content-Type", "application/json"),
                             ("x-amzn-RequestId", result.request_id))),
            body=b"", metadata={"lambda_request_id": result.request_id,
                                "error_message": ""})
    body = result.payload
    metadata: dict[str, Any] = {"lambda_request_id": result.request_id, "error_message": ""}
    if result.function_error is not None:
        metadata["function_error"] = result.function_error
        metadata["error_message"] = result.error_message
        if not isinstance(pool, RemoteFunction):
            body = _with_request_id(body, result.request_id)
        log.info("({request_id}) Lambda execution failed with status 200 due to customer "
                 "function error: {message}. Lambda request id: {lambda_id}",
                 request_id=ctx.request_id, message=result.error_message,
                 lambda_id=result.request_id)
    return IntegrationResponse(
        status=200,
        headers=Headers((("Content-Type", "application/json"),
                         ("X-Amz-Executed-Version", result.executed_version),
                         ("x-amzn-RequestId", result.request_id))),
        body=body, metadata=metadata)


def _with_request_id(payload: bytes, request_id: str) -> bytes:
    """A local worker's error document with Lambda's ``requestId`` after ``errorType``,
    as the Invoke API returns it (the recorded §3.8 body)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return payload
    if not isinstance(doc, dict) or "requestId" in doc:
        return payload
    out: dict[str, Any] = {}
    for key in ("errorMessage", "errorType"):
        if key in doc:
            out[key] = doc.pop(key)
    out["requestId"] = request_id
    out.update(doc)
    return json.dumps(out).encode("utf-8")
