"""API definitions: OpenAPI 3 and Swagger 2, YAML and JSON, into frozen attrs objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import yaml

from twistgw.definition import (
    ApiDefinition,
    GatewayResponseConfig,
    Integration,
    IntegrationResponseConfig,
    Operation,
    Parameter,
    RequestValidator,
    load_definition,
    parse_definition,
)
from twistgw.errors import ConfigError

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

INTEGRATION: dict[str, Any] = {
    "type": "mock",
    "requestTemplates": {"application/json": '{"statusCode": 200}'},
    "passthroughBehavior": "when_no_templates",
    "timeoutInMillis": 5000,
    "responses": {
        "default": {"statusCode": "200",
                    "responseParameters": {"method.response.header.X-Kind": "'pet'"},
                    "responseTemplates": {"application/json": '{"ok": true}'}},
        "4\\d{2}": {"statusCode": "404"},
    },
}

ROOT_EXTENSIONS: dict[str, Any] = {
    "x-amazon-apigateway-binary-media-types": ["image/*", "application/octet-stream"],
    "x-amazon-apigateway-api-key-source": "AUTHORIZER",
    "x-amazon-apigateway-request-validators": {
        "all": {"validateRequestBody": True, "validateRequestParameters": True},
        "params": {"validateRequestBody": False, "validateRequestParameters": True},
    },
    "x-amazon-apigateway-gateway-responses": {
        "DEFAULT_4XX": {"responseParameters": {
            "gatewayresponse.header.Access-Control-Allow-Origin": "'*'"}},
        "MISSING_AUTHENTICATION_TOKEN": {
            "statusCode": "404",
            "responseTemplates": {"application/json": '{"m": $context.error.messageString}'}},
    },
}


def _paths(param_style: str) -> dict[str, Any]:
    """The same paths written in OpenAPI 3 (``schema``) or Swagger 2 (``type``) style."""
    def param(name: str, loc: str, required: bool) -> dict[str, Any]:
        p: dict[str, Any] = {"name": name, "in": loc, "required": required}
        if param_style == "openapi3":
            p["schema"] = {"type": "string"}
        else:
            p["type"] = "string"
        return p

    return {
        "/pets": {
            "get": {"operationId": "listPets",
                    "parameters": [param("limit", "query", False),
                                   param("X-Trace", "header", True)],
                    "responses": {"200": {"description": "ok"}},
                    "x-amazon-apigateway-request-validator": "params",
                    "x-amazon-apigateway-integration": INTEGRATION},
            "x-amazon-apigateway-any-method": {
                "responses": {"200": {"description": "ok"}},
                "x-amazon-apigateway-integration": INTEGRATION},
        },
        "/pets/{petId}": {
            "parameters": [param("petId", "path", True)],
            "get": {"responses": {"200": {"description": "ok"}, "404": {"description": "no"}},
                    "x-amazon-apigateway-integration": INTEGRATION},
        },
        "/{proxy+}": {
            "options": {"responses": {"200": {"description": "ok"}},
                        "x-amazon-apigateway-integration": INTEGRATION},
        },
    }


def openapi3_doc() -> dict[str, Any]:
    return {"openapi": "3.0.1", "info": {"title": "pets", "version": "1"},
            **ROOT_EXTENSIONS, "paths": _paths("openapi3")}


def swagger2_doc() -> dict[str, Any]:
    return {"swagger": "2.0", "info": {"title": "pets", "version": "1"},
            **ROOT_EXTENSIONS, "paths": _paths("swagger2")}


@pytest.fixture
def both(tmp_path: Path) -> tuple[ApiDefinition, ApiDefinition]:
    """The same API as OpenAPI 3 YAML and as Swagger 2.0 JSON, loaded from files."""
    y = tmp_path / "api.yaml"
    y.write_text(yaml.safe_dump(openapi3_doc(), sort_keys=False), encoding="utf-8")
    j = tmp_path / "api.json"
    j.write_text(json.dumps(swagger2_doc(), indent=1), encoding="utf-8")
    return load_definition(y, str(y)), load_definition(j, str(j))


def test_openapi3_yaml_and_swagger2_json_give_equal_operations(
        both: tuple[ApiDefinition, ApiDefinition]) -> None:
    oas3, swagger = both
    assert (oas3.format, swagger.format) == ("openapi3", "swagger2")
    assert len(oas3.operations) == 4
    assert oas3.operations == swagger.operations
    assert oas3.gateway_responses == swagger.gateway_responses
    assert oas3.binary_media_types == swagger.binary_media_types
    assert oas3.request_validators == swagger.request_validators
    assert oas3.api_key_source == swagger.api_key_source


def test_operations_are_parsed(both: tuple[ApiDefinition, ApiDefinition]) -> None:
    ops = {(o.method, o.path): o for o in both[0].operations}
    assert set(ops) == {("GET", "/pets"), ("ANY", "/pets"), ("GET", "/pets/{petId}"),
                        ("OPTIONS", "/{proxy+}")}
    get = ops[("GET", "/pets")]
    assert get.operation_id == "listPets"
    assert get.parameters == (Parameter("limit", "query", False),
                              Parameter("X-Trace", "header", True))
    assert get.request_validator == "params"
    assert get.route_key == "GET /pets"
    assert ops[("ANY", "/pets")].route_key == "ANY /pets"
    assert ops[("GET", "/pets/{petId}")].parameters == (Parameter("petId", "path", True),)
    assert ops[("GET", "/pets/{petId}")].response_codes == ("200", "404")


def test_integration_is_parsed(both: tuple[ApiDefinition, ApiDefinition]) -> None:
    integ = both[0].operations[0].integration
    assert integ == Integration(
        type="MOCK",
        request_templates={"application/json": '{"statusCode": 200}'},
        passthrough_behavior="WHEN_NO_TEMPLATES",
        timeout_ms=5000,
        responses=(
            IntegrationResponseConfig(
                selection_pattern=None, status_code="200",
                response_parameters={"method.response.header.X-Kind": "'pet'"},
                response_templates={"application/json": '{"ok": true}'}),
            IntegrationResponseConfig(selection_pattern="4\\d{2}", status_code="404"),
        ),
    )
    assert not integ.is_proxy


def test_root_extensions_become_frozen_objects(
        both: tuple[ApiDefinition, ApiDefinition]) -> None:
    api = both[0]
    assert api.binary_media_types == ("image/*", "application/octet-stream")
    assert api.api_key_source == "AUTHORIZER"
    assert dict(api.request_validators) == {
        "all": RequestValidator("all", validate_body=True, validate_parameters=True),
        "params": RequestValidator("params", validate_body=False, validate_parameters=True),
    }
    assert dict(api.gateway_responses) == {
        "DEFAULT_4XX": GatewayResponseConfig(
            "DEFAULT_4XX", None,
            {"gatewayresponse.header.Access-Control-Allow-Origin": "'*'"}),
        "MISSING_AUTHENTICATION_TOKEN": GatewayResponseConfig(
            "MISSING_AUTHENTICATION_TOKEN", 404, {},
            {"application/json": '{"m": $context.error.messageString}'}),
    }
    frozen: list[Any] = [api, api.operations[0], api.operations[0].integration,
                         api.gateway_responses["DEFAULT_4XX"], api.request_validators["all"]]
    for obj in frozen:
        field = attrs.fields(type(obj))[0].name
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(obj, field, None)
    with pytest.raises(TypeError):
        api.gateway_responses["THROTTLED"] = api.gateway_responses["DEFAULT_4XX"]  # type: ignore[index]


def test_defaults_when_extensions_are_absent() -> None:
    api = parse_definition({"openapi": "3.0.1", "paths": {}}, "x.yaml")
    assert api.binary_media_types == ()
    assert api.api_key_source == "HEADER"
    assert dict(api.gateway_responses) == {}
    assert dict(api.request_validators) == {}
    assert api.operations == ()


def test_root_request_validator_applies_to_every_operation() -> None:
    doc = {"openapi": "3.0.1",
           "x-amazon-apigateway-request-validators": {"v": {"validateRequestBody": True}},
           "x-amazon-apigateway-request-validator": "v",
           "paths": {"/a": {"get": {"x-amazon-apigateway-integration": {"type": "mock"}}}}}
    assert parse_definition(doc, "x.yaml").operations[0].request_validator == "v"


def test_unknown_request_validator_is_an_error() -> None:
    doc = {"openapi": "3.0.1", "paths": {"/a": {"get": {
        "x-amazon-apigateway-request-validator": "nope",
        "x-amazon-apigateway-integration": {"type": "mock"}}}}}
    with pytest.raises(ConfigError) as info:
        parse_definition(doc, "x.yaml")
    assert info.value.path == "paths./a.get.x-amazon-apigateway-request-validator"
    assert "x-amazon-apigateway-request-validators does not define" in str(info.value)


def test_any_method_is_any() -> None:
    doc = {"openapi": "3.0.1", "paths": {"/a": {"x-amazon-apigateway-any-method": {
        "x-amazon-apigateway-integration": {"type": "mock"}}}}}
    (op,) = parse_definition(doc, "x.yaml").operations
    assert op.method == "ANY"
    assert op.path == "/a"


def test_is_default_route() -> None:
    doc = {"openapi": "3.0.1", "paths": {"/$default": {"x-amazon-apigateway-any-method": {
        "isDefaultRoute": True,
        "x-amazon-apigateway-integration": {"type": "http_proxy", "uri": "http://b/",
                                            "payloadFormatVersion": "1.0"}}}}}
    with pytest.raises(ConfigError):  # '$default' is not a valid REST path segment
        parse_definition(doc, "x.yaml")
    doc["paths"] = {"/": doc["paths"]["/$default"]}
    (op,) = parse_definition(doc, "x.yaml").operations
    assert op.is_default_route
    assert op.route_key == "$default"


def test_second_default_route_is_an_error() -> None:
    route = {"isDefaultRoute": True,
             "x-amazon-apigateway-integration": {"type": "http_proxy", "uri": "http://b/"}}
    doc = {"openapi": "3.0.1", "paths": {"/a": {"x-amazon-apigateway-any-method": route},
                                         "/b": {"x-amazon-apigateway-any-method": route}}}
    with pytest.raises(ConfigError) as info:
        parse_definition(doc, "x.yaml")
    assert info.value.path == "paths./b.x-amazon-apigateway-any-method"


def test_ref_to_components_integrations() -> None:
    shared = {"type": "http_proxy", "httpMethod": "GET", "uri": "http://backend/pets",
              "payloadFormatVersion": "1.0", "timeoutInMillis": 3000}
    doc = {"openapi": "3.0.1",
           "components": {"x-amazon-apigateway-integrations": {"pets": shared}},
           "paths": {
               "/pets": {"get": {"x-amazon-apigateway-integration": {
                   "$ref": "#/components/x-amazon-apigateway-integrations/pets"}}},
               "/cats": {"get": {"x-amazon-apigateway-integration": shared}},
           }}
    api = parse_definition(doc, "x.yaml")
    pets, cats = api.operations
    assert pets.integration is not None
    assert pets.integration == cats.integration
    assert pets.integration.uri == "http://backend/pets"
    assert pets.integration.timeout_ms == 3000


def test_ref_that_does_not_resolve() -> None:
    doc = {"openapi": "3.0.1", "paths": {"/a": {"get": {"x-amazon-apigateway-integration": {
        "$ref": "#/components/x-amazon-apigateway-integrations/nope"}}}}}
    with pytest.raises(ConfigError) as info:
        parse_definition(doc, "x.yaml")
    assert info.value.path == "paths./a.get.x-amazon-apigateway-integration"
    assert "does not resolve" in info.value.problem


def test_ref_to_a_parameter() -> None:
    doc = {"openapi": "3.0.1",
           "components": {"parameters": {"id": {"name": "id", "in": "path",
                                                 "required": True}}},
           "paths": {"/a/{id}": {"get": {
               "parameters": [{"$ref": "#/components/parameters/id"}],
               "x-amazon-apigateway-integration": {"type": "mock"}}}}}
    (op,) = parse_definition(doc, "x.yaml").operations
    assert op.parameters == (Parameter("id", "path", True),)


@pytest.mark.parametrize(("paths", "where", "words"), [
    ({"/a/{p+}/b": {}}, "paths./a/{p+}/b", "must be the last segment"),
    ({"/a{id}": {}}, "paths./a{id}", "whole-segment"),
    ({"a": {}}, "paths.a", "start with '/'"),
    ({"/a": {"trace": {}}}, "paths./a.trace", "does not support TRACE"),
    ({"/a": {"get": {"x-amazon-apigateway-integration": {"type": "lambda"}}}},
     "paths./a.get.x-amazon-apigateway-integration.type", "is not an integration type"),
    ({"/a": {"get": {"x-amazon-apigateway-integration": {"type": "http"}}}},
     "paths./a.get.x-amazon-apigateway-integration.uri", "needs a uri"),
    ({"/a": {"get": {"x-amazon-apigateway-integration": {"type": "mock", "bogus": 1}}}},
     "paths./a.get.x-amazon-apigateway-integration.bogus", "unknown key in an integration"),
    ({"/a": {"get": {"x-amazon-apigateway-integration": {"type": "mock",
                                                         "timeoutInMillis": 10}}}},
     "paths./a.get.x-amazon-apigateway-integration.timeoutInMillis", "outside 50..300000"),
    ({"/a": {"get": {"x-amazon-apigateway-integration": {
        "type": "mock", "passthroughBehavior": "sometimes"}}}},
     "paths./a.get.x-amazon-apigateway-integration.passthroughBehavior", "when_no_match"),
    ({"/a": {"get": {"x-amazon-apigateway-integration": {
        "type": "mock", "responses": {"default": {"statusCode": "OK"}}}}}},
     "paths./a.get.x-amazon-apigateway-integration.responses.default.statusCode",
     "write it as a string"),
    ({"/a": {"get": {"x-amazon-apigateway-integration": {
        "type": "mock", "responses": {"([": {"statusCode": "200"}}}}}},
     "paths./a.get.x-amazon-apigateway-integration.responses.([", "not a valid regex"),
    ({"/a": {"get": {"x-amazon-apigateway-integration": {
        "type": "mock", "connectionType": "VPC_LINK"}}}},
     "paths./a.get.x-amazon-apigateway-integration.connectionType", "INTERNET"),
])
def test_definition_errors(paths: dict[str, Any], where: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_definition({"openapi": "3.0.1", "paths": paths}, "defs/api.yaml")
    err = info.value
    assert err.file == "defs/api.yaml"
    assert err.path == where
    assert words in err.problem
    assert str(err).startswith(f"defs/api.yaml: {where}: ")


@pytest.mark.parametrize(("doc", "words"), [
    ({"openapi": "3.1.0", "paths": {}}, "use 3.0.x or Swagger 2.0"),
    ({"swagger": "1.2", "paths": {}}, "only Swagger 2.0"),
    ({"paths": {}}, "is this an API definition?"),
    ([1, 2], "a mapping at the top level"),
])
def test_not_an_api_definition(doc: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_definition(doc, "x.yaml")
    assert words in info.value.problem


def test_integration_type_is_case_insensitive() -> None:
    doc = {"openapi": "3.0.1", "paths": {"/a": {"get": {"x-amazon-apigateway-integration": {
        "type": "MoCk", "passthroughBehavior": "Never"}}}}}
    (op,) = parse_definition(doc, "x.yaml").operations
    assert op.integration is not None
    assert (op.integration.type, op.integration.passthrough_behavior) == ("MOCK", "NEVER")


def test_metadata_extensions_are_accepted() -> None:
    doc = {"openapi": "3.0.1", "x-amazon-apigateway-importexport-version": "1.0",
           "x-amazon-apigateway-documentation": {"version": "1"}, "paths": {}}
    assert parse_definition(doc, "x.yaml").operations == ()


def test_claimed_extension_reaches_the_plugin() -> None:
    doc = {"openapi": "3.0.1", "x-amazon-apigateway-policy": {"Version": "2012-10-17"},
           "paths": {}}
    api = parse_definition(doc, "x.yaml",
                           claimed_extensions=frozenset({"x-amazon-apigateway-policy"}))
    assert dict(api.extensions) == {"x-amazon-apigateway-policy": {"Version": "2012-10-17"}}


def test_security_schemes_kinds() -> None:
    doc = {"swagger": "2.0", "securityDefinitions": {
        "key": {"type": "apiKey", "name": "x-api-key", "in": "header"},
        "iam": {"type": "apiKey", "name": "Authorization", "in": "header",
                "x-amazon-apigateway-authtype": "awsSigv4"},
        "tok": {"type": "apiKey", "name": "Authorization", "in": "header",
                "x-amazon-apigateway-authorizer": {"type": "token"}},
        "pool": {"type": "apiKey", "name": "Authorization", "in": "header",
                 "x-amazon-apigateway-authtype": "cognito_user_pools"},
        "oauth": {"type": "oauth2", "flow": "implicit"},
    }, "paths": {}}
    kinds = {n: s.kind for n, s in parse_definition(doc, "x.json").security_schemes.items()}
    assert kinds == {"key": "api_key", "iam": "aws_iam", "tok": "authorizer:token",
                     "pool": "authorizer:cognito_user_pools", "oauth": "other"}


def test_operation_is_frozen_and_compares_by_value() -> None:
    a = Operation(path="/a", method="GET", raw={"x": 1}, where="f: here")
    b = Operation(path="/a", method="GET", raw={"y": 2}, where="g: there")
    assert a == b  # raw and where are bookkeeping, not identity


# -- end to end --------------------------------------------------------------------------------


def test_cdk_relaxed_mock_template_end_to_end(make_harness: HarnessFactory,
                                              b: Builders) -> None:
    """CDK's CORS OPTIONS method stores ``{statusCode: 200}`` (unquoted) and AWS serves it."""
    op = b.mock_op(template="{statusCode: 200}", responses={"default": {
        "statusCode": "204",
        "responseParameters": {
            "method.response.header.Access-Control-Allow-Origin": "'*'",
            "method.response.header.Access-Control-Allow-Methods": "'OPTIONS,GET'"},
    }})
    h = make_harness(b.openapi({"/pets": {"options": op}}))
    response = h.request("OPTIONS", "/prod/pets", headers={"Origin": "https://x.example"})
    assert response.status == 204
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    assert response.headers.get("Access-Control-Allow-Methods") == "OPTIONS,GET"
    assert response.body == b""


def test_ref_integration_serves_end_to_end(make_harness: HarnessFactory, b: Builders) -> None:
    doc = b.openapi(
        {"/pets": {"get": {"x-amazon-apigateway-integration": {
            "$ref": "#/components/x-amazon-apigateway-integrations/fixed"}}}},
        components={"x-amazon-apigateway-integrations": {
            "fixed": b.mock_integration(200, '{"from": "ref"}')}})
    response = make_harness(doc).request("GET", "/prod/pets")
    assert (response.status, response.body) == (200, b'{"from": "ref"}')


def test_swagger2_json_definition_serves_end_to_end(make_harness: HarnessFactory,
                                                    b: Builders) -> None:
    doc = {"swagger": "2.0", "info": {"title": "s", "version": "1"},
           "paths": {"/pets": {"get": b.mock_op(200, '{"swagger": 2}')}}}
    h = make_harness(None, definitions={"api.json": json.dumps(doc)},
                     apis=[{"id": "s2", "definition": "api.json",
                            "stages": [{"name": "prod"}]}])
    response = h.request("GET", "/prod/pets")
    assert (response.status, response.body) == (200, b'{"swagger": 2}')
