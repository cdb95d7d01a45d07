"""Proxy output -> client response (aws-apigw-spec.md §2.1-§2.3), through the pipeline.

A fake function pool returns each recorded output; the client response must be what AWS
answered, byte for byte where the spec records bytes (the 36-byte 502 body).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_lambda_events import lambda_op, make_gateway, run
from twisted.logger import globalLogPublisher
from twistgw_lambda.runtime import InvokeResult

from twistgw.testing import GatewayHarness, make_inbound

INTERNAL_502 = b'{"message": "Internal server error"}'


@pytest.fixture
def logged() -> Iterator[list[str]]:
    from twisted.logger import formatEvent

    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


class Output:
    """A settable function output for one gateway."""

    def __init__(self) -> None:
        self.value: Any = None

    def __call__(self, event: dict[str, Any]) -> Any:
        return self.value


@pytest.fixture
def rest(tmp_path: Path) -> Iterator[tuple[GatewayHarness, Output]]:
    out = Output()
    h, _pool = make_gateway(tmp_path, {"/x": {"get": lambda_op()}},
                            binary=["image/png", "application/*"], output=out)
    yield h, out
    h._undo()  # type: ignore[attr-defined]


def call(h: GatewayHarness, headers: dict[str, str] | None = None, path: str = "/prod/x"
         ) -> Any:
    return run(h, make_inbound("GET", path, headers=headers or {}))


# -- §2.1 validation table ------------------------------------------------------------------

MALFORMED = [
    {"statusCode": 200, "wrongValue": "value"},
    "justAString",
    {"statusCode": "test"},
    {"statusCode": 200, "multiValueHeaders": {"test-multi-invalid": "value1"}},
    {"statusCode": 200, "body": {"not": "a string"}},
    {"statusCode": 200, "headers": {"n": 1}},
    {"statusCode": 200, "headers": ["a"]},
    {"statusCode": True},
    {"statusCode": 200, "isBase64Encoded": "yes"},
    [1, 2],
    None,
    {"errorMessage": "boom", "errorType": "Exception", "stackTrace": []},
]


@pytest.mark.parametrize("output", MALFORMED, ids=[json.dumps(m)[:40] for m in MALFORMED])
def test_malformed_output_is_502_with_aws_body(rest: Any, output: Any,
                                               logged: list[str]) -> None:
    h, out = rest
    out.value = output
    response = call(h)
    assert response.status == 502
    assert response.body == INTERNAL_502 and len(response.body) == 36
    assert response.headers.get("x-amzn-ErrorType") == "InternalServerErrorException"
    assert "X-Amzn-Trace-Id" not in response.headers
    text = "\n".join(logged)
    assert "Lambda output should follow the next JSON format: " in text
    assert "Execution failed due to configuration error: Malformed Lambda proxy response" \
        in text
    assert "Method completed with status: 502" in text


def test_non_json_output_is_502(rest: Any) -> None:
    h, out = rest
    out.value = b"not json {"
    assert call(h).status == 502


def test_function_error_is_502_and_logged(rest: Any, logged: list[str]) -> None:
    h, out = rest
    out.value = InvokeResult("abc-123", b'{"errorMessage": "AZUL", "errorType": "KeyError"}',
                             "Unhandled")
    response = call(h)
    assert (response.status, response.body) == (502, INTERNAL_502)
    assert ("Lambda execution failed with status 200 due to customer function error: AZUL. "
            "Lambda request id: abc-123") in "\n".join(logged)


@pytest.mark.parametrize(("output", "status", "headers", "body"), [
    ({"statusCode": 200}, 200, [("Content-Type", "application/json")], b""),
    ({"statusCode": 200, "headers": {"test-header": "value", "header-bool": True}}, 200,
     [("test-header", "value"), ("header-bool", "true")], b""),
    ({"statusCode": 200, "headers": None}, 200, [], b""),
    ({"statusCode": "201"}, 201, [], b""),
    ({"headers": {"test-header": "value"}}, 200, [("test-header", "value")], b""),
    ({"statusCode": 200, "multiValueHeaders": {"test-multi": ["value1", "value2"]}}, 200,
     [("test-multi", "value1, value2")], b""),
    ({"statusCode": 200, "multiValueHeaders": {"test-multi": ["value-multi"]},
      "headers": {"test-multi": "value-solo"}}, 200,
     [("test-multi", "value-multi, value-solo")], b""),
    ({"statusCode": 200, "multiValueHeaders": {"tesT-Multi": ["value-multi"]},
      "headers": {"test-multi": "value-solo"}}, 200,
     [("tesT-Multi", "value-multi, value-solo")], b""),
    ({"statusCode": 200, "body": "dGVzdC1kYXRh", "isBase64Encoded": True}, 200, [],
     b"dGVzdC1kYXRh"),
    ({"statusCode": 200, "body": "dGVzdC1kYXRh", "isBase64Encoded": False}, 200, [],
     b"dGVzdC1kYXRh"),
    ({"statusCode": 404, "body": "nope", "headers": {"Content-Type": "text/plain"}}, 404,
     [("Content-Type", "text/plain")], b"nope"),
])
def test_valid_outputs_as_recorded(rest: Any, output: Any, status: int,
                                   headers: list[tuple[str, str]], body: bytes) -> None:
    h, out = rest
    out.value = output
    response = call(h)
    assert response.status == status
    assert response.body == body
    for name, value in headers:
        assert (name, value) in response.headers.items
    if not any(n.lower() == "content-type" for n, _ in headers):
        assert response.headers.get("content-type") == "application/json"
    assert response.headers.get("X-Amzn-Trace-Id", "").startswith("Root=1-")


# -- binary responses (§2.1) ------------------------------------------------------------------

PNG = {"statusCode": 200, "body": "iVBORw0K", "isBase64Encoded": True,
       "headers": {"Content-Type": "image/png"}}


@pytest.mark.parametrize(("accept", "decoded"), [
    ("image/png,image/*,*/*;q=0.8", True),
    ("image/webp,image/png,*/*;q=0.8", False),
    ("application/whatever", True),
    ("application/*", True),
    ("*/*", False),
    (None, False),
])
def test_base64_body_decoded_only_when_first_accept_is_binary(
        rest: Any, accept: str | None, decoded: bool) -> None:
    h, out = rest
    out.value = PNG
    response = call(h, {"Accept": accept} if accept else {})
    assert response.body == (b"\x89PNG\r\n" if decoded else b"iVBORw0K")


def test_invalid_base64_with_binary_accept_is_500(rest: Any) -> None:
    h, out = rest
    out.value = {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True}
    response = call(h, {"Accept": "image/png"})
    assert (response.status, response.body) == (500, INTERNAL_502)


# -- HTTP APIs --------------------------------------------------------------------------------


@pytest.fixture
def http_v2(tmp_path: Path) -> Iterator[tuple[GatewayHarness, Output]]:
    out = Output()
    h, _pool = make_gateway(tmp_path, {"/x": {"get": lambda_op(fmt="2.0")}},
                            api_type="HTTP", output=out)
    yield h, out
    h._undo()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("output", "body"), [
    ("Hello from Lambda!", b"Hello from Lambda!"),
    ({"message": "Hello from Lambda!"}, b'{"message": "Hello from Lambda!"}'),
    ({"body": "x"}, b'{"body": "x"}'),
    ([1, 2], b"[1, 2]"),
    (7, b"7"),
])
def test_v2_inference_without_status_code(http_v2: Any, output: Any, body: bytes) -> None:
    h, out = http_v2
    out.value = output
    response = call(h, path="/x")
    assert response.status == 200
    assert response.body == body
    assert response.headers.get("content-type") == "application/json"
    assert "apigw-requestid" in response.headers


def test_v2_structured_response_with_cookies_and_base64(http_v2: Any) -> None:
    h, out = http_v2
    out.value = {"statusCode": 201, "cookies": ["cookie1=v1; Path=/", "cookie2=v2"],
                 "headers": {"content-type": "image/png", "x-multi": "a,b"},
                 "body": "iVBORw0K", "isBase64Encoded": True}
    response = call(h, path="/x")
    assert response.status == 201
    assert response.headers.get_all("Set-Cookie") == ["cookie1=v1; Path=/", "cookie2=v2"]
    assert response.headers.get("x-multi") == "a,b"
    assert response.body == b"\x89PNG\r\n"


@pytest.mark.parametrize("output", [b"not json", {"statusCode": "abc"},
                                    {"statusCode": 200, "cookies": "a=1"}])
def test_v2_bad_output_is_500_internal_server_error(http_v2: Any, output: Any) -> None:
    h, out = http_v2
    out.value = output
    response = call(h, path="/x")
    assert (response.status, response.body) == (500, b'{"message":"Internal Server Error"}')


def test_v2_function_error_is_500(http_v2: Any) -> None:
    h, out = http_v2
    out.value = InvokeResult("r", b'{"errorMessage": "x"}', "Unhandled")
    response = call(h, path="/x")
    assert (response.status, response.body) == (500, b'{"message":"Internal Server Error"}')


def test_http_v1_output_malformed_is_500_and_base64_always_decoded(tmp_path: Path) -> None:
    out = Output()
    h, _pool = make_gateway(tmp_path, {"/x": {"get": lambda_op(fmt="1.0")}},
                            api_type="HTTP", output=out)
    try:
        out.value = {"statusCode": 200, "extra": 1}
        response = call(h, path="/x")
        assert (response.status, response.body) == (500,
                                                     b'{"message":"Internal Server Error"}')
        out.value = {"statusCode": 200, "body": "dGVzdC1kYXRh", "isBase64Encoded": True}
        assert call(h, path="/x").body == b"test-data"
    finally:
        h._undo()  # type: ignore[attr-defined]


def test_non_post_integration_method_is_500(tmp_path: Path) -> None:
    h, pool = make_gateway(tmp_path, {"/x": {"get": lambda_op(httpMethod="GET")}})
    try:
        response = call(h)
        assert (response.status, response.body) == (500, INTERNAL_502)
        assert pool.events == []
    finally:
        h._undo()  # type: ignore[attr-defined]



class Hanging:
    """A function that never answers; remembers whether the gateway gave up on it."""

    def __init__(self) -> None:
        self.cancelled = False

    def __call__(self, event: dict[str, Any]) -> Any:
        from twisted.internet import defer

        def cancel(_d: Any) -> None:
            self.cancelled = True

        return defer.Deferred(cancel)


@pytest.mark.parametrize(("api_type", "fmt", "status", "body"), [
    ("REST", None, 504, b'{"message": "Endpoint request timed out"}'),
    ("HTTP", "2.0", 503, b'{"message":"Service Unavailable"}'),
])
def test_integration_timeout_cancels_the_invoke(tmp_path: Path, api_type: str,
                                                fmt: str | None, status: int,
                                                body: bytes) -> None:
    from test_lambda_events import FakePool

    hanging = Hanging()
    h, pool = make_gateway(tmp_path, {"/x": {"get": lambda_op(fmt=fmt, timeoutInMillis=1000)}},
                           api_type=api_type)
    try:
        pool.invoke = lambda payload, arn, trace: hanging(json.loads(payload))  # type: ignore[method-assign]
        assert isinstance(pool, FakePool)
        response = h.request("GET", "/prod/x" if api_type == "REST" else "/x")
        assert (response.status, response.body) == (status, body)
        assert hanging.cancelled
    finally:
        h._undo()  # type: ignore[attr-defined]
