"""HTTP API CORS: ``x-amazon-apigateway-cors`` answered by the gateway (§6.6).

A shipped plugin that claims the root-level ``x-amazon-apigateway-cors`` extension
(``allowOrigins``, ``allowCredentials``, ``exposeHeaders``, ``maxAge``, ``allowMethods``,
``allowHeaders``) for HTTP APIs.  REST APIs have no automatic CORS on AWS (the console's
OPTIONS-by-MOCK methods are served by the ``mock`` and ``mapping`` plugins); on a REST
API the extension is ignored, as AWS's REST import ignores it.

* A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) that no
  route matches is answered by the gateway without an integration: ``204`` with an empty
  body (the spec's open question 5) and, when the ``Origin`` is allowed,
  ``Access-Control-Allow-Origin``, ``-Allow-Methods``, ``-Allow-Headers``, ``-Max-Age``
  and ``-Allow-Credentials`` from the configuration.  A disallowed origin gets the 204
  without CORS headers.  A preflight that a route matches (an ``OPTIONS`` route, an
  ``ANY`` route, ``$default``) goes to that route, authorizers included, as on AWS.
* Responses from integrations lose the backend's ``Access-Control-*`` headers (AWS
  ignores them when CORS is configured) and, when the request's ``Origin`` is allowed,
  get ``Access-Control-Allow-Origin``, ``-Expose-Headers`` and ``-Allow-Credentials``.

``Access-Control-Allow-Origin`` is ``*`` when ``allowOrigins`` holds ``*`` and credentials
are not allowed, otherwise the request's origin.  Origins compare case-insensitively.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from twistgw import ApiConfigurationError, Headers, Response, hookimpl
from twistgw.definition import load_definition
from twistgw.errors import ConfigError, HttpApiNotFound

if TYPE_CHECKING:
    from twistgw import Context, GatewayError, IntegrationResponse, Registry
    from twistgw.config import GatewayConfig

__all__ = ["register", "handle_error", "map_response", "CorsConfig", "CorsError",
           "cors_config", "parse_cors", "EXTENSION"]

EXTENSION = "x-amazon-apigateway-cors"

_LIST_KEYS = ("allowOrigins", "exposeHeaders", "allowMethods", "allowHeaders")
_EXAMPLES = {"allowOrigins": "https://app.example.com", "exposeHeaders": "x-total-count",
             "allowMethods": "GET, POST", "allowHeaders": "content-type, authorization"}
_KEYS = frozenset((*_LIST_KEYS, "allowCredentials", "maxAge"))


@attrs.frozen
class CorsConfig:
    """An HTTP API's ``corsConfiguration``."""

    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = False
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()

    def allowed_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or ``None``."""
        if not origin:
            return None
        if "*" in self.allow_origins:
            return origin if self.allow_credentials else "*"
        wanted = origin.lower()
        if any(o.lower() == wanted for o in self.allow_origins):
            return origin
        return None


class CorsError(ValueError):
    """A malformed ``x-amazon-apigateway-cors``: ``key`` (empty for the whole value) and
    what to write instead."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def parse_cors(raw: Any) -> CorsConfig:
    """The configuration from the extension's value; :class:`CorsError` says what is
    wrong, with the fix.  The rules are AWS's ``CreateApi``/``UpdateApi`` checks of a
    ``corsConfiguration``: lists of strings, ``maxAge`` in -1..86400 seconds, and no
    ``allowCredentials`` with a wildcard origin (AWS refuses it: a browser never sends
    credentials to ``Access-Control-Allow-Origin: *``)."""
    if not isinstance(raw, Mapping):
        raise CorsError("", "write a mapping with allowOrigins, allowMethods, "
                            "allowHeaders, exposeHeaders (lists of strings), "
                            "allowCredentials (true/false) and maxAge (seconds)")
    unknown = sorted(str(k) for k in set(raw) - _KEYS)
    if unknown:
        raise CorsError(unknown[0], f"unknown key; use one of {', '.join(sorted(_KEYS))}")
    lists: dict[str, tuple[str, ...]] = {}
    for key in _LIST_KEYS:
        value = raw.get(key) or []
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v
                                                          for v in value):
            raise CorsError(key, f"{value!r} is not a list of non-empty strings; write "
                                 f"e.g. {key}: [{_EXAMPLES[key]}]")
        lists[key] = tuple(value)
    credentials = raw.get("allowCredentials", False)
    if not isinstance(credentials, bool):
        raise CorsError("allowCredentials", f"{credentials!r} is not a boolean; write true "
                                            "or false (unquoted)")
    if credentials and "*" in lists["allowOrigins"]:
        raise CorsError("allowCredentials", "AWS refuses allowCredentials: true with the "
                                            "wildcard origin '*' in allowOrigins; list the "
                                            "allowed origins (https://app.example.com) or "
                                            "set allowCredentials to false")
    max_age = raw.get("maxAge")
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int)
                                or not -1 <= max_age <= 86400):
        raise CorsError("maxAge", f"{max_age!r} is not a whole number of seconds in "
                                  "-1..86400 (AWS's range; -1 disables caching)")
    return CorsConfig(allow_origins=lists["allowOrigins"], allow_credentials=credentials,
                      expose_headers=lists["exposeHeaders"], max_age=max_age,
                      allow_methods=lists["allowMethods"], allow_headers=lists["allowHeaders"])


#: Parsed configurations by the identity of the definition's raw value.  Bounded by the
#: number of loaded definitions (the raw value is kept alive by the entry).
_PARSED: dict[int, tuple[Any, CorsConfig]] = {}
_PARSED_LIMIT = 1024


def cors_config(ctx: Context) -> CorsConfig | None:
    """The CORS configuration of the request's HTTP API, or ``None``."""
    deployment_api = ctx.deployment_api
    if deployment_api is None or not deployment_api.is_http:
        return None
    raw = deployment_api.definition.extensions.get(EXTENSION)
    if raw is None:
        return None
    hit = _PARSED.get(id(raw))
    if hit is not None and hit[0] is raw:
        return hit[1]
    try:
        config = parse_cors(raw)
    except ValueError:
        raise ApiConfigurationError() from None
    if len(_PARSED) >= _PARSED_LIMIT:
        _PARSED.clear()
    _PARSED[id(raw)] = (raw, config)
    return config


@hookimpl
def register(registry: Registry) -> None:
    """Claim the HTTP API CORS extension; stay off routes of APIs without it."""
    registry.add_extension(EXTENSION)
    # Filled by ``configure`` before route plans are built; over-inclusion across
    # configs only costs a quick None, never a wrong answer.
    registry.add_route_filter(lambda route: route.api_id in _CORS_APIS)


#: Ids of HTTP APIs whose definition carries x-amazon-apigateway-cors.
_CORS_APIS: set[str] = set()


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Note which HTTP APIs configure CORS (for the route filter) and refuse a malformed
    configuration at load time, naming the definition file, the key and the fix."""
    for api_cfg in config.apis:
        if api_cfg.type != "HTTP":
            continue
        try:
            definition = load_definition(api_cfg.definition, api_cfg.definition_display,
                                         claimed_extensions=frozenset({EXTENSION}),
                                         strict=False, warnings=[])
        except ConfigError:
            continue  # the deployment build reports it
        if EXTENSION in definition.extensions:
            try:
                parse_cors(definition.extensions[EXTENSION])
            except CorsError as e:
                raise ConfigError(api_cfg.definition_display,
                                  f"{EXTENSION}.{e.key}" if e.key else EXTENSION,
                                  e.problem) from None
            _CORS_APIS.add(api_cfg.id)


def _is_preflight(ctx: Context) -> bool:
    headers = ctx.request.headers
    return (ctx.request.method.upper() == "OPTIONS" and bool(headers.get("origin"))
            and bool(headers.get("access-control-request-method")))


@hookimpl
def handle_error(ctx: Context, error: GatewayError) -> Response | None:
    """Answer a preflight that no route matched (HTTP APIs with CORS configured)."""
    if not isinstance(error, HttpApiNotFound) or not _is_preflight(ctx):
        return None
    config = cors_config(ctx)
    if config is None:
        return None
    headers: list[tuple[str, str]] = []
    origin = config.allowed_origin(ctx.request.headers.get("origin"))
    if origin is not None:
        headers.append(("Access-Control-Allow-Origin", origin))
        if config.allow_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        if config.allow_methods:
            headers.append(("Access-Control-Allow-Methods", ",".join(config.allow_methods)))
        if config.allow_headers:
            headers.append(("Access-Control-Allow-Headers", ",".join(config.allow_headers)))
        if config.max_age is not None:
            headers.append(("Access-Control-Max-Age", str(config.max_age)))
    return Response(status=204, headers=Headers(tuple(headers)), body=b"")


@hookimpl(trylast=True)
def map_response(ctx: Context, integration_response: IntegrationResponse,
                 response: Response) -> Response | None:
    """Replace the backend's CORS headers with the configured ones."""
    config = cors_config(ctx)
    if config is None:
        return None
    kept = [(k, v) for k, v in response.headers.items
            if not k.lower().startswith("access-control-")]
    origin = config.allowed_origin(ctx.request.headers.get("origin"))
    if origin is not None:
        kept.append(("Access-Control-Allow-Origin", origin))
        if config.allow_credentials:
            kept.append(("Access-Control-Allow-Credentials", "true"))
        if config.expose_headers:
            kept.append(("Access-Control-Expose-Headers", ",".join(config.expose_headers)))
    if len(kept) == len(response.headers.items) and origin is None:
        return None
    return attrs.evolve(response, headers=Headers(tuple(kept)))
