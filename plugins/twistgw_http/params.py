"""``requestParameters`` for HTTP and HTTP_PROXY integrations (aws-apigw-spec.md §3.2).

A mapping ``integration.request.{path|querystring|header}.NAME`` <- source is compiled once
per integration into a list of (target kind, name, resolver); at request time each
resolver returns the values it found (none: the target is not set, as on AWS).

Refusals happen at load time through :meth:`~twistgw.registry.Registry.add_route_check`:
an unknown key or source, a body source (needs JSONPath and arrives with mapping
templates), or a target header AWS forbids.  AWS itself accepts those and then fails
every request with 500; refusing before serving is the operator-friendly version, and
under ``strict: false`` the request-time 500 is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

import attrs

from twistgw import ConfigError
from twistgw.variables import getter_for

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


def _resolver(source: str) -> Resolver | str:
    """A resolver for ``source``, or the reason it cannot be served."""
    if len(source) >= 2 and source[0] == "'" and source[-1] == "'":
        return _literal(source[1:-1])
    if source.startswith("stageVariables.") and len(source) > len("stageVariables."):
        return _stage_variable(source[len("stageVariables."):])
    if source.startswith("context."):
        found = _context(source[len("context."):])
        return found if found is not None else f"unknown context variable {source!r}"
    if source == "method.request.body" or source.startswith("method.request.body."):
        return ("mapping from the method request body is not implemented yet (it arrives "
                "with mapping templates); use a request template or remove it")
    m = _METHOD_RE.match(source)
    if m is not None:
        return _method(m.group(1), m.group(2))
    return (f"unknown source {source!r}; use method.request.{{path|querystring|"
            "multivaluequerystring|header|multivalueheader}.NAME, stageVariables.NAME, "
            "context.NAME or a 'quoted literal'")


@attrs.frozen
class CompiledParameters:
    """An integration's mappings, ready to apply: ``(kind, name, resolver)`` in order."""

    mappings: tuple[tuple[str, str, Resolver], ...] = ()
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


def _problems(parameters: Mapping[str, str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for key, source in parameters.items():
        m = _KEY_RE.match(key)
        if m is None and ":" in key.split(".", 1)[0]:
            problems.append((key, "HTTP API parameter mapping (append:, overwrite:, remove:) "
                                  "is not implemented yet; remove it"))
            continue
        if m is None:
            problems.append((key, "keys must look like integration.request.{path|querystring|"
                                  "header}.NAME (NAME of letters, digits, '.', '_', '$', '-')"))
            continue
        if m.group(1) == "header" and m.group(2).lower() in ILLEGAL_TARGET_HEADERS:
            problems.append((key, f"API Gateway does not allow mapping to the {m.group(2)} "
                                  "header (every request would fail with 500); remove this "
                                  "mapping"))
            continue
        found = _resolver(source)
        if isinstance(found, str):
            problems.append((key, found))
    return problems


@lru_cache(maxsize=4096)
def _compile(items: tuple[tuple[str, str], ...]) -> CompiledParameters:
    problems = _problems(dict(items))
    if problems:
        return CompiledParameters(broken="; ".join(f"{k}: {p}" for k, p in problems))
    mappings: list[tuple[str, str, Resolver]] = []
    for key, source in items:
        m = _KEY_RE.match(key)
        assert m is not None
        found = _resolver(source)
        assert not isinstance(found, str)
        mappings.append((m.group(1), m.group(2), found))
    return CompiledParameters(mappings=tuple(mappings))


_by_integration: dict[int, tuple[Integration, CompiledParameters]] = {}


def compile_parameters(integration: Integration) -> CompiledParameters:
    """The compiled ``requestParameters`` of ``integration`` (cached per integration
    object, then per mapping: building the key tuple showed in the proxy profile)."""
    found = _by_integration.get(id(integration))
    if found is not None and found[0] is integration:
        return found[1]
    compiled = _compile(tuple(integration.request_parameters.items()))
    if len(_by_integration) >= 4096:
        _by_integration.clear()
    _by_integration[id(integration)] = (integration, compiled)
    return compiled


def check_parameters(integration: Integration) -> None:
    """Raise :class:`ConfigError` for the first invalid mapping of ``integration``."""
    problems = _problems(integration.request_parameters)
    if problems:
        file, _, path = integration.where.partition(": ")
        key, problem = problems[0]
        raise ConfigError(file, f"{path}.requestParameters.{key}", problem)
