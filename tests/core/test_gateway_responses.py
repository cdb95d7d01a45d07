"""Gateway responses: AWS's defaults byte for byte (§4.1, §4.2), customisation (§4.3),
the request-id headers (§A.7) and HTTP API error answers (§4.4)."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from twistgw import Allow, Deny, hookimpl
from twistgw.errors import (
    GATEWAY_RESPONSE_TYPES,
    AccessDenied,
    ApiConfigurationError,
    AuthorizerConfigurationError,
    AuthorizerFailure,
    BadRequestBody,
    BadRequestParameters,
    ExpiredToken,
    GatewayError,
    IntegrationFailure,
    IntegrationTimeout,
    InvalidApiKey,
    InvalidSignature,
    MissingAuthenticationToken,
    QuotaExceeded,
    RequestTooLarge,
    ResourceNotFound,
    Throttled,
    Unauthorized,
    UnsupportedMediaType,
    WafFiltered,
)
from twistgw.models import Context, IntegrationRequest, IntegrationResponse, Response

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw.testing import GatewayHarness

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

#: type -> (error class, status, x-amzn-ErrorType, exact body): §4.1 defaults, §4.2 rendering.
GOLDEN: dict[str, tuple[type[GatewayError], int, str, bytes]] = {
    "ACCESS_DENIED": (
        AccessDenied, 403, "AccessDeniedException",
        b'{"message":"User is not authorized to access this resource with an explicit deny"}'),
    "API_CONFIGURATION_ERROR": (
        ApiConfigurationError, 500, "InternalServerErrorException",
        b'{"message": "Internal server error"}'),
    "AUTHORIZER_CONFIGURATION_ERROR": (
        AuthorizerConfigurationError, 500, "AuthorizerConfigurationException",
        b'{"message": null}'),
    "AUTHORIZER_FAILURE": (
        AuthorizerFailure, 500, "AuthorizerFailureException",
        b'{"message":"Internal server error"}'),
    "BAD_REQUEST_PARAMETERS": (
        BadRequestParameters, 400, "BadRequestException",
        b'{"message":"Missing required request parameters"}'),
    "BAD_REQUEST_BODY": (
        BadRequestBody, 400, "BadRequestException", b'{"message":"Invalid request body"}'),
    "EXPIRED_TOKEN": (
        ExpiredToken, 403, "ExpiredTokenException",
        b'{"message":"The security token included in the request is expired"}'),
    "INTEGRATION_FAILURE": (
        IntegrationFailure, 504, "InternalServerErrorException",
        b'{"message": "Internal server error"}'),
    "INTEGRATION_TIMEOUT": (
        IntegrationTimeout, 504, "InternalServerErrorException",
        b'{"message": "Endpoint request timed out"}'),
    "INVALID_API_KEY": (InvalidApiKey, 403, "ForbiddenException", b'{"message":"Forbidden"}'),
    "INVALID_SIGNATURE": (
        InvalidSignature, 403, "InvalidSignatureException",
        b'{"message":"The request signature we calculated does not match the signature you '
        b'provided. Check your AWS Secret Access Key and signing method. Consult the service '
        b'documentation for details."}'),
    "MISSING_AUTHENTICATION_TOKEN": (
        MissingAuthenticationToken, 403, "MissingAuthenticationTokenException",
        b'{"message":"Missing Authentication Token"}'),
    "QUOTA_EXCEEDED": (QuotaExceeded, 429, "LimitExceededException",
                       b'{"message":"Limit Exceeded"}'),
    "REQUEST_TOO_LARGE": (RequestTooLarge, 413, "BadRequestException",
                          b'{"message":"Request Too Long"}'),
    "RESOURCE_NOT_FOUND": (ResourceNotFound, 404, "ResourceNotFoundException",
                           b'{"message":"Not Found"}'),
    "THROTTLED": (Throttled, 429, "TooManyRequestsException",
                  b'{"message":"Too Many Requests"}'),
    "UNAUTHORIZED": (Unauthorized, 401, "UnauthorizedException", b'{"message":"Unauthorized"}'),
    "UNSUPPORTED_MEDIA_TYPE": (UnsupportedMediaType, 415, "BadRequestException",
                               b'{"message":"Unsupported Media Type"}'),
    "WAF_FILTERED": (WafFiltered, 403, "ForbiddenException", b'{"message":"Forbidden"}'),
}


@attrs.define
class Raiser:
    """A test plugin raising ``error`` from ``authorize`` or ``integrate``."""

    phase: str
    error: GatewayError | None = None

    @hookimpl
    def authorize(self, ctx: Context) -> Allow | Deny | None:
        if self.phase == "authorize" and self.error is not None:
            raise self.error
        return None

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse | None:
        if self.phase == "integrate" and self.error is not None:
            raise self.error
        return None


def harness_with(make_harness: HarnessFactory, b: Builders, plugin: Any, **root: Any
                 ) -> GatewayHarness:
    doc = b.openapi({"/pets/{petId}": {"get": b.mock_op(200, '{"ok": true}')}}, **root)
    return make_harness(doc, plugins=[("raiser", plugin)])


def assert_rest_headers(response: Response) -> None:
    """``x-amzn-RequestId`` (a UUID) and ``x-amz-apigw-id`` are on every REST response."""
    assert UUID_RE.match(response.headers.get("x-amzn-RequestId") or ""), response.headers
    assert response.headers.get("x-amz-apigw-id")
    assert "apigw-requestid" not in response.headers


def test_golden_table_covers_every_type() -> None:
    assert set(GOLDEN) == set(GATEWAY_RESPONSE_TYPES)
    for name, (cls, status, error_type, _) in GOLDEN.items():
        assert cls.response_type == name
        assert (GATEWAY_RESPONSE_TYPES[name].status,
                GATEWAY_RESPONSE_TYPES[name].error_type) == (status, error_type)


@pytest.mark.parametrize("phase", ["authorize", "integrate"])
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_default_gateway_response(make_harness: HarnessFactory, b: Builders, name: str,
                                  phase: str) -> None:
    cls, status, error_type, body = GOLDEN[name]
    h = harness_with(make_harness, b, Raiser(phase, cls()))
    response = h.request("GET", "/prod/pets/1", headers={"X-Amzn-Trace-Id": "Root=1-x"})
    assert response.status == status
    assert response.headers.get_all("x-amzn-ErrorType") == [error_type]
    assert response.headers.get_all("Content-Type") == ["application/json"]
    assert response.body == body
    assert "x-amzn-trace-id" not in response.headers
    assert_rest_headers(response)


def test_internal_server_error_is_36_bytes(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness_with(make_harness, b, Raiser("integrate", ApiConfigurationError()))
    assert len(h.request("GET", "/prod/pets/1").body) == 36


def test_integration_failure_with_lambda_status(make_harness: HarnessFactory,
                                                b: Builders) -> None:
    h = harness_with(make_harness, b, Raiser("integrate", IntegrationFailure(status=502)))
    response = h.request("GET", "/prod/pets/1")
    assert (response.status, response.body) == (502, b'{"message": "Internal server error"}')


def test_error_message_and_headers_of_the_raised_error(make_harness: HarnessFactory,
                                                       b: Builders) -> None:
    error = BadRequestParameters("Missing required request parameters: [h1, q1]",
                                 headers=[("WWW-Authenticate", "Bearer")])
    h = harness_with(make_harness, b, Raiser("authorize", error))
    response = h.request("GET", "/prod/pets/1")
    assert response.body == b'{"message":"Missing required request parameters: [h1, q1]"}'
    assert response.headers.get("WWW-Authenticate") == "Bearer"


def test_message_is_json_escaped(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness_with(make_harness, b, Raiser("authorize", AccessDenied('say "no"\n')))
    assert h.request("GET", "/prod/pets/1").body == b'{"message":"say \\"no\\"\\n"}'


def test_deny_verdict_renders_its_error(make_harness: HarnessFactory, b: Builders) -> None:
    class Denier:
        @hookimpl
        def authorize(self, ctx: Context) -> Deny:
            return Deny(AccessDenied())

    response = harness_with(make_harness, b, Denier()).request("GET", "/prod/pets/1")
    assert response.status == 403
    assert response.body == GOLDEN["ACCESS_DENIED"][3]


# -- customisation (§4.3) ----------------------------------------------------------------------


def test_customised_type(make_harness: HarnessFactory, b: Builders) -> None:
    custom = {"THROTTLED": {
        "statusCode": "503",
        "responseParameters": {
            "gatewayresponse.header.Retry-After": "'5'",
            "gatewayresponse.header.X-Accept": "method.request.header.Accept",
            "gatewayresponse.header.X-Q": "method.request.querystring.q",
            "gatewayresponse.header.X-Pet": "method.request.path.petId",
            "gatewayresponse.header.X-Backend": "stageVariables.backend",
            "gatewayresponse.header.X-Stage": "context.stage",
            "gatewayresponse.header.X-Missing": "method.request.header.X-Nope",
        },
        "responseTemplates": {
            "application/json": '{"error": "$context.error.message", "type": '
                                '"$context.error.responseType", "api": "$context.apiId", '
                                '"b": "$stageVariables.backend", "s": $context.error.'
                                'messageString}'},
    }}
    h = harness_with(make_harness, b, Raiser("authorize", Throttled()),
                     **{"x-amazon-apigateway-gateway-responses": custom})
    response = h.request("GET", "/prod/pets/42?q=1&q=two", headers={"Accept": "text/html"})
    assert response.status == 503
    assert response.headers.get("Retry-After") == "5"
    assert response.headers.get("X-Accept") == "text/html"
    assert response.headers.get("X-Q") == "two"
    assert response.headers.get("X-Pet") == "42"
    assert response.headers.get("X-Backend") == "backend.invalid"
    assert response.headers.get("X-Stage") == "prod"
    assert "X-Missing" not in response.headers
    assert response.headers.get("x-amzn-ErrorType") == "TooManyRequestsException"
    assert response.body == (b'{"error": "Too Many Requests", "type": "THROTTLED", '
                             b'"api": "testapi", "b": "backend.invalid", '
                             b'"s": "Too Many Requests"}')
    assert_rest_headers(response)


def test_default_4xx_fallback(make_harness: HarnessFactory, b: Builders) -> None:
    custom = {"DEFAULT_4XX": {
        "statusCode": "400",
        "responseParameters": {"gatewayresponse.header.Access-Control-Allow-Origin": "'*'"},
        "responseTemplates": {"application/json": '{"oops": $context.error.messageString}'}}}
    raiser = Raiser("authorize")
    h = harness_with(make_harness, b, raiser,
                     **{"x-amazon-apigateway-gateway-responses": custom})
    raiser.error = Unauthorized()
    response = h.request("GET", "/prod/pets/1")
    assert (response.status, response.body) == (400, b'{"oops": "Unauthorized"}')
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    assert response.headers.get("x-amzn-ErrorType") == "UnauthorizedException"
    response = h.request("GET", "/prod/nope")
    assert (response.status, response.body) == (400, b'{"oops": "Missing Authentication Token"}')
    raiser.error = IntegrationTimeout()
    response = h.request("GET", "/prod/pets/1")
    assert (response.status, response.body) == (504, GOLDEN["INTEGRATION_TIMEOUT"][3])
    assert "Access-Control-Allow-Origin" not in response.headers


def test_default_4xx_without_status_keeps_the_natural_status(make_harness: HarnessFactory,
                                                             b: Builders) -> None:
    custom = {"DEFAULT_4XX": {"responseParameters": {
        "gatewayresponse.header.Access-Control-Allow-Origin": "'*'"}}}
    raiser = Raiser("authorize", QuotaExceeded())
    h = harness_with(make_harness, b, raiser,
                     **{"x-amazon-apigateway-gateway-responses": custom})
    response = h.request("GET", "/prod/pets/1")
    assert (response.status, response.body) == (429, b'{"message":"Limit Exceeded"}')
    assert response.headers.get("Access-Control-Allow-Origin") == "*"


def test_default_5xx_fallback(make_harness: HarnessFactory, b: Builders) -> None:
    custom = {"DEFAULT_5XX": {"statusCode": "503",
                              "responseParameters": {"gatewayresponse.header.X-5": "'yes'"}}}
    raiser = Raiser("integrate", IntegrationTimeout())
    h = harness_with(make_harness, b, raiser,
                     **{"x-amazon-apigateway-gateway-responses": custom})
    response = h.request("GET", "/prod/pets/1")
    assert (response.status, response.body) == (503, b'{"message": "Endpoint request timed out"}')
    assert response.headers.get("X-5") == "yes"
    raiser.error = Unauthorized()
    response = h.request("GET", "/prod/pets/1")
    assert (response.status, response.body) == (401, b'{"message":"Unauthorized"}')
    assert "X-5" not in response.headers


def test_specific_type_beats_default_4xx(make_harness: HarnessFactory, b: Builders) -> None:
    custom = {"DEFAULT_4XX": {"statusCode": "400"},
              "UNAUTHORIZED": {"responseParameters": {
                  "gatewayresponse.header.WWW-Authenticate": "'Bearer'"}}}
    h = harness_with(make_harness, b, Raiser("authorize", Unauthorized()),
                     **{"x-amazon-apigateway-gateway-responses": custom})
    response = h.request("GET", "/prod/pets/1")
    assert (response.status, response.body) == (401, b'{"message":"Unauthorized"}')
    assert response.headers.get("WWW-Authenticate") == "Bearer"


def test_templates_only_keep_a_lambda_502(make_harness: HarnessFactory, b: Builders) -> None:
    custom = {"INTEGRATION_FAILURE": {"responseTemplates": {
        "application/json": '{"failed": $context.error.messageString}'}}}
    h = harness_with(make_harness, b, Raiser("integrate", IntegrationFailure(status=502)),
                     **{"x-amazon-apigateway-gateway-responses": custom})
    response = h.request("GET", "/prod/pets/1")
    # messageString of an integration-side error carries its leading space (§4.2), so a
    # template with its own space renders two, as AWS does.
    assert (response.status, response.body) == (502, b'{"failed":  "Internal server error"}')


def test_dg_example_missing_authentication_token_as_404(make_harness: HarnessFactory,
                                                        b: Builders) -> None:
    """The Developer Guide's example of §4.3, verbatim."""
    custom = {"MISSING_AUTHENTICATION_TOKEN": {
        "statusCode": "404",
        "responseParameters": {"gatewayresponse.header.x-request-path":
                               "method.request.path.petId"},
        "responseTemplates": {"application/json": "{\"message\": $context.error.messageString, "
                              "\"type\": \"$context.error.responseType\", "
                              "\"stage\": \"$context.stage\"}"}}}
    h = harness_with(make_harness, b, Raiser("authorize"),
                     **{"x-amazon-apigateway-gateway-responses": custom})
    response = h.request("GET", "/prod/owners/1")
    assert response.status == 404
    assert response.body == (b'{"message": "Missing Authentication Token", '
                             b'"type": "MISSING_AUTHENTICATION_TOKEN", "stage": "prod"}')
    assert response.headers.get("x-amzn-ErrorType") == "MissingAuthenticationTokenException"
    assert "x-request-path" not in response.headers  # no route matched: no path parameters
    assert_rest_headers(response)
    response = h.request("POST", "/prod/pets/7")  # the path exists; the method does not
    assert response.status == 404


def test_template_chosen_by_accept(make_harness: HarnessFactory, b: Builders) -> None:
    custom = {"UNAUTHORIZED": {"responseTemplates": {
        "application/json": '{"j": 1}',
        "application/xml": "<x/>",
        "text/plain": "$context.error.message"}}}
    h = harness_with(make_harness, b, Raiser("authorize", Unauthorized()),
                     **{"x-amazon-apigateway-gateway-responses": custom})
    assert h.request("GET", "/prod/pets/1").body == b'{"j": 1}'
    assert h.request("GET", "/prod/pets/1", headers={"Accept": "text/plain"}).body \
        == b"Unauthorized"
    assert h.request("GET", "/prod/pets/1",
                     headers={"Accept": "application/xml;q=0.9, text/plain"}).body == b"<x/>"
    assert h.request("GET", "/prod/pets/1", headers={"Accept": "image/png"}).body \
        == b'{"j": 1}'


@pytest.mark.parametrize("spelling", ["content-type", "Content-Type", "CONTENT-TYPE"])
def test_customised_content_type(make_harness: HarnessFactory, b: Builders,
                                 spelling: str) -> None:
    custom = {"UNAUTHORIZED": {"responseParameters": {
        f"gatewayresponse.header.{spelling}": "'text/plain'"},
        "responseTemplates": {"application/json": "$context.error.message"}}}
    h = harness_with(make_harness, b, Raiser("authorize", Unauthorized()),
                     **{"x-amazon-apigateway-gateway-responses": custom})
    response = h.request("GET", "/prod/pets/1")
    assert response.headers.get_all("Content-Type") == ["text/plain"]
    assert response.body == b"Unauthorized"


# -- request ids (§A.7) ------------------------------------------------------------------------


def test_request_id_headers_on_every_rest_response(make_harness: HarnessFactory,
                                                   b: Builders) -> None:
    h = harness_with(make_harness, b, Raiser("authorize"))
    seen: set[str] = set()
    for path in ("/prod/pets/1", "/prod/nope", "/nostage/pets/1"):
        response = h.request("GET", path)
        assert_rest_headers(response)
        seen.add(response.headers.get("x-amzn-RequestId") or "")
        seen.add(response.headers.get("x-amz-apigw-id") or "")
    assert len(seen) == 6


def test_client_uuid_request_id_is_reused(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness_with(make_harness, b, Raiser("authorize"))
    mine = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    for path in ("/prod/pets/1", "/prod/nope"):
        response = h.request("GET", path, headers={"x-amzn-RequestId": mine})
        assert response.headers.get("x-amzn-RequestId") == mine
    upper = str(uuid.uuid4()).upper()
    assert h.request("GET", "/prod/pets/1", headers={"X-Amzn-RequestId": upper}).headers.get(
        "x-amzn-RequestId") == upper


@pytest.mark.parametrize("bad", ["not-a-uuid", "c6af9ac6-7b61-11e6-9a41-93e8deadbeef0",
                                 "c6af9ac67b6111e69a4193e8deadbeef", ""])
def test_invalid_client_request_id_is_replaced(make_harness: HarnessFactory, b: Builders,
                                               bad: str) -> None:
    h = harness_with(make_harness, b, Raiser("authorize"))
    response = h.request("GET", "/prod/pets/1", headers={"x-amzn-RequestId": bad})
    rid = response.headers.get("x-amzn-RequestId")
    assert rid != bad
    assert UUID_RE.match(rid or "")


def test_apigw_id_cannot_be_overridden(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness_with(make_harness, b, Raiser("authorize"))
    response = h.request("GET", "/prod/pets/1", headers={"x-amz-apigw-id": "mine="})
    assert response.headers.get_all("x-amz-apigw-id") != ["mine="]


# -- HTTP APIs (§4.4) --------------------------------------------------------------------------


def http_harness(make_harness: HarnessFactory, b: Builders, raiser: Raiser) -> GatewayHarness:
    echo = b.echo()
    return make_harness(b.openapi({"/x": {"get": b.proxy_op()}}),
                        plugins=[("raiser", raiser), ("echo", echo)], api_type="HTTP")


def assert_http_headers(response: Response) -> None:
    rid = response.headers.get("apigw-requestid")
    assert rid and re.fullmatch(r"[A-Za-z0-9+/]{15}=", rid), rid
    assert not [k for k, _ in response.headers if k.lower().startswith("x-amz")]


def test_http_api_success_headers(make_harness: HarnessFactory, b: Builders) -> None:
    h = http_harness(make_harness, b, Raiser("authorize"))
    response = h.request("GET", "/x", headers={"x-amzn-RequestId": str(uuid.uuid4())})
    assert response.status == 200
    assert_http_headers(response)


def test_http_api_not_found(make_harness: HarnessFactory, b: Builders) -> None:
    h = http_harness(make_harness, b, Raiser("authorize"))
    response = h.request("GET", "/nope")
    assert (response.status, response.body) == (404, b'{"message":"Not Found"}')
    assert response.headers.get_all("Content-Type") == ["application/json"]
    assert_http_headers(response)


@pytest.mark.parametrize(("error", "status", "body"), [
    (Unauthorized(), 401, b'{"message":"Unauthorized"}'),
    (AccessDenied(), 403, b'{"message":"Forbidden"}'),
    (InvalidApiKey(), 403, b'{"message":"Forbidden"}'),
    (Throttled(), 429, b'{"message":"Too Many Requests"}'),
    (QuotaExceeded(), 429, b'{"message":"Too Many Requests"}'),
    (IntegrationTimeout(), 503, b'{"message":"Service Unavailable"}'),
    (IntegrationFailure(status=502), 500, b'{"message":"Internal Server Error"}'),
    (ApiConfigurationError(), 500, b'{"message":"Internal Server Error"}'),
    (AuthorizerConfigurationError(), 500, b'{"message":"Internal Server Error"}'),
    (MissingAuthenticationToken(), 404, b'{"message":"Not Found"}'),
])
def test_http_api_error_answers(make_harness: HarnessFactory, b: Builders, error: GatewayError,
                                status: int, body: bytes) -> None:
    h = http_harness(make_harness, b, Raiser("authorize", error))
    response = h.request("GET", "/x")
    assert (response.status, response.body) == (status, body)
    assert_http_headers(response)


def test_http_api_has_no_customisation(make_harness: HarnessFactory, b: Builders) -> None:
    doc = b.openapi({"/x": {"get": b.proxy_op()}}, **{
        "x-amazon-apigateway-gateway-responses": {"DEFAULT_4XX": {"statusCode": "418"}}})
    h = make_harness(doc, plugins=[("raiser", Raiser("authorize", Unauthorized())),
                                   ("echo", b.echo())], api_type="HTTP")
    assert h.request("GET", "/x").status == 401
    assert h.request("GET", "/nope").status == 404


def test_handle_error_plugin_can_replace_the_rendering(make_harness: HarnessFactory,
                                                       b: Builders) -> None:
    class Teapot:
        @hookimpl
        def handle_error(self, ctx: Context, error: GatewayError) -> Response | None:
            if isinstance(error, Throttled):
                return Response(status=418, body=b"slow down")
            return None

    raiser = Raiser("authorize", Throttled())
    doc = b.openapi({"/pets/{petId}": {"get": b.mock_op()}})
    h = make_harness(doc, plugins=[("teapot", Teapot()), ("raiser", raiser)])
    response = h.request("GET", "/prod/pets/1")
    assert (response.status, response.body) == (418, b"slow down")
    assert_rest_headers(response)
    raiser.error = Unauthorized()
    assert h.request("GET", "/prod/pets/1").status == 401
