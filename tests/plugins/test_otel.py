"""OpenTelemetry export: the real daemon sends spans to a real OTLP/HTTP receiver.

The receiver is a small ``http.server`` on 127.0.0.1 that decodes every export with
``opentelemetry-proto``.  A Lambda integration behind an API key reports the trace it
was given, so the test can check that the exported trace is the request's
``X-Amzn-Trace-Id`` and that the integration span is the parent the function was told of.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from twistgw_otel import otel_trace_id

from twistgw.errors import ConfigError
from twistgw.testing import GatewayHarness, RunningGateway, write_config

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
CLIENT_PARENT = "53995c3f42cd8ad8"
API_KEY = "otelTestKey0123456789abcdef"

HANDLER = '''
import json, os

def handler(event, context):
    return {"statusCode": 200, "body": json.dumps({
        "env": os.environ.get("_X_AMZN_TRACE_ID"),
        "header": event["headers"].get("X-Amzn-Trace-Id")})}
'''


class Receiver:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request, self.path, self.headers.get("X-Collector-Token"))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def add(self, request: ExportTraceServiceRequest, path: str, token: str | None) -> None:
        with self.lock:
            for rs in request.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append({
                            "name": span.name, "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(), "kind": span.kind,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "attributes": {a.key: a.value for a in span.attributes},
                            "service": service.get("service.name"), "path": path,
                            "auth": token,
                        })

    def wait_for(self, request_id: str, count: int, timeout: float = 20.0
                 ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [s for s in self.spans
                         if s["attributes"].get("apigw.request_id") is not None
                         and s["attributes"]["apigw.request_id"].string_value == request_id]
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"spans of {request_id}: {found}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()


def _lambda() -> dict[str, Any]:
    return {"security": [{"api_key": []}], "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "aws_proxy", "httpMethod": "POST",
                "uri": "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
                       "arn:aws:lambda:eu-west-1:123456789012:function:Trace/invocations"}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
       ) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("otel")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text(HANDLER, encoding="utf-8")
    definition = {
        "openapi": "3.0.1", "info": {"title": "traced", "version": "1"},
        "components": {"securitySchemes": {
            "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}},
        "paths": {"/fn": {"get": _lambda()}},
    }
    path = write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "traced", "type": "REST", "definition": "traced.yaml",
                  "stages": [{"name": "v1"}]}],
        "functions": {"Trace": {"handler": "app.handler", "code": "src", "runtime": "python",
                                "timeout": 5, "min_workers": 1}},
        "plugins": {"enabled": ["mock", "mapping", "lambda", "access", "otel"], "settings": {
            "access": {"api_keys": [{"id": "k", "value": API_KEY}],
                       "usage_plans": [{"id": "p", "apis": [{"api": "traced", "stage": "v1"}],
                                        "keys": ["k"]}]},
            "otel": {"endpoint": receiver.url, "service_name": "gw-under-test",
                     "batch_delay_ms": 50, "headers": {"X-Collector-Token": "t0k"}}}},
        "access_log": False,
    }, {"traced.yaml": definition})
    with RunningGateway(path, timeout=30) as running:
        yield running


def _call(gw: RunningGateway, trace: str | None) -> tuple[str, dict[str, Any]]:
    import urllib.request

    headers = {"x-api-key": API_KEY}
    if trace is not None:
        headers["X-Amzn-Trace-Id"] = trace
    req = urllib.request.Request(gw.url("/v1/fn"), headers=headers)
    with urllib.request.urlopen(req, timeout=20) as resp:
        assert resp.status == 200
        return resp.headers["x-amzn-RequestId"], json.loads(resp.read())


def _by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in spans}


def test_client_trace_continues_with_request_authorize_and_integration_spans(
        gw: RunningGateway, receiver: Receiver) -> None:
    request_id, seen = _call(gw, f"Root={ROOT};Parent={CLIENT_PARENT};Sampled=1")
    spans = _by_name(receiver.wait_for(request_id, 3))
    assert set(spans) == {"GET /fn", "authorize", "integration AWS_PROXY"}
    request = spans["GET /fn"]
    trace = "5759e988bd862e3fe1be46a994272793"
    assert {s["trace_id"] for s in spans.values()} == {trace}
    assert otel_trace_id(ROOT) == int(trace, 16)
    assert request["parent"] == CLIENT_PARENT  # the client's span is our parent
    assert spans["authorize"]["parent"] == request["span_id"]
    assert spans["integration AWS_PROXY"]["parent"] == request["span_id"]
    assert request["attributes"]["http.route"].string_value == "GET /fn"
    assert request["attributes"]["http.response.status_code"].int_value == 200
    assert request["service"] == "gw-under-test" and request["auth"] == "t0k"
    # Children lie inside the request span, the integration after the authorizer.
    assert request["start"] <= spans["authorize"]["start"] <= spans["authorize"]["end"] \
        <= spans["integration AWS_PROXY"]["start"] <= spans["integration AWS_PROXY"]["end"] \
        <= request["end"]
    assert seen["header"] == f"Root={ROOT};Parent={CLIENT_PARENT};Sampled=1"
    assert seen["env"].startswith(f"Root={ROOT};Parent={CLIENT_PARENT}")


def test_generated_trace_is_the_one_the_function_got(gw: RunningGateway,
                                                     receiver: Receiver) -> None:
    request_id, seen = _call(gw, None)
    fields = dict(p.split("=", 1) for p in seen["env"].split(";"))
    assert seen["header"] == f"Root={fields['Root']}"
    spans = _by_name(receiver.wait_for(request_id, 3))
    assert {s["trace_id"] for s in spans.values()} == {fields["Root"][2:].replace("-", "")}
    assert spans["GET /fn"]["parent"] == ""  # a root span: nobody called us with a trace
    # The Parent the gateway generated and passed on is the integration span.
    assert spans["integration AWS_PROXY"]["span_id"] == fields["Parent"]


def test_client_sampled_0_exports_nothing(gw: RunningGateway, receiver: Receiver) -> None:
    quiet, _ = _call(gw, "Root=1-5759e988-00000000000000000000abcd;Sampled=0")
    loud, _ = _call(gw, "Root=1-5759e988-00000000000000000000abce;Sampled=1")
    receiver.wait_for(loud, 3)  # exported after the unsampled one, by the same exporter
    time.sleep(0.2)
    with receiver.lock:
        assert not [s for s in receiver.spans
                    if s["attributes"]["apigw.request_id"].string_value == quiet]


@pytest.mark.parametrize(("settings", "key", "words"), [
    ({"endpoint": "ftp://x/v1/traces"}, "plugins.settings.otel.endpoint", "OTLP/HTTP"),
    ({"endpoint": "http://c:4318/v1/traces", "sample": 1}, "plugins.settings.otel.sample",
     "unknown key"),
    ({"endpoint": "http://c:4318/v1/traces", "sample_ratio": 2},
     "plugins.settings.otel.sample_ratio", "from 0 to 1"),
    ({"endpoint": "http://c:4318/v1/traces", "headers": {"a": 1}},
     "plugins.settings.otel.headers", "strings"),
])
def test_bad_settings_are_config_errors(settings: dict[str, Any], key: str,
                                        words: str) -> None:
    mock = {"openapi": "3.0.1", "info": {"title": "m", "version": "1"}, "paths": {"/m": {
        "get": {"responses": {"200": {"description": "ok"}},
                "x-amazon-apigateway-integration": {
                    "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
                    "responses": {"default": {"statusCode": "200"}}}}}}}
    with pytest.raises(ConfigError) as err:
        GatewayHarness({"listeners": [{"name": "p", "endpoint": "tcp:0"}],
                        "apis": [{"id": "m", "type": "REST", "definition": "m.yaml",
                                  "stages": [{"name": "v1"}]}],
                        "plugins": {"enabled": ["mock", "otel"],
                                    "settings": {"otel": settings}}},
                       definitions={"m.yaml": mock})
    assert key in str(err.value) and words in str(err.value)


def test_x_ray_roots_map_to_otel_trace_ids() -> None:
    assert otel_trace_id("1-5e9f0c65-1de4d666d4dd26aced652b6c") == \
        0x5e9f0c651de4d666d4dd26aced652b6c
    for bad in ("", "1-x", "2-5e9f0c65-1de4d666d4dd26aced652b6c", "1-5e9f0c65-zz",
                "1-00000000-000000000000000000000000"):
        assert otel_trace_id(bad) is None
