"""The events a Lambda proxy integration sends: REST 1.0, HTTP API 2.0 and 1.0-on-HTTP.

Shapes follow aws-apigw-spec.md §1.1-§1.3 key by key, including the ``null``-vs-empty
rules (REST: every key present, empty ones ``null``; 2.0: empty ones omitted), because
handlers and frameworks (Powertools, Mangum) branch on exactly those differences.  The
headers come from the integration request (the method request minus §A.6's dropped set,
plus any mapped headers) and get what API Gateway adds: ``X-Forwarded-*``, the trace id
and, for EDGE APIs, the CloudFront ones.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from itertools import chain
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, TypeVar

from twistgw import Context, IntegrationRequest
from twistgw.definition import matches_media_type
from twistgw.tracing import trace_header  # the core's, shared with every integration
from twistgw.variables import ACCOUNT_ID, request_time

__all__ = ["event_for", "rest_event", "rest_payload", "http_v2_event", "http_v2_payload",
           "http_v1_event",
           "gateway_headers", "matches_media_type", "trace_header", "event_trace_header",
           "deployment_id", "source_ip"]

#: Header names an edge-optimised (CloudFront) API capitalises; others stay as sent (§A.6).
_EDGE_CANONICAL = {n.lower(): n for n in (
    "Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
    "Cache-Control", "Content-Type", "Cookie", "Host", "If-Match", "If-Modified-Since",
    "If-None-Match", "Origin", "Pragma", "Range", "Referer", "User-Agent")}

#: Headers API Gateway sets itself in the event (a client's X-Forwarded-For is kept, first).
_ADDED = frozenset({"x-forwarded-for", "x-forwarded-port", "x-forwarded-proto",
                    "x-amzn-trace-id"})

#: ``requestContext.identity`` of a request nobody authenticated: every key, in AWS's
#: order, ``sourceIp`` and ``userAgent`` filled in per request.
_IDENTITY = dict.fromkeys(("accessKey", "accountId", "caller", "cognitoAuthenticationProvider",
                           "cognitoAuthenticationType", "cognitoIdentityId",
                           "cognitoIdentityPoolId", "principalOrgId", "sourceIp", "user",
                           "userAgent", "userArn"))
#: ``"identity"``'s JSON up to ``sourceIp``'s value (the keys before it are all null).
_IDENTITY_HEAD = "{" + "".join(f'"{k}": null, ' for k in list(_IDENTITY)[:8]) + '"sourceIp": '

#: 2.0 bodies of these types travel as text; everything else is base64 (§1.2).
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript")


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def event_trace_header(ctx: Context) -> str:
    """The ``X-Amzn-Trace-Id`` in the event: the client's own when it has a ``Root``,
    else just the generated ``Root=...`` (what AWS's recorded events show)."""
    given = ctx.trace_id
    if given and "Root=" in given:
        return given
    return trace_header(ctx).split(";", 1)[0]


def deployment_id(ctx: Context) -> str:
    """A stable id for the deployment serving the stage (``requestContext.deploymentId``)."""
    api = ctx.deployment_api
    return _deployment_id(api.id if api else "", ctx.stage.name if ctx.stage else "",
                          api.definition.source if api else "")


@functools.lru_cache(maxsize=1024)
def _deployment_id(api_id: str, stage: str, source: str) -> str:
    return hashlib.sha1(f"{api_id}:{stage}:{source}".encode()).hexdigest()[:6]


def _is_edge(ctx: Context) -> bool:
    api = ctx.deployment_api
    return api is not None and api.config.endpoint_type == "EDGE"


def source_ip(ctx: Context) -> str:
    """The caller's address: the peer, or on EDGE APIs the viewer the CDN in front named.

    An EDGE API is served behind a CDN on-prem as on AWS, so the first ``X-Forwarded-For``
    entry is the viewer; REGIONAL and PRIVATE APIs trust only the TCP peer.
    """
    if _is_edge(ctx):
        forwarded = ctx.request.headers.get("x-forwarded-for")
        if forwarded:
            first = forwarded.split(",", 1)[0].strip()
            if first:
                return first
    return ctx.request.client_ip


def gateway_headers(ctx: Context, request: IntegrationRequest) -> list[tuple[str, str]]:
    """The event's header lines: the integration request's plus what API Gateway adds."""
    inbound = ctx.request
    edge = _is_edge(ctx)
    lines: list[tuple[str, str]] = []
    forwarded_for: str | None = None
    for name, value in request.headers:
        lname = name.lower()
        if lname in _ADDED:
            if lname == "x-forwarded-for":
                forwarded_for = value if forwarded_for is None else f"{forwarded_for}, {value}"
            continue
        if edge:
            name = _EDGE_CANONICAL.get(lname, name)
        lines.append((name, value))
    if edge:
        present = {n.lower() for n, _ in lines}
        cloudfront = (
            ("CloudFront-Forwarded-Proto", "https"),
            ("CloudFront-Is-Desktop-Viewer", "true"),
            ("CloudFront-Is-Mobile-Viewer", "false"),
            ("CloudFront-Is-SmartTV-Viewer", "false"),
            ("CloudFront-Is-Tablet-Viewer", "false"),
            ("Via", f"2.0 {hashlib.md5(ctx.domain_name.encode()).hexdigest()[:16]}"
                    ".cloudfront.net (CloudFront)"),
            ("X-Amz-Cf-Id", base64.urlsafe_b64encode(os.urandom(42)).decode()),
        )
        for name, value in cloudfront:
            if name.lower() not in present:
                lines.append((name, value))
    xff = f"{forwarded_for}, {inbound.client_ip}" if forwarded_for else inbound.client_ip
    lines.append(("X-Amzn-Trace-Id", event_trace_header(ctx)))
    lines.append(("X-Forwarded-For", xff))
    lines.append(("X-Forwarded-Port", str(inbound.server_port or
                                          (443 if inbound.scheme == "https" else 80))))
    lines.append(("X-Forwarded-Proto", inbound.scheme))
    return lines


def _body(ctx: Context, request: IntegrationRequest) -> tuple[str | None, bool]:
    """REST / 1.0 body: ``null`` when empty; base64 iff Content-Type is a binary type."""
    body = request.body
    api = ctx.api
    binary = api is not None and bool(api.binary_media_types) and matches_media_type(
        _media_type(request.headers.get("content-type")), api.binary_media_types)
    if binary:
        return (base64.b64encode(body).decode("ascii") if body else None), True
    if not body:
        return None, False
    return body.decode("utf-8", "replace"), False


def _authorizer_v1(ctx: Context) -> dict[str, Any] | None:
    principal = ctx.principal
    if principal is None or principal.kind in ("api_key", "iam"):
        # An API key alone (or IAM) names no authorizer: AWS sends no
        # requestContext.authorizer.
        return None
    if principal.claims:
        return {"claims": {k: _stringify(v) for k, v in principal.claims.items()}}
    out: dict[str, Any] = {k: (None if v is None else _stringify(v))
                           for k, v in principal.context.items()}
    out["principalId"] = principal.id
    out["integrationLatency"] = 0
    return out


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _v1_event(ctx: Context, request: IntegrationRequest, *, lower: bool) -> dict[str, Any]:
    route = ctx.route
    assert route is not None and ctx.stage is not None
    lines = gateway_headers(ctx, request)
    if lower:
        lines = [(n.lower(), v) for n, v in lines]
    headers, multi = _v1_headers(lines)
    query, multi_query = _v1_query(request)
    body, is_b64 = _body(ctx, request)
    api = ctx.deployment_api
    assert api is not None
    identity: dict[str, Any] = _IDENTITY.copy()
    identity["sourceIp"] = source_ip(ctx)
    identity["userAgent"] = ctx.request.headers.get("user-agent")
    principal = ctx.principal
    if principal is not None and principal.kind == "iam":
        for field in ("accessKey", "accountId", "caller", "user", "userArn"):
            identity[field] = principal.context.get(field)
    if principal is not None and principal.api_key_id is not None:
        identity["apiKey"] = principal.usage_identifier_key
        identity["apiKeyId"] = principal.api_key_id
    elif principal is not None and principal.usage_identifier_key:
        identity["apiKey"] = principal.usage_identifier_key
    cert = _client_cert(ctx)
    if cert is not None:
        identity["clientCert"] = cert
    domain = ctx.domain_name or ctx.request.host
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT_ID,
        "apiId": api.id,
        "deploymentId": deployment_id(ctx),
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0],
        "extendedRequestId": ctx.extended_request_id,
        "httpMethod": ctx.method,
        "identity": identity,
        "path": ctx.request_path,
        "protocol": "HTTP/1.1",
        "requestId": ctx.request_id,
        "requestTime": request_time(ctx.received_at),
        "requestTimeEpoch": int(ctx.received_at * 1000),
        "resourceId": route.operation.route_key if lower else route.resource_id,
        "resourcePath": route.operation.path,
        "stage": ctx.stage.name,
    }
    authorizer = _authorizer_v1(ctx)
    if authorizer is not None:
        request_context["authorizer"] = authorizer
    if lower:
        request_context["routeKey"] = route.operation.route_key
    return {
        "resource": route.operation.path,
        "path": ctx.path,
        "httpMethod": ctx.method,
        "headers": headers or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(ctx.path_params) or None,
        "stageVariables": dict(ctx.stage_variables) or None,
        "requestContext": request_context,
        "body": body,
        "isBase64Encoded": is_b64,
    }


def _v1_headers(lines: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``headers`` (last value) and ``multiValueHeaders`` of a 1.0 event; names differing
    only in case are one header, spelled as first seen."""
    headers: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    spelled: dict[str, str] = {}
    for name, value in lines:
        lname = name.lower()
        key = spelled.get(lname)
        if key is None:
            spelled[lname] = key = name
            multi[key] = [value]
        else:
            multi[key].append(value)
        headers[key] = value
    return headers, multi


def _v1_query(request: IntegrationRequest) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``queryStringParameters`` (last value) and their multi-value map."""
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in request.query:
        query[name] = value
        if name in multi_query:
            multi_query[name].append(value)
        else:
            multi_query[name] = [value]
    return query, multi_query


_enc = encode_basestring_ascii  # '"text"', escaped as json.dumps escapes it
_F = TypeVar("_F")
#: json.dumps's own C encoder, built once (markers None: our maps hold only strings,
#: and lists of strings, so there is no cycle to detect); "".join of its output is
#: exactly ``json.dumps(obj)`` for a dict.
_c_encode = c_make_encoder(None, None, encode_basestring_ascii, None, ": ", ", ", False,
                           False, True) if c_make_encoder is not None else None


def _json_dict(mapping: dict[str, Any]) -> str:
    """``json.dumps`` of a non-empty dict of strings (or lists of strings), or ``null``."""
    if not mapping:
        return "null"
    if _c_encode is None:
        return json.dumps(mapping)
    return "".join(_c_encode(mapping, 0))


def _json_map(mapping: Mapping[str, str]) -> str:
    if not mapping:
        return "null"
    return "{" + ", ".join([f"{_enc(k)}: {_enc(v)}" for k, v in mapping.items()]) + "}"


def _json_multi(mapping: dict[str, list[str]]) -> str:
    if not mapping:
        return "null"
    return "{" + ", ".join([f"{_enc(k)}: [" + ", ".join([_enc(v) for v in values]) + "]"
                            for k, values in mapping.items()]) + "}"


def _json_text(value: str | None) -> str:
    return "null" if value is None else _enc(value)


class _RestFragments:
    """The parts of a REST event's JSON text that are the same for every request of one
    route, stage and method (pre-escaped once, see :func:`rest_payload`), and the
    templates made of them: the whole event text with a ``%s`` hole for each per-request
    value, one per number of request header lines (and one, key ``-1``, whose headers
    and multiValueHeaders holes take whole JSON maps)."""

    __slots__ = ("after_path", "before_domain", "edge", "identity", "keep", "resource",
                 "tail", "templates")

    def __init__(self, ctx: Context) -> None:
        route, api, stage = ctx.route, ctx.deployment_api, ctx.stage
        assert route is not None and api is not None and stage is not None
        #: What the cache entry stands for: checked by identity on every hit.
        self.keep = (route, api, stage, ctx.method)
        self.edge = api.config.endpoint_type == "EDGE"
        method = _enc(ctx.method)
        resource = _enc(route.operation.path)
        self.after_path = f', "httpMethod": {method}, "headers": '
        self.before_domain = (
            f', "stageVariables": {_json_map(ctx.stage_variables)}, '
            f'"requestContext": {{"accountId": "{ACCOUNT_ID}", "apiId": {_enc(api.id)}, '
            f'"deploymentId": {_enc(deployment_id(ctx))}, "domainName": ')
        self.identity = f', "httpMethod": {method}, "identity": {_IDENTITY_HEAD}'
        self.tail = (f', "resourceId": {_enc(route.resource_id)}, '
                     f'"resourcePath": {resource}, "stage": {_enc(stage.name)}}}, "body": ')
        self.resource = f'{{"resource": {resource}, "path": '
        self.templates: dict[int, list[str | None]] = {}

    def template(self, count: int) -> list[str | None]:
        """The event text for ``count`` request header lines (-1: for two whole maps)
        as a list: its constant parts, with a ``None`` between two for each hole, made
        once per count (at most ``_MAX_TEMPLATE_HEADERS + 2``).  A request fills a copy
        (``pieces[1::2] = values``) and joins it: the interpreter's ``%`` reads the
        whole 1.5 KB format on every call, the join only copies."""
        found = self.templates.get(count)
        if found is not None:
            return found
        if count < 0:
            headers, multi = "%s", "%s"
        else:
            headers = "{" + '"%s": "%s", ' * count + _ADDED_SINGLE
            multi = "{" + '"%s": ["%s"], ' * count + _ADDED_MULTI
        def c(text: str) -> str:
            # A constant part's "%" is no hole (none is expected: the config's checks
            # keep "%" out of paths, stage names and stage variables).
            return text.replace("%", "%%")
        text = (
            f'{c(self.resource)}"%s"{c(self.after_path)}{headers}, '
            f'"multiValueHeaders": {multi}, "queryStringParameters": %s, '
            f'"multiValueQueryStringParameters": %s, "pathParameters": %s'
            f'{c(self.before_domain)}"%s", "domainPrefix": "%s", "extendedRequestId": "%s"'
            f'{c(self.identity)}"%s", "user": null, "userAgent": %s, "userArn": null}}, '
            f'"path": "%s", "protocol": "HTTP/1.1", "requestId": "%s", "requestTime": '
            f'"%s", "requestTimeEpoch": %s{c(self.tail)}%s, "isBase64Encoded": %s}}')
        # NUL marks the holes: JSON text escaped by the ensure_ascii encoder has none.
        chunks = (text % (("\x00",) * text.count("%s"))).split("\x00")
        made: list[str | None] = [None] * (2 * len(chunks) - 1)
        made[0::2] = chunks
        self.templates[count] = made
        return made

class _V2Fragments:
    """The constant parts of one route's payload 2.0 JSON text (see :func:`http_v2_payload`)."""

    __slots__ = ("context", "head", "keep", "route_tail", "variables")

    def __init__(self, ctx: Context) -> None:
        route, api, stage = ctx.route, ctx.deployment_api, ctx.stage
        assert route is not None and api is not None and stage is not None
        self.keep = (route, api, stage, ctx.method)
        route_key = _enc(route.operation.route_key)
        self.head = f'{{"version": "2.0", "routeKey": {route_key}, "rawPath": '
        variables = ctx.stage_variables
        self.variables = f', "stageVariables": {_json_map(variables)}' if variables else ""
        self.context = (f', "requestContext": {{"accountId": "{ACCOUNT_ID}", '
                        f'"apiId": {_enc(api.id)}, "domainName": ')
        self.route_tail = f', "routeKey": {route_key}, "stage": {_enc(stage.name)}, "time": '


#: (id(route), kind) -> its fragments; bounded (a reload builds new routes).
_FRAGMENTS: dict[tuple[int, Any], Any] = {}
_MAX_FRAGMENTS = 1024


def _fragments(ctx: Context, kind: Callable[[Context], _F]) -> _F:
    """``kind(ctx)``, built once per route, stage and method (checked by identity)."""
    route = ctx.route
    key = (id(route), kind)
    cached = _FRAGMENTS.get(key)
    if cached is not None:
        keep = cached.keep
        if keep[0] is route and keep[1] is ctx.deployment_api and keep[2] is ctx.stage \
                and keep[3] == ctx.method:
            return cached  # type: ignore[no-any-return]
    if len(_FRAGMENTS) >= _MAX_FRAGMENTS:
        _FRAGMENTS.clear()
    made = _FRAGMENTS[key] = kind(ctx)
    return made


def rest_payload(ctx: Context, request: IntegrationRequest) -> bytes:
    """The REST event (payload 1.0) as the JSON bytes sent to the function, exactly
    ``json.dumps(rest_event(ctx, request))``.

    This is every REST Lambda route's hot path, so the common case (no authorizer
    principal, no client certificate) writes the text directly from the same field
    helpers :func:`rest_event` uses: the generic encoder re-escaped every key and walked
    two dozen constant values per request, about as much work as building the event.
    What is the same for every request of a route (resource, method, API, stage,
    stage variables) is escaped once per route, into one template per number of header
    lines with a hole for each per-request string, so a request does one join;
    those strings are escaped in one call, or not at all when they are printable ASCII
    without ``"`` or ``\\`` (their own escape).  The rest goes through
    :func:`rest_event` and ``json.dumps``.
    """
    if ctx.principal is not None or ctx.route is None or ctx.deployment_api is None or \
            ctx.stage is None or _client_cert(ctx) is not None:
        return json.dumps(rest_event(ctx, request)).encode("utf-8")
    parts = _fragments(ctx, _RestFragments)
    inbound = ctx.request
    items = request.headers.items
    names = request.headers.lower_names()  # a dict's keys: sized
    domain = ctx.domain_name or inbound.host
    user_agent = inbound.headers.get("user-agent")
    # Every per-request string, to be escaped together (see below).  Not the request
    # time: request_time() writes digits, an English month and "/: +", which JSON keeps.
    strings = [ctx.path, domain, domain.split(".", 1)[0], ctx.extended_request_id,
               source_ip(ctx) if parts.edge else inbound.client_ip, user_agent or "",
               ctx.request_path, ctx.request_id]
    if not parts.edge and len(items) <= _MAX_TEMPLATE_HEADERS and \
            len(names) == len(items) and _ADDED.isdisjoint(names):  # type: ignore[arg-type]
        # No repeated names and nothing API Gateway adds itself: the header lines are
        # the request's, in order, then the four added ones (gateway_headers' result),
        # each name and value a hole of the template (twice: headers, multiValueHeaders).
        template = parts.template(len(items))
        strings.extend(chain.from_iterable(items))
        strings += (event_trace_header(ctx), inbound.client_ip,
                    str(inbound.server_port or (443 if inbound.scheme == "https" else 80)),
                    inbound.scheme)
        header_maps = None
    else:
        template = parts.template(-1)
        headers, multi = _v1_headers(gateway_headers(ctx, request))
        header_maps = (_json_dict(headers), _json_dict(multi))
    # Strings that are printable ASCII without '"' or '\\' are their own JSON escape (the
    # usual case); else all are escaped in one call.
    joined = "".join(strings)
    if not (joined.isascii() and joined.isprintable() and '"' not in joined and
            "\\" not in joined):
        strings = _escaped(strings)
    (path, domain_text, prefix, extended, ip, agent, request_path,
     request_id) = strings[:8]
    header_values = (*strings[8:], *strings[8:]) if header_maps is None else header_maps
    if request.query:
        query, multi_query = _v1_query(request)
        query_text, multi_query_text = _json_dict(query), _json_dict(multi_query)
    else:
        query_text = multi_query_text = "null"
    path_params = ctx.path_params
    body, is_b64 = _body(ctx, request)
    pieces = template.copy()
    pieces[1::2] = (
        path, *header_values, query_text, multi_query_text,
        _json_map(path_params) if path_params else "null", domain_text, prefix,
        extended, ip, "null" if user_agent is None else '"' + agent + '"',
        request_path, request_id, request_time(ctx.received_at),
        str(int(ctx.received_at * 1000)), _json_text(body), "true" if is_b64 else "false")
    return "".join(pieces).encode("ascii")  # type: ignore[arg-type]  # every hole filled


#: Requests with more header lines than this take the general path (a template each).
_MAX_TEMPLATE_HEADERS = 64
_ADDED_SINGLE = ('"X-Amzn-Trace-Id": "%s", "X-Forwarded-For": "%s", '
                 '"X-Forwarded-Port": "%s", "X-Forwarded-Proto": "%s"}')
_ADDED_MULTI = ('"X-Amzn-Trace-Id": ["%s"], "X-Forwarded-For": ["%s"], '
                '"X-Forwarded-Port": ["%s"], "X-Forwarded-Proto": ["%s"]}')


def _escaped(strings: list[str]) -> list[str]:
    """Each string as ``json.dumps`` escapes it (without the quotes), from one escaping
    call over all of them joined by NUL: escaping is per character, so the output splits
    at the NULs' escapes, ``\\u0000``.  A string holding a NUL, or the text
    ``\\u0000`` itself, would add a split; then they are escaped one by one."""
    parts = _enc("\x00".join(strings))[1:-1].split("\\u0000")
    if len(parts) == len(strings):
        return parts
    return [_enc(s)[1:-1] for s in strings]


def _client_cert(ctx: Context) -> dict[str, Any] | None:
    tls = ctx.request.tls
    if tls is None or tls.client_cert_pem is None:
        return None
    return {"clientCertPem": tls.client_cert_pem, "subjectDN": tls.subject_dn,
            "issuerDN": tls.issuer_dn, "serialNumber": tls.serial_number,
            "validity": {"notBefore": tls.not_before, "notAfter": tls.not_after}}


def rest_event(ctx: Context, request: IntegrationRequest) -> dict[str, Any]:
    """The REST ``AWS_PROXY`` event, payload format 1.0 (§1.1)."""
    return _v1_event(ctx, request, lower=False)


def http_v1_event(ctx: Context, request: IntegrationRequest) -> dict[str, Any]:
    """An HTTP API event with payload format 1.0 (§1.3): §1.1 plus ``version``."""
    event = {"version": "1.0", **_v1_event(ctx, request, lower=True)}
    return event


def http_v2_event(ctx: Context, request: IntegrationRequest) -> dict[str, Any]:
    """The HTTP API event, payload format 2.0 (§1.2)."""
    route = ctx.route
    assert route is not None and ctx.stage is not None and ctx.deployment_api is not None
    headers, cookies = _v2_headers(ctx, request)
    query = _v2_query(request)
    domain = ctx.domain_name or ctx.request.host
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT_ID,
        "apiId": ctx.deployment_api.id,
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0],
        "http": {"method": ctx.method, "path": ctx.request_path, "protocol": "HTTP/1.1",
                 "sourceIp": source_ip(ctx),
                 "userAgent": ctx.request.headers.get("user-agent") or ""},
        "requestId": ctx.request_id,
        "routeKey": route.operation.route_key,
        "stage": ctx.stage.name,
        "time": request_time(ctx.received_at),
        "timeEpoch": int(ctx.received_at * 1000),
    }
    principal = ctx.principal
    if principal is not None and principal.kind != "api_key":
        if principal.kind == "jwt":
            request_context["authorizer"] = {"jwt": {
                "claims": {k: _stringify(v) for k, v in principal.claims.items()},
                "scopes": principal.context.get("scopes")}}
        elif principal.kind == "iam":
            c = principal.context
            request_context["authorizer"] = {"iam": {
                "accessKey": c.get("accessKey"), "accountId": c.get("accountId"),
                "callerId": c.get("caller"), "cognitoIdentity": None,
                "principalOrgId": None, "userArn": c.get("userArn"),
                "userId": c.get("user")}}
        else:
            request_context["authorizer"] = {"lambda": dict(principal.context)}
    cert = _client_cert(ctx)
    if cert is not None:
        request_context["authentication"] = {"clientCert": cert}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.operation.route_key,
        "rawPath": ctx.request_path,
        "rawQueryString": ctx.request.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if query:
        event["queryStringParameters"] = query
    if ctx.path_params:
        event["pathParameters"] = dict(ctx.path_params)
    if ctx.stage_variables:
        event["stageVariables"] = dict(ctx.stage_variables)
    event["requestContext"] = request_context
    body, is_b64 = _v2_body(request)
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = is_b64
    return event


def _v2_headers(ctx: Context, request: IntegrationRequest) -> tuple[dict[str, str], list[str]]:
    """2.0 ``headers`` (lower-cased names, repeated values joined by commas, and
    ``content-length``) and ``cookies``."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in gateway_headers(ctx, request):
        lname = name.lower()
        if lname == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        headers[lname] = f"{headers[lname]},{value}" if lname in headers else value
    headers["content-length"] = str(len(request.body))
    return headers, cookies


def _v2_query(request: IntegrationRequest) -> dict[str, str]:
    """2.0 ``queryStringParameters``: repeated values joined by commas."""
    query: dict[str, str] = {}
    for name, value in request.query:
        query[name] = f"{query[name]},{value}" if name in query else value
    return query


def _v2_body(request: IntegrationRequest) -> tuple[str | None, bool]:
    """2.0 ``body`` (absent when empty: ``None``) and ``isBase64Encoded``: text types
    travel as text, everything else as base64."""
    body = request.body
    if not body:
        return None, False
    ctype = _media_type(request.headers.get("content-type"))
    if ctype.startswith("text/") or ctype in _TEXT_TYPES:
        return body.decode("utf-8", "replace"), False
    return base64.b64encode(body).decode("ascii"), True


def http_v2_payload(ctx: Context, request: IntegrationRequest) -> bytes:
    """The payload 2.0 event as the JSON bytes sent to the function, exactly
    ``json.dumps(http_v2_event(ctx, request))``, written directly as
    :func:`rest_payload` writes REST's (no authorizer principal, no client certificate;
    the rest goes through :func:`http_v2_event` and ``json.dumps``)."""
    if ctx.principal is not None or ctx.route is None or ctx.deployment_api is None or \
            ctx.stage is None or _client_cert(ctx) is not None:
        return json.dumps(http_v2_event(ctx, request)).encode("utf-8")
    parts = _fragments(ctx, _V2Fragments)
    headers, cookies = _v2_headers(ctx, request)
    query = _v2_query(request) if request.query else None
    body, is_b64 = _v2_body(request)
    inbound = ctx.request
    domain = ctx.domain_name or inbound.host
    path_params = ctx.path_params
    request_path = _enc(ctx.request_path)
    # the keys 2.0 omits when empty
    optional = (f', "cookies": [{", ".join([_enc(c) for c in cookies])}]' if cookies
                else "")
    optional += f', "headers": {_json_dict(headers)}'
    if query:
        optional += f', "queryStringParameters": {_json_dict(query)}'
    if path_params:
        optional += f', "pathParameters": {_json_map(path_params)}'
    tail = f', "body": {_enc(body)}' if body is not None else ""
    text = (
        f'{parts.head}{request_path}, "rawQueryString": {_enc(inbound.raw_query)}'
        f'{optional}{parts.variables}{parts.context}{_enc(domain)}, '
        f'"domainPrefix": {_enc(domain.split(".", 1)[0])}, "http": {{"method": '
        f'{_enc(ctx.method)}, "path": {request_path}, "protocol": "HTTP/1.1", '
        f'"sourceIp": {_enc(source_ip(ctx))}, '
        f'"userAgent": {_enc(inbound.headers.get("user-agent") or "")}}}, '
        f'"requestId": {_enc(ctx.request_id)}{parts.route_tail}'
        f'{_enc(request_time(ctx.received_at))}, '
        f'"timeEpoch": {int(ctx.received_at * 1000)}}}{tail}, '
        f'"isBase64Encoded": {"true" if is_b64 else "false"}}}')
    return text.encode("ascii")


def event_for(ctx: Context, request: IntegrationRequest) -> dict[str, Any]:
    """The event for the route's API type and ``payloadFormatVersion``."""
    api = ctx.deployment_api
    if api is not None and api.is_http:
        integration = ctx.integration
        if integration is not None and integration.payload_format_version == "1.0":
            return http_v1_event(ctx, request)
        return http_v2_event(ctx, request)
    return rest_event(ctx, request)

