"""HTTP API integration ``responseParameters`` (aws-apigw-spec.md §6.16).

Keyed by the status code the backend answered, each entry is an ordered map of
``{append|overwrite|remove}:header.NAME`` and ``overwrite:statuscode`` to a value:
``$response.header.NAME``, ``$response.body.JSONPATH``, ``$context.NAME``,
``$stageVariables.NAME``, static text or text with ``${...}`` parts.  Values compile with
the request mapping's compiler (:func:`twistgw_http.params._v2_value`), with the
response's sources in place of the request's, and header actions are the request side's.

It serves ``HTTP_PROXY`` (this plugin) and Lambda ``AWS_PROXY`` integrations (the Lambda
plugin imports it, as it already imports :mod:`twistgw_http.params`): the value compiler
needs the mapping plugin's JSONPath, so it cannot move into the core.

Choices where AWS documents nothing (docs/http.rst says them too): status keys and static
``overwrite:statuscode`` values must be 200-599 (CloudFormation's range) and are refused
at load time otherwise; a dynamic status that does not come out as an integer in that
range fails the request with 500 (AWS fails a request whose mapping cannot be applied
with 500, §3.2); ``$response.body`` reads at most the first 100 KB like ``$request.body``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger
from twistgw_mapping.namespaces import json_path

from twistgw import ApiConfigurationError, Headers, StashKey
from twistgw.vtl import TemplateRenderError

from .params import (
    HTTP_API_BODY_LIMIT,
    HTTP_API_RESERVED,
    HTTP_API_RESERVED_PREFIXES,
    Action,
    Resolver,
    _apply_action,
    _as_text,
    _joined,
    _literal,
    _v2_expression,
    _v2_value,
    per_integration,
    refuse_first,
)

if TYPE_CHECKING:
    from twistgw import Context, IntegrationResponse, Response
    from twistgw.definition import Integration

__all__ = ["CompiledResponseParameters", "compile_response_parameters",
           "check_response_parameters", "apply_response_parameters"]

log = Logger()

_STATUS_KEY_RE = re.compile(r"^[2-5][0-9][0-9]$")
_HEADER_KEY_RE = re.compile(r"^(append|overwrite|remove):header\.([!#$%&'*+.^_`|~0-9A-Za-z-]+)$")
_NOT_JSON = object()
#: The integration response being mapped, for the ``$response.*`` resolvers (they get
#: only the context, like the request side's).
_CURRENT: StashKey[IntegrationResponse] = StashKey("twistgw_http.response_params.current")
_BODY_JSON: StashKey[Any] = StashKey("twistgw_http.response_params.body_json")


def _response_document(ctx: Context) -> Any:
    """The integration response body parsed as JSON, once per request (``_NOT_JSON``
    when it is not JSON or longer than the 100 KB AWS reads)."""
    found = ctx.stash.get(_BODY_JSON, None)
    if found is None:
        body = ctx.stash[_CURRENT].body
        found = _NOT_JSON
        if body and len(body) <= HTTP_API_BODY_LIMIT:
            try:
                found = json.loads(body)
            except ValueError:
                pass
        ctx.stash[_BODY_JSON] = found
    return found


def _response_expression(expr: str) -> Resolver | str:
    """A resolver for one ``$``-expression of a response mapping (without the ``$``)."""
    if expr.startswith("response.header.") and len(expr) > len("response.header."):
        name = expr[len("response.header."):]
        return lambda ctx: _joined(ctx.stash[_CURRENT].headers.get_all(name))
    if expr.startswith("response.body.") and len(expr) > len("response.body."):
        path = expr[len("response.body."):]
        try:
            json_path({}, path)
        except TemplateRenderError as e:
            return f"{e}; use dotted names and [index] ($response.body.items[0].id)"

        def body_path(ctx: Context) -> list[str]:
            document = _response_document(ctx)
            return [] if document is _NOT_JSON else _as_text(json_path(document, path))
        return body_path
    if expr.startswith(("context.", "stageVariables.")):
        return _v2_expression(expr)
    return (f"unknown source ${expr}; response mappings take $response.header.NAME, "
            "$response.body.JSONPATH, $context.NAME, $stageVariables.NAME, a static value, "
            "or ${...} inside text")


def _status_problem(status: str) -> str | None:
    if _STATUS_KEY_RE.match(status) is None:
        return (f"{status!r} is not a backend status code; key response mappings by a "
                "status code from 200 to 599 (\"500\")")
    return None


def _action_problem(key: str, value: str) -> str | None:
    """Why ``key: value`` cannot be served, or ``None``."""
    if key == "overwrite:statuscode":
        if "$" not in value and _status_problem(value.strip()) is not None:
            return f"{value!r} is not a status code from 200 to 599"
        found = _v2_value(value, _response_expression)
        return found if isinstance(found, str) else None
    m = _HEADER_KEY_RE.match(key)
    if m is None:
        return ("response mapping keys look like {append|overwrite|remove}:header.NAME or "
                "overwrite:statuscode")
    name = m.group(2).lower()
    if name in HTTP_API_RESERVED or name.startswith(HTTP_API_RESERVED_PREFIXES):
        return (f"{m.group(2)} is a reserved header HTTP APIs cannot map "
                "(aws-apigw-spec.md §6.16); remove this mapping")
    if m.group(1) == "remove":
        return None
    found = _v2_value(value, _response_expression)
    return found if isinstance(found, str) else None


def _problems(parameters: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str]]:
    """``(key path under responseParameters, problem)`` for every invalid entry."""
    problems: list[tuple[str, str]] = []
    for status, actions in parameters.items():
        found = _status_problem(status)
        if found is not None:
            problems.append((status, found))
            continue
        for key, value in actions.items():
            found = _action_problem(key, value)
            if found is not None:
                problems.append((f"{status}.{key}", found))
    return problems


@attrs.frozen
class CompiledResponseParameters:
    """An integration's response mappings: backend status -> actions in order."""

    by_status: Mapping[int, tuple[Action, ...]] = attrs.field(factory=dict)
    #: Set when a mapping is invalid but ``strict: false`` let it through: every request
    #: then fails with 500, as AWS fails requests whose mapping it cannot apply.
    broken: str | None = None


def _compile(parameters: Mapping[str, Mapping[str, str]]) -> CompiledResponseParameters:
    problems = _problems(parameters)
    if problems:
        return CompiledResponseParameters(
            broken="; ".join(f"{k}: {p}" for k, p in problems))
    by_status: dict[int, tuple[Action, ...]] = {}
    for status, actions in parameters.items():
        compiled: list[Action] = []
        for key, value in actions.items():
            if key == "overwrite:statuscode":
                verb, kind, name = "overwrite", "statuscode", ""
            else:
                m = _HEADER_KEY_RE.match(key)
                assert m is not None
                verb, kind, name = m.group(1), "header", m.group(2)
            found = _literal("") if verb == "remove" else _v2_value(value, _response_expression)
            assert not isinstance(found, str)
            compiled.append((verb, kind, name, found))
        by_status[int(status)] = tuple(compiled)
    return CompiledResponseParameters(by_status=by_status)


_by_integration: dict[int, tuple[Integration, CompiledResponseParameters]] = {}


def _compile_integration(integration: Integration) -> CompiledResponseParameters:
    return _compile(integration.response_parameters)


def compile_response_parameters(integration: Integration) -> CompiledResponseParameters:
    """The compiled ``responseParameters`` of ``integration``, cached per integration."""
    return per_integration(_by_integration, integration, _compile_integration)


def check_response_parameters(integration: Integration) -> None:
    """Raise :class:`ConfigError` for the first invalid response mapping (a route check)."""
    refuse_first(integration, "responseParameters", _problems(integration.response_parameters))


def _fail(ctx: Context, message: str) -> ApiConfigurationError:
    log.error("({request_id}) Execution failed due to configuration error: {message}",
              request_id=ctx.request_id, message=message)
    return ApiConfigurationError()


def apply_response_parameters(ctx: Context, integration: Integration,
                              integration_response: IntegrationResponse,
                              response: Response) -> Response | None:
    """``response`` with the mappings for the backend's status applied (``None`` when
    none is keyed by it); raises a 500 when the mapping cannot be applied."""
    compiled = compile_response_parameters(integration)
    if compiled.broken is not None:
        raise _fail(ctx, f"invalid responseParameters: {compiled.broken}")
    actions = compiled.by_status.get(integration_response.status)
    if not actions:
        return None
    ctx.stash[_CURRENT] = integration_response
    headers = list(response.headers.items)
    status = response.status
    for action in actions:
        if action[1] != "statuscode":
            _apply_action(action, ctx, headers, [])
            continue
        value = "".join(action[3](ctx)[-1:]).strip()
        if _STATUS_KEY_RE.match(value) is None:
            raise _fail(ctx, f"responseParameters set the status code to {value[:64]!r}, "
                             "not a status code from 200 to 599")
        status = int(value)
    return attrs.evolve(response, status=status, headers=Headers(tuple(headers)))
