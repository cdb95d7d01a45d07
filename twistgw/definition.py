"""API definitions: OpenAPI 3.0 / Swagger 2.0 with ``x-amazon-apigateway-*`` extensions.

Users bring the definition files they already export from AWS.  This module reads them
(YAML or JSON) into frozen attrs objects and refuses, at load time, anything it cannot
honour: an unknown extension, a malformed integration, a gateway-response type AWS does
not have.  Each refusal names the file, the path inside it and the fix, because an
operator reading a startup error at 3 a.m. should not need a debugger.

Whether a *known* feature is implemented (an integration type, an authorizer kind) is
decided later by :mod:`twistgw.deployment` against what the loaded plugins registered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from .errors import CUSTOMIZABLE_RESPONSE_TYPES, ConfigError
from .models import EMPTY_MAPPING, freeze_mapping

__all__ = [
    "ApiDefinition",
    "Operation",
    "Parameter",
    "Integration",
    "IntegrationResponseConfig",
    "GatewayResponseConfig",
    "RequestValidator",
    "SecurityRequirement",
    "SecurityScheme",
    "load_definition",
    "parse_definition",
    "read_structured_file",
    "matches_media_type",
    "INTEGRATION_TYPES",
    "HTTP_METHODS",
    "ANY_METHODS",
]

#: Methods an OpenAPI path item may define (AWS supports these seven).
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
#: What ``ANY`` matches, exactly (aws-apigw-spec.md §A.3): HEAD is *not* implied by GET.
ANY_METHODS = frozenset(("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"))
INTEGRATION_TYPES = ("AWS", "AWS_PROXY", "HTTP", "HTTP_PROXY", "MOCK")
PASSTHROUGH_BEHAVIORS = ("WHEN_NO_MATCH", "WHEN_NO_TEMPLATES", "NEVER")
CONTENT_HANDLINGS = ("CONVERT_TO_BINARY", "CONVERT_TO_TEXT")

#: Extensions read by this module.  Any other ``x-amazon-apigateway-*`` key is an error
#: unless a plugin claims it through ``registry.add_extension``.
CORE_EXTENSIONS = frozenset(
    {
        "x-amazon-apigateway-integration",
        "x-amazon-apigateway-integrations",
        "x-amazon-apigateway-any-method",
        "x-amazon-apigateway-gateway-responses",
        "x-amazon-apigateway-binary-media-types",
        "x-amazon-apigateway-api-key-source",
        "x-amazon-apigateway-request-validators",
        "x-amazon-apigateway-request-validator",
        "x-amazon-apigateway-auth",
        "x-amazon-apigateway-authorizer",
        "x-amazon-apigateway-authtype",
        # Metadata with no data-plane effect (documented as such in docs/config.rst).
        "x-amazon-apigateway-importexport-version",
        "x-amazon-apigateway-documentation",
        "x-amazon-apigateway-tag-value",
    }
)

_STATUS_RE = re.compile(r"^[1-5][0-9][0-9]$")
_SEGMENT_RE = re.compile(r"^(?:[A-Za-z0-9_\-.,:]+|\{[A-Za-z0-9_.\-]+\+?\})$")
_GR_PARAM_KEY = re.compile(r"^gatewayresponse\.(header|path|querystring)\.(.+)$")
_GR_PARAM_SOURCE = re.compile(
    r"^(?:'.*'|method\.request\.(?:header|querystring|path|multivalueheader|"
    r"multivaluequerystring)\.[^.].*|stageVariables\.[A-Za-z0-9_]+|context\.[A-Za-z0-9_.]+)$",
    re.S,
)


@attrs.frozen
class Parameter:
    """An OpenAPI parameter AWS honours: name, location and whether it is required."""

    name: str
    location: str  # path | query | header
    required: bool = False


@attrs.frozen
class IntegrationResponseConfig:
    """One entry of ``x-amazon-apigateway-integration.responses``.

    ``selection_pattern`` is ``None`` for the ``default`` response.
    """

    selection_pattern: str | None
    status_code: str
    response_parameters: Mapping[str, str] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )
    response_templates: Mapping[str, str | None] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )
    content_handling: str | None = None


@attrs.frozen
class Integration:
    """``x-amazon-apigateway-integration`` of one operation (aws-apigw-spec.md §3.1)."""

    type: str
    uri: str = ""
    http_method: str | None = None
    request_parameters: Mapping[str, str] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )
    request_templates: Mapping[str, str | None] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )
    passthrough_behavior: str = "WHEN_NO_MATCH"
    content_handling: str | None = None
    timeout_ms: int = 29000
    responses: tuple[IntegrationResponseConfig, ...] = ()
    payload_format_version: str | None = None
    connection_type: str = "INTERNET"
    credentials: str | None = None
    cache_key_parameters: tuple[str, ...] = ()
    tls_config: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)
    #: HTTP API response parameter mapping (§6.16): backend status code -> ``{action key:
    #: value}``, applied by the integration's plugin after the backend answered.
    response_parameters: Mapping[str, Mapping[str, str]] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )
    #: The raw mapping as written, for plugins that read fields the core does not model.
    raw: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping, eq=False)
    #: Where it was defined, for error messages: ``file: paths./x.get.x-amazon-...``.
    where: str = attrs.field(default="", eq=False)

    @property
    def is_proxy(self) -> bool:
        """``AWS_PROXY`` and ``HTTP_PROXY`` hand the response through unmapped."""
        return self.type in ("AWS_PROXY", "HTTP_PROXY")


@attrs.frozen
class SecurityScheme:
    """A ``securityDefinitions`` / ``components.securitySchemes`` entry.

    ``kind`` is what twistgw makes of it: ``api_key`` (an ``x-api-key`` header scheme),
    ``aws_iam``, ``authorizer:<type>`` (token, request, jwt, cognito_user_pools) or
    ``other`` (an OpenAPI scheme with no AWS meaning, which AWS ignores on import).
    """

    name: str
    kind: str
    raw: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping, eq=False)


@attrs.frozen
class SecurityRequirement:
    """One scheme named by an operation's ``security`` list, with its scopes."""

    scheme: str
    scopes: tuple[str, ...] = ()


@attrs.frozen
class RequestValidator:
    """An ``x-amazon-apigateway-request-validators`` entry."""

    name: str
    validate_body: bool = False
    validate_parameters: bool = False


@attrs.frozen
class GatewayResponseConfig:
    """A customised gateway response (``x-amazon-apigateway-gateway-responses``)."""

    response_type: str
    status_code: int | None = None
    response_parameters: Mapping[str, str] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )
    response_templates: Mapping[str, str] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )


@attrs.frozen
class Operation:
    """One method on one resource: ``GET /pets/{petId}``, or ``ANY`` for the any-method."""

    path: str
    method: str
    integration: Integration | None = None
    operation_id: str | None = None
    parameters: tuple[Parameter, ...] = ()
    security: tuple[SecurityRequirement, ...] = ()
    auth_type: str = "NONE"
    request_validator: str | None = None
    is_default_route: bool = False
    response_codes: tuple[str, ...] = ()
    raw: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping, eq=False)
    where: str = attrs.field(default="", eq=False)

    @property
    def route_key(self) -> str:
        """HTTP API route key: ``"GET /pets/{id}"``, ``"ANY /x"`` or ``"$default"``."""
        if self.is_default_route:
            return "$default"
        return f"{self.method} {self.path}"


@attrs.frozen
class ApiDefinition:
    """A whole API definition file, parsed.

    ``extensions`` holds the root-level ``x-amazon-apigateway-*`` values that plugins
    claimed (e.g. ``-policy`` for the access-control plugin), raw.
    """

    source: str
    format: str  # "openapi3" | "swagger2"
    title: str
    operations: tuple[Operation, ...]
    binary_media_types: tuple[str, ...] = ()
    api_key_source: str = "HEADER"
    gateway_responses: Mapping[str, GatewayResponseConfig] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )
    request_validators: Mapping[str, RequestValidator] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )
    security_schemes: Mapping[str, SecurityScheme] = attrs.field(
        default=EMPTY_MAPPING, converter=freeze_mapping
    )
    extensions: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)
    models: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping,
                                            eq=False)


def matches_media_type(media_type: str, binary_media_types: tuple[str, ...]) -> bool:
    """Whether ``media_type`` is one of an API's ``binaryMediaTypes`` (§2.1, §6.7).

    Exact match, an entry ``type/*`` matching any subtype, or ``*/*`` matching anything;
    an entry with a wildcard type (``*/png``) is not honoured, as on AWS.  Shared by every
    plugin that decides "binary or text" (Lambda events and responses, contentHandling).
    """
    media_type = media_type.lower()
    if not media_type or not binary_media_types:
        return False
    main = media_type.split("/", 1)[0]
    for entry in binary_media_types:
        entry = entry.strip().lower()
        if entry == "*/*" or entry == media_type:
            return True
        if entry.endswith("/*") and not entry.startswith("*") and entry[:-2] == main:
            return True
    return False


def read_structured_file(path: Path, display: str) -> Any:
    """Read YAML or JSON (by extension; YAML is a superset, so others parse as YAML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(display, "", "file not found; check the path (relative paths "
                          "resolve against the gateway config's folder)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(display, "", f"cannot read the file: {e}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(display, f"line {e.lineno} column {e.colno}",
                          f"invalid JSON: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(display, where, f"invalid YAML: {problem}") from None


def load_definition(
    path: Path,
    display: str,
    *,
    claimed_extensions: frozenset[str] = frozenset(),
    strict: bool = True,
    warnings: list[str] | None = None,
) -> ApiDefinition:
    """Load and parse one API definition file.

    With ``strict=False`` unimplemented extensions are reported in ``warnings`` instead of
    raising; everything else still raises :class:`ConfigError`.
    """
    doc = read_structured_file(path, display)
    return parse_definition(doc, display, claimed_extensions=claimed_extensions,
                            strict=strict, warnings=warnings)


class _Parser:
    """Walks one definition document, keeping the file name for error messages."""

    def __init__(self, doc: Any, file: str, claimed: frozenset[str], strict: bool,
                 warnings: list[str] | None) -> None:
        self.doc = doc
        self.file = file
        self.claimed = claimed
        self.strict = strict
        self.warnings = warnings if warnings is not None else []

    def fail(self, path: str, problem: str) -> ConfigError:
        return ConfigError(self.file, path, problem)

    def check_extensions(self, obj: Mapping[str, Any], path: str) -> None:
        """Refuse AWS extensions nobody implements, so nothing is silently ignored."""
        for key in obj:
            if isinstance(key, str) and key.lower().startswith("x-amazon-apigateway-"):
                if key not in CORE_EXTENSIONS and key not in self.claimed:
                    where = f"{path}.{key}" if path else key
                    error = self.fail(
                        where,
                        f"the extension {key} is not implemented by twistgw or any enabled "
                        "plugin; remove it, enable a plugin that provides it, or set "
                        "'strict: false' in the gateway config to serve the API without it",
                    )
                    if self.strict:
                        raise error
                    self.warnings.append(f"{error} (ignored because strict is false)")

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        return value

    def string_map(self, value: Any, path: str, allow_null: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.mapping(value, path).items():
            if v is None and allow_null:
                out[str(k)] = None
                continue
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise self.fail(f"{path}.{k}", f"expected a string, got {type(v).__name__}")
            out[str(k)] = v if isinstance(v, str) else str(v)
        return out

    def parse(self) -> ApiDefinition:
        doc = self.doc
        if not isinstance(doc, Mapping):
            raise self.fail("", "an API definition must be an OpenAPI 3.0 or Swagger 2.0 "
                                "document (a mapping at the top level)")
        if "openapi" in doc:
            version = str(doc["openapi"])
            if version != "3.0" and not version.startswith("3.0."):
                raise self.fail("openapi", f"OpenAPI {version} is not supported; use 3.0.x "
                                           "or Swagger 2.0 (as AWS exports them)")
            fmt = "openapi3"
        elif "swagger" in doc:
            if str(doc["swagger"]) != "2.0":
                raise self.fail("swagger", "only Swagger 2.0 is supported")
            fmt = "swagger2"
        else:
            raise self.fail("", "missing 'openapi: 3.0.1' or 'swagger: \"2.0\"' at the top; "
                                "is this an API definition?")
        self.fmt = fmt
        self.check_extensions(doc, "")
        info = self.mapping(doc.get("info"), "info")
        title = str(info.get("title", ""))
        schemes = self.security_schemes()
        integrations_lib = self.mapping(
            self.mapping(doc.get("components"), "components").get(
                "x-amazon-apigateway-integrations"),
            "components.x-amazon-apigateway-integrations",
        ) if fmt == "openapi3" else {}
        self.integrations_lib = integrations_lib
        validators = self.request_validators()
        default_validator = doc.get("x-amazon-apigateway-request-validator")
        if default_validator is not None and default_validator not in validators:
            raise self.fail("x-amazon-apigateway-request-validator",
                            f"names the validator {default_validator!r}, which "
                            "x-amazon-apigateway-request-validators does not define")
        operations = self.operations(schemes, validators, default_validator)
        binary = doc.get("x-amazon-apigateway-binary-media-types") or []
        if not isinstance(binary, list) or not all(isinstance(b, str) for b in binary):
            raise self.fail("x-amazon-apigateway-binary-media-types",
                            "expected a list of MIME types such as ['image/*']")
        key_source = str(doc.get("x-amazon-apigateway-api-key-source", "HEADER")).upper()
        if key_source not in ("HEADER", "AUTHORIZER"):
            raise self.fail("x-amazon-apigateway-api-key-source",
                            f"{key_source!r} is not HEADER or AUTHORIZER")
        extensions = {k: v for k, v in doc.items()
                      if isinstance(k, str) and k in self.claimed}
        models: Mapping[str, Any]
        if fmt == "openapi3":
            models = self.mapping(self.mapping(doc.get("components"), "components")
                                  .get("schemas"), "components.schemas")
        else:
            models = self.mapping(doc.get("definitions"), "definitions")
        return ApiDefinition(
            source=self.file,
            format=fmt,
            title=title,
            operations=tuple(operations),
            binary_media_types=tuple(binary),
            api_key_source=key_source,
            gateway_responses=self.gateway_responses(),
            request_validators=validators,
            security_schemes=schemes,
            extensions=extensions,
            models=models,
        )

    # -- security ---------------------------------------------------------------------

    def security_schemes(self) -> dict[str, SecurityScheme]:
        doc = self.doc
        if self.fmt == "openapi3":
            base = "components.securitySchemes"
            raw = self.mapping(self.mapping(doc.get("components"), "components")
                               .get("securitySchemes"), base)
        else:
            base = "securityDefinitions"
            raw = self.mapping(doc.get("securityDefinitions"), base)
        out: dict[str, SecurityScheme] = {}
        for name, scheme in raw.items():
            path = f"{base}.{name}"
            scheme = self.mapping(scheme, path)
            self.check_extensions(scheme, path)
            authorizer = scheme.get("x-amazon-apigateway-authorizer")
            authtype = str(scheme.get("x-amazon-apigateway-authtype", "")).lower()
            if authorizer is not None:
                auth = self.mapping(authorizer, f"{path}.x-amazon-apigateway-authorizer")
                kind = "authorizer:" + str(auth.get("type", "token")).lower()
            elif authtype == "cognito_user_pools":
                kind = "authorizer:cognito_user_pools"
            elif authtype.startswith("aws"):
                kind = "aws_iam"
            elif scheme.get("type") == "apiKey" and str(scheme.get("name", "")).lower() \
                    == "x-api-key" and scheme.get("in") == "header":
                kind = "api_key"
            else:
                kind = "other"
            out[str(name)] = SecurityScheme(name=str(name), kind=kind, raw=dict(scheme))
        return out

    # -- validators -------------------------------------------------------------------

    def request_validators(self) -> dict[str, RequestValidator]:
        key = "x-amazon-apigateway-request-validators"
        raw = self.mapping(self.doc.get(key), key)
        out: dict[str, RequestValidator] = {}
        for name, spec in raw.items():
            path = f"{key}.{name}"
            spec = self.mapping(spec, path)
            for field in spec:
                if field not in ("validateRequestBody", "validateRequestParameters"):
                    raise self.fail(f"{path}.{field}", "unknown key; a request validator has "
                                    "validateRequestBody and validateRequestParameters")
            out[str(name)] = RequestValidator(
                name=str(name),
                validate_body=bool(spec.get("validateRequestBody", False)),
                validate_parameters=bool(spec.get("validateRequestParameters", False)),
            )
        return out

    # -- gateway responses ------------------------------------------------------------

    def gateway_responses(self) -> dict[str, GatewayResponseConfig]:
        key = "x-amazon-apigateway-gateway-responses"
        raw = self.mapping(self.doc.get(key), key)
        out: dict[str, GatewayResponseConfig] = {}
        for rtype, spec in raw.items():
            path = f"{key}.{rtype}"
            if rtype not in CUSTOMIZABLE_RESPONSE_TYPES:
                raise self.fail(path, f"{rtype!r} is not a gateway response type; use one of "
                                + ", ".join(sorted(CUSTOMIZABLE_RESPONSE_TYPES)))
            spec = self.mapping(spec, path)
            for field in spec:
                if field not in ("statusCode", "responseParameters", "responseTemplates"):
                    raise self.fail(f"{path}.{field}", "unknown key; a gateway response has "
                                    "statusCode, responseParameters and responseTemplates")
            status = spec.get("statusCode")
            if status is not None and not _STATUS_RE.match(str(status)):
                raise self.fail(f"{path}.statusCode", f"{status!r} is not an HTTP status code")
            params = self.string_map(spec.get("responseParameters"),
                                     f"{path}.responseParameters")
            for pk, pv in params.items():
                if not _GR_PARAM_KEY.match(pk):
                    raise self.fail(f"{path}.responseParameters.{pk}",
                                    "keys must look like gatewayresponse.header.NAME")
                if not _GR_PARAM_SOURCE.match(pv):
                    raise self.fail(
                        f"{path}.responseParameters.{pk}",
                        f"{pv!r} is not a valid source; use a quoted literal like \"'*'\", "
                        "method.request.header.NAME, method.request.querystring.NAME, "
                        "method.request.path.NAME, stageVariables.NAME or context.NAME")
            templates = self.string_map(spec.get("responseTemplates"),
                                        f"{path}.responseTemplates")
            if rtype == "REQUEST_TOO_LARGE" and (params or templates or status):
                raise self.fail(path, "AWS does not support customising REQUEST_TOO_LARGE; "
                                      "remove this entry")
            out[str(rtype)] = GatewayResponseConfig(
                response_type=str(rtype),
                status_code=int(status) if status is not None else None,
                response_parameters=params,
                response_templates=templates,
            )
        return out

    # -- operations -------------------------------------------------------------------

    def operations(
        self,
        schemes: Mapping[str, SecurityScheme],
        validators: Mapping[str, RequestValidator],
        default_validator: str | None,
    ) -> list[Operation]:
        paths = self.mapping(self.doc.get("paths"), "paths")
        ops: list[Operation] = []
        seen_default = False
        for raw_path, item in paths.items():
            ppath = f"paths.{raw_path}"
            rpath = str(raw_path)
            self.check_resource_path(rpath, ppath)
            item = self.mapping(item, ppath)
            self.check_extensions(item, ppath)
            common_params = item.get("parameters") or []
            for key, op in item.items():
                if key in HTTP_METHODS:
                    method = key.upper()
                elif key == "x-amazon-apigateway-any-method":
                    method = "ANY"
                elif key in ("parameters", "summary", "description", "servers", "$ref") or (
                    isinstance(key, str) and key.startswith("x-")
                ):
                    continue
                elif key == "trace":
                    raise self.fail(f"{ppath}.trace", "API Gateway does not support TRACE")
                else:
                    raise self.fail(f"{ppath}.{key}", "unknown key in a path item")
                opath = f"{ppath}.{key}"
                operation = self.operation(rpath, method, self.mapping(op, opath), opath,
                                           common_params, schemes, validators,
                                           default_validator)
                if operation.is_default_route:
                    if seen_default:
                        raise self.fail(opath, "a second isDefaultRoute operation; an HTTP API "
                                               "has at most one $default route")
                    seen_default = True
                ops.append(operation)
        return ops

    def check_resource_path(self, path: str, where: str) -> None:
        if not path.startswith("/"):
            raise self.fail(where, "resource paths start with '/'")
        if path == "/":
            return
        segments = path.strip("/").split("/")
        for i, seg in enumerate(segments):
            if not _SEGMENT_RE.match(seg):
                raise self.fail(where, f"segment {seg!r} is not valid: use letters, digits, "
                                "_-.,: or a whole-segment {param} / {param+}")
            if seg.endswith("+}") and i != len(segments) - 1:
                raise self.fail(where, f"greedy parameter {seg} must be the last segment")

    def operation(
        self,
        path: str,
        method: str,
        op: Mapping[str, Any],
        where: str,
        common_params: Any,
        schemes: Mapping[str, SecurityScheme],
        validators: Mapping[str, RequestValidator],
        default_validator: str | None,
    ) -> Operation:
        self.check_extensions(op, where)
        params: dict[tuple[str, str], Parameter] = {}
        for _source, plist in (("path item", common_params), ("operation", op.get("parameters"))):
            if plist is None:
                continue
            if not isinstance(plist, list):
                raise self.fail(f"{where}.parameters", "expected a list of parameters")
            for i, p in enumerate(plist):
                pw = f"{where}.parameters[{i}]"
                p = self.mapping(p, pw)
                if "$ref" in p:
                    p = self.resolve_ref(str(p["$ref"]), pw)
                loc = p.get("in")
                if loc in ("body", "formData", "cookie"):
                    continue  # bodies become models; AWS ignores cookie params
                if loc not in ("path", "query", "header"):
                    raise self.fail(f"{pw}.in", f"{loc!r} is not path, query or header")
                name = p.get("name")
                if not isinstance(name, str) or not name:
                    raise self.fail(f"{pw}.name", "a parameter needs a name")
                params[(loc, name)] = Parameter(name=name, location=loc,
                                                required=bool(p.get("required", False)))
        integration: Integration | None = None
        ikey = "x-amazon-apigateway-integration"
        if ikey in op:
            integration = self.integration(op[ikey], f"{where}.{ikey}")
        security: list[SecurityRequirement] = []
        sec = op.get("security")
        if sec is not None:
            if not isinstance(sec, list):
                raise self.fail(f"{where}.security", "expected a list")
            for i, req in enumerate(sec):
                req = self.mapping(req, f"{where}.security[{i}]")
                for scheme_name, scopes in req.items():
                    if scheme_name not in schemes:
                        raise self.fail(f"{where}.security[{i}].{scheme_name}",
                                        "names a security scheme that is not defined")
                    security.append(SecurityRequirement(
                        scheme=str(scheme_name),
                        scopes=tuple(str(s) for s in (scopes or ())),
                    ))
        auth_type = "NONE"
        auth = op.get("x-amazon-apigateway-auth")
        if auth is not None:
            auth_type = str(self.mapping(auth, f"{where}.x-amazon-apigateway-auth")
                            .get("type", "NONE")).upper()
            if auth_type not in ("NONE", "AWS_IAM"):
                raise self.fail(f"{where}.x-amazon-apigateway-auth.type",
                                f"{auth_type!r} is not NONE or AWS_IAM")
        validator = op.get("x-amazon-apigateway-request-validator", default_validator)
        if validator is not None and validator not in validators:
            raise self.fail(f"{where}.x-amazon-apigateway-request-validator",
                            f"names the validator {validator!r}, which "
                            "x-amazon-apigateway-request-validators does not define")
        responses = op.get("responses") or {}
        return Operation(
            path=path,
            method=method,
            integration=integration,
            operation_id=op.get("operationId"),
            parameters=tuple(params.values()),
            security=tuple(security),
            auth_type=auth_type,
            request_validator=validator,
            is_default_route=bool(op.get("isDefaultRoute", False)),
            response_codes=tuple(str(k) for k in self.mapping(responses, f"{where}.responses")),
            raw=dict(op),
            where=f"{self.file}: {where}",
        )

    def resolve_ref(self, ref: str, where: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise self.fail(where, f"only local references (#/...) are supported, got {ref!r}")
        node: Any = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise self.fail(where, f"reference {ref!r} does not resolve")
            node = node[part]
        return self.mapping(node, where)

    def integration(self, raw: Any, where: str) -> Integration:
        raw = self.mapping(raw, where)
        if "$ref" in raw:
            raw = self.resolve_ref(str(raw["$ref"]), where)
        known = {
            "type", "uri", "httpMethod", "credentials", "connectionType", "connectionId",
            "requestParameters", "requestTemplates", "passthroughBehavior", "contentHandling",
            "timeoutInMillis", "cacheNamespace", "cacheKeyParameters", "responses", "tlsConfig",
            "payloadFormatVersion", "integrationSubtype", "responseTransferMode",
            "description", "responseParameters",
        }
        for key in raw:
            if key not in known:
                raise self.fail(f"{where}.{key}", "unknown key in an integration; see "
                                "docs/config.rst for the supported fields")
        itype = str(raw.get("type", "")).upper()
        if itype not in INTEGRATION_TYPES:
            raise self.fail(f"{where}.type", f"{raw.get('type')!r} is not an integration type; "
                            "use one of " + ", ".join(t.lower() for t in INTEGRATION_TYPES))
        if raw.get("integrationSubtype") is not None:
            raise self.fail(f"{where}.integrationSubtype",
                            "AWS service integration subtypes are not implemented")
        if str(raw.get("responseTransferMode", "BUFFERED")).upper() != "BUFFERED":
            raise self.fail(f"{where}.responseTransferMode",
                            "response streaming is not implemented; use BUFFERED")
        connection = str(raw.get("connectionType", "INTERNET")).upper()
        if connection != "INTERNET":
            raise self.fail(f"{where}.connectionType",
                            "VPC_LINK has no on-prem meaning; point the uri at the backend "
                            "directly and use connectionType INTERNET")
        uri = raw.get("uri", "")
        if not isinstance(uri, str):
            raise self.fail(f"{where}.uri", "expected a string")
        if itype != "MOCK" and not uri:
            raise self.fail(f"{where}.uri", f"a {itype} integration needs a uri")
        passthrough = str(raw.get("passthroughBehavior", "WHEN_NO_MATCH")).upper()
        if passthrough not in PASSTHROUGH_BEHAVIORS:
            raise self.fail(f"{where}.passthroughBehavior",
                            f"{passthrough!r} is not one of when_no_match, when_no_templates, "
                            "never")
        content_handling = raw.get("contentHandling")
        if content_handling is not None:
            content_handling = str(content_handling).upper()
            if content_handling not in CONTENT_HANDLINGS:
                raise self.fail(f"{where}.contentHandling",
                                "use CONVERT_TO_BINARY or CONVERT_TO_TEXT")
        timeout = raw.get("timeoutInMillis", 29000)
        try:
            timeout_ms = int(timeout)
        except (TypeError, ValueError):
            raise self.fail(f"{where}.timeoutInMillis", f"{timeout!r} is not a number") from None
        if timeout_ms < 50 or timeout_ms > 300000:
            raise self.fail(f"{where}.timeoutInMillis",
                            f"{timeout_ms} is outside 50..300000 milliseconds")
        responses: list[IntegrationResponseConfig] = []
        rmap = self.mapping(raw.get("responses"), f"{where}.responses")
        for pattern, spec in rmap.items():
            rw = f"{where}.responses.{pattern}"
            spec = self.mapping(spec, rw)
            for key in spec:
                if key not in ("statusCode", "responseParameters", "responseTemplates",
                               "contentHandling"):
                    raise self.fail(f"{rw}.{key}", "unknown key in an integration response")
            status = str(spec.get("statusCode", ""))
            if not _STATUS_RE.match(status):
                raise self.fail(f"{rw}.statusCode", f"{spec.get('statusCode')!r} is not an "
                                "HTTP status code (write it as a string, e.g. \"200\")")
            selection: str | None = None if pattern == "default" else str(pattern)
            if selection is not None:
                try:
                    re.compile(selection)
                except re.error as e:
                    raise self.fail(rw, f"the selection pattern is not a valid regex: {e}") \
                        from None
            ch = spec.get("contentHandling")
            if ch is not None and str(ch).upper() not in CONTENT_HANDLINGS:
                raise self.fail(f"{rw}.contentHandling",
                                "use CONVERT_TO_BINARY or CONVERT_TO_TEXT")
            responses.append(IntegrationResponseConfig(
                selection_pattern=selection,
                status_code=status,
                response_parameters=self.string_map(spec.get("responseParameters"),
                                                    f"{rw}.responseParameters"),
                response_templates=self.string_map(spec.get("responseTemplates"),
                                                   f"{rw}.responseTemplates", allow_null=True),
                content_handling=str(ch).upper() if ch is not None else None,
            ))
        response_parameters = {
            str(status): freeze_mapping(self.string_map(
                actions, f"{where}.responseParameters.{status}"))
            for status, actions in self.mapping(raw.get("responseParameters"),
                                                f"{where}.responseParameters").items()}
        http_method = raw.get("httpMethod")
        pfv = raw.get("payloadFormatVersion")
        if pfv is not None and str(pfv) not in ("1.0", "2.0"):
            raise self.fail(f"{where}.payloadFormatVersion", "use \"1.0\" or \"2.0\"")
        return Integration(
            type=itype,
            uri=uri,
            http_method=str(http_method).upper() if http_method else None,
            request_parameters=self.string_map(raw.get("requestParameters"),
                                               f"{where}.requestParameters"),
            request_templates=self.string_map(raw.get("requestTemplates"),
                                              f"{where}.requestTemplates", allow_null=True),
            passthrough_behavior=passthrough,
            content_handling=content_handling,
            timeout_ms=timeout_ms,
            responses=tuple(responses),
            payload_format_version=str(pfv) if pfv is not None else None,
            connection_type=connection,
            credentials=raw.get("credentials"),
            cache_key_parameters=tuple(raw.get("cacheKeyParameters") or ()),
            tls_config=self.mapping(raw.get("tlsConfig"), f"{where}.tlsConfig"),
            response_parameters=response_parameters,
            raw=dict(raw),
            where=f"{self.file}: {where}",
        )


def parse_definition(
    doc: Any,
    file: str,
    *,
    claimed_extensions: frozenset[str] = frozenset(),
    strict: bool = True,
    warnings: list[str] | None = None,
) -> ApiDefinition:
    """Parse an already-loaded document; ``file`` is used in error messages."""
    return _Parser(doc, file, claimed_extensions, strict, warnings).parse()
