"""Gateway responses: what the client gets when the gateway itself says no.

This module is a core plugin: its ``trylast`` ``handle_error`` implementation always
answers, so any plugin may replace the rendering for some errors and leave the rest here.

REST APIs follow aws-apigw-spec.md §4.1-§4.3: the error's type picks the API's custom
response if ``x-amazon-apigateway-gateway-responses`` has one, else ``DEFAULT_4XX`` /
``DEFAULT_5XX``, else AWS's default; templates are *simple substitution* of ``$context``
and ``$stageVariables`` (not VTL), the default being ``{"message":$context.error.
messageString}``.  HTTP APIs have fixed bodies and no customisation (§4.4).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from .errors import GATEWAY_RESPONSE_TYPES, GatewayError, StageNotFound
from .hookspecs import hookimpl
from .models import Context, Headers, Response
from .variables import Finish, getter_for

if TYPE_CHECKING:
    from .definition import GatewayResponseConfig

__all__ = ["handle_error", "render", "render_simple_template", "DEFAULT_TEMPLATE",
           "http_api_error", "resolve_parameter"]

DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'

_VAR_RE = re.compile(
    r"\$(?:\{(context|stageVariables)\.([A-Za-z0-9_.]+)\}|(context|stageVariables)"
    r"\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*))"
)

Piece = str | Callable[[Context, Finish], str]


def _stringify(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _stage_variable_piece(name: str) -> Callable[[Context, Finish], str]:
    return lambda c, f: _stringify(c.stage_variables.get(name))


def _context_piece(getter: Callable[[Context, Finish | None], object]
                   ) -> Callable[[Context, Finish], str]:
    return lambda c, f: _stringify(getter(c, f))


@lru_cache(maxsize=512)
def _compile(template: str) -> tuple[Piece, ...]:
    """Split a template into literal text and variable getters (cached per template)."""
    pieces: list[Piece] = []
    pos = 0
    for m in _VAR_RE.finditer(template):
        if m.start() > pos:
            pieces.append(template[pos:m.start()])
        ns = m.group(1) or m.group(3)
        name = m.group(2) or m.group(4)
        if ns == "stageVariables":
            pieces.append(_stage_variable_piece(name))
        else:
            getter = getter_for(name)
            pieces.append(_context_piece(getter) if getter is not None else "")
        pos = m.end()
    if pos < len(template):
        pieces.append(template[pos:])
    return tuple(pieces)


def render_simple_template(template: str, ctx: Context, fin: Finish) -> str:
    """Render a gateway-response template: ``$context.x`` / ``$stageVariables.x`` only."""
    return "".join(p if isinstance(p, str) else p(ctx, fin) for p in _compile(template))


def resolve_parameter(source: str, ctx: Context, fin: Finish) -> str | None:
    """Resolve a gateway-response ``responseParameters`` source expression."""
    if len(source) >= 2 and source[0] == "'" and source[-1] == "'":
        return source[1:-1]
    if source.startswith("stageVariables."):
        return ctx.stage_variables.get(source[len("stageVariables."):])
    if source.startswith("context."):
        getter = getter_for(source[len("context."):])
        value = getter(ctx, fin) if getter else None
        return None if value is None else _stringify(value)
    if source.startswith("method.request."):
        kind, _, name = source[len("method.request."):].partition(".")
        req = ctx.request
        if kind == "header":
            return req.headers.get(name)
        if kind == "multivalueheader":
            values = req.headers.get_all(name)
            return ",".join(values) if values else None
        if kind == "querystring":
            found = [v for k, v in req.query if k == name]
            return found[-1] if found else None
        if kind == "multivaluequerystring":
            found = [v for k, v in req.query if k == name]
            return ",".join(found) if found else None
        if kind == "path":
            return ctx.path_params.get(name)
    return None


def _custom(ctx: Context, error: GatewayError) -> GatewayResponseConfig | None:
    api = ctx.api
    if api is None or not api.gateway_responses or isinstance(error, StageNotFound):
        return None
    responses = api.gateway_responses
    found = responses.get(error.response_type)
    if found is not None:
        return found
    default_status = GATEWAY_RESPONSE_TYPES[error.response_type].status
    family = "DEFAULT_4XX" if default_status < 500 else "DEFAULT_5XX"
    return responses.get(family)


def _pick_template(templates: Mapping[str, str], accept: str | None) -> str:
    if not templates:
        return DEFAULT_TEMPLATE
    if accept:
        first = accept.split(",")[0].split(";")[0].strip().lower()
        if first in templates:
            return templates[first]
    if "application/json" in templates:
        return templates["application/json"]
    return next(iter(templates.values()))


def render(ctx: Context, error: GatewayError) -> Response:
    """The REST gateway response for ``error`` with the API's customisation applied."""
    fin = Finish(error=error, status=error.status)
    custom = _custom(ctx, error)
    status = error.status
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    template = DEFAULT_TEMPLATE
    if custom is not None:
        if custom.status_code is not None:
            status = custom.status_code
        fin.status = status
        prefix = "gatewayresponse.header."
        for key, source in custom.response_parameters.items():
            if not key.startswith(prefix):
                # gatewayresponse.path / .querystring targets have nothing to set on a
                # response; AWS accepts and ignores them, so do we.
                continue
            value = resolve_parameter(source, ctx, fin)
            if value is not None:
                headers.append((key[len(prefix):], value))
        template = _pick_template(custom.response_templates, ctx.request.headers.get("accept"))
        if any(k.lower() == "content-type" for k, _ in headers[1:]):
            del headers[0]  # a mapped Content-Type replaces the default one
    headers.append(("x-amzn-ErrorType", error.error_type))
    headers.extend(error.headers)
    body = render_simple_template(template, ctx, fin)
    return Response(status=status, headers=Headers(tuple(headers)), body=body.encode("utf-8"))


#: HTTP API error answers by status class (§4.4): no customisation, fixed messages.
def http_api_error(error: GatewayError) -> Response:
    """The HTTP API response for ``error`` (§4.4)."""
    rt = error.response_type
    if rt in ("MISSING_AUTHENTICATION_TOKEN", "RESOURCE_NOT_FOUND"):
        status, message = 404, "Not Found"
    elif rt == "UNAUTHORIZED":
        status, message = 401, "Unauthorized"
    elif error.status == 403:
        status, message = 403, "Forbidden"
    elif rt in ("THROTTLED", "QUOTA_EXCEEDED"):
        status, message = 429, "Too Many Requests"
    elif rt == "INTEGRATION_TIMEOUT":
        status, message = 503, "Service Unavailable"
    elif error.status >= 500:
        status, message = 500, "Internal Server Error"
    else:
        status, message = error.status, error.message or ""
    body = json.dumps({"message": message}, separators=(",", ":")).encode("utf-8")
    headers = Headers((("Content-Type", "application/json"), *error.headers))
    return Response(status=status, headers=headers, body=body)


@hookimpl(trylast=True)
def handle_error(ctx: Context, error: GatewayError) -> Response:
    """Builtin: render the AWS gateway response for ``error``."""
    if ctx.deployment_api is not None and ctx.deployment_api.config.type == "HTTP":
        return http_api_error(error)
    return render(ctx, error)
