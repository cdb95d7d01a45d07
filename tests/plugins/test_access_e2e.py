"""End to end: the real daemon (``twistd -n apigw``) enforces API keys and usage plans.

Proves what the in-process tests cannot: the ``access`` plugin loads from its entry point,
its ``startup`` hook takes the real reactor's clock, a key value comes from an environment
secret, and refusals reach a real socket with AWS's status, body and error type.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from twistgw.testing import RunningGateway, write_config

KEY = "e2e-key-0123456789abcdefghij"


def mock_op(keyed: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "responses": {"200": {"description": "ok"}},
        "x-amazon-apigateway-integration": {
            "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
            "responses": {"default": {"statusCode": "200", "responseTemplates": {
                "application/json": '{"ok": true}'}}}}}
    if keyed:
        op["security"] = [{"api_key": []}]
    return op


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    folder = tmp_path_factory.mktemp("access-e2e")
    definition = {
        "openapi": "3.0.1", "info": {"title": "keyed", "version": "1"},
        "components": {"securitySchemes": {
            "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}},
        "paths": {"/keyed": {"get": mock_op(True)}, "/open": {"get": mock_op(False)}},
    }
    config = write_config(folder, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "keyed", "type": "REST", "definition": "keyed.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping", "access"], "settings": {"access": {
            "api_keys": [{"id": "partner", "value": {"$env": "TWISTGW_E2E_KEY"}}],
            # rate 0: the burst is all there is, so the test does not race the wall clock.
            "usage_plans": [{"id": "gold", "apis": [{"api": "keyed", "stage": "prod"}],
                             "throttle": {"rate": 0, "burst": 3}, "keys": ["partner"]}],
        }}},
        "access_log": False,
    }, {"keyed.yaml": definition})
    env = dict(os.environ, TWISTGW_E2E_KEY=KEY)
    with RunningGateway(config, env=env) as running:
        yield running


def call(gw: RunningGateway, path: str, key: str | None = None
         ) -> tuple[int, bytes, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", path, headers={"x-api-key": key} if key is not None else {})
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("x-amzn-ErrorType")
    finally:
        conn.close()


def test_keys_and_usage_plan_over_real_sockets(gw: RunningGateway) -> None:
    assert call(gw, "/prod/open") == (200, b'{"ok": true}', None)
    assert call(gw, "/prod/keyed") == (403, b'{"message":"Forbidden"}', "ForbiddenException")
    assert call(gw, "/prod/keyed", KEY + "x")[0] == 403
    for _ in range(3):
        status, body, _ = call(gw, "/prod/keyed", KEY)
        assert (status, json.loads(body)) == (200, {"ok": True})
    assert call(gw, "/prod/keyed", KEY) == (429, b'{"message":"Too Many Requests"}',
                                           "TooManyRequestsException")
    assert "access==" in gw.log_text
    assert KEY not in gw.log_text
