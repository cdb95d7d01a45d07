"""The non-proxy mapping plugin: request-template passthrough (§3.4), integration response
selection, header mappings with AWS's remapping and response templates by Accept (§3.8)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import twistgw_mapping
from twistgw_mapping import REMAPPED_RESPONSE_HEADERS, select_integration_response

from twistgw import IntegrationResponse, Registry, hookimpl
from twistgw.definition import Integration, IntegrationResponseConfig, Operation
from twistgw.deployment import Route, StageDeployment
from twistgw.errors import ApiConfigurationError, UnsupportedMediaType
from twistgw.models import Context, Headers, IntegrationRequest, Response
from twistgw.testing import make_context, make_inbound

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory, LogCapture

TEMPLATE = '{"statusCode": 200, "mapped": true}'


def route_for(integration: Integration, method: str = "POST") -> Route:
    return Route(api_id="a", operation=Operation(path="/x", method=method,
                                                 integration=integration),
                 resource_id="r", timeout=29.0)


def ctx_for(integration: Integration, headers: Mapping[str, str] | None = None,
            method: str = "POST", **fields: Any) -> Context:
    inbound = make_inbound(method, "/prod/x", headers=headers or {}, body=b"client body")
    return make_context(inbound, route=route_for(integration, method), method=method,
                        **fields)


def integration_request() -> IntegrationRequest:
    return IntegrationRequest(method="POST", uri="", body=b"client body")


# -- map_request: passthrough behaviour (§3.4) -------------------------------------------------

JSON_ONLY = {"application/json": TEMPLATE}
XML_ONLY = {"application/xml": "<statusCode>200</statusCode>"}

PASSTHROUGH_TABLE: list[tuple[dict[str, str], str | None, dict[str, str]]] = [
    # templates, request Content-Type, {behaviour: expected}
    ({}, None, {"WHEN_NO_MATCH": "pass", "WHEN_NO_TEMPLATES": "pass", "NEVER": "415"}),
    ({}, "application/json", {"WHEN_NO_MATCH": "pass", "WHEN_NO_TEMPLATES": "pass",
                              "NEVER": "415"}),
    ({}, "application/xml", {"WHEN_NO_MATCH": "pass", "WHEN_NO_TEMPLATES": "pass",
                             "NEVER": "415"}),
    (JSON_ONLY, None, {"WHEN_NO_MATCH": "transform", "WHEN_NO_TEMPLATES": "transform",
                       "NEVER": "transform"}),
    (JSON_ONLY, "application/json", {"WHEN_NO_MATCH": "transform",
                                     "WHEN_NO_TEMPLATES": "transform", "NEVER": "transform"}),
    (JSON_ONLY, "Application/JSON; charset=UTF-8", {
        "WHEN_NO_MATCH": "transform", "WHEN_NO_TEMPLATES": "transform", "NEVER": "transform"}),
    (JSON_ONLY, "application/xml", {"WHEN_NO_MATCH": "pass", "WHEN_NO_TEMPLATES": "415",
                                    "NEVER": "415"}),
    (XML_ONLY, None, {"WHEN_NO_MATCH": "pass", "WHEN_NO_TEMPLATES": "415", "NEVER": "415"}),
    (XML_ONLY, "application/json", {"WHEN_NO_MATCH": "pass", "WHEN_NO_TEMPLATES": "415",
                                    "NEVER": "415"}),
]


@pytest.mark.parametrize(("templates", "content_type", "behavior", "expected"), [
    (templates, ctype, behavior, expected)
    for templates, ctype, outcomes in PASSTHROUGH_TABLE
    for behavior, expected in outcomes.items()
])
def test_passthrough_table(templates: dict[str, str], content_type: str | None,
                           behavior: str, expected: str) -> None:
    integration = Integration(type="MOCK", request_templates=templates,
                              passthrough_behavior=behavior)
    headers = {"Content-Type": content_type} if content_type else {}
    ctx = ctx_for(integration, headers)
    if expected == "415":
        with pytest.raises(UnsupportedMediaType):
            twistgw_mapping.map_request(ctx, integration_request())
        return
    result = twistgw_mapping.map_request(ctx, integration_request())
    if expected == "pass":
        assert result is None  # the pipe keeps the request: the body passes through
    else:
        assert result is not None
        assert result.body == next(iter(templates.values())).encode()


def test_template_keeps_the_rest_of_the_request() -> None:
    integration = Integration(type="MOCK", request_templates=JSON_ONLY)
    request = attrs.evolve(integration_request(), headers=Headers.of({"X-A": "1"}),
                           query=(("q", "1"),))
    result = twistgw_mapping.map_request(ctx_for(integration), request)
    assert result is not None
    assert (result.headers, result.query, result.body) == (request.headers, request.query,
                                                           TEMPLATE.encode())


def test_null_and_empty_templates_send_an_empty_body() -> None:
    for template in (None, ""):
        integration = Integration(type="MOCK",
                                  request_templates={"application/json": template})
        result = twistgw_mapping.map_request(ctx_for(integration), integration_request())
        assert result is not None and result.body == b""


def test_proxy_integrations_are_left_alone() -> None:
    integration = Integration(type="HTTP_PROXY", uri="http://x/", passthrough_behavior="NEVER",
                              request_templates=JSON_ONLY)
    ctx = ctx_for(integration, {"Content-Type": "text/plain"})
    assert twistgw_mapping.map_request(ctx, integration_request()) is None
    response = Response(status=201, body=b"as is")
    assert twistgw_mapping.map_response(ctx, IntegrationResponse(status=201), response) is None


def test_register_keeps_the_plugin_off_proxy_routes() -> None:
    registry = Registry()
    registry.plugin = "mapping"
    twistgw_mapping.register(registry)
    keep = registry.route_filters["mapping"]
    assert keep(route_for(Integration(type="MOCK")))
    assert keep(route_for(Integration(type="HTTP", uri="http://x/")))
    assert keep(route_for(Integration(type="AWS", uri="arn:aws:apigateway:x")))
    assert not keep(route_for(Integration(type="HTTP_PROXY", uri="http://x/")))
    assert not keep(route_for(Integration(type="AWS_PROXY", uri="arn:x")))


@attrs.define
class BodyRecorder:
    """Sees the integration request the MOCK plugin gets, then abstains."""

    bodies: list[bytes] = attrs.field(factory=list)

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> None:
        self.bodies.append(request.body)


def test_passthrough_end_to_end(make_harness: HarnessFactory, b: Builders) -> None:
    recorder = BodyRecorder()
    never = b.mock_integration(201, '"created"', passthroughBehavior="never")
    no_templates = b.mock_integration(201, '"created"', passthroughBehavior="when_no_templates")
    no_match = b.mock_integration(201, '"created"')
    doc = b.openapi({
        "/never": {"post": {"x-amazon-apigateway-integration": never}},
        "/strict": {"post": {"x-amazon-apigateway-integration": no_templates}},
        "/lenient": {"post": {"x-amazon-apigateway-integration": no_match}},
    })
    h = make_harness(doc, plugins=[("recorder", recorder)])
    json_body = b'{"statusCode": 201, "client": true}'
    for path in ("/prod/never", "/prod/strict", "/prod/lenient"):
        response = h.request("POST", path, body=json_body,
                             headers={"Content-Type": "application/json"})
        assert (response.status, response.body) == (201, b'"created"'), path
        assert recorder.bodies[-1] == b'{"statusCode": 201}'
        response = h.request("POST", path, body=b"<a/>",
                             headers={"Content-Type": "application/xml"})
        if path == "/prod/lenient":
            # Passed through untransformed: the MOCK sees the client's body, which has
            # no statusCode, and answers 500 as AWS does.
            assert recorder.bodies[-1] == b"<a/>"
            assert response.status == 500
        else:
            assert response.status == 415, path
            assert response.body == b'{"message":"Unsupported Media Type"}'
            assert response.headers.get("x-amzn-ErrorType") == "BadRequestException"


def test_no_templates_with_never_is_415_end_to_end(make_harness: HarnessFactory,
                                                   b: Builders) -> None:
    integration = {"type": "mock", "passthroughBehavior": "never",
                   "responses": {"default": {"statusCode": "200"}}}
    h = make_harness(b.openapi({"/x": {"get": {"x-amazon-apigateway-integration":
                                               integration}}}))
    response = h.request("GET", "/prod/x")
    assert (response.status, response.body) == (415, b'{"message":"Unsupported Media Type"}')


# -- integration response selection (§3.8) ------------------------------------------------------


def irc(pattern: str | None, status: str, **kw: Any) -> IntegrationResponseConfig:
    return IntegrationResponseConfig(selection_pattern=pattern, status_code=status, **kw)


def test_selection_is_a_full_match_on_the_status() -> None:
    responses = (irc("20", "201"), irc("2\\d{2}", "200"), irc("4\\d{2}", "400"),
                 irc("404", "410"), irc(None, "500"))

    def pick(selection: str) -> str | None:
        found = select_integration_response(responses, selection)
        return None if found is None else found.status_code

    assert pick("200") == "200"  # "20" does not fully match "200"
    assert pick("20") == "201"
    assert pick("404") == "400"  # the first match wins, in definition order
    assert pick("302") == "500"  # no match: the default
    assert pick("") == "500"


def test_selection_without_default() -> None:
    responses = (irc("2\\d{2}", "200"),)
    assert select_integration_response(responses, "500") is None
    assert select_integration_response((), "200") is None


def test_empty_pattern_is_a_default() -> None:
    responses = (irc("", "200"), irc("5\\d{2}", "502"))
    assert select_integration_response(responses, "503").status_code == "502"  # type: ignore[union-attr]
    assert select_integration_response(responses, "404").status_code == "200"  # type: ignore[union-attr]


def test_recorded_lambda_selection() -> None:
    """The recorded test of §3.8: patterns ""->200, four hundred->405, .+->502, 200->504."""
    responses = (irc("", "200"), irc(".*four hundred.*", "405"), irc(".+", "502"),
                 irc("200", "504"))

    def pick(message: str) -> str:
        found = select_integration_response(responses, message)
        assert found is not None
        return found.status_code

    assert pick("") == "200"
    assert pick("Error: Raising four hundred from within the Lambda function") == "405"
    assert pick("Error: Raising five hundred from within the Lambda function") == "502"
    # Java's '.' (like Python's) does not match a newline: the message falls to the default.
    assert pick("first line\nfour hundred") == "200"


def test_map_response_selects_by_lambda_error_message() -> None:
    integration = Integration(type="AWS", uri="arn:x", responses=(
        irc(None, "200"), irc(".*not found.*", "404"), irc(".+", "502")))
    ctx = ctx_for(integration)

    def status(message: str | None) -> int:
        meta = {} if message is None else {"error_message": message}
        result = twistgw_mapping.map_response(
            ctx, IntegrationResponse(status=200, body=b"{}", metadata=meta), Response())
        assert result is not None
        return result.status

    assert status("") == 200  # a successful Lambda call: the selection value is ""
    # Without Lambda metadata the selection value is the status code, which ".+" matches.
    assert status(None) == 502
    assert status("item not found") == 404
    assert status("boom") == 502


def test_no_match_and_no_default_is_500(log_events: LogCapture) -> None:
    integration = Integration(type="HTTP", uri="http://x/", responses=(irc("2\\d{2}", "200"),))
    ctx = ctx_for(integration)
    with pytest.raises(ApiConfigurationError):
        twistgw_mapping.map_response(ctx, IntegrationResponse(status=503), Response())
    assert log_events.texts() == [
        f"({ctx.request_id}) Execution failed due to configuration error: No match for "
        "output mapping and no default output mapping configured. Endpoint Response Status "
        "Code: 503"]


def test_no_match_end_to_end(make_harness: HarnessFactory, b: Builders) -> None:
    op = b.mock_op(template='{"statusCode": 500}',
                   responses={"2\\d{2}": {"statusCode": "200"}})
    response = make_harness(b.openapi({"/x": {"get": op}})).request("GET", "/prod/x")
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')
    assert response.headers.get("x-amzn-ErrorType") == "InternalServerErrorException"


# -- response parameters --------------------------------------------------------------------------


def mapped(parameters: dict[str, str], *, integration_headers: Headers | None = None,
           **ctx_fields: Any) -> Response:
    integration = Integration(type="HTTP", uri="http://x/", responses=(
        irc(None, "200", response_parameters=parameters),))
    ctx = ctx_for(integration, **ctx_fields)
    result = twistgw_mapping.map_response(
        ctx, IntegrationResponse(status=200, headers=integration_headers or Headers(),
                                 body=b"backend"), Response())
    assert result is not None
    return result


def test_static_and_sourced_header_mappings() -> None:
    stage = StageDeployment(name="prod", variables={"region": "eu-west-1"})
    backend = Headers((("X-Backend", "one"), ("X-Multi", "a"), ("X-Multi", "b")))
    response = mapped({
        "method.response.header.X-Static": "'hello, world'",
        "method.response.header.X-From-Backend": "integration.response.header.X-Backend",
        "method.response.header.X-Last": "integration.response.header.X-Multi",
        "method.response.header.X-All": "integration.response.multivalueheader.X-Multi",
        "method.response.header.X-Stage-Var": "stageVariables.region",
        "method.response.header.X-Request-Id": "context.requestId",
        "method.response.header.X-Absent": "integration.response.header.X-Nope",
        "method.response.header.X-Client": "method.request.header.X-Client",
    }, integration_headers=backend, stage=stage, headers={"X-Client": "c"})
    assert response.headers.to_dict_last() == {
        "X-Static": "hello, world",
        "X-From-Backend": "one",
        "X-Last": "b",
        "X-All": "a,b",
        "X-Stage-Var": "eu-west-1",
        "X-Request-Id": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "X-Client": "c",
    }
    assert response.status == 200
    assert response.body == b"backend"


def test_only_mapped_headers_reach_the_client() -> None:
    backend = Headers((("X-Backend", "one"), ("Content-Type", "text/html")))
    assert mapped({}, integration_headers=backend).headers == Headers()


@pytest.mark.parametrize("name", sorted(REMAPPED_RESPONSE_HEADERS))
def test_remapped_headers(name: str) -> None:
    response = mapped({f"method.response.header.{name}": "'v'"})
    assert response.headers.items == ((f"x-amzn-Remapped-{name}", "v"),)


def test_remapped_header_keeps_the_mapping_spelling() -> None:
    response = mapped({"method.response.header.Server": "'gw'",
                       "method.response.header.Date": "'today'",
                       "method.response.header.Transfer-Encoding": "'chunked'",
                       "method.response.header.Content-Type": "'text/plain'",
                       "method.response.header.Accept": "'*/*'",
                       "method.response.header.Content-Encoding": "'gzip'"})
    assert response.headers.items == (
        ("x-amzn-Remapped-Server", "gw"), ("x-amzn-Remapped-Date", "today"),
        ("Content-Type", "text/plain"), ("Accept", "*/*"), ("Content-Encoding", "gzip"))


def test_remapping_the_13_names_of_the_spec() -> None:
    assert frozenset(h.lower() for h in (
        "Authorization", "Connection", "Content-Length", "Content-MD5", "Date", "Expect",
        "Host", "Max-Forwards", "Proxy-Authenticate", "Server", "Trailer", "Upgrade",
        "User-Agent", "WWW-Authenticate")) == REMAPPED_RESPONSE_HEADERS


def test_remapped_server_end_to_end(make_harness: HarnessFactory, b: Builders) -> None:
    h = make_harness(b.openapi({"/x": {"get": b.mock_op(
        200, '"x"', headers={"Server": "mine", "X-Powered-By": "twistgw"})}}))
    response = h.request("GET", "/prod/x")
    assert response.headers.get("x-amzn-Remapped-Server") == "mine"
    assert response.headers.get("X-Powered-By") == "twistgw"
    assert "Server" not in response.headers


# -- response templates by Accept ------------------------------------------------------------------


def templated(templates: dict[str, str | None], accept: str | None) -> bytes:
    integration = Integration(type="HTTP", uri="http://x/", responses=(
        irc(None, "200", response_templates=templates),))
    ctx = ctx_for(integration, {"Accept": accept} if accept is not None else {})
    result = twistgw_mapping.map_response(ctx, IntegrationResponse(body=b"backend"),
                                          Response())
    assert result is not None
    return result.body


@pytest.mark.parametrize(("accept", "body"), [
    (None, b"json"),
    ("application/json", b"json"),
    ("application/xml", b"xml"),
    ("Application/XML; q=0.9", b"xml"),
    ("application/xml, application/json", b"xml"),
    ("text/plain", b"json"),
    ("*/*", b"json"),
])
def test_response_template_chosen_by_accept(accept: str | None, body: bytes) -> None:
    assert templated({"application/json": "json", "application/xml": "xml"}, accept) == body


def test_first_template_when_no_json_template() -> None:
    templates: dict[str, str | None] = {"application/xml": "xml", "text/plain": "text"}
    assert templated(templates, "image/png") == b"xml"
    assert templated(templates, None) == b"xml"
    assert templated(templates, "text/plain") == b"text"


def test_no_or_empty_template_passes_the_body() -> None:
    assert templated({}, None) == b"backend"
    assert templated({"application/json": ""}, None) == b"backend"
    assert templated({"application/json": None}, None) == b"backend"
    assert templated({"application/json": "", "application/xml": "xml"}, None) == b"backend"


def test_response_template_by_accept_end_to_end(make_harness: HarnessFactory,
                                                b: Builders) -> None:
    op = b.mock_op(responses={"default": {
        "statusCode": "200",
        "responseParameters": {"method.response.header.Content-Type": "'application/json'"},
        "responseTemplates": {"application/json": '{"format": "json"}',
                              "application/xml": "<format>xml</format>"}}})
    h = make_harness(b.openapi({"/x": {"get": op}}))
    assert h.request("GET", "/prod/x").body == b'{"format": "json"}'
    assert h.request("GET", "/prod/x", headers={"Accept": "application/xml"}).body \
        == b"<format>xml</format>"


def test_literal_templates_follow_each_request_on_one_route(make_harness: HarnessFactory,
                                                            b: Builders) -> None:
    """Literal templates are prebuilt per route, content type, status and Accept: requests
    alternating those on one route each still get their own template's answer."""
    op = {"responses": {"200": {"description": "ok"}},
          "x-amazon-apigateway-integration": {
              "type": "mock",
              "requestTemplates": {"application/json": '{"statusCode": 200}',
                                   "text/plain": '{"statusCode": 404}'},
              "responses": {
                  "default": {"statusCode": "200", "responseTemplates": {
                      "application/json": '{"format": "json"}',
                      "application/xml": "<format>xml</format>"}},
                  "404": {"statusCode": "404", "responseTemplates": {
                      "application/json": '{"missing": true}'}}}}}
    h = make_harness(b.openapi({"/x": {"post": op}}))
    expected = {
        ("application/json", "application/json"): (200, b'{"format": "json"}'),
        ("application/json", "application/xml"): (200, b"<format>xml</format>"),
        ("text/plain", "application/xml"): (404, b'{"missing": true}'),
        ("text/plain", "application/json"): (404, b'{"missing": true}'),
    }
    for _ in range(2):
        for (ctype, accept), (status, body) in expected.items():
            response = h.request("POST", "/prod/x", body=b"x",
                                 headers={"Content-Type": ctype, "Accept": accept})
            assert (response.status, response.body) == (status, body), (ctype, accept)
