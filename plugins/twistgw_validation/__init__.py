"""Request validation: required parameters and JSON Schema draft-04 bodies (§6.5).

A shipped plugin that claims the ``request_validation`` feature.  An operation's request
validator (``x-amazon-apigateway-request-validator``, method level over API level) says
what to check:

* ``validateRequestParameters``: every parameter the operation marks ``required`` must be
  present **and non-blank** (``?q=`` and a header of blanks fail).  Failure is
  ``400 {"message": "Missing required request parameters: [a, b]"}``
  (``BAD_REQUEST_PARAMETERS``), the names in the order of AWS's sorted parameter keys
  (``method.request.header.*`` < ``path`` < ``querystring``, then by name).
* ``validateRequestBody``: the body is parsed as JSON and checked against the model for
  the request's ``Content-Type`` (default ``application/json``; ``$default`` when no
  model is declared for that type; no model, no body check).  Models are the API's
  ``components.schemas`` (Swagger 2: ``definitions``) and may ``$ref`` each other as
  ``#/components/schemas/Name``, ``#/definitions/Name`` or AWS's
  ``https://apigateway.amazonaws.com/restapis/{id}/models/Name``.  Failure (schema
  violation or unparsable JSON) is ``400 {"message": "Invalid request body"}``
  (``BAD_REQUEST_BODY``); ``$context.error.validationErrorString`` then holds the
  validator's messages in AWS's wording (:mod:`twistgw_validation.messages`).

Parameters are checked before the body.  Validation runs after ``authorize`` and before
every other ``map_request`` impl: this plugin's ``map_request`` is ``tryfirst`` and
returns ``None`` (it only refuses), and shipped plugins register in name order so it runs
ahead of the mapping plugin's ``tryfirst`` impl (a request AWS would refuse with 400 is
never answered 415 by the passthrough check).  Each route's validator is compiled once
(kept in the route's memo).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from jsonschema import Draft4Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]
from referencing import Registry as SchemaRegistry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT4
from twisted.logger import Logger

from twistgw import ApiConfigurationError, BadRequestBody, BadRequestParameters, hookimpl
from twistgw.deployment import memoize

from .messages import AwsDraft4Validator, aws_messages

if TYPE_CHECKING:
    from twistgw import Context, IntegrationRequest, Registry
    from twistgw.definition import ApiDefinition, Operation
    from twistgw.deployment import Route

__all__ = ["register", "map_request", "RouteValidator", "compile_validator",
           "missing_parameters", "MODEL_URI"]

log = Logger()

#: Where a model lives in the schema registry (AWS's own form of a model reference).
MODEL_URI = "https://apigateway.amazonaws.com/restapis/{api}/models/{name}"

_REF_RE = re.compile(
    r"^(?:#/components/schemas/|#/definitions/"
    r"|https://apigateway\.amazonaws\.com/restapis/[^/]+/models/)([^/]+)$")

#: The models AWS creates with every REST API (§6.5).
BUILTIN_MODELS: Mapping[str, Any] = {
    "Empty": {"$schema": "http://json-schema.org/draft-04/schema#",
              "title": "Empty Schema", "type": "object"},
    "Error": {"$schema": "http://json-schema.org/draft-04/schema#",
              "title": "Error Schema", "type": "object",
              "properties": {"message": {"type": "string"}}},
}

#: AWS sorts ``method.request.<location>.<name>`` keys; these are the location words.
_LOCATION_WORD = {"header": "header", "path": "path", "query": "querystring"}


@hookimpl
def register(registry: Registry) -> None:
    """Claim request validation; take part only in routes that name a validator."""
    registry.add_feature("request_validation")
    registry.add_route_filter(lambda route: route.operation.request_validator is not None)


# -- compiling ---------------------------------------------------------------------------------


def _thaw(value: Any) -> Any:
    """A plain JSON value (dicts and lists) from the definition's frozen mappings."""
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def _canonical_refs(value: Any, api: str) -> Any:
    """``value`` with every model ``$ref`` rewritten to the model's registry URI."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "$ref" and isinstance(v, str):
                m = _REF_RE.match(v)
                out[k] = MODEL_URI.format(api=api, name=m.group(1)) if m else v
            else:
                out[k] = _canonical_refs(v, api)
        return out
    if isinstance(value, list):
        return [_canonical_refs(v, api) for v in value]
    return value


def _mime(value: str | None) -> str:
    if not value:
        return "application/json"
    return value.split(";", 1)[0].strip().lower() or "application/json"


def request_models(op: Operation) -> dict[str, Any]:
    """The operation's body schemas by content type (lower-case), as written."""
    raw = op.raw
    found: dict[str, Any] = {}
    body = raw.get("requestBody")
    if isinstance(body, Mapping):
        content = body.get("content")
        if isinstance(content, Mapping):
            for ctype, media in content.items():
                if isinstance(media, Mapping) and media.get("schema") is not None:
                    found[str(ctype).lower()] = media["schema"]
    for p in raw.get("parameters") or ():
        if isinstance(p, Mapping) and p.get("in") == "body" and p.get("schema") is not None:
            for ctype in raw.get("consumes") or ["application/json"]:
                found[str(ctype).lower()] = p["schema"]
    return found


@attrs.frozen
class RouteValidator:
    """What one route checks: the required parameters and the body schemas."""

    #: ``(location, name)`` in AWS's order of sorted ``method.request.*`` keys.
    required: tuple[tuple[str, str], ...] = ()
    #: Draft-04 validators by request content type (lower-case), ``$default`` included.
    bodies: Mapping[str, Draft4Validator] = attrs.field(factory=dict)


def compile_validator(definition: ApiDefinition, op: Operation, api_id: str
                      ) -> RouteValidator | None:
    """The route's validator, or ``None`` when its request validator checks nothing.

    :raises SchemaError: a model is not a valid draft-04 schema.
    """
    if op.request_validator is None:
        return None
    config = definition.request_validators.get(op.request_validator)
    if config is None or not (config.validate_body or config.validate_parameters):
        return None
    required: tuple[tuple[str, str], ...] = ()
    if config.validate_parameters:
        keyed = sorted((f"method.request.{_LOCATION_WORD[p.location]}.{p.name}",
                        (p.location, p.name)) for p in op.parameters if p.required)
        required = tuple(pair for _, pair in keyed)
    bodies: dict[str, Draft4Validator] = {}
    if config.validate_body:
        schemas = request_models(op)
        if schemas:
            models = {**BUILTIN_MODELS, **_thaw(definition.models)}
            registry: SchemaRegistry[Any] = SchemaRegistry().with_resources(
                (MODEL_URI.format(api=api_id, name=name),
                 DRAFT4.create_resource(_canonical_refs(_thaw(model), api_id)))
                for name, model in models.items())
            for ctype, schema in schemas.items():
                schema = _canonical_refs(_thaw(schema), api_id)
                Draft4Validator.check_schema(schema)
                bodies[ctype] = AwsDraft4Validator(schema, registry=registry)
    return RouteValidator(required=required, bodies=bodies)


def _validator(ctx: Context, route: Route) -> RouteValidator | None:
    definition = ctx.api
    assert definition is not None
    return memoize(route, "validation", lambda: compile_validator(  # type: ignore[no-any-return]
        definition, route.operation, route.api_id))


# -- checking ------------------------------------------------------------------------------------


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def missing_parameters(ctx: Context, required: tuple[tuple[str, str], ...]) -> list[str]:
    """The names of the required parameters absent or blank in the request, in order."""
    missing: list[str] = []
    query: dict[str, str] | None = None
    for location, name in required:
        if location == "header":
            value = ctx.request.headers.get(name)
        elif location == "path":
            value = ctx.path_params.get(name)
        else:
            if query is None:
                query = dict(ctx.request.query)  # the last value of a repeated name
            value = query.get(name)
        if _blank(value):
            missing.append(name)
    return missing


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _body_errors(validator: Draft4Validator, body: bytes) -> list[str]:
    """AWS's messages for the body (:mod:`twistgw_validation.messages`); none if valid."""
    try:
        instance = json.loads(body.decode("utf-8") if body.strip() else "{}",
                              parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        return [f"Unable to parse the request body as JSON: {e}"]
    try:
        return aws_messages(validator.iter_errors(instance))
    except RecursionError:
        return ["the request body is nested too deeply"]


@hookimpl(tryfirst=True)
def map_request(ctx: Context, request: IntegrationRequest) -> None:
    """Refuse the request when its validator says so; never changes it."""
    route = ctx.route
    if route is None or route.operation.request_validator is None:
        return None
    try:
        validator = _validator(ctx, route)
    except (SchemaError, Unresolvable) as e:
        log.error("({request_id}) Execution failed due to configuration error: invalid "
                  "model for request validation: {problem}", request_id=ctx.request_id,
                  problem=str(e).splitlines()[0])
        raise ApiConfigurationError() from None
    if validator is None:
        return None
    if validator.required:
        missing = missing_parameters(ctx, validator.required)
        if missing:
            message = f"Missing required request parameters: [{', '.join(missing)}]"
            raise BadRequestParameters(message, validation_error=message)
    if validator.bodies:
        ctype = _mime(ctx.request.headers.get("content-type"))
        body_validator = validator.bodies.get(ctype) or validator.bodies.get("$default")
        if body_validator is not None:
            try:
                problems = _body_errors(body_validator, ctx.request.body)
            except Unresolvable as e:
                log.error("({request_id}) Execution failed due to configuration error: "
                          "a model reference does not resolve: {problem}",
                          request_id=ctx.request_id, problem=str(e))
                raise ApiConfigurationError() from None
            if problems:
                raise BadRequestBody(validation_error=f"[{', '.join(problems)}]")
    return None
