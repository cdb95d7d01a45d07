"""VTL mapping templates end to end (aws-apigw-spec.md §3.4-§3.6, §3.8, §10.3).

Every recorded AWS output of those sections is reproduced byte for byte through an
in-process gateway: request templates are observed by an echoing HTTP test backend (as the
recorded tests did with a real HTTP integration), response templates and overrides through
MOCK integrations.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import twistgw_mapping
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twistgw_mapping.namespaces import (
    OVERRIDES,
    ROOT_NAMES,
    ContextObject,
    InputObject,
    Overrides,
    escape_javascript,
    json_path,
    parse_json,
    parse_json_body,
    template_others,
    template_roots,
    template_variables,
    url_encode,
)

from twistgw import ConfigError, IntegrationResponse, Registry, hookimpl
from twistgw.definition import Integration, IntegrationResponseConfig, Operation
from twistgw.deployment import Route, StageDeployment
from twistgw.errors import ApiConfigurationError
from twistgw.models import Context, Headers, IntegrationRequest, Response
from twistgw.pipeline import INGRESS_DROPPED_HEADERS
from twistgw.testing import make_context, make_inbound
from twistgw.variables import Finish
from twistgw.vtl import (
    JavaList,
    JsonList,
    Template,
    TemplateError,
    TemplateRenderError,
    VtlObject,
    to_text,
    walk,
)

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory, LogCapture


@pytest.fixture(params=["compiled", "interpreted"], autouse=True)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs twice: with templates compiled to Python (what the plugin
    uses) and through the tree interpreter (the reference), so the golden outputs hold
    for both."""
    if request.param == "interpreted":
        monkeypatch.setattr(twistgw_mapping, "Template",
                            lambda source, **kwargs: Template(source, compiled=False))
    return str(request.param)


@attrs.define
class EchoHttp:
    """Answers ``http`` integrations with the integration request body it received."""

    requests: list[IntegrationRequest] = attrs.field(factory=list)
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()

    @hookimpl
    def register(self, registry: Registry) -> None:
        registry.add_integration_type("HTTP")

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest
                  ) -> IntegrationResponse | None:
        integration = ctx.integration
        if integration is None or integration.type != "HTTP":
            return None
        self.requests.append(request)
        return IntegrationResponse(status=self.status, headers=Headers(self.headers),
                                   body=request.body)


def http_op(request_template: str | None = None, *, response_template: str | None = None,
            **extra: Any) -> dict[str, Any]:
    integration: dict[str, Any] = {"type": "http", "httpMethod": "POST",
                                   "uri": "http://backend.invalid/echo"}
    if request_template is not None:
        integration["requestTemplates"] = {"application/json": request_template}
    default: dict[str, Any] = {"statusCode": "200"}
    if response_template is not None:
        default["responseTemplates"] = {"application/json": response_template}
    integration["responses"] = {"default": default}
    integration.update(extra)
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": integration}


def echo_gateway(make_harness: HarnessFactory, b: Builders, op: dict[str, Any],
                 path: str = "/x", method: str = "post") -> tuple[Any, EchoHttp]:
    echo = EchoHttp()
    h = make_harness(b.openapi({path: {method: op}}), plugins=[("echo", echo)])
    return h, echo


def rendered(make_harness: HarnessFactory, b: Builders, template: str, body: bytes | str,
             **kw: Any) -> bytes:
    """What the backend receives for ``template`` and a client ``body``."""
    h, echo = echo_gateway(make_harness, b, http_op(template))
    response = h.request("POST", "/prod/x", body=body,
                         headers={"Content-Type": "application/json", **kw})
    assert response.status == 200, response.body
    return echo.requests[-1].body


# -- §3.6 recorded formatting (test_input_path_template_formatting) ---------------------------


@pytest.mark.parametrize(("body", "template", "expected"), [
    ('{"foo":"bar"}', "$input.path('$')", b"{foo=bar}"),
    ('{"bigger":"dict","to":"test","with":"separators"}', "$input.path('$')",
     b"{bigger=dict, to=test, with=separators}"),
    ('{"foo":"bar"}', "$input.path('$').toString()", b"{foo=bar}"),
    ('[{"foo":"bar"}]', "$input.path('$')", b'[{"foo":"bar"}]'),
    ('{"foo":[{"nested":"bar"}]}', "$input.path('$')", b'{foo=[{"nested":"bar"}]}'),
    ('[{"foo":"bar"}]', "$input.path('$')[0]", b"{foo=bar}"),
    ("[]", "$input.path('$')", b"[]"),
    ('{"foo":"bar"}', "$input.path('$').foo", b"bar"),
    ('{"pets":[1,2,3]}', "$input.path('$.pets').size()", b"3"),
])
def test_input_path_formatting(make_harness: HarnessFactory, b: Builders, body: str,
                               template: str, expected: bytes) -> None:
    assert rendered(make_harness, b, template, body) == expected


def test_missing_path_renders_nothing(make_harness: HarnessFactory, b: Builders) -> None:
    template = ('#set($result = $input.path(\'$.missing\'))'
                '{"body": $result, "null": #if($result == $null)true#{else}false#end, '
                '"empty": #if($result == "")true#{else}false#end}')
    assert rendered(make_harness, b, template, '{"foo":"bar"}') \
        == b'{"body": , "null": true, "empty": true}'


# -- §3.6 recorded body formatting (test_input_body_formatting) -------------------------------


def test_empty_body_is_an_empty_object(make_harness: HarnessFactory, b: Builders) -> None:
    assert rendered(make_harness, b, "$input.body", b"") == b"{}"
    assert rendered(make_harness, b, "[$input.body.testAccess]", b"") == b"[]"
    assert rendered(make_harness, b, "$input.json('$')", b"") == b"{}"


def test_url_encoded_body(make_harness: HarnessFactory, b: Builders) -> None:
    assert rendered(make_harness, b, "$util.urlEncode($input.body)", '{"some": "value"}') \
        == b"%7B%22some%22%3A+%22value%22%7D"


def test_body_interpolated_in_a_string(make_harness: HarnessFactory, b: Builders) -> None:
    template = '#set($payload = "Action=SendMessage&MessageBody=$input.body")$payload'
    assert rendered(make_harness, b, template, '{"a": 1}') \
        == b'Action=SendMessage&MessageBody={"a": 1}'


def test_body_attribute_access_renders_nothing(make_harness: HarnessFactory,
                                               b: Builders) -> None:
    assert rendered(make_harness, b, '{"x": "$input.body.testAccess"}', '{"testAccess": 1}') \
        == b'{"x": ""}'


def test_input_json(make_harness: HarnessFactory, b: Builders) -> None:
    body = '{"pets": [{"id": 1, "type": "dog"}], "name": "shop", "n": 1.5}'
    template = ('{"pets": $input.json(\'$.pets\'), "name": $input.json(\'$.name\'), '
                '"first": $input.json(\'$.pets[0].type\'), "n": $input.json(\'$.n\'), '
                '"all": $input.json(\'$\'), "missing": $input.json(\'$.nope\')}')
    out = rendered(make_harness, b, template, body)
    assert out == (b'{"pets": [{"id":1,"type":"dog"}], "name": "shop", "first": "dog", '
                   b'"n": 1.5, "all": {"pets":[{"id":1,"type":"dog"}],"name":"shop","n":1.5},'
                   b' "missing": ""}')


def test_developer_guide_reshaping_template(make_harness: HarnessFactory, b: Builders) -> None:
    """A typical 'reshape the JSON' request template (the DG's pet store example)."""
    template = """#set($inputRoot = $input.path('$'))
[
#foreach($elem in $inputRoot)
  {
    "description" : "Item $elem.id is a $elem.type.",
    "askingPrice" : $elem.price
  }#if($foreach.hasNext),#end

#end
]"""
    body = ('[{"id": 1, "type": "dog", "price": 249.99}, '
            '{"id": 2, "type": "cat", "price": 124.99}]')
    out = rendered(make_harness, b, template, body)
    assert json.loads(out) == [
        {"description": "Item 1 is a dog.", "askingPrice": 249.99},
        {"description": "Item 2 is a cat.", "askingPrice": 124.99}]
    assert out == (b'[\n  {\n    "description" : "Item 1 is a dog.",\n'
                   b'    "askingPrice" : 249.99\n  },\n  {\n'
                   b'    "description" : "Item 2 is a cat.",\n'
                   b'    "askingPrice" : 124.99\n  }\n]')


# -- $input.params ----------------------------------------------------------------------------


def test_params_search_path_then_querystring_then_header(make_harness: HarnessFactory,
                                                         b: Builders) -> None:
    template = ("$input.params('id')|$input.params('q')|$input.params('X-Head')|"
                "$input.params('x-head')|[$input.params('none')]|"
                "$input.params().path|$input.params().querystring.q")
    op = http_op(template)
    op["parameters"] = [{"name": "id", "in": "path", "required": True}]
    h, echo = echo_gateway(make_harness, b, op, path="/items/{id}")
    response = h.request("POST", "/prod/items/42?q=1&q=2&id=fromquery", body=b"{}",
                         headers={"Content-Type": "application/json", "X-Head": "h",
                                  "q": "fromheader"})
    assert response.status == 200
    assert echo.requests[-1].body == b"42|2|h|h|[]|{id=42}|2"


def test_params_header_map_iterates(make_harness: HarnessFactory, b: Builders) -> None:
    template = ("#set($h = $input.params().header)"
                "#foreach($name in $h.keySet())#if($name.startsWith('X-'))"
                "$name=$h.get($name);#end#end")
    out = rendered(make_harness, b, template, "{}", **{"X-A": "1", "X-B": "2"})
    assert out == b"X-A=1;X-B=2;"


# -- $util ---------------------------------------------------------------------------------------


def test_util_functions(make_harness: HarnessFactory, b: Builders) -> None:
    template = ("$util.escapeJavaScript($input.path('$.s'))|"
                "$util.base64Encode('hello world')|$util.base64Decode('aGVsbG8gd29ybGQ=')|"
                "$util.urlDecode('a+b%26c')|$util.parseJson($input.path('$.doc')).k|"
                "$util.parseJson('[1, {\"a\": 2}]')")
    body = json.dumps({"s": "it's \"q\" \\ / \n\u00e9", "doc": '{"k": "v"}'})
    assert rendered(make_harness, b, template, body) == (
        b"it\\'s \\\"q\\\" \\\\ \\/ \\n\\u00E9|aGVsbG8gd29ybGQ=|hello world|a b&c|v|"
        b'[1,{"a":2}]')


def test_escape_javascript_table() -> None:
    assert escape_javascript("\b\t\f\r\x01\x7f\u20ac\U0001F600") \
        == "\\b\\t\\f\\r\\u0001\\u007F\\u20AC\\uD83D\\uDE00"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=30) | st.text(st.characters(max_codepoint=0x80), max_size=30)
       | st.text(st.sampled_from("\\'\"/\b\n\t\f\ra\u00e9"), max_size=30))
def test_escape_javascript_skips_the_regex_only_when_it_would_change_nothing(
        text: str) -> None:
    """The escapes (one ``replace`` per character) and the regex shortcut give what
    ``translate`` over the table and the regex always give."""
    from twistgw_mapping import namespaces

    expected = namespaces._JS_OTHER.sub(namespaces._js_unicode,
                                        text.translate(namespaces._JS_TABLE))
    assert escape_javascript(text) == expected
    assert namespaces._escape_javascript(namespaces.UTIL, text) == expected


def test_url_encode_like_java() -> None:
    assert url_encode("a b*c.d-e_f~g/h") == "a+b*c.d-e_f%7Eg%2Fh"


# -- $context and $stageVariables ---------------------------------------------------------------


def test_context_and_stage_variables(make_harness: HarnessFactory, b: Builders) -> None:
    template = ("$context.stage|$context.httpMethod|$context.resourcePath|"
                "$context.identity.sourceIp|$context.requestId.length()|"
                "$stageVariables.backend|$stageVariables['backend']|"
                "${stageVariables['backend']}|[$stageVariables.nope]|[$context.nope]|"
                "[$context.identity.nope]|$context.apiId")
    out = rendered(make_harness, b, template, "{}")
    assert out == (b"prod|POST|/x|127.0.0.1|36|backend.invalid|backend.invalid|"
                   b"backend.invalid|[]|[]|[]|testapi")


# -- overrides (§3.6, recorded MOCK tests) --------------------------------------------------------


def test_response_override_from_the_request_template(make_harness: HarnessFactory,
                                                     b: Builders) -> None:
    """Recorded: status 444 and header foo: bar set in the request template reach the
    client although the integration response has no template; custom keys survive."""
    request_template = """#set($context.responseOverride.status = 444)
#set($context.responseOverride.header.foo = "bar")
#set($context.responseOverride.custom = "is also passed around")
#set($context.requestOverride.path.body = "path override")
{"statusCode": 200}"""
    plain = b.mock_op(template=request_template, responses={"default": {"statusCode": "200"}})
    templated = b.mock_op(template=request_template, responses={"default": {
        "statusCode": "200", "responseTemplates": {"application/json": (
            '{"custom": "$context.responseOverride.custom", '
            '"body": "$context.requestOverride.path.body", '
            '"status": $context.responseOverride.status}')}}})
    h = make_harness(b.openapi({"/plain": {"get": plain}, "/templated": {"get": templated}}))
    response = h.request("GET", "/prod/plain")
    assert (response.status, response.body) == (444, b"")
    assert response.headers.get("foo") == "bar"
    response = h.request("GET", "/prod/templated")
    assert response.status == 444
    assert response.headers.get("foo") == "bar"
    assert response.body == (b'{"custom": "is also passed around", "body": "path override", '
                             b'"status": 444}')


def test_response_override_example_of_section_3_8(make_harness: HarnessFactory,
                                                  b: Builders) -> None:
    """The recorded responseOverride template: 400 for a custom error, else 202."""
    template = """#set($inputRoot = $input.path('$'))
$input.json("$")
#if($inputRoot.toString().contains("customerror"))
    #set($context.responseOverride.status = 400)
#else
    #set($context.responseOverride.status = 202)
#end"""
    h, _echo = echo_gateway(make_harness, b, http_op(response_template=template))
    ok = h.request("POST", "/prod/x", body=b'{"message": "fine"}',
                   headers={"Content-Type": "application/json"})
    assert (ok.status, ok.body) == (202, b'{"message":"fine"}\n')
    bad = h.request("POST", "/prod/x", body=b'{"message": "customerror"}',
                    headers={"Content-Type": "application/json"})
    assert (bad.status, bad.body) == (400, b'{"message":"customerror"}\n')


def test_response_override_headers_and_invalid_status(make_harness: HarnessFactory,
                                                      b: Builders) -> None:
    template = ('#set($context.responseOverride.header.X-Mapped = "override")'
                '#set($context.responseOverride.header.Server = "s")'
                '#set($context.responseOverride.status = "201")ok')
    op = b.mock_op(responses={"default": {
        "statusCode": "200",
        "responseParameters": {"method.response.header.X-Mapped": "'static'"},
        "responseTemplates": {"application/json": template}}})
    response = make_harness(b.openapi({"/x": {"get": op}})).request("GET", "/prod/x")
    assert response.status == 200  # a string status is ignored
    assert response.headers.get_all("X-Mapped") == ["override"]
    assert response.headers.get("x-amzn-Remapped-Server") == "s"
    assert response.body == b"ok"


def test_request_override_assignment_forms(make_harness: HarnessFactory, b: Builders) -> None:
    """Recorded: every map assignment form works on requestOverride."""
    template = """#set($name = "dynamic")
#set($context.requestOverride.querystring[$name] = "bar")
$context.requestOverride.querystring.put("put", "v1")
#set($context["requestOverride"].querystring["indexed"] = "v2")
#set($context.requestOverride.header.X-Override = "yes")
#set($context.requestOverride.path.id = "99")
body"""
    op = http_op(template)
    op["parameters"] = [{"name": "id", "in": "path", "required": True}]
    h, echo = echo_gateway(make_harness, b, op, path="/items/{id}")
    response = h.request("POST", "/prod/items/1?dynamic=client&keep=1", body=b"{}",
                         headers={"Content-Type": "application/json", "X-Override": "no"})
    assert response.status == 200
    request = echo.requests[-1]
    assert request.body == b"\nbody"  # put() renders null (nothing); its newline stays
    assert dict(request.query) == {"keep": "1", "dynamic": "bar", "put": "v1",
                                   "indexed": "v2"}
    assert request.headers.get_all("X-Override") == ["yes"]
    assert request.path_params["id"] == "99"
    assert request.extras["request_override"] == {
        "header": {"X-Override": "yes"},
        "querystring": {"dynamic": "bar", "put": "v1", "indexed": "v2"},
        "path": {"id": "99"}}


def test_request_override_of_a_forbidden_header_is_500(make_harness: HarnessFactory,
                                                       b: Builders) -> None:
    template = '#set($context.requestOverride.header.Content-Length = "1")x'
    h, echo = echo_gateway(make_harness, b, http_op(template))
    response = h.request("POST", "/prod/x", body=b"{}",
                         headers={"Content-Type": "application/json"})
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')
    assert echo.requests == []


# -- MOCK with rendered templates (§3.7) ----------------------------------------------------------


def test_mock_status_from_a_rendered_template(make_harness: HarnessFactory,
                                              b: Builders) -> None:
    template = ('#if($input.params("fail") == "yes")#set($code = 404)#else#set($code = 200)'
                '#end{"statusCode": $code}')
    op = b.mock_op(template=template, responses={
        "default": {"statusCode": "200", "responseTemplates": {"application/json": '"ok"'}},
        "404": {"statusCode": "404", "responseTemplates": {"application/json": '"gone"'}}})
    h = make_harness(b.openapi({"/x": {"get": op}}))
    ok = h.request("GET", "/prod/x")
    assert (ok.status, ok.body) == (200, b'"ok"')
    gone = h.request("GET", "/prod/x?fail=yes")
    assert (gone.status, gone.body) == (404, b'"gone"')


def test_mock_params_in_the_response_template(make_harness: HarnessFactory,
                                              b: Builders) -> None:
    """Recorded: {"statusCode": 200, "id": $input.params().path.id} with id 42."""
    op = b.mock_op(responses={"default": {"statusCode": "200", "responseTemplates": {
        "application/json": '{"statusCode": 200, "id": $input.params().path.id}'}}})
    op["parameters"] = [{"name": "id", "in": "path", "required": True}]
    h = make_harness(b.openapi({"/items/{id}": {"get": op}}))
    response = h.request("GET", "/prod/items/42")
    assert (response.status, response.body) == (200, b'{"statusCode": 200, "id": 42}')
    assert json.loads(response.body) == {"id": 42, "statusCode": 200}


def test_health_route_of_section_10_3(make_harness: HarnessFactory, b: Builders) -> None:
    doc = b.openapi({"/health": {"get": {
        "responses": {"200": {"description": "OK",
                              "headers": {"X-Health": {"schema": {"type": "string"}}}}},
        "x-amazon-apigateway-integration": {
            "type": "mock",
            "requestTemplates": {"application/json": '{"statusCode": 200}'},
            "passthroughBehavior": "when_no_templates",
            "responses": {"default": {
                "statusCode": "200",
                "responseParameters": {"method.response.header.X-Health": "'ok'"},
                "responseTemplates": {
                    "application/json": '{"status": "ok", "stage": "$context.stage"}'}}}}}}})
    response = make_harness(doc).request("GET", "/prod/health")
    assert response.status == 200
    assert response.headers.get("X-Health") == "ok"
    assert response.body == b'{"status": "ok", "stage": "prod"}'
    assert "x-amzn-trace-id" not in response.headers


# -- response templates over the integration response ------------------------------------------


def test_response_template_sees_the_backend_body_and_method_params(
        make_harness: HarnessFactory, b: Builders) -> None:
    template = ('{"echo": $input.json(\'$.a\'), "q": "$input.params(\'q\')", '
                '"status": "$context.integration.status"}')
    h, _echo = echo_gateway(make_harness, b, http_op(response_template=template))
    response = h.request("POST", "/prod/x?q=query", body=b'{"a": [1, 2]}',
                         headers={"Content-Type": "application/json"})
    assert response.body == b'{"echo": [1,2], "q": "query", "status": "200"}'


def test_each_response_sees_its_own_integration_status(make_harness: HarnessFactory,
                                                       b: Builders) -> None:
    """The response phase's ``Finish`` is shared per integration status (nothing writes
    it): requests alternating between statuses each read their own, in templates and
    in header mappings."""
    op = http_op(response_template="$context.integration.status")
    op["x-amazon-apigateway-integration"]["responses"]["default"]["responseParameters"] = {
        "method.response.header.X-Status": "context.integration.status"}
    h, echo = echo_gateway(make_harness, b, op)
    for status in (201, 202, 201, 500):
        echo.status = status
        response = h.request("POST", "/prod/x", body=b"{}",
                             headers={"Content-Type": "application/json"})
        assert (response.body, response.headers.get("X-Status")) == \
            (str(status).encode(), str(status))


def test_response_parameters_from_the_body(make_harness: HarnessFactory, b: Builders) -> None:
    op = b.mock_op()
    op["x-amazon-apigateway-integration"] = {
        "type": "http", "httpMethod": "POST", "uri": "http://backend.invalid/",
        "responses": {"default": {"statusCode": "200", "responseParameters": {
            "method.response.header.X-Whole": "integration.response.body",
            "method.response.header.X-Name": "integration.response.body.name",
            "method.response.header.X-List": "integration.response.body.list",
            "method.response.header.X-Deep": "integration.response.body.errorMessage.code",
            "method.response.header.X-None": "integration.response.body.nope"}}}}
    h, _echo = echo_gateway(make_harness, b, op)
    body = json.dumps({"name": "n", "list": [1, {"a": "b"}],
                       "errorMessage": json.dumps({"code": "E42"})})
    response = h.request("POST", "/prod/x", body=body.encode(),
                         headers={"Content-Type": "application/json"})
    assert response.headers.get("X-Whole") == body
    assert response.headers.get("X-Name") == "n"
    assert response.headers.get("X-List") == '[1,{"a":"b"}]'
    assert response.headers.get("X-Deep") == "E42"
    assert "X-None" not in response.headers


# -- errors: load time and render time -------------------------------------------------------------


def test_template_syntax_error_is_refused_at_load_time(make_harness: HarnessFactory,
                                                       b: Builders) -> None:
    with pytest.raises(ConfigError) as info:
        make_harness(b.openapi({"/x": {"get": b.mock_op(template="#if($x)open")}}))
    message = str(info.value)
    assert "api.yaml" in message
    assert "requestTemplates.application/json" in message
    assert "missing #end" in message


def test_oversized_template_is_refused_at_load_time(make_harness: HarnessFactory,
                                                    b: Builders) -> None:
    big = "$input.body" + " " * (300 * 1024)
    op = b.mock_op(responses={"default": {"statusCode": "200",
                                          "responseTemplates": {"application/json": big}}})
    with pytest.raises(ConfigError, match=r"responseTemplates\.application/json.*300 KB"):
        make_harness(b.openapi({"/x": {"get": op}}))


def test_render_error_is_a_500(make_harness: HarnessFactory, b: Builders,
                               log_events: LogCapture) -> None:
    op = b.mock_op(responses={"default": {"statusCode": "200", "responseTemplates": {
        "application/json": "$input.params('q').substring(5)"}}})
    h = make_harness(b.openapi({"/x": {"get": op}}))
    response = h.request("GET", "/prod/x?q=abc")
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')
    assert response.headers.get("x-amzn-ErrorType") == "InternalServerErrorException"
    assert any("Execution failed due to configuration error" in t and "substring" in t
               for t in log_events.texts())


def test_invalid_json_body_with_input_path_is_a_500(make_harness: HarnessFactory,
                                                    b: Builders) -> None:
    h, echo = echo_gateway(make_harness, b, http_op("$input.path('$.a')"))
    response = h.request("POST", "/prod/x", body=b"not json",
                         headers={"Content-Type": "application/json"})
    assert response.status == 500
    assert echo.requests == []


def test_templates_parse_once_per_route(make_harness: HarnessFactory, b: Builders) -> None:
    h, _echo = echo_gateway(make_harness, b, http_op("$input.body"))
    match = h.gateway.deployment.apis["testapi"].table.match("POST", "/x")
    assert match is not None
    route = match.route
    compiled = [v for k, v in route.memo.items() if k[0] == "mapping.vtl"]
    assert len(compiled) == 1
    for _ in range(3):
        h.request("POST", "/prod/x", body=b"{}", headers={"Content-Type": "application/json"})
    assert [v for k, v in route.memo.items() if k[0] == "mapping.vtl"] == compiled


def test_literal_templates_skip_the_engine() -> None:
    """A template without $ or # is sent as is (no parse, no render per request)."""
    assert twistgw_mapping._compile('{"statusCode": 200}') == b'{"statusCode": 200}'
    assert twistgw_mapping._compile(None) == b""
    assert not isinstance(twistgw_mapping._compile("$input.body"), bytes)


# -- JSONPath subset ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "expected"), [
    ("$", {"a": {"b": [1, 2]}, "c": [{"d": 1}, {"d": 2}], "e.f": 3}),
    ("$.a.b", [1, 2]),
    ("$['a']['b'][1]", 2),
    ("$.a.b[-1]", 2),
    ("$.c[*].d", [1, 2]),
    ("$..d", [1, 2]),
    ("$['e.f']", 3),
    ("$.missing", None),
    ("$.c[5]", None),
    ("a.b", [1, 2]),
])
def test_json_path(path: str, expected: Any) -> None:
    document = parse_json('{"a": {"b": [1, 2]}, "c": [{"d": 1}, {"d": 2}], "e.f": 3}')
    assert json_path(document, path) == expected


def test_json_arrays_render_as_json_and_template_lists_as_java() -> None:
    document = parse_json('{"a": [[1], {"b": [2]}]}')
    assert to_text(document) == '{a=[[1],{"b":[2]}]}'
    assert to_text(json_path(document, "$.a[*]")) == '[[1],{"b":[2]}]'
    assert to_text(JavaList(["x", JsonList([1, 2])])) == "[x, [1,2]]"


def test_unparsable_template_is_a_500_when_not_strict(make_harness: HarnessFactory,
                                                      b: Builders) -> None:
    op = b.mock_op(responses={"default": {"statusCode": "200", "responseTemplates": {
        "application/json": "#if($x)never closed"}}})
    h = make_harness(b.openapi({"/x": {"get": op}}), config=b.gateway_config(strict=False))
    assert any("missing #end" in w for w in h.gateway.deployment.warnings)
    response = h.request("GET", "/prod/x")
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')


# -- properties: no template or input crashes the plugin --------------------------------------

_TEMPLATE_PIECES = st.sampled_from([
    "$input.body", "$input.json('$')", "$input.path('$')", "$input.path('$.a')",
    "$input.path('$..a')", "$input.path('$[0]')", "$input.params()", "$input.params('a')",
    "$util.escapeJavaScript($input.body)", "$util.parseJson($input.body)",
    "$util.urlEncode($input.body)", "$util.base64Decode($input.body)",
    "$util.urlDecode($input.body)", "$context.requestId", "$context.identity",
    "#set($context.responseOverride.status = ", "#set($context.requestOverride.header.X = ",
    "#set($context.responseOverride.header.Y = ", "#set($context.requestOverride.path = ",
    "$context.requestOverride.querystring.put('q', ", "#foreach($v in $input.path('$'))",
    "#if(", "#end", ")", "$v", "1", "404", "'x'", '"$input.body"', "$stageVariables",
    "#set($x = $input.path('$'))", "$x.keySet()", "$x.size()", "{", "}", "\n", " ",
])

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "statusCode"]), children, max_size=3),
    max_leaves=10)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(_TEMPLATE_PIECES, max_size=12), document=_JSON,
       raw=st.binary(max_size=40), use_raw=st.booleans())
def test_random_templates_and_bodies_never_crash_the_plugin(
        pieces: list[str], document: Any, raw: bytes, use_raw: bool) -> None:
    source = "".join(pieces)
    integration = Integration(type="HTTP", uri="http://x/", request_templates={
        "application/json": source}, responses=(IntegrationResponseConfig(
            selection_pattern=None, status_code="200",
            response_templates={"application/json": source}),))
    route = Route(api_id="a", operation=Operation(path="/x", method="POST",
                                                  integration=integration),
                  resource_id="r", timeout=29.0)
    body = raw if use_raw else json.dumps(document).encode()
    ctx = make_context(make_inbound("POST", "/prod/x?a=1", body=body,
                                    headers={"Content-Type": "application/json"}),
                       route=route, method="POST")
    try:
        request = twistgw_mapping.map_request(
            ctx, IntegrationRequest(method="POST", uri="http://x/", body=body))
        response = twistgw_mapping.map_response(
            ctx, IntegrationResponse(status=200, body=body), Response())
    except ApiConfigurationError:
        return
    assert request is not None and response is not None
    assert 100 <= response.status <= 599
    assert len(response.body) <= 10 * 1024 * 1024


_TYPED_PIECES = st.sampled_from([
    "$context.stage", "$context.requestId", "$context.httpMethod", "$context.identity",
    "$context.identity.sourceIp", "$context.identity.sourceIp.length()", "$context.nope",
    "$context.nope.x", "$context.authorizer.claims.sub", "$context.integration.status",
    "#set($context.stage = 'custom')", "#set($context.identity = {'sourceIp': 'mine'})",
    "$context.requestOverride", "$context.requestOverride.header", "$context.custom.k",
    "#set($context.requestOverride.header.A = $s)", "$context.responseOverride.header",
    "#set($context.requestOverride.header = {'k': 'v'})", "#set($context.requestOverride.x = 1)",
    "#set($context.requestOverride.querystring.q = $s)", "#set($context.requestOverride.x.y = 1)",
    "#set($context.responseOverride.header.B = 1)", "#set($context.responseOverride.header = [1])",
    "#set($context.responseOverride.status = 201)", "#set($context.custom = {'k': 1})",
    "$input.params()", "$input.params('a')", "$input.params('A')", "$input.params('p')",
    "$input.params($s)", "$input.params(1)", "$input.params('a', 'b')", "$input.body",
    "$input.path('$')", "$input.path('$.a')", "$input.path('$.l[0]')", "$input.path($p)",
    "$input.path('$..x')", "$input.path('no path!')", "$input.path('')", "$input.nope",
    "$input.json('$.a')", "$input.json('$')", "$input.json($p)", "$input.json(null)",
    "$input.body.length()", "$input.getBody()", "$input.getBody(1)", "$input.path(1)",
    "$util.escapeJavaScript($s)", "$util.escapeJavaScript($input.path('$.a'))",
    "$util.escapeJavaScript(null)", "$util.escapeJavaScript($input.path('$.l'))",
    "$util.urlEncode($s)", "$util.base64Encode($s)", "$util.parseJson('[1]')",
    "$util.nope($s)", "$util.urlDecode()", "#set($input = {'body': 'b'})",
    "#set($util = $context)", "#foreach($x in $input.path('$.l'))$x,#end", " ", "|",
])

_BODIES = st.sampled_from([b'{"a": "it\'s \\\\ </b>", "l": [1, {"x": 2.5}], "x": null}',
                           b"[1, 2]", b"{", b"", b'"\\u00e9"'])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(_TYPED_PIECES, max_size=10), body=_BODIES,
       s=st.sampled_from(["a", "A", "p", "$.a", "x y/é", ""]),
       p=st.sampled_from(["$.a", "$", "$.l[*]", "bad path!", ""]))
def test_compiled_aws_objects_answer_like_the_interpreter(
        pieces: list[str], body: bytes, s: str, p: str) -> None:
    """``$context``, ``$input`` and ``$util`` properties and methods that the compiled
    templates call directly (``ROOT_TYPES``) answer what the tree interpreter's generic
    calls do: output, errors and the overrides left in the stash."""
    source = "".join(pieces)
    try:
        interpreted = Template(source, compiled=False)
    except TemplateError:
        return
    compiled = Template(source, types=twistgw_mapping.ROOT_TYPES)
    assert compiled.is_compiled

    def outcome(template: Template, typed: bool = False) -> tuple[Any, ...]:
        inbound = make_inbound("POST", "/prod/x?a=1&a=2&A=q", body=body,
                               headers={"A": "header", "Content-Type": "application/json"},
                               client_ip="10.0.0.1")
        ctx = make_context(inbound, method="POST", path_params={"p": "path"})
        fin = Finish(integration_status=200)
        variables = template_variables(ctx, body, fin)
        variables.update(s=s, p=p)
        try:
            if typed:  # the plugin's entry: the roots as arguments
                others = {**template_others(ctx), "s": s, "p": p}
                result: Any = ("ok", template.render_typed(
                    ROOT_NAMES, template_roots(ctx, body, fin), others))
            else:
                result = ("ok", template.render(variables))
        except TemplateError as e:
            result = ("error", str(e))
        overrides = ctx.stash[OVERRIDES] if OVERRIDES in ctx.stash else None
        return result, overrides and (overrides.request, overrides.response,
                                      overrides.custom)

    assert outcome(compiled) == outcome(interpreted)
    assert outcome(compiled, typed=True) == outcome(interpreted)


def test_overriding_a_parameter_twice_in_one_template_is_a_500(
        make_harness: HarnessFactory, b: Builders) -> None:
    """DG: an override set twice in one template fails the request (5XX); setting it
    again in the response template after the request template is fine."""
    twice = b.mock_op(template=('#set($context.responseOverride.header.X = "1")'
                                '$context.responseOverride.header.put("X", "2")'
                                '{"statusCode": 200}'))
    again = b.mock_op(template=('#set($context.responseOverride.status = 201)'
                                '{"statusCode": 200}'),
                      responses={"default": {"statusCode": "200", "responseTemplates": {
                          "application/json": "#set($context.responseOverride.status = 202)"
                                              "done"}}})
    h = make_harness(b.openapi({"/twice": {"get": twice}, "/again": {"get": again}}))
    assert h.request("GET", "/prod/twice").status == 500
    response = h.request("GET", "/prod/again")
    assert (response.status, response.body) == (202, b"done")


def test_lone_surrogate_in_the_body_renders_as_a_question_mark(
        make_harness: HarnessFactory, b: Builders) -> None:
    assert rendered(make_harness, b, "[$input.path('$.s')]", b'{"s": "a\\ud800b"}') \
        == b"[a?b]"


def test_override_header_with_a_lone_surrogate_is_written(make_harness: HarnessFactory,
                                                          b: Builders) -> None:
    template = "#set($context.responseOverride.header.X-S = $input.path('$.s'))ok"
    h, _echo = echo_gateway(make_harness, b, http_op(response_template=template))
    response = h.request("POST", "/prod/x", body=b'{"s": "a\\ud800b"}',
                         headers={"Content-Type": "application/json"})
    assert response.headers.get("X-S") == "a?b"


def test_plugin_renders_with_the_engine_under_test(engine: str) -> None:
    """The ``engine`` fixture really switches what the plugin renders with."""
    compiled = twistgw_mapping._compile("$context.stage")
    assert isinstance(compiled, Template)
    assert compiled.is_compiled is (engine == "compiled")


@pytest.mark.parametrize("names", [
    ("identity", "sourceIp"), ("identity", "sourceIp", "length"), ("stage", "x"),
    ("identity",), ("identity", "clientCert"), ("identity", "clientCert", "subjectDN"),
    ("authorizer", "claims", "sub"), ("nope", "x"), ("requestOverride", "header"),
    ("responseOverride", "header", "X"), ("custom", "k"), ("stage",),
])
def test_context_chains_in_one_lookup_match_reading_each_name(names: tuple[str, ...]
                                                              ) -> None:
    """``$context.a.b`` resolved at once answers what reading ``a`` then ``b`` does,
    also for branches, unknown names, override maps and custom keys."""
    ctx = make_context(make_inbound("GET", "/prod/x", client_ip="10.1.2.3"))
    stepwise = ContextObject(ctx)
    stepwise.vtl_set("custom", {"k": "v"})
    at_once = ContextObject(ctx)
    one, other = walk(stepwise.vtl_get(names[0]), names[1:]), at_once.vtl_get_path(names)
    assert type(one) is type(other)
    if isinstance(one, VtlObject):
        assert one.vtl_get("sourceIp") == other.vtl_get("sourceIp")
    else:
        assert one == other


def test_overrides_exist_only_once_a_template_touches_them() -> None:
    ctx = make_context(make_inbound("GET", "/prod/x"))
    context = ContextObject(ctx)
    assert context.vtl_get("stage") is None and OVERRIDES not in ctx.stash
    assert context.vtl_get("requestOverride") == {"header": {}, "querystring": {},
                                                  "path": {}}
    assert OVERRIDES in ctx.stash


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "x"]}', " [1] ", "\t\n null\r", '"s"',
                                  "1e400", "NaN", "{} x", "", "\ufeff{}", "[" * 10_000])
def test_parse_json_is_json_loads(text: str) -> None:
    """The scanner called directly answers like ``json.loads``, errors included."""
    try:
        expected: Any = ("ok", json.dumps(json.loads(text)))
    except (ValueError, RecursionError) as e:
        expected = ("error", str(e)[:200])
    try:
        got: Any = ("ok", json.dumps(parse_json(text)))
    except TemplateRenderError as e:
        got = ("error", str(e).removeprefix("invalid JSON: "))
    assert got == expected


def _strictly(value: Any) -> list[Any]:
    """``value`` as a flat list of tokens with every type spelled out (``1 == 1.0 ==
    True`` and ``nan != nan`` would hide a difference) and every map's key order kept;
    a loop, not recursion, for the deeply nested documents."""
    tokens: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            tokens.append(("dict", len(item)))
            for k, v in reversed(item.items()):
                stack += (v, k)
        elif isinstance(item, list):
            tokens.append(("list", len(item)))
            stack.extend(reversed(item))
        else:
            tokens.append((type(item).__name__, repr(item)))
    return tokens


def _parsed_by_json(raw: bytes) -> Any:
    """What the body path answered before orjson: the text, decoded with U+FFFD for
    bad bytes, through :func:`parse_json` (``json.loads``'s answers and errors)."""
    try:
        return ("ok", _strictly(parse_json(raw.decode("utf-8", "replace") if raw else "{}")))
    except TemplateRenderError as e:
        return ("error", str(e))


def _parsed_fast(raw: bytes) -> Any:
    try:
        return ("ok", _strictly(parse_json_body(raw)))
    except TemplateRenderError as e:
        return ("error", str(e))


#: Pieces where orjson and json.loads could part: numbers past 64 bits, out-of-range and
#: long floats, NaN/Infinity, leading zeros, raw control characters, surrogates escaped
#: and raw (CESU bytes), overlong and cut UTF-8, BOMs, odd blanks, duplicate keys, deep
#: nesting, trailing text and commas.
_RAW_PIECES = st.one_of(st.sampled_from([
    b"0", b"-0", b"-0.0", b"01", b"1.", b".5", b"1e400", b"-1e400", b"1e-400", b"4.9e-324",
    b"2.4703282292062327e-324", b"1.7976931348623157e308", b"1.7976931348623159e308",
    b"9007199254740993", b"9223372036854775807", b"9223372036854775808",
    b"-9223372036854775809", b"18446744073709551615", b"18446744073709551616",
    b"123456789012345678901234567890", b"1234567890123456789.5",
    b"0.1000000000000000055511151231257827", b"1E2", b"1e+2", b"NaN", b"Infinity",
    b"-Infinity", b"true", b"false", b"null", b'"\\ud800"', b'"\\udc00\\ud800"',
    b'"\\ud83d\\ude00"', b'"\\u0000"', b'"\\/"', b'"\\x"', b'"\\u12"', b"\\", b'"',
    b"\x01", b"\x1f", b"\x7f", b"\x00", b" ", b"\t", b"\n", b"\r", b"\x0c", b"\x0b",
    b"{", b"}", b"[", b"]", b",", b":", b'{"a": 1, "a": 2}', b'{"b": 1, "a": 2, "b": 3}',
    b"[" * 1100 + b"]" * 1100, b"[" * 600, b'{"a":' * 1030 + b"1" + b"}" * 1030,
    "é\U0001f600\u2028\ufeff\xa0".encode(), b"\xef\xbb\xbf", b"\xed\xa0\x80", b"\xc0\xaf",
    b"\xe2\x82", b"\xff", b"\xf4\x90\x80\x80"]), st.binary(max_size=8))
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=12)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_JSON_VALUES, cuts=st.lists(st.tuples(st.integers(min_value=0), _RAW_PIECES),
                                          max_size=3), indent=st.sampled_from([None, 1]))
@example(value=None, cuts=[(0, b'{"n": 123456789012345678901}')], indent=None)
@example(value=None, cuts=[(0, b"1e400")], indent=None)
@example(value=None, cuts=[(0, b'"\\ud800"')], indent=None)
@example(value=None, cuts=[(0, b'"\xed\xa0\x80"')], indent=None)
@example(value=None, cuts=[(0, b"[" * 1100 + b"]" * 1100)], indent=None)
def test_parse_json_body_fast_path_answers_as_json_loads(
        value: Any, cuts: list[tuple[int, bytes]], indent: int | None) -> None:
    """orjson first, for bodies: every JSON value (big integers, floats of every kind,
    any text) and every piece spliced into it parses to the same types, values and key
    order as ``json.loads`` on the decoded text, or fails with the same message."""
    raw = json.dumps(value, indent=indent, ensure_ascii=False).encode("utf-8",
                                                                       "surrogatepass")
    if value is None and cuts:
        raw = b""
    for at, piece in cuts:
        at %= len(raw) + 1
        raw = raw[:at] + piece + raw[at:]
    assert _parsed_fast(raw) == _parsed_by_json(raw)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=64))
def test_parse_json_body_answers_as_json_loads_on_any_bytes(raw: bytes) -> None:
    assert _parsed_fast(raw) == _parsed_by_json(raw)


_HEADER_NAMES = st.sampled_from(["A", "a", "B", "x-B", "X-b", "Host"])


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.tuples(_HEADER_NAMES, st.sampled_from(["1", "2"])), max_size=6),
       header=st.dictionaries(_HEADER_NAMES, st.sampled_from(["v", 7, None]), max_size=4),
       query=st.dictionaries(st.sampled_from(["q", "r"]), st.just("o"), max_size=2),
       path=st.dictionaries(st.sampled_from(["p", "n"]), st.just("o"), max_size=2))
def test_request_overrides_apply_like_setting_each_one_in_turn(
        lines: list[tuple[str, str]], header: dict[str, Any], query: dict[str, str],
        path: dict[str, str]) -> None:
    """The integration request rebuilt in one pass equals setting each override header
    with ``Headers.with_set`` in turn, replacing query pairs and path parameters."""
    overrides = Overrides()
    overrides.request["header"].update(header)
    overrides.request["querystring"].update(query)
    overrides.request["path"].update(path)
    request = IntegrationRequest(method="POST", uri="http://x/", headers=Headers(tuple(lines)),
                                 query=(("q", "1"), ("s", "2"), ("q", "3")),
                                 path_params={"p": "1", "k": "2"}, extras={"e": 1})
    integration = Integration(type="HTTP", uri="http://x/")
    ctx = make_context(make_inbound("POST", "/prod/x"))
    got = twistgw_mapping._apply_request_overrides(ctx, integration, request, b"body",
                                                   overrides)
    headers = request.headers
    texts = {to_text(k): to_text(v) for k, v in header.items()}
    for name, value in texts.items():
        headers = headers.with_set(name, value)
    assert got.headers.items == headers.items
    assert got.query == (*[(k, v) for k, v in request.query if k not in query], *query.items())
    assert dict(got.path_params) == {**request.path_params, **path}
    assert got.body == b"body"
    if header or query or path:
        assert dict(got.extras) == {"e": 1, "request_override": {
            "header": texts, "querystring": query, "path": path}}
    else:
        assert got.extras == request.extras


_ONE_HEADER_LINES = st.sampled_from(
    ["X-Order", "x-order", "X-ORDER", "X-Orde", "X-Orders", "K", "k", "\u212a", "\u0130",
     "i\u0307", "I", "i", "Host", "\u212a-Order"])


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.tuples(_ONE_HEADER_LINES, st.sampled_from(["1", "2"])), max_size=6),
       name=st.sampled_from(["X-Order", "x-order", "K", "k", "I", "i", "Host", "k-order",
                             "Content-Length", "\u212a", "\u0130"]),
       integration_type=st.sampled_from(["HTTP", "AWS", "MOCK"]),
       extras=st.sampled_from([{}, {"e": 1}]))
def test_one_override_header_fast_path_matches_the_general_rebuild(
        lines: list[tuple[str, str]], name: str, integration_type: str,
        extras: dict[str, Any]) -> None:
    """One override header (the usual), set with ``Headers.with_set`` (its lines worked
    out only when read), gives the request the general rebuild gives (a plain dict
    sends it there), for names that lower-case alike (the Kelvin sign, U+0130), and the
    same 500 for a header no override may set."""
    request = IntegrationRequest(method="POST", uri="http://x/", headers=Headers(tuple(lines)),
                                 query=(("q", "1"),), path_params={"p": "1"}, extras=extras)
    integration = Integration(type=integration_type, uri="http://x/")
    ctx = make_context(make_inbound("POST", "/prod/x"))
    answers = []
    for fast in (True, False):
        overrides = Overrides()
        overrides.request["header"][name] = "v"
        if not fast:
            overrides.request["header"] = dict(overrides.request["header"])
        try:
            answers.append(twistgw_mapping._apply_request_overrides(
                ctx, integration, request, b"body", overrides))
        except ApiConfigurationError:
            answers.append(None)
    fast_answer, general = answers
    assert fast_answer == general
    if general is not None:
        assert general.headers.items == fast_answer.headers.items  # (eq ignores no field)
        assert dict(general.extras) == dict(fast_answer.extras)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.tuples(st.sampled_from(["A", "a", "B", "Content-Length", "connection",
                                                 "Host", "CONTENT-length", "Content-MD5"]),
                                st.sampled_from(["1", "2"])), max_size=6))
def test_params_header_map_is_first_spelling_last_value(lines: list[tuple[str, str]]) -> None:
    """``$input.params().header``: each name once, as first spelled, with its last value,
    without the headers API Gateway drops on the way in (with or without repeats)."""
    inbound = attrs.evolve(make_inbound("GET", "/prod/x"), headers=Headers(tuple(lines)))
    got = InputObject(b"", make_context(inbound)).params()["header"]
    expected: dict[str, str] = {}
    first: dict[str, str] = {}
    for name, value in lines:
        if name.lower() not in INGRESS_DROPPED_HEADERS:
            expected[first.setdefault(name.lower(), name)] = value
    assert list(got.items()) == list(expected.items())


# -- templates specialised per route, stage and method (partial evaluation) ------------------

_SPEC_PIECES = st.sampled_from([
    "$context.stage", "$context.httpMethod", "$context.resourcePath", "$context.resourceId",
    "$context.apiId", "$context.accountId", "$context.protocol", "$context.routeKey",
    "$context.requestId", "$context.identity.sourceIp", "$context.path",
    "$stageVariables.v", "$stageVariables.w", "$stageVariables.none",
    "#set($context.stage = 'custom')", "#set($context.custom = 'c')$context.custom",
    "#set($context.requestOverride.header.X-S = $context.stage)",
    "#set($context.responseOverride.header.X-M = \"$context.httpMethod\")",
    "#set($context.responseOverride.status = 201)", "#set($stageVariables.v = 'set')",
    "$stageVariables.put('w', 'put')", "#set($c = $context)",
    "#if($input.path('$.a') == 'b')#set($context.stage = 'custom')#end",
    "#if($context.stage == 'prod')P#else-#end", "#if($stageVariables.v)V#end",
    "#foreach($r in ['a', 'b'])$r$context.stage#if($foreach.hasNext),#end#end",
    "#foreach($r in [$context.httpMethod, $stageVariables.w])[$r]#end",
    '"$context.resourcePath/$stageVariables.v"', "$input.params('q')", "$input.path('$.a')",
    "{\"statusCode\": 200}", " ", "\n",
])


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(request_pieces=st.lists(_SPEC_PIECES, max_size=8),
       response_pieces=st.lists(_SPEC_PIECES, max_size=8),
       stage=st.sampled_from(["prod", "dev"]),
       variables=st.dictionaries(st.sampled_from(["v", "w"]),
                                 st.sampled_from(["x", "", "a'b\"$c", "prod"]), max_size=2),
       method=st.sampled_from(["POST", "GET", "PURGE"]),
       bodies=st.lists(st.sampled_from([b'{"a": "b"}', b'{"a": "c"}', b"{", b""]),
                       min_size=3, max_size=3))
@example(request_pieces=["#if($input.path('$.a') == 'b')#set($context.stage = 'custom')#end"],
         response_pieces=["$context.stage"], stage="prod", variables={}, method="POST",
         bodies=[b'{"a": "c"}', b'{"a": "b"}', b'{"a": "c"}'])
def test_specialised_templates_answer_like_the_general_ones(
        request_pieces: list[str], response_pieces: list[str], stage: str,
        variables: dict[str, str], method: str, bodies: list[bytes]) -> None:
    """The copy of a route's templates with its stage's, route's and method's constants
    folded in answers exactly what the general template answers (and the interpreter,
    under the ``engine`` fixture): request body and overrides, method response, errors;
    also when the request template set a custom ``$context`` key that shadows a constant
    in the response template (on some requests only), and for the cached copy on later
    requests."""
    request_source, response_source = "".join(request_pieces), "".join(response_pieces)
    try:
        Template(request_source, compiled=False)
        Template(response_source, compiled=False)
    except TemplateError:
        return
    integration = Integration(type="HTTP", uri="http://x/", request_templates={
        "application/json": request_source}, responses=(IntegrationResponseConfig(
            selection_pattern=None, status_code="200",
            response_templates={"application/json": response_source}),))
    stage_deployment = StageDeployment(name=stage, variables=variables)

    def answers(specialise: bool) -> list[Any]:
        route = Route(api_id="a", operation=Operation(path="/x/{p}", method="ANY",
                                                      integration=integration),
                      resource_id="r1", timeout=29.0)
        found: list[Any] = []
        for n, body in enumerate(bodies):  # later requests render the cached copy
            ctx = make_context(make_inbound(method, f"/{stage}/x/1?q={n}", body=body,
                                            headers={"Content-Type": "application/json"}),
                               route=route, method=method, stage=stage_deployment,
                               path_params={"p": "1"}, request_id=f"id-{n}")
            try:
                with _specialising(specialise):
                    request = twistgw_mapping.map_request(
                        ctx, IntegrationRequest(method="POST", uri="http://x/", body=body))
                    response = twistgw_mapping.map_response(
                        ctx, IntegrationResponse(status=200, body=body), Response())
            except ApiConfigurationError:
                found.append("500")
                continue
            assert request is not None and response is not None
            found.append((request.body, request.headers.items, dict(request.extras),
                          response.status, response.headers.items, response.body))
        return found

    assert answers(True) == answers(False)


@contextlib.contextmanager
def _specialising(enabled: bool) -> Iterator[None]:
    """With ``enabled`` false, the plugin renders its general templates only."""
    original = twistgw_mapping._specialised
    if not enabled:
        twistgw_mapping._specialised = lambda ctx, compiled, specs, overrides: compiled  # type: ignore[assignment]
    try:
        yield
    finally:
        twistgw_mapping._specialised = original  # type: ignore[assignment]


def test_bench_templates_are_specialised_once_per_stage_and_method(engine: str) -> None:
    """The response template of bench/mapping.py renders from a copy with the stage,
    method and resource path folded in and its link loop unrolled; the copy is built
    once and kept, a second stage gets its own."""
    source = ('{"stage": "$context.stage", "id": "$context.requestId",\n'
              '#foreach($rel in ["self", "items"])"$rel"#if($foreach.hasNext),#end#end}')
    integration = Integration(type="MOCK", request_templates={
        "application/json": '{"statusCode": 200}'}, responses=(IntegrationResponseConfig(
            selection_pattern=None, status_code="200",
            response_templates={"application/json": source}),))
    route = Route(api_id="a", operation=Operation(path="/x", method="POST",
                                                  integration=integration),
                  resource_id="r", timeout=29.0)
    bodies = []
    for stage in ("prod", "prod", "dev"):
        ctx = make_context(make_inbound("POST", f"/{stage}/x"), route=route, method="POST",
                           stage=StageDeployment(name=stage), request_id="rid")
        response = twistgw_mapping.map_response(ctx, IntegrationResponse(status=200),
                                                Response())
        assert response is not None
        bodies.append(response.body)
    assert bodies[0] == b'{"stage": "prod", "id": "rid",\n"self","items"}'
    assert bodies[2] == b'{"stage": "dev", "id": "rid",\n"self","items"}'
    plans = [v for k, v in route.memo.items() if k[0] == "mapping.response"]
    specs = plans[0][-1]
    assert sorted(specs) == [("dev", "POST"), ("prod", "POST")]
    folded = specs[("prod", "POST")][2]
    assert [type(n).__name__ for n in folded.nodes] == ["_Text", "_Output", "_Text"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(_SPEC_PIECES, max_size=8),
       variables=st.dictionaries(st.sampled_from(["v", "w"]), st.sampled_from(["x", ""]),
                                 max_size=2))
def test_variables_a_template_does_not_read_are_left_out(
        pieces: list[str], variables: dict[str, str]) -> None:
    """``template_variables`` with the template's ``reads`` (``$stageVariables`` copied
    only when the template names it, in a string or a directive too) renders what the
    full set of variables renders, compiled and interpreted."""
    source = "".join(pieces)
    try:
        templates = [Template(source, types=twistgw_mapping.ROOT_TYPES),
                     Template(source, compiled=False)]
    except TemplateError:
        return
    assert ("stageVariables" in templates[0].reads) == ("$stageVariables" in source)
    for template in templates:
        found = []
        for reads in (template.reads, None):
            ctx = make_context(make_inbound("POST", "/prod/x?q=1"), method="POST",
                               stage=StageDeployment(name="prod", variables=variables))
            try:
                found.append(("ok", template.render(
                    template_variables(ctx, b'{"a": "b"}', None, reads))))
            except TemplateError as e:
                found.append(("error", str(e)))
        assert found[0] == found[1]


# -- the static method response (a literal response template, no header mappings) -------------

_OVERRIDE_PIECES = st.sampled_from([
    "#set($context.responseOverride.status = 418)",
    "#set($context.responseOverride.header.X-A = 'v')",
    "#set($context.requestOverride.header.X-B = 'w')",
    "$context.responseOverride.header",  # read only: a response side with nothing set
    "$context.requestId",
])


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(_OVERRIDE_PIECES, max_size=3, unique=True),
       response_source=st.sampled_from(['{"ok": 1}', "literal", "$context.stage"]),
       status=st.sampled_from([200, 404]))
def test_static_method_response_answers_like_the_general_path(
        pieces: list[str], response_source: str, status: int) -> None:
    """A route whose selected response is a literal template with no header mappings
    answers from the response built once per route, unless the request's templates made
    overrides: then (and for every other template) as the general path answers, the
    response overrides applied (fails if the shortcut ignores the request's overrides)."""
    request_source = "".join(pieces) + '{"statusCode": 200}'
    integration = Integration(type="HTTP", uri="http://x/", request_templates={
        "application/json": request_source}, responses=(IntegrationResponseConfig(
            selection_pattern=None, status_code="201",
            response_templates={"application/json": response_source}),))

    def answer(shortcut: bool) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        route = Route(api_id="a", operation=Operation(path="/x", method="POST",
                                                      integration=integration),
                      resource_id="r", timeout=29.0)
        original = twistgw_mapping._static_response
        if not shortcut:
            twistgw_mapping._static_response = lambda *args: None  # type: ignore[assignment]
        try:
            for _ in range(2):  # the second request with the plan kept in the memo
                ctx = make_context(make_inbound("POST", "/prod/x", body=b"{}", headers={
                    "Content-Type": "application/json"}), route=route, method="POST",
                    stage=StageDeployment(name="prod"), request_id="rid")
                twistgw_mapping.map_request(
                    ctx, IntegrationRequest(method="POST", uri="http://x/", body=b"{}"))
                response = twistgw_mapping.map_response(
                    ctx, IntegrationResponse(status=status, body=b"{}"), Response())
                assert response is not None
        finally:
            twistgw_mapping._static_response = original  # type: ignore[assignment]
        return response.status, response.headers.items, response.body

    assert answer(True) == answer(False)
