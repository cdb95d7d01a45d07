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

``contentHandling`` (``CONVERT_TO_TEXT`` / ``CONVERT_TO_BINARY``) with the API's
``binaryMediaTypes`` converts request and response bodies by §3.5's matrix (see
:mod:`twistgw_mapping.binary`); this plugin claims the ``content_handling`` feature.

Templates are VTL (aws-apigw-spec.md §3.6), rendered by :mod:`twistgw.vtl` with the AWS
objects of :mod:`twistgw_mapping.namespaces`; this plugin claims the ``mapping_templates``
feature.  Each template is parsed once per deployment (a route check compiles every
template of the route into the route's memo, so a syntax error or an oversized template is
refused at load time); a template without ``$`` or ``#`` is sent as is.  Overrides set by
the request template (``$context.requestOverride``) are applied to the integration request;
``$context.responseOverride`` set by either template replaces the status and headers of the
method response.  A render that fails or breaks a bound is a 500 (API configuration error).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.logger import Logger

from twistgw import (
    ApiConfigurationError,
    ConfigError,
    Headers,
    IntegrationRequest,
    Response,
    UnsupportedMediaType,
    hookimpl,
)
from twistgw.deployment import MEMO_LIMIT, has_vtl, memoize
from twistgw.gateway_responses import resolve_parameter
from twistgw.variables import Finish
from twistgw.vtl import MISSING, Template, TemplateError, TemplateLimitError, to_json, to_text

from . import binary
from .namespaces import (
    OVERRIDES,
    OVERRIDES_OR_NONE,
    ROOT_NAMES,
    UTIL,
    ContextObject,
    InputObject,
    OverrideMap,
    Overrides,
    UtilObject,
    context_value,
    json_path,
    parse_json,
)

if TYPE_CHECKING:
    from twistgw import (
        Context,
        IntegrationResponse,
        Registry,
    )
    from twistgw.definition import Integration, IntegrationResponseConfig
    from twistgw.deployment import Route

__all__ = ["register", "map_request", "map_response", "select_integration_response",
           "REMAPPED_RESPONSE_HEADERS", "OVERRIDES", "check_templates"]

log = Logger()

#: Mapped method-response headers AWS renames to ``x-amzn-Remapped-<Name>`` for non-proxy
#: integrations (aws-apigw-spec.md §3.7); ``Transfer-Encoding`` is dropped.
REMAPPED_RESPONSE_HEADERS = frozenset(h.lower() for h in (
    "Authorization", "Connection", "Content-Length", "Content-MD5", "Date", "Expect", "Host",
    "Max-Forwards", "Proxy-Authenticate", "Server", "Trailer", "Upgrade", "User-Agent",
    "WWW-Authenticate"))

#: Integration request headers no override may set: AWS fails every such request with 500
#: (§3.2); ``AWS`` integrations forbid a few more.
_ILLEGAL_OVERRIDE_HEADERS = frozenset(h.lower() for h in (
    "Content-Length", "Transfer-Encoding", "X-Amzn-Trace-Id", "X-Amzn-Apigateway-Api-Id"))
_ILLEGAL_AWS_OVERRIDE_HEADERS = _ILLEGAL_OVERRIDE_HEADERS | frozenset(h.lower() for h in (
    "Authorization", "Connection", "Expect", "Proxy-Authenticate", "TE"))

#: (``OVERRIDES``, from :mod:`.namespaces`) The request's
#: ``$context.requestOverride``/``responseOverride``: the request template writes them,
#: the response phase reads them (AWS shows both to the response template).  In the
#: stash only once a template touched them.


def _mime(value: str | None) -> str:
    if not value:
        return "application/json"
    return value.split(";", 1)[0].strip().lower() or "application/json"


@lru_cache(maxsize=1024)
def _pattern(selection: str) -> re.Pattern[str]:
    return re.compile(selection)

#: The integration types this plugin maps (AWS's non-proxy ones).
_MAPPED_TYPES = frozenset({"MOCK", "HTTP", "AWS"})


@hookimpl
def register(registry: Registry) -> None:
    """Take part only in routes with non-proxy integrations; render VTL templates."""
    registry.add_feature("mapping_templates")
    registry.add_feature("content_handling")
    # AWS's non-proxy integrations only: a plugin's own integration type (a WebSocket
    # handshake) answers for itself.
    registry.add_route_filter(
        lambda route: route.integration is not None
        and route.integration.type in _MAPPED_TYPES)
    registry.add_route_check(check_templates)
    registry.add_route_check(check_content_handling)


# -- compiling templates ---------------------------------------------------------------------

#: A template ready to use: the literal body, or a parsed VTL template.
Compiled = bytes | Template

#: What :func:`~.namespaces.template_roots` always passes: the compiled templates
#: call these classes' properties and methods directly (``Template.render_typed``).
ROOT_TYPES = {"input": InputObject, "context": ContextObject, "util": UtilObject}
if tuple(sorted(ROOT_TYPES)) != ROOT_NAMES:  # render_typed takes them in this order
    raise AssertionError("ROOT_NAMES must be ROOT_TYPES' names, sorted")


def _compile(source: str | None) -> Compiled:
    if not source:
        return b""
    if not has_vtl(source):
        return _encoded(source)
    return Template(source, types=ROOT_TYPES)


def _template(route: Route, source: str | None) -> Compiled:
    """The compiled ``source``, parsed once per route (the route check fills the memo)."""
    return memoize(route, ("mapping.vtl", source), lambda: _compile(source))  # type: ignore[no-any-return]


def check_templates(route: Route) -> None:
    """Parse every template of a non-proxy route at load time (and keep the result).

    A template that does not parse, or is larger than AWS's 300 KB, is refused naming the
    file and the template's key; under ``strict: false`` requests using it get a 500.
    """
    integration = route.integration
    if integration is None or integration.is_proxy:
        return
    file, _, path = integration.where.partition(": ")
    found: list[tuple[str, str | None]] = [
        (f"{path}.requestTemplates.{ctype}", t)
        for ctype, t in integration.request_templates.items()]
    for resp in integration.responses:
        rpath = f"{path}.responses.{resp.selection_pattern or 'default'}.responseTemplates"
        found.extend((f"{rpath}.{ctype}", t) for ctype, t in resp.response_templates.items())
    for where, source in found:
        try:
            _template(route, source)
        except TemplateError as e:
            raise ConfigError(file, where, f"invalid mapping template: {e}") from None


def check_content_handling(route: Route) -> None:
    """``contentHandling`` is served for non-proxy integrations only (§3.5): refuse it on
    proxy ones rather than ignore it."""
    integration = route.integration
    if integration is None or not integration.is_proxy:
        return
    if integration.content_handling or any(r.content_handling for r in integration.responses):
        file, _, path = integration.where.partition(": ")
        raise ConfigError(file, f"{path}.contentHandling", "contentHandling is served for "
                          "non-proxy integrations (MOCK, HTTP, AWS) only; remove it")


# ``map_request`` and ``map_response`` are pipes, and this plugin *builds* the value (the
# templated request, the method response from the selected integration response) rather
# than refining it.  It therefore runs first (``tryfirst``): other plugins' impls see its
# result and refine it, instead of having their changes discarded by a builtin that ran
# last and rebuilt the response from the integration response.


#: A template as the request path uses it: the literal body, the parsed template, or why
#: it does not parse (only under ``strict: false``; the route check refuses it otherwise).
Prepared = bytes | Template | TemplateError


def _prepared(route: Route, source: str | None) -> Prepared:
    """``source`` compiled (once per route, through :func:`_template`), or its error."""
    try:
        return _template(route, source)
    except TemplateError as e:
        return e


#: Specialised templates kept per route and template (:func:`_specialised`): stage
#: name and method -> (stage, API, the template with their constants folded in, its
#: :meth:`~twistgw.vtl.Template.typed_renderer`, whether it reads ``$stageVariables``).
Specs = dict[tuple[str, str], tuple[Any, Any, Template, Callable[..., str], bool]]

#: The most specialised copies kept per route and template (stages x methods).
MAX_SPECS = 32

#: ``$context`` names that are the same for every request of one route, stage and
#: method (partial evaluation, :func:`_specialised`); every other name (request id,
#: identity, path, time, domain, authorizer, error) varies per request.
ROUTE_CONSTANTS = ("accountId", "apiId", "apiType", "endpointType", "httpMethod",
                   "protocol", "resourceId", "resourcePath", "routeKey", "stage")

#: Methods a route's requests are specialised for (anything else, which only an ``ANY``
#: route with ``X-HTTP-Method-Override`` sees, renders the general template).
_SPEC_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

#: What ``#set`` may write under ``$context`` without changing a variable.
_WRITABLE = {"context": frozenset({"requestOverride", "responseOverride"})}


def _specialised(ctx: Context, compiled: Template, specs: Specs,
                 overrides: Overrides | None) -> Template:
    """``compiled`` with this route's, stage's and method's constants folded in.

    Built once per stage and method and kept in ``specs`` (at most :data:`MAX_SPECS`);
    the stage's variables are folded too, so a reload (new stages, new routes) builds
    new copies.  A request whose earlier template set a custom ``$context`` key (which
    would shadow a constant) renders the general template (``overrides``: the
    request's, from the stash).
    """
    stage, method = ctx.stage, ctx.method
    if stage is None or method not in _SPEC_METHODS:
        return compiled
    if overrides is not None and overrides.custom:
        return compiled
    found = specs.get((stage.name, method))
    if found is not None and found[0] is stage and found[1] is ctx.deployment_api:
        return found[2]
    if len(specs) >= MAX_SPECS:
        return compiled
    constants: dict[str, dict[tuple[str, ...], Any]] = {
        "context": {(name,): context_value(ctx, name) for name in ROUTE_CONSTANTS},
        "stageVariables": {(name,): value for name, value in stage.variables.items()}}
    spec = compiled.specialised(constants, _WRITABLE)
    specs[(stage.name, method)] = (stage, ctx.deployment_api, spec,
                                   spec.typed_renderer(ROOT_NAMES),
                                   "stageVariables" in spec.reads)
    return spec


def _new_specs(route: Route) -> Specs | None:
    """An empty cache of specialised templates for a plan the route's memo will keep;
    ``None`` (no specialising) when the memo is full and the plan is computed for one
    request only, where building a copy would cost more than rendering."""
    return {} if len(route.memo) < MEMO_LIMIT else None


#: ``object.__new__``: :func:`_render` makes the roots without their ``__init__``.
_new_object = object.__new__


def _render(ctx: Context, compiled: Prepared, body: bytes, phase: str,
            fin: Finish | None, specs: Specs | None, overrides: Overrides | None
            ) -> tuple[bytes, Overrides | None]:
    """Render a request or response template; any failure is AWS's 500.  Returns the
    body and the request's overrides as the render left them (``overrides``: as the
    caller found them in the stash).

    ``phase`` ("request" or "response") only words the log line.  A template that does
    not parse reaches this point only under ``strict: false`` and answers 500 like one
    that fails to render.  With ``specs`` (the plan's cache), the template specialised
    for the request's route, stage and method renders (:func:`_specialised`).
    """
    if type(compiled) is not Template:  # (one test for the usual case)
        if isinstance(compiled, bytes):
            return compiled, overrides
        if isinstance(compiled, TemplateError):
            _failed(ctx, phase, compiled)
    found = None
    if specs is not None:
        # the copy made for this stage and method, found here (_specialised's first
        # lines, without its call), rendered by its kept typed_renderer; anything else
        # through _specialised and render_typed
        stage = ctx.stage
        found = specs.get((stage.name, ctx.method)) if stage is not None else None
        if found is None or found[0] is not stage or found[1] is not ctx.deployment_api \
                or (overrides is not None and overrides.custom):
            found = None
            compiled = _specialised(ctx, compiled, specs, overrides)
    # the typed roots apart, made here as template_roots makes them (it and
    # template_others written out: two calls less per render, twice per request)
    context = _new_object(ContextObject)
    context.ctx = ctx
    context.fin = fin
    context._overrides = overrides
    context._begun = False
    data = _new_object(InputObject)
    data.raw = body
    data.ctx = ctx
    data._parsed = MISSING
    data._params = None
    util = UTIL
    try:
        if found is not None:  # (the roots passed one by one: a *roots call is slower)
            text = found[3]({"stageVariables": dict(ctx.stage_variables)} if found[4]
                            else {}, context, data, util)
        else:
            text = compiled.render_typed(
                ROOT_NAMES, (context, data, util),
                {"stageVariables": dict(ctx.stage_variables)}
                if "stageVariables" in compiled.reads else {})
    except TemplateError as e:
        _failed(ctx, phase, e)
    # A lone surrogate (a JSON body may spell one as "\ud800") becomes '?', as Java's
    # UTF-8 encoder writes it.
    return text.encode("utf-8", "replace"), context._overrides


def _failed(ctx: Context, phase: str, error: TemplateError) -> NoReturn:
    """Log why the ``phase`` template failed; AWS's 500."""
    if isinstance(error, TemplateLimitError):
        log.error("({request_id}) Execution failed due to configuration error: the "
                  "{phase} mapping template exceeded a limit: {problem}",
                  request_id=ctx.request_id, phase=phase, problem=str(error))
    else:
        log.error("({request_id}) Execution failed due to configuration error: Unable to "
                  "transform {phase}: {problem}", request_id=ctx.request_id, phase=phase,
                  problem=str(error))
    raise ApiConfigurationError() from None


@hookimpl(tryfirst=True)
def map_request(ctx: Context, request: IntegrationRequest) -> IntegrationRequest | None:
    """Render the request template under the passthrough behaviour; apply overrides."""
    integration = ctx.integration
    if integration is None or integration.is_proxy:
        return None
    content_type = ctx.request.headers.get("content-type")
    route = ctx.route
    assert route is not None
    # the memo read here, the plan made by a helper: a lambda in this function would
    # make its locals closure cells on every call
    plan = route.memo.get(("mapping.request", content_type))
    if plan is None:
        plan = _request_plan_memo(ctx, route, integration, content_type)
    literal, source, compiled, binary_types, specs = plan
    if literal is not None:
        return _with_body(request, literal)
    if source is _UNSUPPORTED:
        raise UnsupportedMediaType()
    handling = integration.content_handling
    if binary_types or handling:
        is_binary = binary.matches_media_type(binary.first_type(content_type), binary_types)
        if binary.request_is_passed_as_binary(is_binary, handling):
            return None  # binary (or converted to binary) goes through untouched
        if is_binary:  # CONVERT_TO_TEXT: the template sees the base64 string
            request = _with_body(request, binary.encode(request.body))
            if source is _PASS:
                return request
    overrides = None
    if source is _PASS:
        body = request.body
    else:
        # No overrides yet: only this plugin's templates make them, and the request
        # template is the request's first (the pipeline maps a request once).
        body, overrides = _render(ctx, compiled, request.body, "request", None, specs, None)
    if handling == binary.CONVERT_TO_BINARY:
        body = _decoded(ctx, body, "request")
    if overrides is not None:
        return _apply_request_overrides(ctx, integration, request, body, overrides)
    if source is _PASS and body is request.body:
        return None
    return _with_body(request, body)


def _request_plan_memo(ctx: Context, route: Route, integration: Integration,
                       content_type: str | None) -> Any:
    """:func:`_request_plan`, kept in the route's memo."""
    return memoize(route, ("mapping.request", content_type),
                   lambda: _request_plan(ctx, route, integration, content_type))


def _request_plan(ctx: Context, route: Route, integration: Integration,
                  content_type: str | None
                  ) -> tuple[bytes | None, Any, Prepared | None, tuple[str, ...],
                             Specs | None]:
    """What a request with ``content_type`` needs, the same for the whole route: the
    literal body (when that is all), the template source (or :data:`_PASS`,
    :data:`_UNSUPPORTED`), the compiled template, the API's binary media types and the
    cache of its specialised copies."""
    api = ctx.api
    binary_types = api.binary_media_types if api is not None else ()
    literal = _literal_request(ctx, integration, content_type)
    source = _request_template(integration, content_type)
    if literal is not None or source is _PASS or source is _UNSUPPORTED:
        return literal, source, None, binary_types, None
    return None, source, _prepared(route, source), binary_types, _new_specs(route)


def _literal_request(ctx: Context, integration: Integration, content_type: str | None
                     ) -> bytes | None:
    """The request body when the template for ``content_type`` is a literal and no binary
    handling applies (the same on every request), else ``None``."""
    if integration.content_handling:
        return None
    source = _request_template(integration, content_type)
    if source is _PASS or source is _UNSUPPORTED:
        return None
    return _literal_body(ctx, source)


def _literal_body(ctx: Context, source: str | None) -> bytes | None:
    """``source`` compiled, when it is a literal template and the route's API has no
    binary media types (then it is the body on every request), else ``None``."""
    api = ctx.api
    if api is not None and api.binary_media_types:
        return None  # the route's API: the same for every request of the route
    route = ctx.route
    assert route is not None
    try:
        compiled = _template(route, source)
    except TemplateError:
        return None  # strict: false; the render path answers the 500
    return compiled if isinstance(compiled, bytes) else None


def _decoded(ctx: Context, body: bytes, phase: str) -> bytes:
    """``CONVERT_TO_BINARY``: the base64-decoded body; not base64 is AWS's 500."""
    try:
        return binary.decode(body)
    except ValueError as e:
        log.error("({request_id}) Execution failed due to configuration error: Unable to "
                  "convert the {phase} body to binary: {problem}",
                  request_id=ctx.request_id, phase=phase, problem=str(e))
        raise ApiConfigurationError() from None


#: Sentinels: the passthrough behaviour refuses this content type (415) / passes the body.
_UNSUPPORTED: Any = object()
_PASS: Any = object()


def _request_template(integration: Integration, content_type: str | None) -> Any:
    """The request template for ``content_type``, :data:`_PASS` to pass the body
    through, or :data:`_UNSUPPORTED` for a 415 (the §3.4 table)."""
    templates = integration.request_templates
    behavior = integration.passthrough_behavior
    if not templates:
        return _UNSUPPORTED if behavior == "NEVER" else _PASS
    ctype = _mime(content_type)
    if ctype in templates:
        return templates[ctype]
    if behavior == "WHEN_NO_MATCH":
        return _PASS
    return _UNSUPPORTED


def _with_body(request: IntegrationRequest, body: bytes) -> IntegrationRequest:
    """``attrs.evolve(request, body=body)`` (:meth:`IntegrationRequest.with_body`: this
    runs per request and ``evolve`` introspects the class every time)."""
    return request.with_body(body)


def _with_one_header(ctx: Context, integration: Integration, request: IntegrationRequest,
                     body: bytes, name: str, value: str) -> IntegrationRequest:
    """:func:`_apply_request_overrides` for one text header and nothing else.  The
    name is checked now (an illegal one is AWS's 500); the integration request's
    headers and extras with it are worked out only if something reads them
    (:meth:`IntegrationRequest.with_body_later`: a MOCK integration never does)."""
    if name.lower() in (_ILLEGAL_AWS_OVERRIDE_HEADERS if integration.type == "AWS"
                        else _ILLEGAL_OVERRIDE_HEADERS):
        _illegal_override(ctx, name)
    return request.with_body_later(body, _one_header, (name, value))


def _one_header(request: IntegrationRequest, header: tuple[str, str]
                ) -> tuple[Headers, Mapping[str, Any]]:
    """The headers and extras of ``request`` with one override ``header`` (name,
    value) applied, as :func:`_apply_request_overrides` makes them (its lines worked
    out when first read: ``Headers.with_set``)."""
    name, value = header
    override = {"header": {name: value}, "querystring": {}, "path": {}}
    if request.extras:
        extras = dict(request.extras)
        extras["request_override"] = override
    else:
        extras = {"request_override": override}
    return request.headers.with_set(name, value), MappingProxyType(extras)


def _apply_request_overrides(ctx: Context, integration: Integration,
                             request: IntegrationRequest, body: bytes, overrides: Overrides
                             ) -> IntegrationRequest:
    """The integration request with ``$context.requestOverride`` applied (they win over
    the static mappings).  The rendered overrides also travel in
    ``extras["request_override"]`` (``{"header": {...}, "querystring": {...}, "path":
    {...}}`` of strings) for integrations that build their request from mappings only."""
    wanted = overrides._request  # (Overrides.made()'s first, without its call)
    if wanted is None:
        pending = overrides.pending
        if pending is None:
            return _with_body(request, body)
        # one header set before any template read the maps (the usual): as the maps
        # would hold it, without making them
        if type(pending[1]) is str:
            return _with_one_header(ctx, integration, request, body, pending[0], pending[1])
        wanted = overrides.request
    header, query, path = wanted.get("header"), wanted.get("querystring"), wanted.get("path")
    if not query and not path and type(header) is OverrideMap and len(header) == 1:
        # the usual: one text header set, nothing else
        for name, value in header.items():
            if type(name) is str and type(value) is str:
                return _with_one_header(ctx, integration, request, body, name, value)
    header = _strings(header) if header else {}
    query = _strings(query) if query else {}
    path = _strings(path) if path else {}
    if not (header or query or path):
        return _with_body(request, body)
    headers = request.headers
    if header:
        illegal = _ILLEGAL_AWS_OVERRIDE_HEADERS if integration.type == "AWS" \
            else _ILLEGAL_OVERRIDE_HEADERS
        # each name replaces every line of that name (Headers.with_set in turn, in one
        # pass): the last spelling of a name wins, placed after the kept lines
        replaced: dict[str, tuple[str, str]] = {}
        for name, value in header.items():
            lname = name.lower()
            if lname in illegal:
                _illegal_override(ctx, name)
            replaced.pop(lname, None)
            replaced[lname] = (name, value)
        kept = []
        for line in headers.items:
            if line[0].lower() not in replaced:
                kept.append(line)
        kept.extend(replaced.values())
        headers = Headers(tuple(kept))
    pairs = request.query
    if query:
        pairs = (*[(k, v) for k, v in pairs if k not in query], *query.items())
    params = {**request.path_params, **path} if path else request.path_params
    # extras as their read-only view directly (IntegrationRequest keeps a
    # MappingProxyType as it is): a fresh dict nothing else holds
    extras = dict(request.extras) if request.extras else {}
    extras["request_override"] = {"header": header, "querystring": query, "path": path}
    return IntegrationRequest(request.method, request.uri, headers, pairs, params, body,
                              request.timeout, MappingProxyType(extras))


def _illegal_override(ctx: Context, name: str) -> NoReturn:
    """AWS's 500 for an override of a header no override may set."""
    log.error("({request_id}) Execution failed due to configuration error: "
              "requestOverride may not set the header {name}",
              request_id=ctx.request_id, name=name)
    raise ApiConfigurationError()


def _strings(value: Any) -> dict[str, str]:
    """An override map as text (keys and values rendered as templates render them)."""
    if not isinstance(value, dict):
        return {}
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            break
    else:  # all text already (the usual): a plain copy, without a comprehension
        return dict(value)
    return {k if type(k) is str else to_text(k): v if type(v) is str else to_text(v)
            for k, v in value.items()}


def _as_map(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


@lru_cache(maxsize=4096)
def _encoded(template: str | None) -> bytes:
    """A literal template's bytes, encoded once."""
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
    accept = ctx.request.headers.get("accept")
    # (as in map_request: no lambda here)
    plan = route.memo.get(("mapping.response", selection, accept))
    if plan is None:
        plan = _response_plan_memo(ctx, route, integration, selection, accept)
    static, chosen, template, compiled, status, binary_types, params, specs = plan
    # the request's overrides, read once for the whole phase
    overrides = ctx.stash.get(OVERRIDES_OR_NONE, None)
    if static is not None and overrides is None:
        # A literal template with no header mappings answers the same on every request
        # (unless a template set overrides): built once per route, selection and Accept.
        return static  # type: ignore[no-any-return]
    if chosen is None:
        log.error("({request_id}) Execution failed due to configuration error: No match for "
                  "output mapping and no default output mapping configured. Endpoint "
                  "Response Status Code: {status}", request_id=ctx.request_id,
                  status=integration_response.status)
        raise ApiConfigurationError()
    headers: list[tuple[str, str]] = []
    fin = (_FINISHES.get(integration_response.status) or _finish(integration_response.status)) \
        if template or params else None
    for name, source in params:
        assert fin is not None
        value = _response_source(source, ctx, integration_response, fin)
        if value is None:
            continue
        _add_header(headers, name, value)
    body = integration_response.body
    # (a bool, not the enum: an enum member read is ~70 ns, twice per templated response)
    decode = False
    payload_binary = False
    if binary_types or chosen.content_handling:
        payload_binary = binary.matches_media_type(
            binary.first_type(integration_response.headers.get("content-type")), binary_types)
        action = binary.response_action(
            payload_binary=payload_binary,
            accept_binary=binary.matches_media_type(binary.first_type(accept), binary_types),
            types_set=bool(binary_types), handling=chosen.content_handling)
        if action is binary.ResponseAction.ENCODE:
            body, payload_binary = binary.encode(body), False
        decode = action is binary.ResponseAction.DECODE
    if template:
        if payload_binary:
            log.error("({request_id}) Execution failed due to configuration error: a "
                      "response template cannot apply to a binary body",
                      request_id=ctx.request_id)
            raise ApiConfigurationError()
        body, overrides = _render(ctx, compiled, body, "response", fin, specs, overrides)
    if decode:
        body = _decoded(ctx, body, "response")
    if overrides is not None and overrides._response is not None:
        # (a response side no template read holds nothing to apply)
        status = _apply_response_overrides(overrides, status, headers)
    return Response(status, Headers(tuple(headers)) if headers else _NO_HEADERS, body)


#: Integration status -> the Finish templates and mappings read in the response phase
#: (nothing writes it there, so one per status is shared; statuses are 100-599).
_FINISHES: dict[int, Finish] = {}


def _finish(status: int) -> Finish:
    """The response phase's :class:`Finish` (``integration_status`` only), shared."""
    found = _FINISHES.get(status)
    if found is None:
        found = Finish(integration_status=status)
        if len(_FINISHES) < 1024:
            _FINISHES[status] = found
    return found


#: The headers of a method response that maps none (immutable, so shared).
_NO_HEADERS = Headers(())


def _response_plan_memo(ctx: Context, route: Route, integration: Integration,
                        selection: str, accept: str | None) -> Any:
    """:func:`_response_plan`, kept in the route's memo."""
    return memoize(route, ("mapping.response", selection, accept),
                   lambda: _response_plan(ctx, route, integration, selection, accept))


def _response_plan(ctx: Context, route: Route, integration: Integration, selection: str,
                   accept: str | None) -> tuple[Response | None,
                                                IntegrationResponseConfig | None,
                                                str | None, Prepared | None, int,
                                                tuple[str, ...], tuple[tuple[str, str], ...],
                                                Specs | None]:
    """What answering ``selection`` for ``accept`` needs, the same for the whole route:
    the static method response (:func:`_static_response`), the selected integration
    response, its template and compiled form, its status, the API's binary media
    types, its header mappings (method response header name, source) and the cache of
    the template's specialised copies."""
    api = ctx.api
    binary_types = api.binary_media_types if api is not None else ()
    chosen = select_integration_response(integration.responses, selection)
    if chosen is None:
        return None, None, None, None, 0, binary_types, (), None
    template = _pick_template(chosen.response_templates, accept)
    compiled = _prepared(route, template) if template else None
    params = tuple((key[len("method.response.header."):], source)
                   for key, source in chosen.response_parameters.items())
    return (_static_response(ctx, integration, selection, accept), chosen, template,
            compiled, int(chosen.status_code), binary_types, params,
            _new_specs(route) if compiled is not None else None)


def _static_response(ctx: Context, integration: Integration, selection: str,
                     accept: str | None) -> Response | None:
    """The method response when nothing in it depends on the request, else ``None``.

    That is: the selected integration response maps no headers, no binary handling
    applies, and its template (chosen by ``accept``) is a non-empty literal, so the body
    does not depend on the integration's body either.
    """
    chosen = select_integration_response(integration.responses, selection)
    if chosen is None or chosen.response_parameters or chosen.content_handling:
        return None
    template = _pick_template(chosen.response_templates, accept)
    body = _literal_body(ctx, template) if template else None
    if body is None:
        return None
    return Response(status=int(chosen.status_code), headers=Headers(()), body=body)


def _add_header(headers: list[tuple[str, str]], name: str, value: str) -> None:
    """Add a mapped method-response header with AWS's remapping (§3.7)."""
    lname = name.lower()
    if lname == "transfer-encoding":
        return
    if lname in REMAPPED_RESPONSE_HEADERS:
        name = f"x-amzn-Remapped-{name}"
    if not value.isascii():  # no lone surrogates from JSON or templates on the wire
        value = value.encode("utf-8", "replace").decode("utf-8")
    headers.append((name, value))


def _apply_response_overrides(overrides: Overrides, status: int,
                              headers: list[tuple[str, str]]) -> int:
    """``$context.responseOverride``: its headers replace mapped ones of the same name;
    its status wins when it is an integer from 100 to 599 (else it is ignored)."""
    _request, wanted = overrides.made()
    if wanted is None:
        return status
    for name, value in _as_map(wanted.get("header")).items():
        if value is None:
            continue
        text = to_text(name)
        lname = text.lower()
        headers[:] = [(k, v) for k, v in headers
                      if k.lower() != lname and k.lower() != f"x-amzn-remapped-{lname}"]
        _add_header(headers, text, to_text(value))
    wanted_status = wanted.get("status")
    if isinstance(wanted_status, int) and not isinstance(wanted_status, bool) \
            and 100 <= wanted_status <= 599:
        return wanted_status
    return status


def _response_source(source: str, ctx: Context, integration_response: IntegrationResponse,
                     fin: Finish) -> str | None:
    if source.startswith("integration.response.header."):
        return integration_response.headers.get(source[len("integration.response.header."):])
    if source.startswith("integration.response.multivalueheader."):
        values = integration_response.headers.get_all(
            source[len("integration.response.multivalueheader."):])
        return ",".join(values) if values else None
    if source == "integration.response.body":
        return integration_response.body.decode("utf-8", "replace")
    if source.startswith("integration.response.body."):
        return _body_value(source[len("integration.response.body."):], integration_response)
    return resolve_parameter(source, ctx, fin)


def _body_value(path: str, integration_response: IntegrationResponse) -> str | None:
    """``integration.response.body.a.b``: a JSONPath into the body; strings as they are,
    other values as JSON.  A Lambda error's ``errorMessage`` is itself JSON-decoded when
    the path goes into it (§3.8, handle-errors-in-lambda-integration)."""
    try:
        document = parse_json(integration_response.body.decode("utf-8", "replace"))
        first, _, rest = path.partition(".")
        if (rest and first == "errorMessage" and isinstance(document, dict)
                and isinstance(document.get("errorMessage"), str)):
            document = dict(document)
            document["errorMessage"] = json.loads(document["errorMessage"])
        value = json_path(document, "$." + path)
    except (TemplateError, ValueError, RecursionError):
        return None
    if value is None:
        return None
    return value if isinstance(value, str) else to_json(value)
