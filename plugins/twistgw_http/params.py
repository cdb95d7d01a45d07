"""``requestParameters`` for HTTP and HTTP_PROXY integrations (aws-apigw-spec.md §3.2).

A mapping ``integration.request.{path|querystring|header}.NAME`` <- source is compiled once
per integration into a list of (target kind, name, resolver); at request time each
resolver returns the values it found (none: the target is not set, as on AWS).

HTTP APIs use another syntax (§6.16): ``{append|overwrite|remove}:{header|querystring}.NAME``
and ``overwrite:path`` with ``$request.*``, ``$context.*``, ``$stageVariables.*``, static
values or ``${...}`` parts in text; those compile into ordered actions applied to the
request as it would otherwise be sent.

Refusals happen at load time through :meth:`~twistgw.registry.Registry.add_route_check`:
an unknown key or source, an unsupported JSONPath, or a target header AWS forbids.  AWS
itself accepts those and then fails every request with 500; refusing before serving is
the operator-friendly version, and under ``strict: false`` the request-time 500 is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from twistgw_mapping.namespaces import json_path

from twistgw import ConfigError, StashKey
from twistgw.variables import getter_for
from twistgw.vtl import TemplateRenderError

if TYPE_CHECKING:
    from twistgw import Context
    from twistgw.definition import Integration

__all__ = ["CompiledParameters", "compile_parameters", "check_parameters",
           "ILLEGAL_TARGET_HEADERS"]

#: Integration request headers a mapping may not target (§3.2): AWS fails every request.
ILLEGAL_TARGET_HEADERS = frozenset(h.lower() for h in (
    "Content-Length", "Transfer-Encoding", "X-Amzn-Trace-Id", "X-Amzn-Apigateway-Api-Id"))

_KEY_RE = re.compile(r"^integration\.request\.(path|querystring|header)\.([a-zA-Z0-9._$-]+)$")
_METHOD_RE = re.compile(
    r"^method\.request\.(path|querystring|multivaluequerystring|header|multivalueheader)"
    r"\.(.+)$")

Resolver = Callable[["Context"], list[str]]


def _literal(value: str) -> Resolver:
    values = [value]
    return lambda ctx: values


def _stage_variable(name: str) -> Resolver:
    def resolve(ctx: Context) -> list[str]:
        value = ctx.stage_variables.get(name)
        return [] if value is None else [value]
    return resolve


def _context(name: str) -> Resolver | None:
    getter = getter_for(name)
    if getter is None:
        return None

    def resolve(ctx: Context) -> list[str]:
        value = getter(ctx, None)
        if value is None:
            return []
        if isinstance(value, bool):
            return ["true" if value else "false"]
        return [str(value)]
    return resolve


def _header_values(ctx: Context, name: str) -> list[str]:
    # AWS looks the header up by the name as declared, case-sensitively (§3.2 [EMU]); the
    # HTTP layer keeps the client's spelling, so compare spellings exactly, then fall back
    # to a case-insensitive match (HTTP names are case-insensitive and clients vary).
    items = ctx.request.headers.items
    exact = [v for k, v in items if k == name]
    return exact or ctx.request.headers.get_all(name)


def _method(kind: str, name: str) -> Resolver:
    if kind == "path":
        def path(ctx: Context) -> list[str]:
            value = ctx.path_params.get(name)
            return [] if value is None else [value]
        return path
    if kind == "querystring":
        def query(ctx: Context) -> list[str]:
            found = [v for k, v in ctx.request.query if k == name]
            return found[-1:]
        return query
    if kind == "multivaluequerystring":
        return lambda ctx: [v for k, v in ctx.request.query if k == name]
    if kind == "header":
        return lambda ctx: _header_values(ctx, name)[-1:]

    def multi_header(ctx: Context) -> list[str]:
        values = _header_values(ctx, name)
        return [",".join(values)] if values else []
    return multi_header


_BODY_JSON: StashKey[Any] = StashKey("twistgw_http.body_json")
_NOT_JSON = object()


def _whole_body(ctx: Context) -> list[str]:
    body = ctx.request.body
    return [body.decode("utf-8", "replace")] if body else []


def _body_document(ctx: Context, limit: int | None) -> Any:
    """The method request body parsed as JSON, once per request (``_NOT_JSON`` if not,
    or if it is longer than ``limit``: a body truncated there would not parse)."""
    body = ctx.request.body
    if not body or (limit is not None and len(body) > limit):
        return _NOT_JSON
    found = ctx.stash.get(_BODY_JSON, None)
    if found is None:
        try:
            found = json.loads(body)
        except ValueError:
            found = _NOT_JSON
        ctx.stash[_BODY_JSON] = found
    return found


def _as_text(value: Any) -> list[str]:
    """A JSON value as a mapped parameter: strings as they are, the rest as JSON."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [json.dumps(value, separators=(",", ":"), ensure_ascii=False)]


def _body_path(path: str, limit: int | None = None) -> Resolver | str:
    """``method.request.body.PATH`` (a JSONPath without the leading ``$.``)."""
    try:
        json_path({}, path)
    except TemplateRenderError as e:
        return f"{e}; use dotted names and [index] (method.request.body.pets[0].name)"

    def resolve(ctx: Context) -> list[str]:
        document = _body_document(ctx, limit)
        if document is _NOT_JSON:
            return []
        return _as_text(json_path(document, path))
    return resolve


def _resolver(source: str) -> Resolver | str:
    """A resolver for ``source``, or the reason it cannot be served."""
    if len(source) >= 2 and source[0] == "'" and source[-1] == "'":
        return _literal(source[1:-1])
    if source.startswith("stageVariables.") and len(source) > len("stageVariables."):
        return _stage_variable(source[len("stageVariables."):])
    if source.startswith("context."):
        found = _context(source[len("context."):])
        return found if found is not None else f"unknown context variable {source!r}"
    if source == "method.request.body":
        return _whole_body
    if source.startswith("method.request.body."):
        return _body_path(source[len("method.request.body."):])
    m = _METHOD_RE.match(source)
    if m is not None:
        return _method(m.group(1), m.group(2))
    return (f"unknown source {source!r}; use method.request.{{path|querystring|"
            "multivaluequerystring|header|multivalueheader}.NAME, stageVariables.NAME, "
            "context.NAME or a 'quoted literal'")


# -- HTTP API parameter mapping (aws-apigw-spec.md §6.16) ---------------------------------

_ACTION_KEY_RE = re.compile(r"^(append|overwrite|remove):(header|querystring)\.(.+)$")
#: API Gateway's payload limit for ``$request.body`` JSONPath on HTTP APIs: the body is
#: truncated there, so a longer JSON body no longer parses and the value is not set.
HTTP_API_BODY_LIMIT = 100 * 1024
#: Headers HTTP API mappings may not touch (§6.16), exact names and prefixes.
HTTP_API_RESERVED = frozenset(h.lower() for h in (
    "Authorization", "Connection", "Content-Encoding", "Content-Length", "Content-Location",
    "Forwarded", "Keep-Alive", "Origin", "Proxy-Authenticate", "Proxy-Authorization", "TE",
    "Trailers", "Transfer-Encoding", "Upgrade", "X-Forwarded-For", "X-Forwarded-Host",
    "X-Forwarded-Proto", "Via"))
HTTP_API_RESERVED_PREFIXES = ("access-control-", "apigw-", "x-amz-", "x-amzn-")
_TEMPLATE_RE = re.compile(r"\$\{([^}]*)\}")


def _joined(values: list[str]) -> list[str]:
    return [",".join(values)] if values else []


def _v2_expression(expr: str) -> Resolver | str:
    """A resolver for one ``$``-expression of an HTTP API mapping (without the ``$``)."""
    if expr.startswith("request.header.") and len(expr) > len("request.header."):
        name = expr[len("request.header."):]
        return lambda ctx: _joined(ctx.request.headers.get_all(name))
    if expr.startswith("request.querystring.") and len(expr) > len("request.querystring."):
        name = expr[len("request.querystring."):]
        return lambda ctx: _joined([v for k, v in ctx.request.query if k == name])
    if expr.startswith("request.body.") and len(expr) > len("request.body."):
        return _body_path(expr[len("request.body."):], HTTP_API_BODY_LIMIT)
    if expr == "request.path":
        return lambda ctx: [ctx.path] if ctx.path else []
    if expr.startswith("request.path.") and len(expr) > len("request.path."):
        name = expr[len("request.path."):]

        def path_param(ctx: Context) -> list[str]:
            value = ctx.path_params.get(name)
            return [] if value is None else [value]
        return path_param
    if expr.startswith("context."):
        found = _context(expr[len("context."):])
        return found if found is not None else f"unknown context variable ${expr}"
    if expr.startswith("stageVariables.") and len(expr) > len("stageVariables."):
        return _stage_variable(expr[len("stageVariables."):])
    return (f"unknown source ${expr}; use $request.header.NAME, $request.querystring.NAME, "
            "$request.body.JSONPATH, $request.path, $request.path.NAME, $context.NAME, "
            "$stageVariables.NAME, a static value, or ${...} inside text")


def _v2_value(value: str,
              expression: Callable[[str], Resolver | str] = _v2_expression
              ) -> Resolver | str:
    """A resolver for an HTTP API mapping value: static text, one ``$expression``, or
    text with ``${expression}`` parts (a missing part is empty).  ``expression`` compiles
    one expression: the request's sources by default, the response's for
    ``responseParameters`` (:mod:`twistgw_http.response_params`)."""
    if "${" in value:
        pieces: list[str | Resolver] = []
        pos = 0
        for m in _TEMPLATE_RE.finditer(value):
            if m.start() > pos:
                pieces.append(value[pos:m.start()])
            found = expression(m.group(1))
            if isinstance(found, str):
                return found
            pieces.append(found)
            pos = m.end()
        if pos < len(value):
            pieces.append(value[pos:])

        def template(ctx: Context) -> list[str]:
            return ["".join(p if isinstance(p, str) else "".join(p(ctx)[-1:])
                            for p in pieces)]
        return template
    if value.startswith("$"):
        return expression(value[1:])
    return _literal(value)


def _v2_problem(key: str, source: str) -> str | None:
    if key == "overwrite:path":
        found = _v2_value(source)
        if isinstance(found, str):
            return found
        if not source.startswith(("$", "/")):
            return "the new path must start with '/'"
        return None
    m = _ACTION_KEY_RE.match(key)
    if m is None:
        return ("HTTP API keys look like {append|overwrite|remove}:{header|querystring}.NAME "
                "or overwrite:path")
    if m.group(2) == "header":
        name = m.group(3).lower()
        if name in HTTP_API_RESERVED or name.startswith(HTTP_API_RESERVED_PREFIXES):
            return (f"{m.group(3)} is a reserved header HTTP APIs cannot map "
                    "(aws-apigw-spec.md §6.16); remove this mapping")
    if m.group(1) == "remove":
        return None  # the value is not used
    found = _v2_value(source)
    return found if isinstance(found, str) else None


Action = tuple[str, str, str, Resolver]
"""``(append|overwrite|remove, header|querystring|path, name, resolver)``."""


def _apply_action(action: Action, ctx: Context, headers: list[tuple[str, str]],
                  query: list[tuple[str, str]]) -> str | None:
    verb, kind, name, resolve = action
    if kind == "path":
        values = resolve(ctx)
        return values[-1] if values else None
    if kind == "header":
        lname = name.lower()
        existing = [v for k, v in headers if k.lower() == lname]
        if verb == "append":
            values = resolve(ctx)
            if values:
                headers[:] = [(k, v) for k, v in headers if k.lower() != lname]
                headers.append((name, ",".join([*existing, *values])))
            return None
        headers[:] = [(k, v) for k, v in headers if k.lower() != lname]
        if verb == "overwrite":
            headers.extend((name, v) for v in resolve(ctx)[-1:])
        return None
    if verb == "append":
        query.extend((name, v) for v in resolve(ctx))
        return None
    query[:] = [(k, v) for k, v in query if k != name]
    if verb == "overwrite":
        query.extend((name, v) for v in resolve(ctx)[-1:])
    return None


@attrs.frozen
class CompiledParameters:
    """An integration's mappings, ready to apply: ``(kind, name, resolver)`` in order."""

    mappings: tuple[tuple[str, str, Resolver], ...] = ()
    #: HTTP API mappings (``overwrite:header.X`` ...), applied in order by
    #: :meth:`apply_actions`.
    actions: tuple[Action, ...] = ()
    #: Set when a mapping is invalid but was let through by ``strict: false``: every
    #: request then fails with 500 like AWS does.
    broken: str | None = None

    def apply(self, ctx: Context) -> tuple[dict[str, str], list[tuple[str, str]],
                                           list[tuple[str, str]]]:
        """``(path values, query pairs, header pairs)`` the mappings produce for ``ctx``."""
        path: dict[str, str] = {}
        query: list[tuple[str, str]] = []
        headers: list[tuple[str, str]] = []
        for kind, name, resolve in self.mappings:
            values = resolve(ctx)
            if not values:
                continue
            if kind == "path":
                path[name] = values[-1]
            elif kind == "querystring":
                query.extend((name, v) for v in values)
            else:
                headers.append((name, ",".join(values)))
        return path, query, headers

    def apply_actions(self, ctx: Context, headers: list[tuple[str, str]],
                      query: tuple[tuple[str, str], ...]
                      ) -> tuple[list[tuple[str, str]], tuple[tuple[str, str], ...],
                                 str | None]:
        """Apply the HTTP API mappings to what would be sent: ``(headers, query, new
        path or None)``."""
        headers = list(headers)
        pairs = list(query)
        path: str | None = None
        for action in self.actions:
            found = _apply_action(action, ctx, headers, pairs)
            if found is not None:
                path = found
        return headers, tuple(pairs), path


def _problems(parameters: Mapping[str, str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    styles = {":" in key.split(".", 1)[0] for key in parameters}
    if len(styles) > 1:
        return [(next(iter(parameters)), "mixes REST keys (integration.request.*) with HTTP "
                                         "API keys (overwrite:, append:, remove:); use one")]
    for key, source in parameters.items():
        if ":" in key.split(".", 1)[0]:
            found = _v2_problem(key, source)
            if found is not None:
                problems.append((key, found))
            continue
        m = _KEY_RE.match(key)
        if m is None:
            problems.append((key, "keys must look like integration.request.{path|querystring|"
                                  "header}.NAME (NAME of letters, digits, '.', '_', '$', '-')"))
            continue
        if m.group(1) == "header" and m.group(2).lower() in ILLEGAL_TARGET_HEADERS:
            problems.append((key, f"API Gateway does not allow mapping to the {m.group(2)} "
                                  "header (every request would fail with 500); remove this "
                                  "mapping"))
            continue
        found_resolver = _resolver(source)
        if isinstance(found_resolver, str):
            problems.append((key, found_resolver))
    return problems


@lru_cache(maxsize=4096)
def _compile(items: tuple[tuple[str, str], ...]) -> CompiledParameters:
    problems = _problems(dict(items))
    if problems:
        return CompiledParameters(broken="; ".join(f"{k}: {p}" for k, p in problems))
    mappings: list[tuple[str, str, Resolver]] = []
    actions: list[Action] = []
    for key, source in items:
        if key == "overwrite:path":
            found = _v2_value(source)
            assert not isinstance(found, str)
            actions.append(("overwrite", "path", "", found))
            continue
        action = _ACTION_KEY_RE.match(key)
        if action is not None:
            found = _literal("") if action.group(1) == "remove" else _v2_value(source)
            assert not isinstance(found, str)
            actions.append((action.group(1), action.group(2), action.group(3), found))
            continue
        m = _KEY_RE.match(key)
        assert m is not None
        found = _resolver(source)
        assert not isinstance(found, str)
        mappings.append((m.group(1), m.group(2), found))
    return CompiledParameters(mappings=tuple(mappings), actions=tuple(actions))


_T = TypeVar("_T")


def per_integration(cache: dict[int, tuple[Integration, _T]], integration: Integration,
                    build: Callable[[Integration], _T]) -> _T:
    """``build(integration)``, cached per integration object in ``cache`` (bounded: a
    reload's new integrations replace the old ones)."""
    found = cache.get(id(integration))
    if found is not None and found[0] is integration:
        return found[1]
    compiled = build(integration)
    if len(cache) >= 4096:
        cache.clear()
    cache[id(integration)] = (integration, compiled)
    return compiled


def _compile_request(integration: Integration) -> CompiledParameters:
    return _compile(tuple(integration.request_parameters.items()))


_by_integration: dict[int, tuple[Integration, CompiledParameters]] = {}


def compile_parameters(integration: Integration) -> CompiledParameters:
    """The compiled ``requestParameters`` of ``integration`` (cached per integration
    object, then per mapping: building the key tuple showed in the proxy profile)."""
    return per_integration(_by_integration, integration, _compile_request)


def refuse_first(integration: Integration, field: str,
                 problems: list[tuple[str, str]]) -> None:
    """Raise :class:`ConfigError` for the first ``(key, problem)`` under ``field`` of
    ``integration``, naming its definition file and key path."""
    if problems:
        file, _, path = integration.where.partition(": ")
        key, problem = problems[0]
        raise ConfigError(file, f"{path}.{field}.{key}", problem)


def check_parameters(integration: Integration) -> None:
    """Raise :class:`ConfigError` for the first invalid mapping of ``integration``."""
    refuse_first(integration, "requestParameters", _problems(integration.request_parameters))
