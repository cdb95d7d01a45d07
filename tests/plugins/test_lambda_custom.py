"""The non-proxy ``AWS`` Lambda integration (aws-apigw-spec.md §3.7, §3.8).

The integration request body (a rendered request template, or the client's body passed
through) is the event; the function's output is the integration response body; a
function error arrives as a 200 whose ``errorMessage`` the mapping plugin matches against
``selectionPattern``.  In-process with a fake function pool (test_lambda_events), plus one
real worker end to end.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest
from test_lambda_events import ARN, make_gateway, run
from twistgw_lambda.runtime import InvokeResult

from twistgw import ConfigError
from twistgw.testing import GatewayHarness, RunningGateway, make_inbound, write_config

FOUR = "Error: Raising four hundred from within the Lambda function"
FIVE = "Error: Raising five hundred from within the Lambda function"


def custom_op(name: str = "Fn", responses: dict[str, Any] | None = None,
              **extra: Any) -> dict[str, Any]:
    """The recorded §3.8 setup: "" -> 200, .*four hundred.* -> 405, .+ -> 502, 200 -> 504."""
    integration: dict[str, Any] = {
        "type": "aws", "httpMethod": "POST", "uri": ARN.format(name=name),
        "responses": responses if responses is not None else {
            "default": {"statusCode": "200"},
            ".*four hundred.*": {"statusCode": "405"},
            ".+": {"statusCode": "502"},
            "200": {"statusCode": "504"},
        }}
    integration.update(extra)
    return {"responses": {s: {"description": s} for s in ("200", "405", "502", "504")},
            "x-amazon-apigateway-integration": integration}


def _error(message: str) -> InvokeResult:
    return InvokeResult("lambda-req-id", json.dumps({
        "errorMessage": message, "errorType": "Exception",
        "stackTrace": ["  File \"/var/task/lambda_function.py\", line 5, in handler\n"]
    }).encode(), "Unhandled")


def selection_output(event: dict[str, Any]) -> Any:
    kind = event.get("kind")
    if kind == "four":
        return _error(FOUR)
    if kind == "five":
        return _error(FIVE)
    return "Pass"


@pytest.fixture
def gateway(tmp_path: Path) -> Any:
    h, pool = make_gateway(tmp_path, {"/sel": {"post": custom_op()}},
                           output=selection_output)
    yield h, pool
    h._undo()  # type: ignore[attr-defined]


def post(h: GatewayHarness, body: bytes, path: str = "/prod/sel",
         headers: dict[str, str] | None = None) -> Any:
    return run(h, make_inbound("POST", path, body=body,
                               headers=headers or {"content-type": "application/json"}))


def test_recorded_selection_success_is_200_pass(gateway: Any) -> None:
    h, pool = gateway
    response = post(h, b'{"kind": "ok"}')
    assert (response.status, response.body) == (200, b'"Pass"')
    assert response.headers.get("content-type") == "application/json"
    assert pool.events == [{"kind": "ok"}]  # the body passed through is the event


def test_recorded_selection_four_hundred_is_405_with_the_full_error(gateway: Any) -> None:
    h, _pool = gateway
    response = post(h, b'{"kind": "four"}')
    assert response.status == 405
    doc = json.loads(response.body)
    assert list(doc) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert doc["errorMessage"] == FOUR
    assert doc["errorType"] == "Exception"
    assert doc["requestId"] == "lambda-req-id"


def test_recorded_selection_five_hundred_is_502(gateway: Any) -> None:
    h, _pool = gateway
    response = post(h, b'{"kind": "five"}')
    assert response.status == 502
    assert json.loads(response.body)["errorMessage"] == FIVE


def test_a_200_pattern_never_matches_a_successful_call(tmp_path: Path) -> None:
    h, _pool = make_gateway(tmp_path, {"/sel": {"post": custom_op(responses={
        "200": {"statusCode": "504"}, "default": {"statusCode": "200"}})}},
        output=lambda event: {"ok": True})
    try:
        response = post(h, b"{}")
        assert (response.status, response.body) == (200, b'{"ok": true}')
    finally:
        h._undo()  # type: ignore[attr-defined]


def test_request_template_output_is_the_event(tmp_path: Path) -> None:
    op = custom_op(requestTemplates={
        "application/json": '{"name": "$input.params(\'name\')", "body": $input.json(\'$\')}'},
        responses={"default": {"statusCode": "200", "responseTemplates": {
            "application/json": '{"greeting": "$input.path(\'$.hello\')"}'}}})
    h, pool = make_gateway(tmp_path, {"/t": {"post": op}},
                           output=lambda event: {"hello": event["name"]})
    try:
        response = post(h, b'{"a": 1}', path="/prod/t?name=pets")
        assert pool.events == [{"name": "pets", "body": {"a": 1}}]
        assert (response.status, json.loads(response.body)) == (200, {"greeting": "pets"})
    finally:
        h._undo()  # type: ignore[attr-defined]


def test_empty_body_is_an_empty_event(gateway: Any) -> None:
    h, pool = gateway
    assert post(h, b"").status == 200
    assert pool.events == [{}]


def test_a_body_that_is_not_json_is_502(gateway: Any) -> None:
    h, pool = gateway
    response = post(h, b"not json", headers={"content-type": "text/plain"})
    assert (response.status, response.body) == (502, b'{"message": "Internal server error"}')
    assert pool.events == []


def test_no_matching_response_and_no_default_is_500(tmp_path: Path) -> None:
    h, _pool = make_gateway(tmp_path, {"/sel": {"post": custom_op(responses={
        ".*four hundred.*": {"statusCode": "405"}})}}, output=selection_output)
    try:
        response = post(h, b'{"kind": "ok"}')
        assert (response.status, response.body) == (500,
                                                     b'{"message": "Internal server error"}')
        assert post(h, b'{"kind": "four"}').status == 405
    finally:
        h._undo()  # type: ignore[attr-defined]


def test_integration_method_must_be_post(tmp_path: Path) -> None:
    h, pool = make_gateway(tmp_path, {"/sel": {"post": custom_op(httpMethod="GET")}})
    try:
        assert post(h, b"{}").status == 500
        assert pool.events == []
    finally:
        h._undo()  # type: ignore[attr-defined]


def test_throttled_function_is_500_whatever_the_integration_responses(
        tmp_path: Path) -> None:
    """Lambda's 429 is always API Gateway's 500 (the ``.+`` -> 502 and default -> 200
    responses are not consulted), with AWS's execution-log lines."""
    h, _pool = make_gateway(tmp_path, {"/sel": {"post": custom_op()}},
                            output=lambda event: InvokeResult("x", b"{}", "Throttled"))
    try:
        response = post(h, b"{}")
        assert (response.status, response.body) == (
            500, b'{"message": "Internal server error"}')
        assert response.headers.get("x-amzn-ErrorType") == "InternalServerErrorException"
    finally:
        h._undo()  # type: ignore[attr-defined]


SQS_URI = "arn:aws:apigateway:eu-west-1:sqs:path/123456789012/queue"


def test_other_aws_services_are_refused_at_load(tmp_path: Path) -> None:
    op = custom_op()
    op["x-amazon-apigateway-integration"]["uri"] = SQS_URI
    with pytest.raises(ConfigError) as info:
        make_gateway(tmp_path, {"/q": {"post": op}})
    assert info.value.path.endswith("x-amazon-apigateway-integration.uri")
    assert "AWS service integration other than Lambda" in str(info.value)
    assert "api.yaml" in str(info.value)


def _with_parameters(tmp_path: Path, op: dict[str, Any]) -> GatewayHarness:
    """The lambda plugin alone claims requestParameters for its AWS integrations."""
    (tmp_path / "src").mkdir(exist_ok=True)
    return GatewayHarness({
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {"Fn": {"handler": "app.handler", "code": str(tmp_path / "src")}},
        "plugins": {"enabled": ["mock", "mapping", "lambda"]},
        "access_log": False,
    }, definitions={"api.yaml": {"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
                                 "paths": {"/q": {"post": op}}}})


@pytest.mark.parametrize(("key", "source", "wanted"), [
    ("integration.request.querystring.Qualifier", "'prod'", "only integration.request.header"),
    ("integration.request.path.fn", "method.request.path.fn", "only integration.request"),
    ("overwrite:header.x-kind", "Event", "HTTP API mappings"),
    ("integration.request.header.Content-Length", "'1'", "Content-Length"),
])
def test_request_parameters_a_lambda_aws_integration_cannot_have_are_refused(
        tmp_path: Path, key: str, source: str, wanted: str) -> None:
    with pytest.raises(ConfigError) as info:
        _with_parameters(tmp_path, custom_op(requestParameters={key: source}))
    assert info.value.path.endswith(f"x-amazon-apigateway-integration.requestParameters.{key}")
    assert wanted in str(info.value)
    assert "api.yaml" in str(info.value)


def test_invocation_type_header_mappings_load(tmp_path: Path) -> None:
    _with_parameters(tmp_path, custom_op(requestParameters={
        "integration.request.header.X-Amz-Invocation-Type": "method.request.header.InvType",
        "integration.request.header.X-Amz-Client-Context": "'e30='"}))


def test_other_aws_services_answer_500_when_not_strict(tmp_path: Path) -> None:
    op = custom_op()
    op["x-amazon-apigateway-integration"]["uri"] = SQS_URI
    (tmp_path / "src").mkdir()
    h = GatewayHarness({
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {"Fn": {"handler": "app.handler", "code": str(tmp_path / "src")}},
        "plugins": {"enabled": ["mock", "mapping", "lambda"]},
        "access_log": False, "strict": False,
    }, definitions={"api.yaml": {"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
                                 "paths": {"/q": {"post": op}}}})
    response = post(h, b"{}", path="/prod/q")
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')


# -- a real worker ---------------------------------------------------------------------------

HANDLER = '''
def handler(event, context):
    if event.get("kind") == "four":
        raise Exception("Error: Raising four hundred from within the Lambda function")
    if event.get("kind") == "five":
        raise Exception("Error: Raising five hundred from within the Lambda function")
    return "Pass"
'''


def test_recorded_selection_with_a_real_worker(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(HANDLER, encoding="utf-8")
    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {"Fn": {"handler": "app.handler", "code": "src", "min_workers": 1}},
        "plugins": {"enabled": ["mock", "mapping", "lambda"]},
        "access_log": False,
    }, {"api.yaml": {"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
                     "paths": {"/sel": {"post": custom_op()}}}})
    with RunningGateway(path, timeout=30) as gw:
        got = {}
        for kind in ("ok", "four", "five"):
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
            try:
                conn.request("POST", "/prod/sel", body=json.dumps({"kind": kind}),
                             headers={"content-type": "application/json"})
                resp = conn.getresponse()
                got[kind] = (resp.status, resp.read())
            finally:
                conn.close()
    assert got["ok"] == (200, b'"Pass"')
    assert got["four"][0] == 405
    doc = json.loads(got["four"][1])
    assert doc["errorMessage"] == FOUR and doc["errorType"] == "Exception"
    assert list(doc)[:3] == ["errorMessage", "errorType", "requestId"]
    assert "stackTrace" in doc
    assert got["five"][0] == 502
    assert json.loads(got["five"][1])["errorMessage"] == FIVE
