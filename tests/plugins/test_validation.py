"""Request validation (§6.5, fact 22): required parameters, draft-04 body models, AWS's
400 messages, the order of checks, and where validation sits in the pipeline."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from twistgw.errors import ConfigError

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw.testing import GatewayHarness

PLUGINS = {"enabled": ["mock", "mapping", "validation"]}

VALIDATORS = {
    "all": {"validateRequestBody": True, "validateRequestParameters": True},
    "params": {"validateRequestBody": False, "validateRequestParameters": True},
    "body": {"validateRequestBody": True, "validateRequestParameters": False},
    "none": {"validateRequestBody": False, "validateRequestParameters": False},
}

PET = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "required": ["name", "price"],
    "properties": {
        "name": {"type": "string"},
        "price": {"type": "number", "minimum": 10, "maximum": 500},
        "type": {"type": "string", "enum": ["dog", "cat", "fish"]},
        # AWS's recorded form: a model referenced by its AWS URI, null allowed.
        "status": {"oneOf": [{"type": "null"}, {
            "$ref": "https://apigateway.amazonaws.com/restapis/abc123/models/StatusModel"}]},
        "owner": {"$ref": "#/components/schemas/Owner"},
    },
}
STATUS = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "string",
          "enum": ["available", "sold"]}
OWNER = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}


def harness(make_harness: HarnessFactory, b: Builders, doc: dict[str, Any]
            ) -> GatewayHarness:
    return make_harness(doc, config=b.gateway_config(plugins=PLUGINS))


def param(name: str, loc: str, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": loc, "required": required, "schema": {"type": "string"}}


def api(b: Builders, validator: str = "all", passthrough: str | None = None
        ) -> dict[str, Any]:
    extra = {"passthroughBehavior": passthrough} if passthrough else {}
    op = {**b.mock_op(200, '{"ok": true}', **extra),
          "x-amazon-apigateway-request-validator": validator,
          "parameters": [param("qs1", "query"), param("x-header-param", "header"),
                         param("optional", "query", required=False)],
          "requestBody": {"content": {"application/json": {
              "schema": {"$ref": "#/components/schemas/Pet"}}}}}
    return b.openapi(
        {"/pets/{issuer}": {"parameters": [param("issuer", "path")], "post": op}},
        components={"schemas": {"Pet": PET, "StatusModel": STATUS, "Owner": OWNER}},
        **{"x-amazon-apigateway-request-validators": VALIDATORS})


GOOD = {"qs1": "a", "hdr": "h", "body": {"name": "Rex", "price": 20}}


def call(h: GatewayHarness, *, qs: str = "qs1=a", header: str | None = "h",
         body: Any = GOOD["body"], ctype: str = "application/json") -> tuple[int, Any]:
    headers = {"Content-Type": ctype}
    if header is not None:
        headers["x-header-param"] = header
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = h.request("POST", f"/prod/pets/me?{qs}", headers=headers, body=raw)
    return response.status, json.loads(response.body)


@pytest.fixture
def h(make_harness: HarnessFactory, b: Builders) -> GatewayHarness:
    return harness(make_harness, b, api(b))


def test_valid_request_passes(h: GatewayHarness) -> None:
    assert call(h) == (200, {"ok": True})


# -- parameters (recorded message, §6.5) ---------------------------------------------------------


def test_recorded_missing_parameters_message(make_harness: HarnessFactory,
                                              b: Builders) -> None:
    """The recorded [x-header-param, issuer, qs1]: header < path < querystring keys.

    ``issuer`` is a required path parameter the resource path does not bind, so it is
    never present (the recording's API declared it the same way).
    """
    op = {**b.mock_op(200, '{"ok": true}'),
          "x-amazon-apigateway-request-validator": "params",
          "parameters": [param("qs1", "query"), param("issuer", "path"),
                         param("x-header-param", "header")]}
    doc = b.openapi({"/recorded": {"get": op}},
                    **{"x-amazon-apigateway-request-validators": VALIDATORS})
    h = harness(make_harness, b, doc)
    response = h.request("GET", "/prod/recorded")
    assert response.status == 400
    assert json.loads(response.body) == {
        "message": "Missing required request parameters: [x-header-param, issuer, qs1]"}
    assert response.headers.get("x-amzn-ErrorType") == "BadRequestException"


@pytest.mark.parametrize(("qs", "header", "missing"), [
    ("", "h", "[qs1]"),
    ("qs1=", "h", "[qs1]"),           # present but blank fails (§6.5: ?q1= fails)
    ("qs1=%20%20", "h", "[qs1]"),     # blanks only
    ("qs1=a", None, "[x-header-param]"),
    ("qs1=a", "  ", "[x-header-param]"),
    ("optional=1", None, "[x-header-param, qs1]"),
    ("qs1=&qs1=a", "h", None),        # the last value counts
])
def test_required_parameters_present_and_non_blank(h: GatewayHarness, qs: str,
                                                   header: str | None,
                                                   missing: str | None) -> None:
    status, body = call(h, qs=qs, header=header)
    if missing is None:
        assert status == 200
    else:
        assert (status, body) == (
            400, {"message": f"Missing required request parameters: {missing}"})


def test_parameters_are_checked_before_the_body(h: GatewayHarness) -> None:
    status, body = call(h, qs="", body=b"not json")
    assert (status, body["message"]) == (400, "Missing required request parameters: [qs1]")


# -- bodies (draft-04, $ref between models) ------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"not json",
    b'{"name": "Rex"',
    {"name": "Rex"},                                   # required
    {"name": 5, "price": 20},                          # type
    {"name": "Rex", "price": 5},                       # minimum
    {"name": "Rex", "price": 501},                     # maximum
    {"name": "Rex", "price": 20, "type": "bird"},      # enum
    {"name": "Rex", "price": 20, "status": "lost"},    # oneOf [null, $ref by AWS URI]
    {"name": "Rex", "price": 20, "owner": {}},         # $ref #/components/schemas/Owner
    {"name": "Rex", "price": 20, "owner": {"id": "x"}},
    [],
    b"",                                               # an empty body is {}: required fails
    b'{"name": "Rex", "price": NaN}',                  # not JSON to Java's parser
])
def test_invalid_bodies(h: GatewayHarness, body: Any) -> None:
    assert call(h, body=body) == (400, {"message": "Invalid request body"})


@pytest.mark.parametrize("body", [
    {"name": "Rex", "price": 10, "status": None},
    {"name": "Rex", "price": 500, "status": "sold", "type": "cat", "owner": {"id": 3}},
    {"name": "Rex", "price": 20, "extra": [1, 2]},
])
def test_valid_bodies(h: GatewayHarness, body: Any) -> None:
    assert call(h, body=body) == (200, {"ok": True})


def test_other_content_types_are_not_validated(h: GatewayHarness) -> None:
    """No model for the content type: the body is not checked (a passthrough may follow)."""
    assert call(h, body=b"<pet/>", ctype="application/xml")[0] != 400


def test_content_type_parameters_and_case_are_ignored(h: GatewayHarness) -> None:
    assert call(h, body=b"[]", ctype="Application/JSON; charset=utf-8") == (
        400, {"message": "Invalid request body"})


def test_validation_error_string_reaches_gateway_response_templates(
        make_harness: HarnessFactory, b: Builders) -> None:
    doc = api(b)
    doc["x-amazon-apigateway-gateway-responses"] = {
        "BAD_REQUEST_BODY": {"responseTemplates": {
            "application/json": '{"v": $context.error.validationErrorString}'}},
        "BAD_REQUEST_PARAMETERS": {"responseTemplates": {
            "application/json": '{"v": "$context.error.validationErrorString"}'}}}
    h = harness(make_harness, b, doc)
    status, body = call(h, qs="")
    assert (status, body) == (400, {"v": "Missing required request parameters: [qs1]"})
    response = h.request("POST", "/prod/pets/me?qs1=a",
                         headers={"Content-Type": "application/json", "x-header-param": "h"},
                         body=b'{"name": "Rex"}')
    assert (response.status, response.body) == (
        400, b'{"v": [object has missing required properties (["price"])]}')


# -- validator kinds ------------------------------------------------------------------------------


def test_params_only_validator_ignores_the_body(make_harness: HarnessFactory,
                                                b: Builders) -> None:
    h = harness(make_harness, b, api(b, "params"))
    assert call(h, body=b"not json")[0] == 200
    assert call(h, qs="")[0] == 400


def test_body_only_validator_ignores_parameters(make_harness: HarnessFactory,
                                                b: Builders) -> None:
    h = harness(make_harness, b, api(b, "body"))
    assert call(h, qs="", header=None)[0] == 200
    assert call(h, body=b"not json")[0] == 400


def test_validator_that_validates_nothing(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, api(b, "none"))
    assert call(h, qs="", header=None, body=b"x")[0] == 200


def test_validation_precedes_the_passthrough_415(make_harness: HarnessFactory,
                                                 b: Builders) -> None:
    """AWS validates the method request before the integration request's passthrough."""
    h = harness(make_harness, b, api(b, "params", passthrough="NEVER"))
    status, body = call(h, qs="", ctype="application/xml", body=b"<a/>")
    assert (status, body["message"]) == (400, "Missing required request parameters: [qs1]")
    assert call(h, ctype="application/xml", body=b"<a/>")[0] == 415


def test_swagger2_body_parameter(make_harness: HarnessFactory, b: Builders) -> None:
    doc = {"swagger": "2.0", "info": {"title": "t", "version": "1"},
           "x-amazon-apigateway-request-validators": VALIDATORS,
           "x-amazon-apigateway-request-validator": "all",
           "definitions": {"Owner": OWNER, "Wrap": {
               "type": "object", "required": ["owner"],
               "properties": {"owner": {"$ref": "#/definitions/Owner"}}}},
           "paths": {"/w": {"post": {
               **b.mock_op(200, '{"ok": true}'),
               "parameters": [{"in": "body", "name": "b",
                               "schema": {"$ref": "#/definitions/Wrap"}}]}}}}
    h = harness(make_harness, b, doc)
    ok = h.request("POST", "/prod/w", body=b'{"owner": {"id": 1}}')
    bad = h.request("POST", "/prod/w", body=b'{"owner": {}}')
    assert ok.status == 200
    assert (bad.status, json.loads(bad.body)) == (400, {"message": "Invalid request body"})


def test_builtin_empty_model(make_harness: HarnessFactory, b: Builders) -> None:
    """AWS's built-in Empty model is an object schema (§6.5)."""
    doc = api(b, "body")
    doc["paths"]["/pets/{issuer}"]["post"]["requestBody"] = {"content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Empty"}}}}
    h = harness(make_harness, b, doc)
    assert call(h, body={"any": 1})[0] == 200
    assert call(h, body=[1])[0] == 400


def test_validators_are_refused_without_the_plugin(make_harness: HarnessFactory,
                                                   b: Builders) -> None:
    with pytest.raises(ConfigError) as info:
        make_harness(api(b))
    assert "request_validation" in str(info.value)


@pytest.mark.parametrize("model", [
    {"type": "no such type"},
    {"type": "object", "properties": {"x": {"$ref": "#/components/schemas/Nope"}}},
])
def test_a_bad_model_is_a_500(make_harness: HarnessFactory, b: Builders,
                              model: dict[str, Any]) -> None:
    doc = api(b, "body")
    doc["components"]["schemas"]["Pet"] = model
    h = harness(make_harness, b, doc)
    response = h.request("POST", "/prod/pets/me", body=b'{"x": 1}',
                         headers={"Content-Type": "application/json"})
    assert response.status == 500
