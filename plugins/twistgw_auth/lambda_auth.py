"""Lambda authorizers: REST TOKEN and REQUEST (aws-apigw-spec.md §5.4), and HTTP API
REQUEST authorizers with payload format 1.0 or 2.0 (§5.5).

The authorizer function runs on the Lambda plugin's runtime (``twistgw_lambda.invoke``),
so it must be declared under ``functions:``.  Its IAM policy is evaluated against the
method ARN ``arn:aws:execute-api:{region}:{account}:{apiId}/{stage}/{METHOD}/{path}``
(the actual request path); an explicit Deny wins, no matching Allow is a deny.  Results
(allow and deny alike, never errors) are cached per API, authorizer and identity-source
values for ``authorizerResultTtlInSeconds`` (default 300, at most 3600, 0 disables) in a
bounded LRU, in front of a cache shared by gateway processes when one is configured (the
access plugin's Redis store), so a result computed by one process serves the others.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.logger import Logger

from twistgw.errors import AccessDenied, AuthorizerConfigurationError, Unauthorized
from twistgw.models import Context, Principal
from twistgw.variables import ACCOUNT_ID

if TYPE_CHECKING:
    from twistgw.config import GatewayConfig

__all__ = ["LambdaAuthorizer", "AuthorizerCache", "SharedCache", "from_scheme", "authorize",
           "method_arn", "evaluate", "DEFAULT_TTL", "MAX_TTL", "CACHE_SIZE"]

log = Logger()

DEFAULT_TTL = 300
MAX_TTL = 3600
#: Cached authorizer results per gateway config (least recently used evicted first).
CACHE_SIZE = 10_000
#: The Lambda authorizer response timeout (§5.5; REST uses the same limit).
INVOKE_TIMEOUT = 10.0

DENY_EXPLICIT = "User is not authorized to access this resource with an explicit deny"
DENY_IMPLICIT = "User is not authorized to access this resource"

_FUNCTION_RE = re.compile(r":function:([A-Za-z0-9_-]+)(?::[A-Za-z0-9_$-]+)?/invocations$")
_REGION_RE = re.compile(r"^arn:aws:apigateway:([a-z0-9-]+):lambda:")


@attrs.frozen
class LambdaAuthorizer:
    """One TOKEN or REQUEST authorizer as a definition declares it."""

    name: str
    type: str  # "TOKEN" | "REQUEST"
    function: str | None
    region: str
    sources: tuple[str, ...]
    validation: re.Pattern[str] | None
    ttl: int
    #: HTTP API authorizer (§5.5) with its payload format; ``simple`` with
    #: enableSimpleResponses (2.0 only).
    http: bool = False
    simple: bool = False
    payload: str = "1.0"
    #: Why the definition cannot be served (refused at load; 500 under strict: false).
    problem: str | None = None


def from_scheme(name: str, kind: str, raw: Mapping[str, Any], *,
                http: bool = False) -> LambdaAuthorizer:
    """Read a security scheme's ``x-amazon-apigateway-authorizer``."""
    auth = raw.get("x-amazon-apigateway-authorizer") or {}
    if http:
        return _from_http(name, auth)
    uri = str(auth.get("authorizerUri") or "")
    found = _FUNCTION_RE.search(uri)
    region = _REGION_RE.match(uri)
    typ = "TOKEN" if kind == "token" else "REQUEST"
    ident = auth.get("identitySource")
    if ident is None and typ == "TOKEN":
        ident = "method.request.header.Authorization"
        if raw.get("in") == "header" and raw.get("name"):
            ident = f"method.request.header.{raw['name']}"
    sources = tuple(s.strip() for s in str(ident or "").split(",") if s.strip())
    expr = auth.get("identityValidationExpression")
    validation = None
    if typ == "TOKEN" and expr:
        try:
            validation = re.compile(str(expr))
        except re.error:
            validation = None
    ttl_raw = auth.get("authorizerResultTtlInSeconds", DEFAULT_TTL)
    try:
        ttl = max(0, min(MAX_TTL, int(ttl_raw)))
    except (TypeError, ValueError):
        ttl = DEFAULT_TTL
    return LambdaAuthorizer(name=name, type=typ, function=found.group(1) if found else None,
                            region=region.group(1) if region else "us-east-1",
                            sources=sources, validation=validation, ttl=ttl)


def _from_http(name: str, auth: Mapping[str, Any]) -> LambdaAuthorizer:
    uri = str(auth.get("authorizerUri") or "")
    found = _FUNCTION_RE.search(uri)
    region = _REGION_RE.match(uri)
    ident = auth.get("identitySource") or []
    items = ident if isinstance(ident, list) else str(ident).split(",")
    sources = tuple(str(s).strip() for s in items if str(s).strip())
    try:
        ttl = max(0, min(MAX_TTL, int(auth.get("authorizerResultTtlInSeconds", 0))))
    except (TypeError, ValueError):
        ttl = 0
    if not sources:
        ttl = 0  # caching needs an identity source (§5.5)
    payload = str(auth.get("authorizerPayloadFormatVersion") or "")
    simple = bool(auth.get("enableSimpleResponses"))
    problem = None
    if payload not in ("1.0", "2.0"):
        problem = (f"authorizerPayloadFormatVersion {payload or '(missing)'!r}: HTTP API "
                   "Lambda authorizers need '1.0' or '2.0'")
    elif simple and payload != "2.0":
        problem = ("enableSimpleResponses needs authorizerPayloadFormatVersion '2.0' (1.0 "
                   "authorizers answer with an IAM policy)")
    return LambdaAuthorizer(name=name, type="REQUEST",
                            function=found.group(1) if found else None,
                            region=region.group(1) if region else "us-east-1",
                            sources=sources, validation=None, ttl=ttl, http=True,
                            simple=simple, payload=payload, problem=problem)


@attrs.frozen
class _Result:
    principal_id: str
    statements: tuple[Mapping[str, Any], ...]
    context: Mapping[str, Any]
    usage_identifier_key: str | None
    #: Simple responses (HTTP APIs): ``isAuthorized``; ``None`` for policy documents.
    authorized: bool | None = None


class SharedCache(Protocol):
    """A cache shared by gateway processes (the access plugin's Redis store)."""

    async def cache_get(self, key: str) -> tuple[bytes, int] | None:
        """``(value, milliseconds left)`` or ``None``; never raises for an outage."""
        ...

    async def cache_put(self, key: str, value: bytes, ttl_ms: int) -> None:
        """Store ``value`` for ``ttl_ms``; never raises for an outage."""
        ...


class AuthorizerCache:
    """A bounded LRU of authorizer results with per-entry expiry, in front of an
    optional shared cache.

    :param shared: called with the gateway config, returns the :class:`SharedCache` to
        read through and write to (``None``: this process's memory only).
    """

    def __init__(self, size: int = CACHE_SIZE,
                 shared: Callable[[GatewayConfig], SharedCache | None] | None = None
                 ) -> None:
        self.size = size
        self.shared = shared
        self.entries: OrderedDict[tuple[Any, ...], tuple[float, _Result]] = OrderedDict()

    def get(self, key: tuple[Any, ...], now: float) -> _Result | None:
        found = self.entries.get(key)
        if found is None:
            return None
        if found[0] <= now:
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        return found[1]

    def put(self, key: tuple[Any, ...], expires: float, result: _Result) -> None:
        self.entries[key] = (expires, result)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


#: Results larger than this (serialized) stay in this process's memory only.
MAX_SHARED_BYTES = 65536


def shared_key(key: tuple[Any, ...]) -> str:
    """The shared cache's name for a result key: a SHA-256, so tokens never reach Redis."""
    text = json.dumps(key, separators=(",", ":"), ensure_ascii=True)
    return "authz:" + hashlib.sha256(text.encode()).hexdigest()


def dump_result(result: _Result) -> bytes:
    """A cached result as JSON (for the shared cache)."""
    return json.dumps({"p": result.principal_id, "s": list(result.statements),
                       "c": dict(result.context), "u": result.usage_identifier_key,
                       "a": result.authorized}, separators=(",", ":")).encode()


def load_result(data: bytes) -> _Result | None:
    """The result :func:`dump_result` wrote, or ``None`` for anything else."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    principal, statements, context = doc.get("p"), doc.get("s"), doc.get("c")
    usage, authorized = doc.get("u"), doc.get("a")
    if not isinstance(principal, str) or not isinstance(statements, list) or not all(
            isinstance(st, dict) for st in statements) or not isinstance(context, dict) \
            or not isinstance(usage, str | None) or not isinstance(authorized, bool | None):
        return None
    return _Result(principal_id=principal, statements=tuple(statements), context=context,
                   usage_identifier_key=usage, authorized=authorized)


async def _cached(cache: AuthorizerCache, shared: SharedCache | None,
                  key: tuple[Any, ...], now: float) -> _Result | None:
    """This process's entry, else the shared cache's (kept here until it expires there)."""
    result = cache.get(key, now)
    if result is not None or shared is None:
        return result
    found = await shared.cache_get(shared_key(key))
    if found is None:
        return None
    result = load_result(found[0])
    if result is not None:
        cache.put(key, now + found[1] / 1000, result)
    return result


#: ``Operation.raw`` key naming a WebSocket route key: such an operation is authorized on
#: ``{apiId}/{stage}/{routeKey}`` (``$connect``), with no HTTP verb, as on AWS (§7.1).
ROUTE_KEY_FIELD = "x-twistgw-route-key"
#: ``Operation.raw`` key naming the IAM action callers need (default
#: ``execute-api:Invoke``; ``execute-api:ManageConnections`` for ``@connections``).
IAM_ACTION_FIELD = "x-twistgw-iam-action"
#: ``Operation.raw`` key holding ``build(ctx) -> dict``: the event of a ``REQUEST``
#: authorizer on that operation, without ``type`` and ``methodArn`` (a WebSocket
#: ``$connect`` sends the CONNECT event's shape, not a REST request's).
AUTHORIZER_EVENT_FIELD = "x-twistgw-authorizer-event"


def method_arn(ctx: Context, region: str) -> str:
    """``arn:aws:execute-api:{region}:{account}:{apiId}/{stage}/{METHOD}/{path}``."""
    api = ctx.deployment_api
    stage = ctx.stage
    api_id = api.id if api is not None else ""
    stage_name = stage.name if stage is not None else ""
    route_key = ctx.route.operation.raw.get(ROUTE_KEY_FIELD) if ctx.route else None
    if route_key:
        return f"arn:aws:execute-api:{region}:{ACCOUNT_ID}:{api_id}/{stage_name}/{route_key}"
    return (f"arn:aws:execute-api:{region}:{ACCOUNT_ID}:{api_id}/{stage_name}/"
            f"{ctx.method}/{ctx.path.lstrip('/')}")


@lru_cache(maxsize=1024)
def _pattern(glob: str) -> re.Pattern[str]:
    out = []
    for ch in glob:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def matches(glob: str, value: str) -> bool:
    """IAM wildcard match: ``*`` any characters (``/`` included), ``?`` one."""
    return _pattern(glob).fullmatch(value) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def evaluate(statements: Sequence[Mapping[str, Any]], arn: str,
             action: str = "execute-api:Invoke") -> str:
    """``"Deny"`` (an explicit deny), ``"Allow"`` or ``""`` (no statement matched)."""
    allowed = False
    for st in statements:
        actions = [str(a) for a in _as_list(st.get("Action", []))]
        if "NotAction" in st:
            if any(matches(a, action) for a in _as_list(st["NotAction"])):
                continue
        elif not any(matches(a, action) for a in actions):
            continue
        if "NotResource" in st:
            if any(matches(str(r), arn) for r in _as_list(st["NotResource"])):
                continue
        elif not any(matches(str(r), arn) for r in _as_list(st.get("Resource", []))):
            continue
        effect = st.get("Effect")
        if effect == "Deny":
            return "Deny"
        if effect == "Allow":
            allowed = True
    return "Allow" if allowed else ""


def _identity_values(ctx: Context, auth: LambdaAuthorizer) -> list[str | None]:
    from twistgw.variables import lookup

    values: list[str | None] = []
    for source in auth.sources:
        value: Any = None
        if source.startswith("method.request.header."):
            value = ctx.request.headers.get(source[len("method.request.header."):])
        elif source.startswith("method.request.querystring."):
            name = source[len("method.request.querystring."):]
            value = next((v for k, v in reversed(ctx.request.query) if k == name), None)
        elif source.startswith("stageVariables."):
            value = ctx.stage_variables.get(source[len("stageVariables."):])
        elif source.startswith("context."):
            value = lookup(ctx, source[len("context."):])
        elif source.startswith("$request.header."):
            value = ctx.request.headers.get(source[len("$request.header."):])
        elif source.startswith("$request.querystring."):
            name = source[len("$request.querystring."):]
            found = [v for k, v in ctx.request.query if k == name]
            value = ",".join(found) if found else None
        elif source.startswith("$stageVariables."):
            value = ctx.stage_variables.get(source[len("$stageVariables."):])
        elif source.startswith("$context."):
            value = lookup(ctx, source[len("$context."):])
        values.append(None if value is None else str(value))
    return values


def _bad(reason: str, ctx: Context) -> AuthorizerConfigurationError:
    log.error("({request_id}) Execution failed due to configuration error: {reason}",
              request_id=ctx.request_id, reason=reason)
    log.error("({request_id}) Method completed with status: 500", request_id=ctx.request_id)
    return AuthorizerConfigurationError(None)


def _parse_output(payload: bytes, auth: LambdaAuthorizer | None = None) -> _Result | None:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    if auth is not None and auth.http:
        context = doc.get("context") or {}
        if not isinstance(context, dict):
            return None
        if auth.simple:
            authorized = doc.get("isAuthorized")
            if not isinstance(authorized, bool):
                return None
            return _Result(principal_id="", statements=(), context=context,
                           usage_identifier_key=None, authorized=authorized)
    principal = doc.get("principalId")
    policy = doc.get("policyDocument")
    if not isinstance(principal, str | int | float) or isinstance(principal, bool) \
            or not isinstance(policy, dict):
        return None
    raw_statements = policy.get("Statement")
    if raw_statements is None:
        return None
    statements = _as_list(raw_statements)
    if not all(isinstance(s, dict) for s in statements):
        return None
    context = doc.get("context") or {}
    if not isinstance(context, dict):
        return None
    for value in context.values():
        if auth is not None and auth.http:
            break  # HTTP APIs take any JSON (§5.5)
        if value is not None and not isinstance(value, str | int | float | bool):
            return None
    usage = doc.get("usageIdentifierKey")
    return _Result(principal_id=str(principal), statements=tuple(statements),
                   context=context, usage_identifier_key=str(usage) if usage else None)


def _without_body(event: dict[str, Any]) -> dict[str, Any]:
    """A proxy event as an authorizer gets it: no body, no authorizer yet."""
    event.pop("body", None)
    event.pop("isBase64Encoded", None)
    event["requestContext"].pop("authorizer", None)
    return event


def _event(ctx: Context, auth: LambdaAuthorizer, arn: str) -> dict[str, Any]:
    if auth.type == "TOKEN":
        values = _identity_values(ctx, auth)
        return {"type": "TOKEN", "authorizationToken": values[0] if values else None,
                "methodArn": arn}
    build = ctx.route.operation.raw.get(AUTHORIZER_EVENT_FIELD) if ctx.route else None
    if build is not None and not auth.http:
        return {"type": "REQUEST", "methodArn": arn, **build(ctx)}
    from twistgw_lambda.events import http_v1_event, http_v2_event, rest_event

    from twistgw.models import IntegrationRequest

    request = IntegrationRequest(method=ctx.method, uri="", headers=ctx.request.headers,
                                 query=ctx.request.query, path_params=ctx.path_params,
                                 body=b"")
    if auth.http and auth.payload == "1.0":
        # §5.5: the REST-compatible event, plus version and the comma-joined sources.
        v1 = _without_body(http_v1_event(ctx, request))
        joined = ",".join(v for v in _identity_values(ctx, auth) if v is not None)
        return {"version": "1.0", "type": "REQUEST", "methodArn": arn,
                "identitySource": joined, "authorizationToken": joined,
                **{k: v for k, v in v1.items() if k != "version"}}
    if auth.http:
        v2 = _without_body(http_v2_event(ctx, request))
        return {"version": "2.0", "type": "REQUEST", "routeArn": arn,
                "identitySource": [v for v in _identity_values(ctx, auth) if v is not None],
                **{k: v for k, v in v2.items() if k != "version"}}
    proxy = _without_body(rest_event(ctx, request))
    return {"type": "REQUEST", "methodArn": arn, **proxy}


async def authorize(ctx: Context, config: GatewayConfig, auth: LambdaAuthorizer,
                    cache: AuthorizerCache) -> Principal:
    """Run (or reuse) the authorizer; the principal, or raise AWS's gateway error."""
    if auth.problem is not None:
        raise _bad(auth.problem, ctx)
    if auth.function is None:
        raise _bad("Invalid authorizerUri", ctx)
    values = _identity_values(ctx, auth)
    if auth.type == "TOKEN":
        if not values or not values[0]:
            raise Unauthorized()
        if auth.validation is not None and auth.validation.fullmatch(values[0]) is None:
            raise Unauthorized()
    elif (auth.ttl > 0 or auth.http) and not all(values):
        raise Unauthorized()
    arn = method_arn(ctx, auth.region)
    api = ctx.deployment_api
    key = (api.id if api is not None else "", auth.name, auth.function, tuple(values))
    now = ctx.received_at
    result = None
    shared = None
    if auth.ttl > 0:
        result = cache.get(key, now)  # the hot path: no shared-store lookup at all
        if result is None and cache.shared is not None:
            shared = cache.shared(config)
            result = await _cached(cache, shared, key, now)
    if result is None:
        result = await _run(ctx, config, auth, arn)  # errors raise: never cached
        if auth.ttl > 0:
            cache.put(key, now + auth.ttl, result)
            data = dump_result(result)
            if shared is not None and len(data) <= MAX_SHARED_BYTES:
                await shared.cache_put(shared_key(key), data, auth.ttl * 1000)
    if result.authorized is not None:
        if not result.authorized:
            raise AccessDenied("Forbidden")
        return Principal(id="", kind="lambda", context=result.context)
    verdict = evaluate(result.statements, arn)
    if verdict == "Deny":
        raise AccessDenied(DENY_EXPLICIT)
    if verdict != "Allow":
        raise AccessDenied(DENY_IMPLICIT)
    return Principal(id=result.principal_id, kind="lambda", context=result.context,
                     usage_identifier_key=result.usage_identifier_key)


async def _run(ctx: Context, config: GatewayConfig, auth: LambdaAuthorizer,
               arn: str) -> _Result:
    try:
        from twistgw_lambda import plugin as lambda_plugin
    except ImportError:
        raise _bad("the lambda plugin is not installed", ctx) from None
    assert auth.function is not None
    payload = json.dumps(_event(ctx, auth, arn)).encode("utf-8")
    function_arn = f"arn:aws:lambda:{auth.region}:{ACCOUNT_ID}:function:{auth.function}"
    try:
        out = await lambda_plugin.invoke(config, auth.function, payload, arn=function_arn,
                                         timeout=INVOKE_TIMEOUT)
    except Exception as e:  # any failure to invoke is AWS's 500
        raise _bad(f"authorizer {auth.function} could not be invoked: {e!r}", ctx) from None
    if out.function_error is not None:
        if out.error_message == "Unauthorized" and not auth.http:
            raise Unauthorized()
        raise _bad(f"authorizer error: {out.error_message}", ctx)
    result = _parse_output(out.payload, auth)
    if result is None:
        raise _bad("Invalid authorizer response", ctx)
    return result
