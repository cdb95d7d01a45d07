"""HTTP and HTTP_PROXY integrations: API Gateway calling an HTTP backend.

A shipped plugin, registered through the ``twistgw`` entry-point group like any
third-party plugin.  AWS behaviour (aws-apigw-spec.md §3.2, §3.3, §3.7):

* ``HTTP_PROXY``: the client's method (for ``ANY``), query string, headers (minus ``Host``
  and hop-by-hop ones) and body go to the backend, with ``{name}`` placeholders of the
  ``uri`` filled from the path parameters and ``integration.request.path.*`` mappings
  (raw, as the client sent them), mapped query values appended and mapped headers set.
  API Gateway adds ``X-Forwarded-For/-Proto/-Port``, ``X-Amzn-Apigateway-Api-Id`` and
  ``X-Amzn-Trace-Id``.  The backend's status, headers and body come back, with
  ``Date``, ``Server``, ``Content-Length`` and ``x-amzn-RequestId`` renamed
  ``x-amzn-Remapped-<Name>`` and ``Content-Encoding`` (after decoding), ``Via`` and
  ``Transfer-Encoding`` dropped.
* ``HTTP``: the backend gets only mapped headers and query strings, the (templated) body
  and AWS's defaults (``Accept: application/json``, ``User-Agent:
  AmazonAPIGateway_<apiId>``, the client's ``Content-Type`` for body methods); what it
  answers goes to integration-response selection (the mapping plugin), so its status
  reaches the client only if an integration response maps it.

The outbound side (pools, timeouts, caps, TLS, errors) is :mod:`twistgw_http.client`;
``requestParameters`` are :mod:`twistgw_http.params`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from twistgw import (
    ApiConfigurationError,
    ConfigError,
    Headers,
    IntegrationRequest,
    IntegrationResponse,
    hookimpl,
)
from twistgw.reload import ReloadStep
from twistgw.tracing import trace_header

from .client import BackendClient, HttpSettings, parse_settings
from .fastclient import Target, checked_name, parse_target, request_head, request_names
from .params import check_parameters, compile_parameters
from .response_params import apply_response_parameters, check_response_parameters

if TYPE_CHECKING:
    from twistgw import Context, Registry, Response
    from twistgw.config import GatewayConfig
    from twistgw.deployment import Deployment, Route
    from twistgw.gateway import Gateway

__all__ = ["register", "configure", "startup", "shutdown", "prepare_reload", "map_request",
           "integrate", "map_response",
           "TYPES", "integration_request", "build_url", "outbound_headers", "outbound_head",
           "proxy_response_headers", "trace_id"]

log = Logger()

TYPES = frozenset(("HTTP", "HTTP_PROXY"))

#: Client headers never forwarded by HTTP_PROXY: the target's Host, hop-by-hop headers
#: (most are already dropped on ingress, §A.6), the ones §3.2 drops after mapping, and the
#: ones API Gateway sets itself.
_PROXY_DROPPED = frozenset(h.lower() for h in (
    "Host", "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Authorization", "Expect",
    "Via", "Content-Length", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port",
    "X-Amzn-Apigateway-Api-Id", "X-Amzn-Trace-Id"))
#: Mapped headers silently dropped from HTTP integration requests (§3.2).
_MAPPED_DROPPED = frozenset(("expect", "proxy-authenticate", "te", "via"))
#: Backend response headers HTTP_PROXY renames to ``x-amzn-Remapped-<Name>`` (§3.7).
_REMAPPED = frozenset(("connection", "content-length", "date", "server", "x-amzn-requestid"))
#: Backend response headers HTTP_PROXY drops (§3.7 [EMU]) besides framing ones.
_RESPONSE_DROPPED = frozenset(("via", "transfer-encoding", "keep-alive", "proxy-connection",
                               "upgrade", "trailer", "te"))
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9._$-]+)\+?\}")
#: Characters left as they are when a value is put into the URL path: a raw path
#: parameter is already valid there and must not be re-encoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_PATH_CLEAN = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=._~%-]*")


class _State:
    """Clients by gateway config (one per deployment's settings) and the reactor to use."""

    def __init__(self) -> None:
        self.reactor: Any = None
        self.settings: dict[int, tuple[GatewayConfig, HttpSettings]] = {}
        self.clients: dict[int, tuple[GatewayConfig, BackendClient]] = {}

    def client_for(self, config: GatewayConfig) -> BackendClient:
        found = self.clients.get(id(config))
        if found is not None and found[0] is config:
            return found[1]
        known = self.settings.get(id(config))
        settings = known[1] if known is not None and known[0] is config else \
            parse_settings(config.plugin_settings("http"), config.source, config.base_dir)
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        client = BackendClient(self.reactor, settings)
        # Keep the clients of the current and the previous deployment (requests in flight
        # on a reloaded config finish on theirs); older pools are closed.
        while len(self.clients) >= 2:
            _key, (_cfg, old) = next(iter(self.clients.items()))
            del self.clients[_key]
            if all(other is not old for _c, other in self.clients.values()):
                old.close()  # not carried over to a later config by a reload
        self.clients[id(config)] = (config, client)
        return client


_state = _State()


def _is_ours(route: Route) -> bool:
    return route.integration is not None and route.integration.type in TYPES


def _has_response_parameters(route: Route) -> bool:
    return route.integration is not None and bool(route.integration.response_parameters)


def _check_route(route: Route) -> None:
    """Load-time refusal of what this plugin (or AWS) cannot serve on an HTTP route."""
    integration = route.integration
    if integration is None or integration.type not in TYPES:
        return
    file, _, path = integration.where.partition(": ")
    for key in integration.tls_config:
        if key != "insecureSkipVerification":
            raise ConfigError(file, f"{path}.tlsConfig.{key}",
                              "only insecureSkipVerification is implemented for HTTP "
                              "integrations (serverNameToVerify belongs to private "
                              "integrations); remove it")
    skip = integration.tls_config.get("insecureSkipVerification", False)
    if not isinstance(skip, bool):
        raise ConfigError(file, f"{path}.tlsConfig.insecureSkipVerification",
                          f"expected true or false, got {skip!r}")
    check_parameters(integration)
    if integration.response_parameters:
        check_response_parameters(integration)


@hookimpl
def register(registry: Registry) -> None:
    """Claim HTTP and HTTP_PROXY and their parameter mappings; stay off other routes."""
    registry.add_integration_type("HTTP")
    registry.add_integration_type("HTTP_PROXY")
    registry.add_feature("request_parameters")
    registry.add_route_filter(_is_ours)
    # map_response only applies responseParameters: off every other route's plan.
    registry.add_route_filter(_has_response_parameters, hooks=["map_response"])
    registry.add_route_check(_check_route)


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Check ``plugins.settings.http`` (refusing unknown keys and bad values)."""
    settings = parse_settings(config.plugin_settings("http"), config.source, config.base_dir)
    _state.settings[id(config)] = (config, settings)
    while len(_state.settings) > 8:
        del _state.settings[next(iter(_state.settings))]


@hookimpl
def startup(gateway: Gateway) -> None:
    """Use the gateway's reactor for outbound connections."""
    _state.reactor = gateway.reactor


@hookimpl
def shutdown(gateway: Gateway) -> Any:
    """Close the pooled backend connections."""
    clients = list({id(client): client for _cfg, client in _state.clients.values()}.values())
    _state.clients.clear()
    if clients:
        return DeferredList([c.close() for c in clients], consumeErrors=True)
    return None


@hookimpl
def prepare_reload(gateway: Gateway, deployment: Deployment) -> ReloadStep | None:
    """Keep the backend pools, their warm connections and circuit breakers across a reload
    when ``plugins.settings.http`` is unchanged and names no TLS file (a reload re-reads
    CA and client-certificate files, so those settings get a new client)."""
    old_config, new_config = gateway.config, deployment.config
    found = _state.clients.get(id(old_config))
    if found is None or found[0] is not old_config:
        return None  # no backend called yet: the new config makes its client when needed
    client = found[1]
    settings = parse_settings(new_config.plugin_settings("http"), new_config.source,
                              new_config.base_dir)
    if settings != client.settings or settings.ca_file or settings.client_cert:
        return None

    def commit() -> None:
        # Older configs sharing this client let go of it; the new one takes it over.
        for key, (cfg, other) in list(_state.clients.items()):
            if other is client and cfg is not old_config:
                del _state.clients[key]
        _state.clients[id(new_config)] = (new_config, client)

    return ReloadStep(commit=commit)


@hookimpl
def map_request(ctx: Context, request: IntegrationRequest) -> IntegrationRequest | None:
    """Apply ``requestParameters`` and build what the backend is sent (AWS's §3.2/§3.7).

    Done here rather than in ``integrate`` so that ``trylast`` ``map_request`` impls see
    and can refine the real integration request (URI filled in, headers and query
    final), and so that headers or query pairs added by impls that ran before this one
    reach the backend.
    """
    integration = ctx.integration
    if integration is None or integration.type not in TYPES or ctx.deployment_api is None:
        return None
    return integration_request(ctx, request, integration.type == "HTTP_PROXY")


@hookimpl
def integrate(ctx: Context, request: IntegrationRequest
              ) -> Deferred[IntegrationResponse] | None:
    """Call the backend of an HTTP or HTTP_PROXY integration."""
    integration = ctx.integration
    if integration is None or integration.type not in TYPES or ctx.deployment_api is None:
        return None
    return _call(ctx, request, integration.type == "HTTP_PROXY")


def trace_id(ctx: Context) -> str:
    """The client's ``X-Amzn-Trace-Id`` as sent, or the request's generated root: the
    same trace a Lambda integration and an OpenTelemetry exporter see."""
    if ctx.trace_id:
        return ctx.trace_id
    return trace_header(ctx).split(";", 1)[0]  # Root=...


def _encode_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _quote_path(value: str) -> str:
    """Put ``value`` into a URL path: raw path values (latin-1 text of the bytes the
    client sent) keep their bytes and their percent-encoding; other text is UTF-8."""
    if _PATH_CLEAN.fullmatch(value) is not None:
        return value  # nothing quote() would change (the usual case)
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raw = value.encode("utf-8")
    return quote(raw, safe=_PATH_SAFE)


def integration_request(ctx: Context, request: IntegrationRequest, proxy: bool
                        ) -> IntegrationRequest:
    """The request after parameter mapping: URI placeholders filled, headers and query.

    ``HTTP_PROXY`` keeps the client's headers (minus ``Host``, hop-by-hop and the ones
    API Gateway sets itself) with mapped ones replacing same-named ones, and appends
    mapped query values to the client's.  ``HTTP`` sends only what is mapped, plus AWS's
    defaults; anything an earlier ``map_request`` impl added (a header or query pair the
    client did not send) is kept and wins over a mapping.
    """
    integration = ctx.integration
    assert integration is not None and ctx.deployment_api is not None
    params = compile_parameters(integration)
    if params.broken is not None:
        log.error("({request_id}) Execution failed due to configuration error: {problem}",
                  request_id=ctx.request_id, problem=params.broken)
        raise ApiConfigurationError()
    path_values, mapped_query, mapped_headers = params.apply(ctx)
    override = request.extras.get("request_override") or _NO_OVERRIDE
    uri = request.uri
    if "{" in uri:
        uri = _fill_uri(uri, (override.get("path") or _NO_OVERRIDE, path_values,
                              request.path_params if proxy else _NO_OVERRIDE))
    mapped = [(k, v) for k, v in mapped_headers if k.lower() not in _MAPPED_DROPPED] \
        if mapped_headers else mapped_headers
    if proxy:
        items = request.headers.items
        if mapped:
            names = {k.lower() for k, _ in mapped}
            headers = [(k, v) for k, v in items
                       if (lk := k.lower()) not in _PROXY_DROPPED and lk not in names]
            headers.extend(mapped)
        else:
            headers = [(k, v) for k, v in items if k.lower() not in _PROXY_DROPPED]
        query = request.query + tuple(mapped_query) if mapped_query else request.query
    else:
        sent = set(ctx.request.headers.items)
        added = [(k, v) for k, v in request.headers.items if (k, v) not in sent]
        added_names = {k.lower() for k, _ in added}
        headers = [(k, v) for k, v in mapped if k.lower() not in added_names]
        headers.extend(added)
        names = {k.lower() for k, _ in headers}
        if "accept" not in names:
            headers.append(("Accept", "application/json"))
        if "user-agent" not in names:
            headers.append(("User-Agent", f"AmazonAPIGateway_{ctx.deployment_api.id}"))
        if "content-type" not in names and request.method in _BODY_METHODS:
            ctype = ctx.request.headers.get("content-type")
            if ctype:
                headers.append(("Content-Type", ctype))
        client_query = set(ctx.request.query)
        query = tuple(p for p in request.query if p not in client_query) + tuple(mapped_query)
    new_path = None
    if params.actions:
        headers, query, new_path = params.apply_actions(ctx, headers, query)
    if override:
        headers, query = _apply_overrides(headers, query, override)
    if new_path is not None:
        uri = _with_path(uri, new_path)
    # By position (a keyword call costs more on every request; tests/core/test_models.py
    # pins the order).
    return IntegrationRequest(request.method, uri, Headers(tuple(headers)), query,
                              request.path_params, request.body, request.timeout,
                              request.extras)


_NO_OVERRIDE: Mapping[str, Any] = {}
#: Integration URIs split at their placeholders (literal, name, literal, ...), by URI.
_templates: dict[str, list[str]] = {}


def _fill_uri(uri: str, sources: tuple[Mapping[str, str], ...]) -> str:
    """``uri`` with each ``{name}`` (or ``{name+}``) replaced by the first of ``sources``
    that has the name (empty if none), put into the path by :func:`_quote_path`.  The
    URI's split is cached: a ``re.sub`` with a callback per request showed in the proxy
    profile."""
    parts = _templates.get(uri)
    if parts is None:
        parts = _PLACEHOLDER.split(uri)
        if len(_templates) >= 4096:
            _templates.clear()
        _templates[uri] = parts
    if len(parts) == 3:  # one placeholder, the usual {proxy}
        name = parts[1]
        for source in sources:
            found = source.get(name)
            if found is not None:
                return parts[0] + _quote_path(found) + parts[2]
        return parts[0] + parts[2]
    out = [parts[0]]
    for i in range(1, len(parts), 2):
        name = parts[i]
        value = ""
        for source in sources:
            found = source.get(name)
            if found is not None:
                value = found
                break
        out.append(_quote_path(value))
        out.append(parts[i + 1])
    return "".join(out)


def _with_path(uri: str, path: str) -> str:
    """``uri`` with its path replaced (an HTTP API's ``overwrite:path``); a query string
    written in the integration URI stays."""
    start = uri.find("://")
    start = start + 3 if start >= 0 else 0
    ends = [i for i in (uri.find("/", start), uri.find("?", start)) if i >= 0]
    authority_end = min(ends) if ends else len(uri)
    query_at = uri.find("?", authority_end)
    rest = uri[query_at:] if query_at >= 0 else ""
    if not path.startswith("/"):
        path = "/" + path
    return uri[:authority_end] + _quote_path(path) + rest


def _apply_overrides(headers: list[tuple[str, str]], query: tuple[tuple[str, str], ...],
                     override: Mapping[str, Any]) -> tuple[list[tuple[str, str]],
                                                        tuple[tuple[str, str], ...]]:
    """Apply a mapping template's ``$context.requestOverride`` header and query values.

    AWS applies overrides after ``requestParameters``, so an override replaces a mapped
    or passed-through value of the same name (aws-apigw-spec.md §3.6).
    """
    header_over = override.get("header") or {}
    if header_over:
        names = {str(k).lower() for k in header_over}
        headers = [(k, v) for k, v in headers if k.lower() not in names]
        headers.extend((str(k), str(v)) for k, v in header_over.items())
    query_over = override.get("querystring") or {}
    if query_over:
        query = tuple(p for p in query if p[0] not in query_over) + tuple(
            (str(k), str(v)) for k, v in query_over.items())
    return headers, query


def build_url(ctx: Context, request: IntegrationRequest, proxy: bool) -> str:
    """The backend URL: the (filled) URI and the query string.

    A proxy forwards the client's query string exactly as sent (no re-encoding) when the
    integration request still starts with the client's pairs; anything after them
    (mapped values) is encoded and appended.
    """
    uri = request.uri
    pairs = request.query
    if not pairs and not (proxy and ctx.request.raw_query):
        return uri  # nothing to append (the usual proxied GET)
    parts: list[str] = []
    if proxy:
        inbound = ctx.request.query
        if pairs[:len(inbound)] == inbound:
            if ctx.request.raw_query:
                parts.append(ctx.request.raw_query)
            pairs = pairs[len(inbound):]
    if pairs:
        parts.append(_encode_pairs(pairs))
    if not parts:
        return uri
    return uri + ("&" if "?" in uri else "?") + "&".join(parts)


def outbound_headers(ctx: Context, request: IntegrationRequest, settings: HttpSettings,
                     proxy: bool) -> list[tuple[str, str]]:
    """The integration request's headers plus what API Gateway adds on the way out:
    ``X-Forwarded-*`` (proxy only), ``X-Amzn-Apigateway-Api-Id``, ``X-Amzn-Trace-Id``."""
    assert ctx.deployment_api is not None
    own = _OWN_PROXY if proxy else _OWN
    out = [(k, v) for k, v in request.headers.items if k.lower() not in own]
    inbound = ctx.request
    if proxy:
        peer = inbound.client_ip
        incoming = inbound.headers.get_all("x-forwarded-for") \
            if settings.trusted_proxies else None
        if incoming and settings.trusts(peer):
            out.append(("X-Forwarded-For", ", ".join([*incoming, peer])))
        else:
            out.append(("X-Forwarded-For", peer))
        out.append(("X-Forwarded-Proto", inbound.scheme))
        out.append(("X-Forwarded-Port", str(inbound.server_port)))
    out.append(("X-Amzn-Apigateway-Api-Id", ctx.deployment_api.id))
    out.append(("X-Amzn-Trace-Id", trace_id(ctx)))
    return out


#: Headers API Gateway sets itself on the way out, replacing what the request carries.
_OWN = frozenset(("x-amzn-apigateway-api-id", "x-amzn-trace-id"))
_OWN_PROXY = _OWN | {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-port"}
#: A backend header name -> the name the client sees ("" for a dropped header), cached:
#: backends send the same few names on every answer.
_response_names: dict[str, str] = {}


def _response_name(name: str) -> str:
    lname = name.lower()
    out = "" if lname in _RESPONSE_DROPPED else \
        f"x-amzn-Remapped-{name}" if lname in _REMAPPED else name
    if len(_response_names) >= 4096:
        _response_names.clear()
    _response_names[name] = out
    return out


#: ``(backend headers, length)`` -> :func:`proxy_response_headers` of them: the fast
#: client hands a head it has seen before over as the same tuple (fastclient._heads), and
#: a ``Headers`` is immutable, so every answer with that head shares one.  Emptied when full.
_remapped: dict[tuple[tuple[tuple[str, str], ...], int | None], Headers] = {}
_MAX_REMAPPED = 256


def proxy_response_headers(headers: Sequence[tuple[str, str]], length: int | None
                           ) -> Headers:
    """The backend's headers as an HTTP_PROXY client sees them (§3.7 remapping)."""
    if type(headers) is tuple:
        key = (headers, length)
        found = _remapped.get(key)
        if found is None:
            found = _remap(headers, length)
            if len(_remapped) >= _MAX_REMAPPED:
                _remapped.clear()
            _remapped[key] = found
        return found
    return _remap(headers, length)


def _remap(headers: Sequence[tuple[str, str]], length: int | None) -> Headers:
    names = _response_names
    out: list[tuple[str, str]] = []
    for name, value in headers:
        new = names.get(name)
        if new is None:
            new = _response_name(name)
        if new:
            out.append((new, value))
    if length is not None:
        out.append(("x-amzn-Remapped-Content-Length", str(length)))
    return Headers(tuple(out))


def outbound_head(ctx: Context, request: IntegrationRequest, settings: HttpSettings,
                  proxy: bool, target: Target, path: str) -> bytes:
    """The request head the backend gets, built in one pass: the same bytes as
    ``request_head(method, path, host, outbound_headers(...), length)``, which is what
    it falls back to when a value holds a CR or LF (tested to be equal).

    One loop over the headers instead of three (filter, check, format) and one format
    for the headers API Gateway adds: building the head showed in the proxy profile.
    """
    api = ctx.deployment_api
    assert api is not None
    method = request.method
    own = _OWN_PROXY if proxy else _OWN
    names = request_names
    parts = [f"{method} {path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    for name, value in request.headers.items:
        lname = names.get(name)
        if lname is None:
            lname = checked_name(name)
        if lname not in own:
            parts.append(f"{name}: {value}\r\n")
    lines = len(parts) + 1  # the request line and Host, one per header
    if proxy:
        inbound = ctx.request
        peer = inbound.client_ip
        incoming = inbound.headers.get_all("x-forwarded-for") \
            if settings.trusted_proxies else None
        forwarded = ", ".join([*incoming, peer]) if incoming and settings.trusts(peer) \
            else peer
        parts.append(f"X-Forwarded-For: {forwarded}\r\nX-Forwarded-Proto: {inbound.scheme}"
                     f"\r\nX-Forwarded-Port: {inbound.server_port}\r\n"
                     f"X-Amzn-Apigateway-Api-Id: {api.id}\r\n"
                     f"X-Amzn-Trace-Id: {trace_id(ctx)}\r\n")
        lines += 5
    else:
        parts.append(f"X-Amzn-Apigateway-Api-Id: {api.id}\r\n"
                     f"X-Amzn-Trace-Id: {trace_id(ctx)}\r\n")
        lines += 2
    body = request.body
    if body or method in _BODY_ALWAYS:
        parts.append(f"Content-Length: {len(body)}\r\n\r\n")
        lines += 2
    else:
        parts.append("\r\n")
        lines += 1
    head = "".join(parts)
    # Exactly one CR and one LF per line written: anything more came from a value, which
    # request_head turns into spaces.
    if head.count("\n") != lines or head.count("\r") != lines:
        return request_head(method, path, target.host_header,
                            outbound_headers(ctx, request, settings, proxy),
                            len(body) if body or method in _BODY_ALWAYS else None)
    try:
        return head.encode("latin-1")
    except UnicodeEncodeError:
        raise ApiConfigurationError() from None


_BODY_ALWAYS = frozenset(("POST", "PUT", "PATCH"))


def _call(ctx: Context, request: IntegrationRequest, proxy: bool
          ) -> Deferred[IntegrationResponse]:
    api = ctx.deployment_api
    assert api is not None
    client = _state.client_for(api.gateway)
    url = build_url(ctx, request, proxy)
    integration = ctx.integration
    insecure = integration is not None and \
        integration.tls_config.get("insecureSkipVerification") is True
    started = time.monotonic()
    head = request.method == "HEAD"

    def respond(status: int, headers: Sequence[tuple[str, str]], body: bytes,
                length: int | None) -> IntegrationResponse:
        metadata = MappingProxyType({"latency_ms": int((time.monotonic() - started) * 1000)})
        if proxy:
            # A HEAD answer's Content-Length (of the body not sent) stays among the
            # headers, where the remapping already renames it.  By position, as above.
            return IntegrationResponse(status, proxy_response_headers(
                headers, None if head else length), body, metadata)
        return IntegrationResponse(status, Headers(headers), body, metadata)
    if not client.fast_client:
        d: Deferred[IntegrationResponse] = client.send(
            request.method, url, outbound_headers(ctx, request, client.settings, proxy),
            request.body, timeout=request.timeout, insecure=insecure,
            shape=lambda answer: respond(*answer))
        return d
    target, path = parse_target(url)
    return client.send_head(target, request.method,
                            outbound_head(ctx, request, client.settings, proxy, target, path),
                            request.body, timeout=request.timeout, decode=True,
                            insecure=insecure, respond=respond)


@hookimpl
def map_response(ctx: Context, integration_response: IntegrationResponse,
                 response: Response) -> Response | None:
    """Apply an HTTP API ``HTTP_PROXY`` integration's ``responseParameters`` (§6.16) to
    what the backend answered."""
    integration = ctx.integration
    if integration is None or not integration.response_parameters:
        return None
    return apply_response_parameters(ctx, integration, integration_response, response)
