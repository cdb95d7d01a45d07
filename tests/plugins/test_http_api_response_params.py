"""HTTP API integration ``responseParameters`` (aws-apigw-spec.md §6.16).

Load-time refusals and the mapping itself run in process (a plugin answers for the
backend, or a fake Lambda pool); one real daemon then serves an HTTP_PROXY route to a
backend this module starts and a Lambda route run by a real worker, over sockets.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import TYPE_CHECKING, Any

import pytest
from test_lambda_events import lambda_op, make_gateway, run
from twistgw_http.response_params import compile_response_parameters

from twistgw import (
    ConfigError,
    Context,
    Headers,
    IntegrationRequest,
    IntegrationResponse,
    hookimpl,
)
from twistgw.definition import Integration
from twistgw.testing import GatewayHarness, RunningGateway, make_inbound, write_config

if TYPE_CHECKING:
    from ..conftest import Builders, HarnessFactory

ENABLED = {"enabled": ["mock", "mapping", "http"]}
INTERNAL = b'{"message":"Internal Server Error"}'


class Backend:
    """Answers for the HTTP backend in process: a settable integration response."""

    def __init__(self) -> None:
        self.answer = IntegrationResponse(status=200, body=b"ok")

    @hookimpl(tryfirst=True)
    def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse:
        return self.answer


def http_api(make_harness: HarnessFactory, b: Builders,
             mapping: dict[str, Any], strict: bool = True) -> tuple[GatewayHarness, Backend]:
    op = b.proxy_op("http://127.0.0.1:9/{proxy}", responseParameters=mapping)
    op["x-amazon-apigateway-integration"]["payloadFormatVersion"] = "1.0"
    backend = Backend()
    config = b.gateway_config(plugins=ENABLED, api_type="HTTP", strict=strict,
                              stages=[{"name": "$default", "variables": {"tier": "gold"}}])
    h = make_harness(b.openapi({"/{proxy+}": {"get": op}}), plugins=[("backend", backend)],
                     config=config)
    return h, backend


# -- load time ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "key", "value", "problem"), [
    ("5xx", "overwrite:statuscode", "403", "not a backend status code"),
    ("600", "overwrite:statuscode", "403", "not a backend status code"),
    ("default", "append:header.X", "a", "not a backend status code"),
    ("500", "prepend:header.X", "a", "response mapping keys look like"),
    ("500", "overwrite:querystring.q", "a", "response mapping keys look like"),
    ("500", "overwrite:path", "/a", "response mapping keys look like"),
    ("500", "overwrite:header.Content-Length", "1", "reserved header"),
    ("500", "append:header.Access-Control-Allow-Origin", "*", "reserved header"),
    ("500", "remove:header.x-amzn-remapped-date", "", "reserved header"),
    ("500", "overwrite:header.apigw-requestid", "x", "reserved header"),
    ("500", "overwrite:statuscode", "700", "not a status code from 200 to 599"),
    ("500", "overwrite:statuscode", "abc", "not a status code from 200 to 599"),
    ("500", "overwrite:header.X", "$request.header.a", "unknown source $request.header.a"),
    ("500", "overwrite:header.X", "${context.nothing}", "unknown context variable"),
    ("500", "overwrite:header.X", "$response.body.a[?(@.x)]", "unsupported JSONPath"),
])
def test_bad_response_mappings_are_refused_at_load_time(
        make_harness: HarnessFactory, b: Builders, status: str, key: str, value: str,
        problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        http_api(make_harness, b, {status: {key: value}})
    message = str(info.value)
    assert "api.yaml" in message
    assert "x-amazon-apigateway-integration.responseParameters." in message
    bad_key = "backend status code" in problem
    assert (f"responseParameters.{status}" if bad_key else f"{status}.{key}") in message
    assert problem in message


def test_response_mappings_must_be_maps_of_strings(make_harness: HarnessFactory,
                                                   b: Builders) -> None:
    with pytest.raises(ConfigError) as info:
        http_api(make_harness, b, {"500": "overwrite:statuscode"})
    assert "responseParameters.500" in str(info.value)
    with pytest.raises(ConfigError) as info:
        http_api(make_harness, b, {"500": {"append:header.X": ["a"]}})
    assert "responseParameters.500.append:header.X" in str(info.value)


def test_rest_apis_refuse_integration_level_response_parameters(
        make_harness: HarnessFactory, b: Builders) -> None:
    op = b.proxy_op("http://127.0.0.1:9/{proxy}",
                    responseParameters={"500": {"overwrite:statuscode": "403"}})
    with pytest.raises(ConfigError) as info:
        make_harness(b.openapi({"/{proxy+}": {"get": op}}),
                     config=b.gateway_config(plugins=ENABLED))
    assert "belong to HTTP APIs" in str(info.value)
    assert "x-amazon-apigateway-integration.responseParameters" in str(info.value)


def test_lambda_routes_refuse_bad_response_mappings(tmp_path: Path) -> None:
    op = lambda_op(fmt="2.0", responseParameters={"500": {"append:header.Via": "x"}})
    with pytest.raises(ConfigError) as info:
        make_gateway(tmp_path, {"/x": {"get": op}}, api_type="HTTP")
    assert "responseParameters.500.append:header.Via" in str(info.value)
    assert "reserved header" in str(info.value)


# -- the mapping, in process ------------------------------------------------------------------


def test_http_proxy_response_is_mapped_by_backend_status(make_harness: HarnessFactory,
                                                         b: Builders) -> None:
    h, backend = http_api(make_harness, b, {
        "500": {"overwrite:statuscode": "403",
                "append:header.X-Request": "$context.requestId",
                "overwrite:header.X-Code": "$response.body.error.code",
                "overwrite:header.X-Detail": "$response.body.error",
                "append:header.X-Multi": "added",
                "remove:header.X-Secret": "ignored",
                "overwrite:header.X-Combined": "${response.header.x-a}/${stageVariables.tier}"
                                               "/${response.body.none}!"},
        "404": {"overwrite:statuscode": "410"}})
    backend.answer = IntegrationResponse(
        status=500, body=b'{"error": {"code": "E42", "n": 1}}',
        headers=Headers((("X-A", "one"), ("X-A", "two"), ("X-Secret", "s"),
                         ("X-Multi", "first"), ("Content-Type", "application/json"))))
    response = h.request("GET", "/thing")
    assert response.status == 403
    assert response.body == b'{"error": {"code": "E42", "n": 1}}'
    headers = response.headers
    assert headers.get("X-Request") == headers.get("apigw-requestid")
    assert headers.get("X-Code") == "E42"
    assert headers.get("X-Detail") == '{"code":"E42","n":1}'
    assert headers.get_all("X-Multi") == ["first,added"]
    assert "X-Secret" not in headers
    assert headers.get("X-Combined") == "one,two/gold/!"
    # Another status leaves the answer alone; a 404 gets its own mapping.
    backend.answer = IntegrationResponse(status=200, body=b"fine",
                                         headers=Headers((("X-Secret", "s"),)))
    response = h.request("GET", "/thing")
    assert (response.status, response.headers.get("X-Secret")) == (200, "s")
    assert "X-Request" not in response.headers
    backend.answer = IntegrationResponse(status=404, body=b"gone")
    assert h.request("GET", "/thing").status == 410


@pytest.mark.parametrize(("body", "status"), [
    (b'{"status": "418"}', 418), (b'{"status": 202}', 202),
    (b'{"status": "abc"}', 500), (b'{"status": "99"}', 500), (b'{}', 500), (b"not json", 500),
])
def test_dynamic_status_codes_outside_200_599_fail_with_500(
        make_harness: HarnessFactory, b: Builders, body: bytes, status: int) -> None:
    h, backend = http_api(make_harness, b,
                          {"502": {"overwrite:statuscode": "$response.body.status"}})
    backend.answer = IntegrationResponse(status=502, body=body)
    response = h.request("GET", "/thing")
    assert response.status == status
    if status == 500:
        assert response.body == INTERNAL
    else:
        assert response.body == body


def test_response_bodies_over_100_kb_are_not_read(make_harness: HarnessFactory,
                                                   b: Builders) -> None:
    h, backend = http_api(make_harness, b,
                          {"200": {"overwrite:header.X-Id": "$response.body.id"}})
    small = json.dumps({"id": "x", "pad": "p" * 1000}).encode()
    backend.answer = IntegrationResponse(status=200, body=small)
    assert h.request("GET", "/thing").headers.get("X-Id") == "x"
    big = json.dumps({"id": "x", "pad": "p" * (100 * 1024)}).encode()
    backend.answer = IntegrationResponse(status=200, body=big)
    response = h.request("GET", "/thing")
    assert (response.status, response.headers.get("X-Id")) == (200, None)


def test_invalid_mapping_under_strict_false_fails_every_request(
        make_harness: HarnessFactory, b: Builders) -> None:
    h, backend = http_api(make_harness, b, {"200": {"overwrite:header.Via": "x"}},
                          strict=False)
    backend.answer = IntegrationResponse(status=200, body=b"ok")
    response = h.request("GET", "/thing")
    assert (response.status, response.body) == (500, INTERNAL)


def test_compiled_mappings_are_cached_per_integration() -> None:
    integration = Integration(type="HTTP_PROXY", uri="http://127.0.0.1:9/",
                              response_parameters={"500": {"overwrite:statuscode": "403"}})
    first = compile_response_parameters(integration)
    assert first is compile_response_parameters(integration)
    assert [a[:3] for a in first.by_status[500]] == [("overwrite", "statuscode", "")]


@pytest.mark.parametrize("fmt", ["1.0", "2.0"])
def test_lambda_proxy_response_is_mapped_after_parsing(tmp_path: Path, fmt: str) -> None:
    op = lambda_op(fmt=fmt, responseParameters={"500": {
        "overwrite:statuscode": "${response.body.code}",
        "overwrite:header.X-Fn": "$response.header.x-fn",
        "append:header.X-Stage": "$context.stage"}})

    def output(event: dict[str, Any]) -> Any:
        return {"statusCode": 500, "headers": {"x-fn": "made", "content-type": "application/json"},
                "body": json.dumps({"code": "409"})}

    h, _pool = make_gateway(tmp_path, {"/x": {"get": op}}, api_type="HTTP", output=output)
    try:
        response = run(h, make_inbound("GET", "/x"))
    finally:
        h._undo()  # type: ignore[attr-defined]
    assert response.status == 409
    assert response.headers.get("X-Fn") == "made"
    assert response.headers.get("X-Stage") == "$default"
    assert json.loads(response.body) == {"code": "409"}


# -- over sockets -----------------------------------------------------------------------------

HANDLER = '''
import json

def handler(event, context):
    return {"statusCode": 404, "headers": {"x-origin": "lambda"},
            "body": json.dumps({"why": "no such item"})}
'''


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"error": {"code": "E7"}}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Internal", "secret")
        self.send_header("X-Origin", "backend")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    root = tmp_path_factory.mktemp("response-params")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text(HANDLER, encoding="utf-8")
    proxy = {"type": "http_proxy", "httpMethod": "GET", "payloadFormatVersion": "1.0",
             "uri": f"http://127.0.0.1:{server.server_address[1]}/x",
             "responseParameters": {"500": {
                 "overwrite:statuscode": "503", "remove:header.X-Internal": "",
                 "overwrite:header.X-Error": "$response.body.error.code",
                 "append:header.X-Origin": "gateway"}}}
    fn = {"type": "aws_proxy", "httpMethod": "POST", "payloadFormatVersion": "2.0",
          "uri": "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
                 "arn:aws:lambda:eu-west-1:123456789012:function:Fn/invocations",
          "responseParameters": {"404": {
              "overwrite:statuscode": "200",
              "overwrite:header.X-Why": "${response.body.why} (${response.header.x-origin})"}}}
    doc = {"openapi": "3.0.1", "info": {"title": "v2", "version": "1"}, "paths": {
        "/backend": {"get": {"responses": {"default": {"description": "ok"}},
                             "x-amazon-apigateway-integration": proxy}},
        "/fn": {"get": {"responses": {"default": {"description": "ok"}},
                        "x-amazon-apigateway-integration": fn}}}}
    path = write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "v2api", "type": "HTTP", "definition": "api.yaml",
                  "stages": [{"name": "$default"}]}],
        "functions": {"Fn": {"handler": "app.handler", "code": "src", "runtime": "python",
                             "timeout": 5, "memory": 128}},
        "plugins": {"enabled": ["mock", "mapping", "http", "lambda"]},
        "access_log": False,
    }, {"api.yaml": doc})
    try:
        with RunningGateway(path, timeout=30) as running:
            yield running
    finally:
        server.shutdown()
        server.server_close()


def _get(gw: RunningGateway, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def test_daemon_maps_an_http_proxy_backend_response(daemon: RunningGateway) -> None:
    status, headers, body = _get(daemon, "/backend")
    assert status == 503
    assert json.loads(body) == {"error": {"code": "E7"}}
    assert headers["X-Error"] == "E7"
    assert "X-Internal" not in headers
    assert headers.get_all("X-Origin") == ["backend,gateway"]


def test_daemon_maps_a_lambda_proxy_response(daemon: RunningGateway) -> None:
    status, headers, body = _get(daemon, "/fn")
    assert status == 200
    assert json.loads(body) == {"why": "no such item"}
    assert headers["X-Why"] == "no such item (lambda)"
