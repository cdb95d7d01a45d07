"""WebSocket API definitions: their file shape, strict checks, and the routes they serve.

AWS defines WebSocket APIs through its v2 API (routes, integrations, route responses),
not OpenAPI, so a ``type: WEBSOCKET`` API names a definition file of its own shape
(docs/websocket.rst)::

    title: chat
    route_selection_expression: $request.body.action
    api_key_selection_expression: $request.header.x-api-key
    authorizers:
      ByToken: {function: Auth, identity_source: [route.request.querystring.token]}
    routes:
      $connect: {authorization_type: CUSTOM, authorizer: ByToken,
                 integration: {type: AWS_PROXY, uri: "arn:aws:lambda:...:function:Connect"}}
      sendmessage: {integration: {type: AWS_PROXY, uri: ...},
                    route_response_selection_expression: $default}

:func:`load_api` checks it and turns it into the core's
:class:`~twistgw.definition.ApiDefinition`: ``GET /`` is the ``$connect`` handshake (with
the authorizer, API key or IAM requirement of the ``$connect`` route, so the auth and
access plugins authorize it as any route) and ``GET|POST|DELETE /@connections/{id}`` is
the management API (IAM, like AWS's).  Both use this plugin's integration type; the
parsed :class:`WsApi` travels in ``ApiDefinition.extensions``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from twistgw.definition import (
    ApiDefinition,
    Integration,
    Operation,
    SecurityRequirement,
    SecurityScheme,
    read_structured_file,
)
from twistgw.errors import ConfigError
from twistgw.variables import ACCOUNT_ID

from .events import authorizer_event

if TYPE_CHECKING:
    from twistgw.config import ApiConfig, GatewayConfig

__all__ = ["INTEGRATION_TYPE", "EXTENSION", "WsApi", "WsRoute", "WsIntegration",
           "WsAuthorizer", "load_api", "select_route"]

#: The integration type of the synthetic operations (claimed by this plugin only).
INTEGRATION_TYPE = "TWISTGW_WEBSOCKET"
#: Where the parsed :class:`WsApi` travels in ``ApiDefinition.extensions``.
EXTENSION = "twistgw-websocket"
#: Operation ids of the synthetic operations.
CONNECT_OP = "$connect"
MANAGE_OP = "@connections"

#: Read by the auth plugin (``twistgw_auth.lambda_auth``): ``$connect`` is authorized on
#: ``{apiId}/{stage}/$connect``; ``@connections`` callers need ManageConnections.
ROUTE_KEY_FIELD = "x-twistgw-route-key"
IAM_ACTION_FIELD = "x-twistgw-iam-action"
#: ... and a Lambda REQUEST authorizer gets the WebSocket CONNECT event's shape.
AUTHORIZER_EVENT_FIELD = "x-twistgw-authorizer-event"

_INTEGRATION_TYPES = ("AWS_PROXY", "HTTP_PROXY", "HTTP", "MOCK")
_ROUTE_KEY_RE = re.compile(r"^[^\s]{1,128}$")
_PARAM_KEY_RE = re.compile(r"^integration\.request\.(header|querystring)\.[A-Za-z0-9_.-]+$")
_PARAM_VALUE_RE = re.compile(
    r"^(context\.[A-Za-z]+|route\.request\.(header|querystring)\.[A-Za-z0-9_.-]+|'[^']*')$")
_SOURCE_RE = re.compile(
    r"^(route\.request\.(header|querystring)\.[A-Za-z0-9_.-]+|stageVariables\.[A-Za-z0-9_]+"
    r"|context\.[A-Za-z.]+)$")
_BODY_PATH = re.compile(r"\$\{?request\.body\.([A-Za-z0-9_.\-]+)\}?")


@attrs.frozen
class WsIntegration:
    """A route's integration: a Lambda function, an HTTP backend or a MOCK."""

    type: str
    uri: str = ""
    function: str | None = None
    function_arn: str = ""
    timeout: float = 29.0
    request_parameters: Mapping[str, str] = attrs.field(factory=dict)
    response: str | None = None
    where: str = ""


@attrs.frozen
class WsRoute:
    """One route key with its integration and whether a route response goes back."""

    key: str
    integration: WsIntegration | None
    route_response: bool = False


@attrs.frozen
class WsAuthorizer:
    """A Lambda ``REQUEST`` authorizer for ``$connect``."""

    name: str
    function: str
    region: str
    identity_source: tuple[str, ...]
    ttl: int


@attrs.frozen
class WsApi:
    """A checked WebSocket API definition."""

    id: str
    source: str
    title: str
    selection_expression: str
    routes: Mapping[str, WsRoute]
    api_key_selection_expression: str = "$request.header.x-api-key"
    connect_authorization: str = "NONE"
    authorizer: WsAuthorizer | None = None
    api_key_required: bool = False


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> ConfigError:
        return ConfigError(self.source, path, problem)

    def mapping(self, value: Any, path: str, allowed: frozenset[str],
                required: tuple[str, ...] = ()) -> Mapping[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail(f"{path}.{key}" if path else str(key),
                                "unknown key; the keys allowed here are: "
                                + ", ".join(sorted(allowed)))
        for key in required:
            if key not in value:
                raise self.fail(path or "(top level)", f"missing required key '{key}'")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, "expected a non-empty string")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "expected true or false")
        return value

    def function(self, value: Any, path: str, config: GatewayConfig) -> tuple[str, str, str]:
        """``(name, region, function ARN)`` of a Lambda URI or ARN naming a declared
        function."""
        from twistgw_lambda.arn import parse_function_uri

        uri = self.string(value, path)
        ref = parse_function_uri(uri)
        if ref is None:
            raise self.fail(path, f"{uri!r} is not a Lambda function ARN or invocation URI; "
                            "write arn:aws:lambda:{region}:{account}:function:{Name}")
        if ref.name not in config.functions:
            known = ", ".join(sorted(config.functions)) or "none"
            raise self.fail(path, f"the function {ref.name!r} is not declared under "
                            f"functions: in {config.source} (declared: {known}); add it or "
                            "fix the name")
        return ref.name, ref.region, ref.arn

    def integration(self, value: Any, path: str, config: GatewayConfig) -> WsIntegration:
        raw = self.mapping(value, path, frozenset({
            "type", "uri", "timeout_ms", "request_parameters", "response"}),
            required=("type",))
        kind = self.string(raw["type"], f"{path}.type").upper()
        if kind not in _INTEGRATION_TYPES:
            raise self.fail(f"{path}.type", f"{raw['type']!r} is not one of "
                            + ", ".join(_INTEGRATION_TYPES))
        timeout_ms = raw.get("timeout_ms", 29000)
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or \
                not 50 <= timeout_ms <= 29000:
            raise self.fail(f"{path}.timeout_ms", "a whole number of milliseconds from 50 "
                            "to 29000 (AWS's integration timeout range)")
        params: dict[str, str] = {}
        for key, source in self.mapping(raw.get("request_parameters"),
                                        f"{path}.request_parameters",
                                        frozenset(raw.get("request_parameters") or ())).items():
            ppath = f"{path}.request_parameters.{key}"
            if not _PARAM_KEY_RE.match(str(key)):
                raise self.fail(ppath, "keys look like integration.request.header.NAME or "
                                "integration.request.querystring.NAME")
            text = self.string(source, ppath)
            if not _PARAM_VALUE_RE.match(text):
                raise self.fail(ppath, "values are context.NAME, route.request.header.NAME, "
                                "route.request.querystring.NAME or a 'static' string")
            params[str(key)] = text
        if kind == "MOCK":
            for key in ("uri", "request_parameters"):
                if key in raw:
                    raise self.fail(f"{path}.{key}", "a MOCK integration calls nothing; "
                                    "remove it")
            response = raw.get("response")
            if response is not None and not isinstance(response, str):
                raise self.fail(f"{path}.response", "expected the text to send back")
            return WsIntegration(type=kind, response=response, where=path)
        if "response" in raw:
            raise self.fail(f"{path}.response", "only MOCK integrations have a fixed "
                            "response; remove it")
        if "uri" not in raw:
            raise self.fail(path, "missing required key 'uri'")
        if kind == "AWS_PROXY":
            if params:
                raise self.fail(f"{path}.request_parameters", "Lambda proxy integrations "
                                "get the event; request_parameters are for HTTP ones")
            name, _region, arn = self.function(raw["uri"], f"{path}.uri", config)
            return WsIntegration(type=kind, uri=str(raw["uri"]), function=name,
                                 function_arn=arn, timeout=timeout_ms / 1000.0, where=path)
        uri = self.string(raw["uri"], f"{path}.uri")
        if not uri.startswith(("http://", "https://")):
            raise self.fail(f"{path}.uri", "an HTTP integration needs an http:// or "
                            "https:// URL")
        return WsIntegration(type=kind, uri=uri, timeout=timeout_ms / 1000.0,
                             request_parameters=params, where=path)

    def authorizer(self, name: str, value: Any, path: str, config: GatewayConfig
                   ) -> WsAuthorizer:
        raw = self.mapping(value, path, frozenset({
            "type", "uri", "identity_source", "ttl"}), required=("uri", "identity_source"))
        kind = str(raw.get("type", "REQUEST")).upper()
        if kind != "REQUEST":
            raise self.fail(f"{path}.type", "WebSocket APIs take Lambda REQUEST authorizers "
                            "only (as on AWS)")
        fname, region, _arn = self.function(raw["uri"], f"{path}.uri", config)
        sources_raw = raw["identity_source"]
        if isinstance(sources_raw, str):
            sources_raw = [s.strip() for s in sources_raw.split(",")]
        if not isinstance(sources_raw, list) or not sources_raw:
            raise self.fail(f"{path}.identity_source", "list at least one identity source")
        sources: list[str] = []
        for i, source in enumerate(sources_raw):
            text = self.string(source, f"{path}.identity_source[{i}]")
            if not _SOURCE_RE.match(text):
                raise self.fail(f"{path}.identity_source[{i}]",
                                "use route.request.header.NAME, route.request.querystring."
                                "NAME, stageVariables.NAME or context.NAME")
            sources.append(text)
        ttl = raw.get("ttl", 0)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 3600:
            raise self.fail(f"{path}.ttl", "seconds from 0 to 3600")
        return WsAuthorizer(name=name, function=fname, region=region,
                            identity_source=tuple(sources), ttl=ttl)

    def read(self, doc: Any, api_cfg: ApiConfig, config: GatewayConfig) -> WsApi:
        top = self.mapping(doc, "", frozenset({
            "title", "route_selection_expression", "api_key_selection_expression",
            "authorizers", "routes"}), required=("route_selection_expression", "routes"))
        expression = self.string(top["route_selection_expression"],
                                 "route_selection_expression")
        key_expr = str(top.get("api_key_selection_expression", "$request.header.x-api-key"))
        if key_expr not in ("$request.header.x-api-key",
                            "$context.authorizer.usageIdentifierKey"):
            raise self.fail("api_key_selection_expression", "use $request.header.x-api-key "
                            "or $context.authorizer.usageIdentifierKey")
        authorizers = {
            str(name): self.authorizer(str(name), spec, f"authorizers.{name}", config)
            for name, spec in self.mapping(top.get("authorizers"), "authorizers",
                                           frozenset(top.get("authorizers") or ())).items()}
        routes_raw = self.mapping(top["routes"], "routes", frozenset(top["routes"] or ()))
        if not routes_raw:
            raise self.fail("routes", "define at least one route, e.g. $default")
        routes: dict[str, WsRoute] = {}
        connect_auth = "NONE"
        authorizer = None
        key_required = False
        for key, spec in routes_raw.items():
            path = f"routes.{key}"
            key = str(key)
            if not _ROUTE_KEY_RE.match(key):
                raise self.fail(path, "route keys are 1 to 128 characters without spaces")
            if key.startswith("$") and key not in ("$connect", "$disconnect", "$default"):
                raise self.fail(path, "route keys starting with $ are reserved: use "
                                "$connect, $disconnect or $default")
            allowed = {"integration", "route_response_selection_expression"}
            if key == "$connect":
                allowed |= {"authorization_type", "authorizer", "api_key_required"}
            raw = self.mapping(spec, path, frozenset(allowed))
            if key == "$connect":
                connect_auth = str(raw.get("authorization_type", "NONE")).upper()
                if connect_auth not in ("NONE", "AWS_IAM", "CUSTOM"):
                    raise self.fail(f"{path}.authorization_type", "use NONE, AWS_IAM or "
                                    "CUSTOM")
                if connect_auth == "CUSTOM":
                    name = self.string(raw.get("authorizer"), f"{path}.authorizer")
                    if name not in authorizers:
                        raise self.fail(f"{path}.authorizer", f"no authorizer is named "
                                        f"{name!r}; define it under authorizers")
                    authorizer = authorizers[name]
                elif "authorizer" in raw:
                    raise self.fail(f"{path}.authorizer", "an authorizer needs "
                                    "authorization_type: CUSTOM")
                key_required = self.boolean(raw.get("api_key_required", False),
                                            f"{path}.api_key_required")
            elif "authorization_type" in raw:
                raise self.fail(f"{path}.authorization_type", "only $connect is authorized")
            response_expr = raw.get("route_response_selection_expression")
            if response_expr is not None and response_expr != "$default":
                raise self.fail(f"{path}.route_response_selection_expression",
                                "the only route response AWS supports is $default")
            if response_expr is not None and key in ("$connect", "$disconnect"):
                raise self.fail(f"{path}.route_response_selection_expression",
                                f"{key} has no route response (the client gets none)")
            integration = None
            if "integration" in raw:
                integration = self.integration(raw["integration"], f"{path}.integration",
                                               config)
            elif key not in ("$connect", "$disconnect"):
                raise self.fail(path, "missing required key 'integration'")
            routes[key] = WsRoute(key=key, integration=integration,
                                  route_response=response_expr is not None)
        title = str(top.get("title") or api_cfg.id)
        return WsApi(id=api_cfg.id, source=self.source, title=title,
                     selection_expression=expression, routes=routes,
                     api_key_selection_expression=key_expr,
                     connect_authorization=connect_auth, authorizer=authorizer,
                     api_key_required=key_required)


def _authorizer_scheme(auth: WsAuthorizer) -> SecurityScheme:
    """The REST-style ``request`` authorizer scheme the auth plugin evaluates."""
    sources = ",".join(s.replace("route.request.", "method.request.", 1)
                       for s in auth.identity_source)
    uri = (f"arn:aws:apigateway:{auth.region}:lambda:path/2015-03-31/functions/"
           f"arn:aws:lambda:{auth.region}:{ACCOUNT_ID}:function:{auth.function}/invocations")
    return SecurityScheme(name=auth.name, kind="authorizer:request", raw={
        "type": "apiKey", "name": "Unused", "in": "header",
        "x-amazon-apigateway-authtype": "custom",
        "x-amazon-apigateway-authorizer": {
            "type": "request", "authorizerUri": uri, "identitySource": sources,
            "authorizerResultTtlInSeconds": auth.ttl}})


def load_api(api_cfg: ApiConfig, config: GatewayConfig) -> ApiDefinition:
    """Read and check a WebSocket definition; the operations the core serves for it."""
    source = api_cfg.definition_display
    doc = read_structured_file(api_cfg.definition, source)
    ws = _Reader(source).read(doc, api_cfg, config)
    integration = Integration(type=INTEGRATION_TYPE, timeout_ms=29000, where=source)
    schemes: dict[str, SecurityScheme] = {}
    security: list[SecurityRequirement] = []
    if ws.authorizer is not None:
        schemes[ws.authorizer.name] = _authorizer_scheme(ws.authorizer)
        security.append(SecurityRequirement(scheme=ws.authorizer.name))
    if ws.api_key_required:
        schemes["api_key"] = SecurityScheme(name="api_key", kind="api_key", raw={
            "type": "apiKey", "name": "x-api-key", "in": "header"})
        security.append(SecurityRequirement(scheme="api_key"))
    connect_where = f"{source}: routes.$connect"
    operations = [Operation(
        path="/", method="GET", integration=integration, operation_id=CONNECT_OP,
        security=tuple(security), auth_type=ws.connect_authorization
        if ws.connect_authorization == "AWS_IAM" else "NONE", where=connect_where,
        raw={ROUTE_KEY_FIELD: "$connect", AUTHORIZER_EVENT_FIELD: authorizer_event})]
    for literal in ("@connections", "%40connections"):
        for method in ("GET", "POST", "DELETE"):
            operations.append(Operation(
                path=f"/{literal}/{{connectionId}}", method=method, integration=integration,
                operation_id=MANAGE_OP, auth_type="AWS_IAM",
                raw={IAM_ACTION_FIELD: "execute-api:ManageConnections"},
                where=f"{source}: @connections"))
    return ApiDefinition(
        source=source, format="websocket", title=ws.title, operations=tuple(operations),
        api_key_source="HEADER" if ws.api_key_selection_expression.startswith("$request")
        else "AUTHORIZER",
        security_schemes=schemes, extensions={EXTENSION: ws})


# -- route selection (§7.2) -------------------------------------------------------------


def _stringify(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(_stringify(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_stringify(v)}" for k, v in value.items()) + "}"
    return str(value)


def _body_value(body: Any, path: str) -> str:
    node = body
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    return _stringify(node)


def evaluate_selection(expression: str, body: Any) -> str | None:
    """The value of a route selection expression for a parsed JSON ``body``.

    ``None`` when the expression reads the body and the message is not a JSON object
    (AWS then uses ``$default``).  Missing paths read as ``""``.
    """
    if expression in ("\\$default", "$default"):
        return "$default"
    if "request.body." not in expression:
        return expression.replace("\\$", "$")
    if not isinstance(body, dict):
        return None
    if "${" not in expression:
        m = _BODY_PATH.fullmatch(expression)
        if m is not None:
            return _body_value(body, m.group(1))
    return _BODY_PATH.sub(lambda m: _body_value(body, m.group(1)), expression)


_NOT_JSON = object()


def select_route(ws: WsApi, message: bytes) -> WsRoute | None:
    """The route a message goes to: the exact route key, else ``$default``, else None."""
    import json

    body: Any = _NOT_JSON
    if b"request.body." in ws.selection_expression.encode():
        try:
            body = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            body = _NOT_JSON
    key = evaluate_selection(ws.selection_expression, body)
    if key is not None and key not in ("$connect", "$disconnect"):
        found = ws.routes.get(key)
        if found is not None:
            return found
    return ws.routes.get("$default")
