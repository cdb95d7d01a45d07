"""Non-proxy mapping: request templates, integration responses, header mappings.

A shipped plugin for the ``MOCK``, ``HTTP`` and ``AWS`` integration types (proxy types
pass through untouched; a route filter keeps this plugin off their plans entirely).

* ``map_request``: picks the request template by ``Content-Type`` (default
  ``application/json``) under the integration's ``passthroughBehavior`` (415 ``Unsupported
  Media Type`` where AWS gives it, aws-apigw-spec.md §3.4).
* ``map_response``: selects the integration response by ``selectionPattern`` (a full
  match on the status code, or on a Lambda ``errorMessage``), applies its status,
  ``method.response.header.*`` mappings (static, integration response headers, stage
  variables, context) with AWS's header remapping, and its response template chosen by
  ``Accept`` (§3.8).

Templates are used literally; VTL rendering arrives with the mapping-template feature, and
until then a template using VTL is refused at load time rather than sent out unrendered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from twistgw import (
    ApiConfigurationError,
    Headers,
    IntegrationRequest,
    Response,
    UnsupportedMediaType,
    hookimpl,
)
from twistgw.deployment import memoize
from twistgw.gateway_responses import resolve_parameter
from twistgw.variables import Finish

if TYPE_CHECKING:
    from twistgw import (
        Context,
        IntegrationResponse,
        Registry,
    )
    from twistgw.definition import Integration, IntegrationResponseConfig

__all__ = ["register", "map_request", "map_response", "select_integration_response",
           "REMAPPED_RESPONSE_HEADERS"]

log = Logger()

#: Mapped method-response headers AWS renames to ``x-amzn-Remapped-<Name>`` for non-proxy
#: integrations (aws-apigw-spec.md §3.7); ``Transfer-Encoding`` is dropped.
REMAPPED_RESPONSE_HEADERS = frozenset(h.lower() for h in (
    "Authorization", "Connection", "Content-Length", "Content-MD5", "Date", "Expect", "Host",
    "Max-Forwards", "Proxy-Authenticate", "Server", "Trailer", "Upgrade", "User-Agent",
    "WWW-Authenticate"))


def _mime(value: str | None) -> str:
    if not value:
        return "application/json"
    return value.split(";", 1)[0].strip().lower() or "application/json"


@lru_cache(maxsize=1024)
def _pattern(selection: str) -> re.Pattern[str]:
    return re.compile(selection)


@hookimpl
def register(registry: Registry) -> None:
    """Take part only in routes with non-proxy integrations."""
    registry.add_route_filter(
        lambda route: route.integration is not None and not route.integration.is_proxy)


# ``map_request`` and ``map_response`` are pipes, and this plugin *builds* the value (the
# templated request, the method response from the selected integration response) rather
# than refining it.  It therefore runs first (``tryfirst``): other plugins' impls see its
# result and refine it, instead of having their changes discarded by a builtin that ran
# last and rebuilt the response from the integration response.


@hookimpl(tryfirst=True)
def map_request(ctx: Context, request: IntegrationRequest) -> IntegrationRequest | None:
    """Apply the request template (literal) under the passthrough behaviour."""
    integration = ctx.integration
    if integration is None or integration.is_proxy:
        return None
    content_type = ctx.request.headers.get("content-type")
    route = ctx.route
    assert route is not None
    body = memoize(route, ("mapping.request", content_type),
                   lambda: _request_body(integration, content_type))
    if body is _UNSUPPORTED:
        raise UnsupportedMediaType()
    if body is None:
        return None
    return _with_body(request, body)


#: Sentinel: the passthrough behaviour refuses this content type (415).
_UNSUPPORTED: Any = object()


def _request_body(integration: Integration, content_type: str | None) -> Any:
    """The request template for ``content_type`` as bytes, ``None`` to pass the body
    through, or :data:`_UNSUPPORTED` for a 415 (the §3.4 table)."""
    templates = integration.request_templates
    behavior = integration.passthrough_behavior
    if not templates:
        return _UNSUPPORTED if behavior == "NEVER" else None
    ctype = _mime(content_type)
    if ctype in templates:
        return _encoded(templates[ctype])
    if behavior == "WHEN_NO_MATCH":
        return None
    return _UNSUPPORTED


def _with_body(request: IntegrationRequest, body: bytes) -> IntegrationRequest:
    """``attrs.evolve(request, body=body)``, spelled out: this runs per request and
    ``evolve`` introspects the class every time."""
    return IntegrationRequest(
        method=request.method, uri=request.uri, headers=request.headers, query=request.query,
        path_params=request.path_params, body=body, timeout=request.timeout,
        extras=request.extras)


@lru_cache(maxsize=4096)
def _encoded(template: str | None) -> bytes:
    """Templates are literal for now; encode each once."""
    return (template or "").encode("utf-8")


def select_integration_response(
    responses: tuple[IntegrationResponseConfig, ...], selection: str
) -> IntegrationResponseConfig | None:
    """The first response whose pattern fully matches ``selection``, else the default."""
    default = None
    for resp in responses:
        pattern = resp.selection_pattern
        if not pattern:
            if default is None:
                default = resp
            continue
        if _pattern(pattern).fullmatch(selection) is not None:
            return resp
    return default


def _pick_template(templates: Mapping[str, str | None], accept: str | None) -> str | None:
    """The response template for the first ``Accept`` type, else JSON's, else the first."""
    if not templates:
        return None
    key = _mime(accept.split(",")[0] if accept else None)
    if key in templates:
        return templates[key]
    if "application/json" in templates:
        return templates["application/json"]
    return next(iter(templates.values()))


@hookimpl(tryfirst=True)
def map_response(ctx: Context, integration_response: IntegrationResponse,
                 response: Response) -> Response | None:
    """Select the integration response and build the method response from it."""
    integration = ctx.integration
    if integration is None or integration.is_proxy:
        return None
    meta = integration_response.metadata
    if "error_message" in meta:
        selection = str(meta.get("error_message") or "")
    else:
        selection = str(integration_response.status)
    route = ctx.route
    assert route is not None
    chosen = memoize(route, ("mapping.select", selection),
                     lambda: select_integration_response(integration.responses, selection))
    if chosen is None:
        log.error("({request_id}) Execution failed due to configuration error: No match for "
                  "output mapping and no default output mapping configured. Endpoint "
                  "Response Status Code: {status}", request_id=ctx.request_id,
                  status=integration_response.status)
        raise ApiConfigurationError()
    headers: list[tuple[str, str]] = []
    fin = Finish(integration_status=integration_response.status)
    for key, source in chosen.response_parameters.items():
        name = key[len("method.response.header."):]
        value = _response_source(source, ctx, integration_response, fin)
        if value is None:
            continue
        lname = name.lower()
        if lname == "transfer-encoding":
            continue
        if lname in REMAPPED_RESPONSE_HEADERS:
            name = f"x-amzn-Remapped-{name}"
        headers.append((name, value))
    accept = ctx.request.headers.get("accept")
    template = memoize(route, ("mapping.template", id(chosen), accept),
                       lambda: _pick_template(chosen.response_templates, accept))
    body = integration_response.body if not template else _encoded(template)
    return Response(status=int(chosen.status_code), headers=Headers(tuple(headers)), body=body)


def _response_source(source: str, ctx: Context, integration_response: IntegrationResponse,
                     fin: Finish) -> str | None:
    if source.startswith("integration.response.header."):
        return integration_response.headers.get(source[len("integration.response.header."):])
    if source.startswith("integration.response.multivalueheader."):
        values = integration_response.headers.get_all(
            source[len("integration.response.multivalueheader."):])
        return ",".join(values) if values else None
    return resolve_parameter(source, ctx, fin)
