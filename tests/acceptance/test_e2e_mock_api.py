"""A REST API of MOCK routes served by the real daemon, driven over real sockets.

One daemon for the module, on a free loopback port (``tcp:0:interface=127.0.0.1``).
"""

from __future__ import annotations

import http.client
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from acceptance_support import (
    LOOPBACK_LISTENER,
    http_request,
    mock_operation,
    running_gateway,
    wait_for_log,
    write_config,
)

from twistgw.testing import RunningGateway

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

DEFINITION = {
    "openapi": "3.0.1",
    "info": {"title": "shop", "version": "1"},
    "paths": {
        "/items": {
            "get": mock_operation(200, '[{"id": 1}, {"id": 2}]', {"X-Source": "mock"}),
            "post": mock_operation(201, '{"created": true}'),
        },
        "/items/{id}": {"get": mock_operation(200, '{"id": "one"}')},
        "/teapot": {"get": mock_operation(418, '{"short": "and stout"}')},
    },
}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(
        tmp_path_factory.mktemp("mock-api"),
        {
            "listeners": [LOOPBACK_LISTENER],
            "apis": [{"id": "shop", "type": "REST", "definition": "shop.yaml",
                      "stages": [{"name": "v1", "variables": {"color": "blue"}}]}],
            "plugins": {"enabled": ["mock", "mapping"]},
        },
        {"shop.yaml": DEFINITION},
    )


@pytest.fixture(scope="module")
def gw(config: Path) -> Iterator[RunningGateway]:
    with running_gateway(config) as running:
        yield running


def test_serving_line_names_api_and_stage(gw: RunningGateway) -> None:
    assert re.search(rf"serving http://127\.0\.0\.1:{gw.port}/v1/ -> REST API 'shop' \(shop\) "
                     r"stage v1", gw.log_text), gw.log_text


def test_mock_route_answers_with_status_body_and_headers(gw: RunningGateway) -> None:
    reply = http_request(gw.url("/v1/items"))
    assert reply.status == 200
    assert reply.json() == [{"id": 1}, {"id": 2}]
    assert reply.header("Content-Type") == "application/json"
    assert reply.header("X-Source") == "mock"
    assert int(reply.header("Content-Length") or -1) == len(reply.body)


def test_mock_route_non_200_status(gw: RunningGateway) -> None:
    created = http_request(gw.url("/v1/items"), "POST", body=b"{}",
                           headers={"Content-Type": "application/json"})
    assert (created.status, created.json()) == (201, {"created": True})
    teapot = http_request(gw.url("/v1/teapot"))
    assert (teapot.status, teapot.json()) == (418, {"short": "and stout"})


def test_path_parameter_route(gw: RunningGateway) -> None:
    reply = http_request(gw.url("/v1/items/abc"))
    assert (reply.status, reply.json()) == (200, {"id": "one"})


def test_every_response_carries_aws_request_ids(gw: RunningGateway) -> None:
    first = http_request(gw.url("/v1/items"))
    second = http_request(gw.url("/v1/items"))
    for reply in (first, second):
        assert UUID_RE.match(reply.header("x-amzn-RequestId") or ""), reply.headers
        assert re.fullmatch(r"[A-Za-z0-9+/]{15}=", reply.header("x-amz-apigw-id") or ""), \
            reply.headers
    assert first.header("x-amzn-RequestId") != second.header("x-amzn-RequestId")
    assert first.header("x-amz-apigw-id") != second.header("x-amz-apigw-id")
    error = http_request(gw.url("/v1/missing"))
    assert UUID_RE.match(error.header("x-amzn-RequestId") or "")
    assert error.header("x-amz-apigw-id")


def test_client_request_id_is_reused(gw: RunningGateway) -> None:
    mine = str(uuid.uuid4())
    reply = http_request(gw.url("/v1/items"), headers={"x-amzn-RequestId": mine})
    assert reply.header("x-amzn-RequestId") == mine
    bogus = http_request(gw.url("/v1/items"), headers={"x-amzn-RequestId": "not-a-uuid"})
    assert UUID_RE.match(bogus.header("x-amzn-RequestId") or "")


def test_unknown_path_and_unknown_stage(gw: RunningGateway) -> None:
    missing = http_request(gw.url("/v1/nope"))
    assert missing.status == 403
    assert missing.json() == {"message": "Missing Authentication Token"}
    assert missing.header("x-amzn-ErrorType") == "MissingAuthenticationTokenException"
    wrong_method = http_request(gw.url("/v1/items/abc"), "DELETE")
    assert wrong_method.status == 403
    assert wrong_method.json() == {"message": "Missing Authentication Token"}
    stage = http_request(gw.url("/v2/items"))
    assert stage.status == 403
    assert stage.json() == {"message": "Forbidden"}


def test_keep_alive_connection_serves_several_requests(gw: RunningGateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/v1/items")
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
            assert not resp.will_close
    finally:
        conn.close()


def test_access_log_line_per_request(gw: RunningGateway) -> None:
    reply = http_request(gw.url("/v1/items/xyz"))
    request_id = reply.header("x-amzn-RequestId")
    assert request_id
    # The CLF preset: ip caller user [time] "method resourcePath protocol" status length
    # requestId extendedRequestId.
    pattern = re.compile(
        r"\[twistgw\.access#info\] 127\.0\.0\.1 - - \[[^\]]+\] "
        r'"GET /items/\{id\} HTTP/1\.1" 200 ' + str(len(reply.body)) + " "
        + re.escape(request_id) + " " + re.escape(reply.header("x-amz-apigw-id") or "?"))
    wait_for_log(gw, lambda text: pattern.search(text) is not None)
