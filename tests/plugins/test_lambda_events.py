"""Golden tests: the proxy events the Lambda plugin builds (aws-apigw-spec.md §1, §A.3, §A.5).

The whole pipeline runs in-process (``GatewayHarness``); a fake function pool stands in
for the worker processes and records the event it was sent, so these tests pin the
event's exact shape without a reactor or a subprocess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twistgw_lambda.plugin import use_runtime
from twistgw_lambda.runtime import InvokeResult

from twistgw import Allow, Principal, hookimpl
from twistgw.models import InboundRequest
from twistgw.testing import GatewayHarness, make_inbound

ARN = ("arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
       "arn:aws:lambda:eu-west-1:123456789012:function:{name}/invocations")


class FakePool:
    """Answers invokes with ``output(event)`` and remembers every event."""

    def __init__(self, output: Callable[[dict[str, Any]], Any]) -> None:
        self.output = output
        self.events: list[dict[str, Any]] = []
        self.arns: list[str] = []

    def invoke(self, payload: bytes, arn: str, trace: str) -> defer.Deferred[InvokeResult]:
        event = json.loads(payload)
        self.events.append(event)
        self.arns.append(arn)
        result = self.output(event)
        if isinstance(result, InvokeResult):
            return defer.succeed(result)
        raw = result if isinstance(result, bytes) else json.dumps(result).encode()
        return defer.succeed(InvokeResult("fake-request-id", raw))


@attrs.define
class FakeRuntime:
    pools: dict[str, FakePool]


def lambda_op(name: str = "Fn", fmt: str | None = None, **extra: Any) -> dict[str, Any]:
    integration: dict[str, Any] = {"type": "aws_proxy", "httpMethod": "POST",
                                   "uri": ARN.format(name=name)}
    if fmt is not None:
        integration["payloadFormatVersion"] = fmt
    integration.update(extra)
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": integration}


def make_gateway(tmp_path: Any, paths: dict[str, Any], *, api_type: str = "REST",
                 api_id: str = "a1b2c3d4e5", endpoint_type: str = "REGIONAL",
                 stages: list[dict[str, Any]] | None = None,
                 binary: list[str] | None = None,
                 output: Callable[[dict[str, Any]], Any] | None = None,
                 functions: tuple[str, ...] = ("Fn",),
                 plugins: tuple[tuple[str, Any], ...] = ()) -> tuple[GatewayHarness, FakePool]:
    (tmp_path / "src").mkdir(parents=True, exist_ok=True)
    root: dict[str, Any] = {}
    if binary is not None:
        root["x-amazon-apigateway-binary-media-types"] = binary
    definition = {"openapi": "3.0.1", "info": {"title": "t", "version": "1"}, **root,
                  "paths": paths}
    if stages is None:
        stages = [{"name": "prod"}] if api_type == "REST" else [{"name": "$default"}]
    api: dict[str, Any] = {"id": api_id, "type": api_type, "definition": "api.yaml",
                           "stages": stages}
    if api_type == "REST":
        api["endpoint_type"] = endpoint_type
    config = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [api],
        "functions": {name: {"handler": "app.handler", "code": str(tmp_path / "src")}
                      for name in functions},
        "plugins": {"enabled": ["mock", "mapping", "lambda"]},
        "access_log": False,
    }
    harness = GatewayHarness(config, definitions={"api.yaml": definition}, plugins=plugins)
    pool = FakePool(output or (lambda event: {"statusCode": 200, "body": "ok"}))
    undo = use_runtime(harness.config, FakeRuntime({name: pool for name in functions}))
    harness._undo = undo  # type: ignore[attr-defined]
    return harness, pool


@pytest.fixture
def gateways() -> Iterator[list[GatewayHarness]]:
    made: list[GatewayHarness] = []
    yield made
    for h in made:
        h._undo()  # type: ignore[attr-defined]


def run(harness: GatewayHarness, inbound: InboundRequest) -> Any:
    inbound = attrs.evolve(inbound, listener=harness.default_listener)
    result = harness.gateway.pipeline.handle(harness.gateway.deployment, inbound)
    box: list[Any] = []
    if isinstance(result, defer.Deferred):
        result.addBoth(box.append)
        assert box, "the request did not complete synchronously"
        result = box[0]
    return result.response


# -- §1.1 the complete REST example -----------------------------------------------------

SPEC_EXAMPLE = {
    "resource": "/pets/{petId}",
    "path": "/pets/42",
    "httpMethod": "GET",
    "headers": {
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate",
        "CloudFront-Forwarded-Proto": "https",
        "CloudFront-Is-Desktop-Viewer": "true",
        "CloudFront-Is-Mobile-Viewer": "false",
        "CloudFront-Is-SmartTV-Viewer": "false",
        "CloudFront-Is-Tablet-Viewer": "false",
        "CloudFront-Viewer-ASN": "16509",
        "CloudFront-Viewer-Country": "DE",
        "Host": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
        "User-Agent": "curl/8.5.0",
        "Via": "2.0 0123456789abcdef.cloudfront.net (CloudFront)",
        "X-Amz-Cf-Id": "q0P2QeGx8ExAMPLEcfid==",
        "X-Amzn-Trace-Id": "Root=1-67e2a3b4-0123456789abcdef01234567",
        "X-Forwarded-For": "203.0.113.10, 130.176.0.1",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        "x-custom": "b",
    },
    "multiValueHeaders": {
        "Accept": ["*/*"],
        "Accept-Encoding": ["gzip, deflate"],
        "CloudFront-Forwarded-Proto": ["https"],
        "CloudFront-Is-Desktop-Viewer": ["true"],
        "CloudFront-Is-Mobile-Viewer": ["false"],
        "CloudFront-Is-SmartTV-Viewer": ["false"],
        "CloudFront-Is-Tablet-Viewer": ["false"],
        "CloudFront-Viewer-ASN": ["16509"],
        "CloudFront-Viewer-Country": ["DE"],
        "Host": ["a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"],
        "User-Agent": ["curl/8.5.0"],
        "Via": ["2.0 0123456789abcdef.cloudfront.net (CloudFront)"],
        "X-Amz-Cf-Id": ["q0P2QeGx8ExAMPLEcfid=="],
        "X-Amzn-Trace-Id": ["Root=1-67e2a3b4-0123456789abcdef01234567"],
        "X-Forwarded-For": ["203.0.113.10, 130.176.0.1"],
        "X-Forwarded-Port": ["443"],
        "X-Forwarded-Proto": ["https"],
        "x-custom": ["a", "b"],
    },
    "queryStringParameters": {"color": "red", "size": "L"},
    "multiValueQueryStringParameters": {"color": ["blue", "red"], "size": ["L"]},
    "pathParameters": {"petId": "42"},
    "stageVariables": {"backendHost": "pets.internal"},
    "requestContext": {
        "accountId": "123456789012",
        "apiId": "a1b2c3d4e5",
        "deploymentId": "x9y8z7",
        "domainName": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
        "domainPrefix": "a1b2c3d4e5",
        "extendedRequestId": "LBpJ1HxGoAMFQ0w=",
        "httpMethod": "GET",
        "identity": {
            "accessKey": None, "accountId": None, "caller": None,
            "cognitoAuthenticationProvider": None, "cognitoAuthenticationType": None,
            "cognitoIdentityId": None, "cognitoIdentityPoolId": None, "principalOrgId": None,
            "sourceIp": "203.0.113.10", "user": None, "userAgent": "curl/8.5.0",
            "userArn": None,
        },
        "path": "/prod/pets/42",
        "protocol": "HTTP/1.1",
        "requestId": "0f5c1a3e-8d7b-4b2a-9f1e-2c3d4e5f6a7b",
        "requestTime": "25/Mar/2026:10:15:30 +0000",
        "requestTimeEpoch": 1774433730123,
        "resourceId": "k3l4m5",
        "resourcePath": "/pets/{petId}",
        "stage": "prod",
    },
    "body": None,
    "isBase64Encoded": False,
}


def test_rest_event_reproduces_the_complete_spec_example(tmp_path: Any,
                                                        gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/pets/{petId}": {"get": lambda_op()}},
                           endpoint_type="EDGE",
                           stages=[{"name": "prod",
                                    "variables": {"backendHost": "pets.internal"}}])
    gateways.append(h)
    headers = [(k, v) for k, v in SPEC_EXAMPLE["headers"].items()  # type: ignore[attr-defined]
               if not k.startswith("X-Forwarded-") or k == "X-Forwarded-For"]
    headers = [(k, "203.0.113.10") if k == "X-Forwarded-For" else (k, v)
               for k, v in headers if k != "x-custom"]
    headers += [("x-custom", "a"), ("x-custom", "b"),
                ("x-amzn-RequestId", "0f5c1a3e-8d7b-4b2a-9f1e-2c3d4e5f6a7b")]
    inbound = attrs.evolve(
        make_inbound("GET", "/prod/pets/42?color=blue&color=red&size=L", headers=headers,
                     client_ip="130.176.0.1"),
        scheme="https", server_port=443, received_at=1774433730.123)
    response = run(h, inbound)
    assert response.status == 200
    event = pool.events[0]
    # the client's request id header is reused (§A.7) and so shows among the headers
    assert event["headers"].pop("x-amzn-RequestId") == "0f5c1a3e-8d7b-4b2a-9f1e-2c3d4e5f6a7b"
    assert event["multiValueHeaders"].pop("x-amzn-RequestId")
    rc = event["requestContext"]
    assert re.fullmatch(r"[0-9a-f]{6}", rc["deploymentId"])
    assert re.fullmatch(r"[A-Za-z0-9+/]{14}[A-Za-z0-9+/=]{2}", rc["extendedRequestId"])
    assert re.fullmatch(r"[0-9a-f]{10}", rc["resourceId"])
    expected = json.loads(json.dumps(SPEC_EXAMPLE))
    for key in ("deploymentId", "extendedRequestId", "resourceId"):
        expected["requestContext"][key] = rc[key]
    expected["requestContext"]["accountId"] = rc["accountId"]
    assert re.fullmatch(r"[0-9]{12}", rc["accountId"])
    assert event == expected
    assert list(event) == list(expected)  # key order as AWS sends it
    assert pool.arns == ["arn:aws:lambda:eu-west-1:123456789012:function:Fn"]


def test_rest_event_adds_cloudfront_headers_on_edge_apis_when_no_cdn_sent_them(
        tmp_path: Any, gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/x": {"get": lambda_op()}}, endpoint_type="EDGE")
    gateways.append(h)
    run(h, make_inbound("GET", "/prod/x", headers={"user-agent": "ua",
                                                    "authorization": "t"}))
    headers = pool.events[0]["headers"]
    assert headers["CloudFront-Is-Desktop-Viewer"] == "true"
    assert headers["CloudFront-Forwarded-Proto"] == "https"
    assert headers["Via"].endswith(".cloudfront.net (CloudFront)")
    assert headers["X-Amz-Cf-Id"]
    # edge APIs capitalise well-known names (§A.6)
    assert headers["User-Agent"] == "ua" and headers["Authorization"] == "t"


def test_rest_event_on_regional_api_keeps_names_and_adds_no_cloudfront(
        tmp_path: Any, gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/x": {"get": lambda_op()}})
    gateways.append(h)
    run(h, make_inbound("GET", "/prod/x", headers={"aUThorization": "t", "tEsT-HEADeR": "v",
                                                    "Content-Length": "0",
                                                    "Connection": "keep-alive"},
                        client_ip="198.51.100.7"))
    event = pool.events[0]
    headers = event["headers"]
    assert headers["aUThorization"] == "t" and headers["tEsT-HEADeR"] == "v"
    assert not any(k.lower().startswith("cloudfront") for k in headers)
    assert "Content-Length" not in headers and "Connection" not in headers  # §A.6
    assert headers["X-Forwarded-For"] == "198.51.100.7"
    assert headers["X-Amzn-Trace-Id"].startswith("Root=1-")
    assert event["requestContext"]["identity"]["sourceIp"] == "198.51.100.7"


# -- null vs empty --------------------------------------------------------------------------


def test_rest_event_empty_parts_are_null_and_every_key_is_present(
        tmp_path: Any, gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/x": {"get": lambda_op()}})
    gateways.append(h)
    run(h, make_inbound("GET", "/prod/x"))
    event = pool.events[0]
    assert list(event) == ["resource", "path", "httpMethod", "headers", "multiValueHeaders",
                           "queryStringParameters", "multiValueQueryStringParameters",
                           "pathParameters", "stageVariables", "requestContext", "body",
                           "isBase64Encoded"]
    for key in ("queryStringParameters", "multiValueQueryStringParameters",
                "pathParameters", "stageVariables", "body"):
        assert event[key] is None, key
    assert event["isBase64Encoded"] is False
    assert "version" not in event


# -- §A.3 recorded path cases --------------------------------------------------------------


@pytest.mark.parametrize(("request_path", "path", "proxy", "context_path"), [
    ("/prod/proxy-value/", "/proxy-value/", "proxy-value", "/prod/proxy-value/"),
    ("/prod/proxy-value//double-slash", "/proxy-value//double-slash",
     "proxy-value//double-slash", "/prod/proxy-value//double-slash"),
    ("/prod//proxy-value", "/proxy-value", "proxy-value", "/prod//proxy-value"),
    ("/prod/proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com",
     "/proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com",
     "proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com",
     "/prod/proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com"),
], ids=["trailing-slash", "double-slash-inside", "double-slash-after-stage",
        "encoded-email"])
def test_rest_event_recorded_path_cases(tmp_path: Any, gateways: list[Any],
                                        request_path: str, path: str, proxy: str,
                                        context_path: str) -> None:
    h, pool = make_gateway(tmp_path, {"/{proxy+}": {"x-amazon-apigateway-any-method":
                                                    lambda_op()}})
    gateways.append(h)
    response = run(h, make_inbound("GET", request_path))
    assert response.status == 200, response.body
    event = pool.events[0]
    assert event["resource"] == "/{proxy+}"
    assert event["path"] == path
    assert event["pathParameters"] == {"proxy": proxy}
    assert event["requestContext"]["path"] == context_path
    assert event["requestContext"]["resourcePath"] == "/{proxy+}"


# -- §A.5 query decoding ---------------------------------------------------------------------


def test_rest_event_recorded_query_decoding(tmp_path: Any, gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/q": {"get": lambda_op()}})
    gateways.append(h)
    query = ("dateTimeOffset=2023-06-12T18:05:10.123456+00:00&email=test%2Balias@gmail.com"
             "&plus=test+alias@gmail.com&url=https://www.google.com/&whitespace=foo%20bar"
             "&zhash=abort/")
    run(h, make_inbound("GET", f"/prod/q?{query}"))
    event = pool.events[0]
    assert event["queryStringParameters"] == {
        "dateTimeOffset": "2023-06-12T18:05:10.123456 00:00", "email": "test+alias@gmail.com",
        "plus": "test alias@gmail.com", "url": "https://www.google.com/",
        "whitespace": "foo bar", "zhash": "abort/"}


def test_rest_event_multi_value_query_keeps_last_and_all(tmp_path: Any,
                                                        gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/q": {"get": lambda_op()}})
    gateways.append(h)
    run(h, make_inbound("GET", "/prod/q?category=electronics&category=books"))
    event = pool.events[0]
    assert event["queryStringParameters"] == {"category": "books"}
    assert event["multiValueQueryStringParameters"] == {"category": ["electronics", "books"]}


# -- bodies ------------------------------------------------------------------------------------


def test_rest_event_body_is_base64_iff_content_type_is_binary(tmp_path: Any,
                                                             gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/b": {"post": lambda_op()}},
                           binary=["image/*", "application/octet-stream"])
    gateways.append(h)
    run(h, make_inbound("POST", "/prod/b", headers={"Content-Type": "image/png"},
                        body=b"\x89PNG\r\n"))
    run(h, make_inbound("POST", "/prod/b", headers={"Content-Type": "text/plain"},
                        body="héllo"))
    png, text = pool.events
    assert png["isBase64Encoded"] is True and png["body"] == "iVBORw0K"
    assert text["isBase64Encoded"] is False and text["body"] == "héllo"


# -- HTTP APIs: 2.0 (§1.2) and 1.0 (§1.3) ------------------------------------------------------


def test_http_v2_event_named_stage_shape(tmp_path: Any, gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/orders/{orderId}/items": {"post": lambda_op(
        fmt="2.0")}}, api_type="HTTP", stages=[{"name": "dev",
                                                "variables": {"tableName": "orders-dev"}}])
    gateways.append(h)
    inbound = attrs.evolve(make_inbound(
        "POST", "/dev/orders/1234/items?expand=price&expand=stock&dryRun=true",
        headers=[("Host", "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"),
                 ("Accept", "application/json"), ("Content-Type", "application/json"),
                 ("User-Agent", "curl/8.5.0"), ("Cookie", "session=abc123; theme=dark"),
                 ("X-Tag", "a"), ("X-Tag", "b"),
                 ("X-Amzn-Trace-Id", "Root=1-67e2a3b4-0123456789abcdef01234567")],
        body='{"sku":"A-1","quantity":2}', client_ip="203.0.113.10"),
        scheme="https", server_port=443, received_at=1774433730.123)
    run(h, inbound)
    event = pool.events[0]
    rc = event["requestContext"]
    assert event == {
        "version": "2.0",
        "routeKey": "POST /orders/{orderId}/items",
        "rawPath": "/dev/orders/1234/items",
        "rawQueryString": "expand=price&expand=stock&dryRun=true",
        "cookies": ["session=abc123", "theme=dark"],
        "headers": {
            "accept": "application/json",
            # the spec's constructed example says 27; its body is 26 bytes
            "content-length": "26",
            "content-type": "application/json",
            "host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
            "user-agent": "curl/8.5.0",
            "x-amzn-trace-id": "Root=1-67e2a3b4-0123456789abcdef01234567",
            "x-forwarded-for": "203.0.113.10",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
            "x-tag": "a,b",
        },
        "queryStringParameters": {"expand": "price,stock", "dryRun": "true"},
        "pathParameters": {"orderId": "1234"},
        "stageVariables": {"tableName": "orders-dev"},
        "requestContext": {
            "accountId": rc["accountId"],
            "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "a1b2c3d4e5",
            "http": {"method": "POST", "path": "/dev/orders/1234/items",
                     "protocol": "HTTP/1.1", "sourceIp": "203.0.113.10",
                     "userAgent": "curl/8.5.0"},
            "requestId": rc["requestId"],
            "routeKey": "POST /orders/{orderId}/items",
            "stage": "dev",
            "time": "25/Mar/2026:10:15:30 +0000",
            "timeEpoch": 1774433730123,
        },
        "body": '{"sku":"A-1","quantity":2}',
        "isBase64Encoded": False,
    }
    assert re.fullmatch(r"[A-Za-z0-9+/=]{16}", rc["requestId"])


def test_http_v2_minimal_event_omits_empty_keys(tmp_path: Any, gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/": {"get": lambda_op(fmt="2.0")}}, api_type="HTTP")
    gateways.append(h)
    run(h, make_inbound("GET", "/", headers={"Accept": "*/*", "User-Agent": "curl/7.58.0"}))
    event = pool.events[0]
    assert list(event) == ["version", "routeKey", "rawPath", "rawQueryString", "headers",
                           "requestContext", "isBase64Encoded"]
    assert event["rawPath"] == "/" and event["rawQueryString"] == ""
    assert event["headers"]["content-length"] == "0"
    assert event["requestContext"]["stage"] == "$default"
    assert event["isBase64Encoded"] is False


@pytest.mark.parametrize(("content_type", "base64"), [
    ("text/plain", False), ("application/json; charset=utf-8", False),
    ("application/xml", False), ("application/javascript", False),
    ("application/x-www-form-urlencoded", True), ("multipart/form-data; boundary=x", True),
    (None, True), ("image/png", True)])
def test_http_v2_body_base64_rule(tmp_path: Any, gateways: list[Any],
                                  content_type: str | None, base64: bool) -> None:
    h, pool = make_gateway(tmp_path, {"/b": {"post": lambda_op(fmt="2.0")}}, api_type="HTTP")
    gateways.append(h)
    headers = {"Content-Type": content_type} if content_type else {}
    run(h, make_inbound("POST", "/b", headers=headers, body=b"a=1"))
    event = pool.events[0]
    assert event["isBase64Encoded"] is base64
    assert event["body"] == ("YT0x" if base64 else "a=1")


def test_http_v1_event_is_rest_shape_plus_version(tmp_path: Any,
                                                  gateways: list[Any]) -> None:
    h, pool = make_gateway(tmp_path, {"/request": {"x-amazon-apigateway-any-method":
                                                   lambda_op(fmt="1.0")}}, api_type="HTTP")
    gateways.append(h)
    run(h, make_inbound("GET", "/request?a=1", headers={"Header1": "v"}))
    event = pool.events[0]
    assert event["version"] == "1.0"
    assert event["resource"] == "/request" and event["path"] == "/request"
    assert event["headers"]["header1"] == "v"  # lower-cased names on HTTP APIs
    assert event["multiValueHeaders"]["header1"] == ["v"]
    assert event["queryStringParameters"] == {"a": "1"}
    rc = event["requestContext"]
    assert rc["resourceId"] == "ANY /request" and rc["routeKey"] == "ANY /request"
    assert rc["resourcePath"] == "/request" and rc["stage"] == "$default"
    assert event["pathParameters"] is None and event["stageVariables"] is None


def test_stage_variable_in_the_function_name(tmp_path: Any, gateways: list[Any]) -> None:
    h, pool = make_gateway(
        tmp_path, {"/x": {"get": {"responses": {"200": {"description": "ok"}},
                                  "x-amazon-apigateway-integration": {
                                      "type": "aws_proxy", "httpMethod": "POST",
                                      "uri": ARN.format(name="${stageVariables.fn}")}}}},
        stages=[{"name": "prod", "variables": {"fn": "Other"}}], functions=("Fn", "Other"))
    gateways.append(h)
    assert run(h, make_inbound("GET", "/prod/x")).status == 200
    assert pool.arns == ["arn:aws:lambda:eu-west-1:123456789012:function:Other"]


def test_trace_header_on_the_response_matches_the_function_s(tmp_path: Any,
                                                            gateways: list[Any]) -> None:
    h, _pool = make_gateway(tmp_path, {"/x": {"get": lambda_op()}})
    gateways.append(h)
    response = run(h, make_inbound("GET", "/prod/x", headers={
        "X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"}))
    assert response.headers.get("X-Amzn-Trace-Id") == (
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")


def test_client_certificate_of_an_mtls_listener_reaches_the_event(tmp_path: Any,
                                                                  gateways: list[Any]) -> None:
    from twistgw.models import TlsInfo

    tls = TlsInfo(protocol="TLSv1.3", client_cert_pem="-----BEGIN CERTIFICATE-----\nMII\n",
                  subject_dn="CN=client", issuer_dn="CN=ca", serial_number="1a2b",
                  not_before="May 28 12:30:02 2019 GMT", not_after="Aug  5 09:36:04 2021 GMT")
    cert = {"clientCertPem": "-----BEGIN CERTIFICATE-----\nMII\n", "subjectDN": "CN=client",
            "issuerDN": "CN=ca", "serialNumber": "1a2b",
            "validity": {"notBefore": "May 28 12:30:02 2019 GMT",
                         "notAfter": "Aug  5 09:36:04 2021 GMT"}}
    h, pool = make_gateway(tmp_path, {"/x": {"get": lambda_op()}})
    gateways.append(h)
    run(h, attrs.evolve(make_inbound("GET", "/prod/x"), tls=tls, scheme="https"))
    assert pool.events[0]["requestContext"]["identity"]["clientCert"] == cert
    h2, pool2 = make_gateway(tmp_path / "v2", {"/x": {"get": lambda_op(fmt="2.0")}},
                             api_type="HTTP")
    gateways.append(h2)
    run(h2, attrs.evolve(make_inbound("GET", "/x"), tls=tls, scheme="https"))
    assert pool2.events[0]["requestContext"]["authentication"] == {"clientCert": cert}


class _KeyOnly:
    """Allows every request the way the access plugin does for an accepted API key."""

    @hookimpl
    def authorize(self) -> Allow:
        return Allow(Principal(id="key-1", kind="api_key", api_key_id="key-1",
                               usage_identifier_key="abcdefghijklmnopqrstuvwxyz"))


def test_api_key_principal_fills_identity_not_authorizer(tmp_path: Any,
                                                        gateways: list[Any]) -> None:
    """An accepted API key appears as identity.apiKey/apiKeyId; it is no authorizer."""
    for api_type, fmt in (("REST", None), ("HTTP", "1.0"), ("HTTP", "2.0")):
        harness, pool = make_gateway(tmp_path / f"{api_type}{fmt}",
                                     {"/x": {"get": lambda_op(fmt=fmt)}},
                                     api_type=api_type, plugins=(("keyonly", _KeyOnly()),))
        gateways.append(harness)
        path = "/prod/x" if api_type == "REST" else "/x"
        assert run(harness, make_inbound("GET", path)).status == 200
        event = pool.events[-1]
        assert event["requestContext"].get("authorizer") is None
        if fmt != "2.0":
            identity = event["requestContext"]["identity"]
            assert identity["apiKeyId"] == "key-1"
            assert identity["apiKey"] == "abcdefghijklmnopqrstuvwxyz"


def test_rest_proxy_request_parameters_merge_headers_into_the_event(
        tmp_path: Any, gateways: list[Any]) -> None:
    """§3.2 [AWS-REC test_lambda_aws_proxy_integration_request_data_mapping]: header
    mappings of an AWS_PROXY integration are merged into the event's headers."""
    op = lambda_op(requestParameters={
        "integration.request.header.foobar": "'mapped-value'",
        "integration.request.header.headerVar": "method.request.header.foobar",
        "integration.request.header.absent": "method.request.header.nope"})
    h, pool = make_gateway(tmp_path, {"/x": {"get": op}})
    gateways.append(h)
    run(h, make_inbound("GET", "/prod/x", headers={"foobar": "request-value"}))
    event = pool.events[0]
    assert event["headers"]["foobar"] == "mapped-value"
    assert event["headers"]["headerVar"] == "request-value"
    assert event["multiValueHeaders"]["foobar"] == ["mapped-value"]
    assert event["multiValueHeaders"]["headerVar"] == ["request-value"]
    assert "absent" not in event["headers"]  # an absent source sets nothing


def test_proxy_request_parameters_other_than_headers_are_refused(tmp_path: Any) -> None:
    from twistgw import ConfigError

    op = lambda_op(requestParameters={"integration.request.querystring.q": "'x'"})
    with pytest.raises(ConfigError) as info:
        make_gateway(tmp_path, {"/x": {"get": op}})
    assert info.value.path.endswith("requestParameters.integration.request.querystring.q")


# -- the REST payload written directly ---------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
NAMES = st.sampled_from(["Accept", "accept", "X-Custom", "x-custom", "User-Agent",
                         "Content-Type", "X-Forwarded-For", "Cookie", "X-\u00e9"])


CF_ID = re.compile(rb'"X-Amz-Cf-Id": \[?"[^"]*"')


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.lists(st.tuples(NAMES, TEXT | st.text(st.characters(min_codepoint=32,
                                                                       max_codepoint=127))),
                        max_size=6),
       query=st.lists(st.tuples(st.sampled_from(["a", "b", "\u00fc"]), TEXT), max_size=4),
       body=st.binary(max_size=16) | TEXT.map(str.encode),
       edge=st.booleans(), ctype=st.sampled_from(["text/plain", "image/png", ""]))
def test_rest_payload_is_byte_for_byte_json_dumps_of_the_event(
        tmp_path_factory: Any, monkeypatch: Any, headers: list[tuple[str, str]],
        query: list[tuple[str, str]], body: bytes, edge: bool, ctype: str) -> None:
    """The hot path's hand-written JSON is exactly ``json.dumps(rest_event(...))``, for
    any headers (case duplicates, non-ASCII), query, body, binary type and endpoint."""
    import twistgw_lambda.plugin as plugin_module
    from twistgw_lambda.events import rest_event, rest_payload

    checked: list[bytes] = []

    def checking(ctx: Any, request: Any) -> bytes:
        fast = rest_payload(ctx, request)
        slow = json.dumps(rest_event(ctx, request)).encode("utf-8")
        # EDGE APIs get a random X-Amz-Cf-Id per call: the one difference allowed.
        assert CF_ID.sub(b"", fast) == CF_ID.sub(b"", slow)
        checked.append(fast)
        return fast

    monkeypatch.setattr(plugin_module, "rest_payload", checking)
    h, _pool = make_gateway(tmp_path_factory.mktemp("p"), {"/p/{id}": {"post": lambda_op()}},
                            endpoint_type="EDGE" if edge else "REGIONAL", binary=["image/*"],
                            stages=[{"name": "prod", "variables": {"v": "1"}}])
    try:
        if ctype:
            headers = [*headers, ("Content-Type", ctype)]
        qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query)
        run(h, make_inbound("POST", f"/prod/p/x%20y?{qs}", headers=headers, body=body))
    finally:
        h._undo()  # type: ignore[attr-defined]
    assert len(checked) == 1


def test_rest_payload_fragments_are_per_route_stage_and_method(
        tmp_path: Any, monkeypatch: Any) -> None:
    """What ``rest_payload`` escapes once per route (resource, method, stage and its
    variables) never leaks into another route, stage or method of an ANY route: every
    combination, in turn and again, is byte-identical to ``json.dumps(rest_event(...))``."""
    import twistgw_lambda.plugin as plugin_module
    from twistgw_lambda.events import rest_event, rest_payload

    seen: list[dict[str, Any]] = []

    def checking(ctx: Any, request: Any) -> bytes:
        fast = rest_payload(ctx, request)
        assert fast == json.dumps(rest_event(ctx, request)).encode("utf-8")
        seen.append(json.loads(fast))
        return fast

    monkeypatch.setattr(plugin_module, "rest_payload", checking)
    h, _pool = make_gateway(
        tmp_path, {"/a": {"x-amazon-apigateway-any-method": lambda_op()},
                   "/b/{id}": {"get": lambda_op()}},
        stages=[{"name": "prod", "variables": {"v": "1"}},
                {"name": "beta", "variables": {"v": "2", "w": "x-y"}}])
    try:
        for _round in range(2):
            for stage in ("prod", "beta"):
                for method, path in (("GET", "/a"), ("DELETE", "/a"), ("GET", "/b/x")):
                    run(h, make_inbound(method, f"/{stage}{path}"))
    finally:
        h._undo()  # type: ignore[attr-defined]
    assert [(e["httpMethod"], e["resource"], e["requestContext"]["stage"],
             e["stageVariables"]["v"]) for e in seen[:6]] == [
        ("GET", "/a", "prod", "1"), ("DELETE", "/a", "prod", "1"),
        ("GET", "/b/{id}", "prod", "1"), ("GET", "/a", "beta", "2"),
        ("DELETE", "/a", "beta", "2"), ("GET", "/b/{id}", "beta", "2")]

    def constant(event: dict[str, Any]) -> dict[str, Any]:
        context = {k: v for k, v in event["requestContext"].items() if k not in (
            "requestId", "extendedRequestId", "requestTime", "requestTimeEpoch")}
        return {**event, "requestContext": context, "headers": None,
                "multiValueHeaders": None}

    assert [constant(e) for e in seen[6:]] == [constant(e) for e in seen[:6]]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.lists(st.tuples(NAMES, TEXT | st.text(st.characters(min_codepoint=32,
                                                                       max_codepoint=127))),
                        max_size=6),
       query=st.lists(st.tuples(st.sampled_from(["a", "b", "\u00fc"]), TEXT), max_size=4),
       body=st.binary(max_size=16) | TEXT.map(str.encode),
       ctype=st.sampled_from(["text/plain", "application/json", "image/png", ""]),
       variables=st.booleans(), method=st.sampled_from(["GET", "POST"]))
def test_http_v2_payload_is_byte_for_byte_json_dumps_of_the_event(
        tmp_path_factory: Any, monkeypatch: Any, headers: list[tuple[str, str]],
        query: list[tuple[str, str]], body: bytes, ctype: str, variables: bool,
        method: str) -> None:
    """The 2.0 event's hand-written JSON is exactly ``json.dumps(http_v2_event(...))``:
    cookies, repeated headers and query names, text and binary bodies, path parameters
    and stage variables present or omitted, an ANY route's methods."""
    import twistgw_lambda.plugin as plugin_module
    from twistgw_lambda.events import http_v2_event, http_v2_payload

    checked: list[bytes] = []

    def checking(ctx: Any, request: Any) -> bytes:
        fast = http_v2_payload(ctx, request)
        assert fast == json.dumps(http_v2_event(ctx, request)).encode("utf-8")
        checked.append(fast)
        return fast

    monkeypatch.setattr(plugin_module, "http_v2_payload", checking)
    stage: dict[str, Any] = {"name": "$default"}
    if variables:
        stage["variables"] = {"v": "1"}
    h, _pool = make_gateway(tmp_path_factory.mktemp("p"), {
        "/p/{id}": {"x-amazon-apigateway-any-method": lambda_op(fmt="2.0")},
        "/q": {"get": lambda_op(fmt="2.0")}}, api_type="HTTP", stages=[stage])
    try:
        if ctype:
            headers = [*headers, ("Content-Type", ctype)]
        qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query)
        run(h, make_inbound(method, f"/p/x%20y?{qs}", headers=headers, body=body))
        run(h, make_inbound("GET", "/q", headers=headers))
    finally:
        h._undo()  # type: ignore[attr-defined]
    assert len(checked) == 2
