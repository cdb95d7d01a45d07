"""The admin listener of a real ``twistd``: readiness while Lambda pools warm, health,
Prometheus metrics (parsed with ``prometheus_client.parser``) and the usage report."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from twistgw.testing import RunningGateway, write_config

KEY = "alpha-0123456789abcdefghij"
#: The handler's init waits (bounded) for a file, so the test sees the pool cold.
HANDLER = """\
import os, pathlib, time
deadline = time.monotonic() + 8
while not pathlib.Path(os.environ["GO"]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)

def handler(event, context):
    return {"statusCode": 200, "body": "fn"}
"""


def _mock(status: int = 200) -> dict[str, Any]:
    return {"responses": {str(status): {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "mock", "requestTemplates": {"application/json":
                                                     json.dumps({"statusCode": status})},
                "responses": {"default": {"statusCode": str(status)}}}}


def _config(tmp: Path) -> Path:
    (tmp / "app.py").write_text(HANDLER, encoding="utf-8")
    fn_uri = ("arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
              "arn:aws:lambda:eu-west-1:123456789012:function:Fn/invocations")
    doc = {"openapi": "3.0.1", "info": {"title": "admin", "version": "1"},
           "components": {"securitySchemes": {
               "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}},
           "paths": {
               "/pets/{id}": {"get": _mock()},
               "/keyed": {"get": {**_mock(), "security": [{"api_key": []}]}},
               "/fn": {"get": {"responses": {"200": {"description": "ok"}},
                               "x-amazon-apigateway-integration": {
                                   "type": "aws_proxy", "httpMethod": "POST",
                                   "uri": fn_uri}}}}}
    return write_config(tmp, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"},
                      {"name": "ops", "endpoint": "tcp:0", "admin": True}],
        "apis": [{"id": "petapi", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {"Fn": {"handler": "app.handler", "code": ".", "runtime": "python",
                             "timeout": 5, "min_workers": 1,
                             "environment": {"GO": str(tmp / "go")}}},
        "plugins": {"enabled": ["mock", "mapping", "lambda", "access", "admin"],
                    "settings": {"access": {
                        "api_keys": [{"id": "a", "value": KEY}],
                        "usage_plans": [{"id": "gold", "keys": ["a"],
                                         "apis": [{"api": "petapi", "stage": "prod"}],
                                         "quota": {"limit": 100, "period": "DAY"}}]}}},
        "access_log": False,
    }, {"api.yaml": doc})


def _get(url: str, **headers: str) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def _admin_url(gw: RunningGateway, deadline: float) -> str:
    while time.monotonic() < deadline:
        found = re.search(r"admin listener ops on (http://[0-9.]+:\d+)", gw.log_text)
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no admin listener line:\n{gw.log_text}")


def test_admin_listener_ready_metrics_and_usage(tmp_path: Path) -> None:
    gw = RunningGateway(_config(tmp_path), timeout=30)
    started: list[Any] = []
    thread = threading.Thread(target=lambda: started.append(gw.start()), daemon=True)
    thread.start()
    try:
        admin = _admin_url(gw, time.monotonic() + 20)
        # loopback by default: the endpoint said only tcp:0
        assert admin.startswith("http://127.0.0.1:")
        assert _get(admin + "/health")[0] == 200
        status, ctype, body = _get(admin + "/ready")
        assert status == 503 and ctype == "application/json"
        problems = json.loads(body)["problems"]
        assert problems["lambda"] == "not warm yet: Fn"
        assert "gateway" in problems
        (tmp_path / "go").write_text("")
        thread.join(30)
        assert started, gw.log_text
        status, _, body = _get(admin + "/ready")
        assert (status, json.loads(body)) == (200, {"ready": True, "problems": {}})

        for n in range(3):
            assert _get(gw.url(f"/prod/pets/{n}"))[0] == 200, gw.log_text
        assert _get(gw.url("/prod/fn"))[0] == 200
        assert _get(gw.url("/prod/keyed"), **{"x-api-key": KEY})[0] == 200
        assert _get(gw.url("/prod/keyed"))[0] == 403

        status, ctype, body = _get(admin + "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=")
        got = {(s.name, frozenset(s.labels.items())): s.value
               for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}

        def lbl(route: str, **extra: str) -> frozenset[tuple[str, str]]:
            return frozenset({"api": "petapi", "stage": "prod", "route": route,
                              **extra}.items())

        assert got[("twistgw_requests_total", lbl("GET /pets/{id}", status="200"))] == 3
        assert got[("twistgw_requests_total", lbl("GET /keyed", status="403"))] == 1
        assert got[("twistgw_4xx_errors_total", lbl("GET /keyed"))] == 1
        assert got[("twistgw_integration_latency_seconds_count",
                    lbl("GET /fn", status="200"))] == 1
        assert got[("twistgw_latency_seconds_count", lbl("GET /fn", status="200"))] == 1
        assert got[("twistgw_lambda_pool_workers",
                    frozenset({"function": "Fn", "state": "idle"}.items()))] == 1
        assert got[("twistgw_lambda_pool_queued", frozenset({"function": "Fn"}.items()))] == 0
        assert got[("twistgw_ready", frozenset())] == 1

        status, _, body = _get(admin + "/usage")
        items = json.loads(body)["items"]
        assert status == 200
        assert [(i["key_id"], i["plan_id"], i["used"], i["remaining"]) for i in items] == [
            ("a", "gold", 1, 99)]
        assert json.loads(_get(admin + "/usage?key=nope")[2]) == {"items": []}
        assert _get(admin + "/nothing")[0] == 404
    finally:
        (tmp_path / "go").write_text("")
        thread.join(30)
        gw.__exit__(None, None, None)
