"""Golden tests: ``$context.error.validationErrorString`` for body failures in AWS's
wording (the draft-04 validator's message bundle, see twistgw_validation.messages).

aws-apigw-spec.md §6.5 records only the 400 body (``Invalid request body``), not these
strings.  The one string observed on AWS itself is the first case below; the other
expected strings are that validator's messages as observed in its users' outputs (the
same library: ``object has missing required properties ([...])`` with sorted names,
``instance type (number) does not match any allowed primitive type (allowed:
["integer"])``) and its bundle's text for the remaining keywords.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from twistgw_validation.messages import AwsDraft4Validator, validation_error_string

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory


def check(schema: dict[str, Any], instance: Any) -> str:
    return validation_error_string(AwsDraft4Validator(schema).iter_errors(instance))


def test_observed_on_aws_missing_required_property() -> None:
    schema = {"type": "object", "required": ["nombre", "email"],
              "properties": {"nombre": {"type": "string"}, "email": {"type": "string"}}}
    assert check(schema, {"nombre": "Ana"}) == \
        '[object has missing required properties (["email"])]'


GOLDEN: list[tuple[str, dict[str, Any], Any, str]] = [
    ("required names sorted", {"required": ["enumField", "arrayField"]}, {},
     'object has missing required properties (["arrayField","enumField"])'),
    ("type integer, got a decimal", {"type": "integer"}, 1.4,
     'instance type (number) does not match any allowed primitive type '
     '(allowed: ["integer"])'),
    ("type number allows integer", {"type": "number"}, "1",
     'instance type (string) does not match any allowed primitive type '
     '(allowed: ["integer","number"])'),
    ("type list sorted", {"type": ["string", "null", "boolean"]}, 3,
     'instance type (integer) does not match any allowed primitive type '
     '(allowed: ["boolean","null","string"])'),
    ("enum", {"enum": ["dog", "cat", "fish"]}, "gecko",
     'instance value ("gecko") not found in enum (possible values: ["dog","cat","fish"])'),
    ("minimum", {"minimum": 10}, 5,
     "numeric instance is lower than the required minimum (minimum: 10, found: 5)"),
    ("exclusive minimum", {"minimum": 10, "exclusiveMinimum": True}, 10,
     "numeric instance is not strictly greater than the required minimum 10"),
    ("maximum", {"maximum": 500}, 500.5,
     "numeric instance is greater than the required maximum (maximum: 500, found: 500.5)"),
    ("exclusive maximum", {"maximum": 500, "exclusiveMaximum": True}, 500,
     "numeric instance is not strictly lower than the required maximum 500"),
    ("multipleOf", {"multipleOf": 3}, 10, "remainder of division is not zero (10 / 3)"),
    ("minLength", {"minLength": 3}, "ab",
     'string "ab" is too short (length: 2, required minimum: 3)'),
    ("maxLength in code points", {"maxLength": 2}, "h\u00e9llo",
     'string "h\u00e9llo" is too long (length: 5, maximum allowed: 2)'),
    ("pattern", {"pattern": "^[a-z]+$"}, "Abc",
     'ECMA 262 regex "^[a-z]+$" does not match input string "Abc"'),
    ("minItems", {"minItems": 2}, [1],
     "array is too short: must have at least 2 elements but instance has 1 elements"),
    ("maxItems", {"maxItems": 1}, [1, 2],
     "array is too long: must have at most 1 elements but instance has 2 elements"),
    ("uniqueItems", {"uniqueItems": True}, [1, 1], "array must not contain duplicate elements"),
    ("additionalItems", {"items": [{}, {}], "additionalItems": False}, [1, 2, 3],
     "schema only allows 2 elements in array but instance has 3 elements"),
    ("minProperties", {"minProperties": 2}, {"a": 1},
     "object has too few properties (found 1 but schema requires at least 2)"),
    ("maxProperties", {"maxProperties": 1}, {"a": 1, "b": 2},
     "object has too many properties (found 2 but schema requires at most 1)"),
    ("additionalProperties", {"properties": {"a": {}}, "patternProperties": {"^x-": {}},
                              "additionalProperties": False},
     {"a": 1, "zz": 2, "x-ok": 3, "b": 4},
     'object instance has properties which are not allowed by the schema: ["b","zz"]'),
    ("anyOf", {"anyOf": [{"type": "string"}, {"type": "integer"}]}, 1.5,
     "instance failed to match at least one required schema among 2"),
    ("oneOf none", {"oneOf": [{"type": "null"}, {"enum": ["a"]}]}, "b",
     "instance failed to match exactly one schema (matched 0 out of 2)"),
    ("oneOf two", {"oneOf": [{"type": "integer"}, {"minimum": 0}]}, 3,
     "instance failed to match exactly one schema (matched 2 out of 2)"),
    ("allOf", {"allOf": [{"type": "integer"}, {"minimum": 5}, {"maximum": 1}]}, 3,
     "instance failed to match all required schemas (matched only 1 out of 3)"),
    ("not", {"not": {"type": "string"}}, "x",
     "instance matched a schema which it should not have"),
    ("property dependencies", {"dependencies": {"card": ["billing", "address"]}},
     {"card": 1, "address": 2},
     'property "card" of object has missing property dependencies (schema requires '
     '["address","billing"]; missing: ["billing"])'),
]


@pytest.mark.parametrize(("schema", "instance", "expected"),
                         [g[1:] for g in GOLDEN], ids=[g[0] for g in GOLDEN])
def test_golden_message(schema: dict[str, Any], instance: Any, expected: str) -> None:
    assert check(schema, instance) == f"[{expected}]"


def test_format_is_not_checked() -> None:
    assert check({"type": "string", "format": "email"}, "not an address") == "[]"


def test_members_are_reported_root_first_then_by_name() -> None:
    schema = {"type": "object", "properties": {
        "b": {"type": "string"}, "a": {"type": "object", "required": ["id"]},
        "list": {"items": {"type": "integer"}}}}
    assert check(schema, {"b": 1, "a": {}, "list": [1, "x"]}) == (
        '[object has missing required properties (["id"]), '
        'instance type (integer) does not match any allowed primitive type '
        '(allowed: ["string"]), '
        'instance type (string) does not match any allowed primitive type '
        '(allowed: ["integer"])]')


def test_a_failing_object_is_not_descended_into() -> None:
    schema = {"type": "object", "required": ["price"],
              "properties": {"name": {"type": "string"}}}
    assert check(schema, {"name": 7}) == \
        '[object has missing required properties (["price"])]'


def test_several_keywords_of_one_node_in_keyword_order() -> None:
    schema = {"type": "string", "minLength": 5, "pattern": "^[0-9]+$"}
    assert check(schema, "abc") == (
        '[string "abc" is too short (length: 3, required minimum: 5), '
        'ECMA 262 regex "^[0-9]+$" does not match input string "abc"]')


def test_refs_report_the_referenced_models_keywords() -> None:
    schema = {"definitions": {"Owner": {"type": "object", "required": ["id"]}},
              "type": "object", "properties": {"owner": {"$ref": "#/definitions/Owner"}}}
    assert check(schema, {"owner": {}}) == \
        '[object has missing required properties (["id"])]'


def test_every_recorded_example_end_to_end(make_harness: HarnessFactory,
                                           b: Builders) -> None:
    """The observed AWS string through a gateway-response template, as AWS renders it."""
    model = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
             "required": ["nombre", "email"],
             "properties": {"nombre": {"type": "string"}, "email": {"type": "string"}}}
    doc = b.openapi({"/clientes": {"post": {
        **b.mock_op(200, '{"ok": true}'),
        "x-amazon-apigateway-request-validator": "body",
        "requestBody": {"content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Cliente"}}}}}}})
    doc.setdefault("components", {}).setdefault("schemas", {})["Cliente"] = model
    doc["x-amazon-apigateway-request-validators"] = {
        "body": {"validateRequestBody": True, "validateRequestParameters": False}}
    doc["x-amazon-apigateway-gateway-responses"] = {"BAD_REQUEST_BODY": {
        "responseTemplates": {"application/json":
                              '{"message": "Solicitud invalida", '
                              '"detalle": "$context.error.validationErrorString"}'}}}
    h = make_harness(doc, config=b.gateway_config(
        plugins={"enabled": ["mock", "mapping", "validation"]}))
    response = h.request("POST", "/prod/clientes", headers={"Content-Type": "application/json"},
                         body=b'{"nombre": "Ana"}')
    assert response.status == 400
    assert response.body == (b'{"message": "Solicitud invalida", "detalle": '
                             b'"[object has missing required properties (["email"])]"}')
