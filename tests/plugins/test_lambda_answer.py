"""A local function's invoke answers ``integrate`` with the invocation itself (a twistgw
``Answer``, ``FunctionPool.submit``), not a Deferred; any other pool (a remote function,
a test double) still goes through ``pool.invoke``'s Deferred.  Both paths must give the
client the same response for every output a function may give, whenever it comes (before
``integrate`` returns, later, never: the timeout), for function errors and throttling,
on REST and HTTP APIs of both payload formats."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twistgw_lambda import runtime as rt
from twistgw_lambda.plugin import use_runtime

from twistgw.testing import GatewayHarness

ARN = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
       "arn:aws:lambda:us-east-1:123456789012:function:{name}/invocations")
APIS = {"rest": ("REST", None), "http1": ("HTTP", "1.0"), "http2": ("HTTP", "2.0")}


class DeferredPool(rt.FunctionPool):
    """A FunctionPool that is not one by type: ``integrate`` takes ``pool.invoke``."""


@attrs.define
class Runtime:
    pools: dict[str, Any]


class StubWorker:
    """An idle worker that takes every invocation and lets the test answer it."""

    def __init__(self) -> None:
        self.state = "idle"
        self.pending_next: Any = object()
        self.current: Any = None
        self.plan: tuple[str, rt.InvokeResult] | None = None
        self.clock: Any = None
        self.started: list[rt.Invocation] = []

    def start(self, inv: rt.Invocation) -> bool:
        self.started.append(inv)
        assert self.plan is not None
        when, result = self.plan
        result = attrs.evolve(result, request_id=inv.id)
        if when == "now":
            inv.settle(result)
        elif when == "later":
            self.clock.callLater(1, inv.settle, result)
        return True  # "never": the integration times out


def _gateway(tmp_path: Path, api: str, fast: bool) -> tuple[GatewayHarness, StubWorker]:
    api_type, fmt = APIS[api]
    integration: dict[str, Any] = {"type": "aws_proxy", "httpMethod": "POST",
                                   "uri": ARN.format(name="Fn"), "timeoutInMillis": 2000}
    if fmt is not None:
        integration["payloadFormatVersion"] = fmt
    op = {"responses": {"200": {"description": "ok"}},
          "x-amazon-apigateway-integration": integration}
    definition: dict[str, Any] = {"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
                                  "paths": {"/fn": {"get": op}, "/busy": {"get": dict(
                                      op, **{"x-amazon-apigateway-integration": dict(
                                          integration, uri=ARN.format(name="Busy"))})}}}
    if api_type == "REST":
        definition["x-amazon-apigateway-binary-media-types"] = ["image/png"]
    stage = "prod" if api_type == "REST" else "$default"
    config = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a1b2c3d4e5", "type": api_type, "definition": "api.yaml",
                  "stages": [{"name": stage}]}],
        "functions": {name: {"handler": "app.handler", "code": str(tmp_path)}
                      for name in ("Fn", "Busy")},
        "plugins": {"enabled": ["mock", "mapping", "lambda"]},
        "access_log": False,
    }
    h = GatewayHarness(config, definitions={"api.yaml": definition})
    kind = rt.FunctionPool if fast else DeferredPool
    pool = kind(rt.FunctionConfig(name="Fn", handler="app.handler", code=tmp_path),
                h.clock, "us-east-1")
    busy = kind(rt.FunctionConfig(name="Busy", handler="app.handler", code=tmp_path,
                                  reserved_concurrency=0), h.clock, "us-east-1")
    worker = StubWorker()
    worker.clock = h.clock
    pool.workers.append(worker)  # type: ignore[arg-type]
    if fast:  # the path under test never asks for a Deferred
        for p in (pool, busy):
            p.invoke = _no_deferred  # type: ignore[method-assign]
    h._undo = use_runtime(h.config, Runtime({"Fn": pool, "Busy": busy}))  # type: ignore[attr-defined]
    return h, worker


def _no_deferred(*args: Any, **kw: Any) -> Any:
    raise AssertionError("the Answer path called pool.invoke")


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory
             ) -> Any:
    tmp = tmp_path_factory.mktemp("fn")
    made = {(api, fast): _gateway(tmp, api, fast) for api in APIS for fast in (True, False)}
    yield made
    for h, _w in made.values():
        h._undo()  # type: ignore[attr-defined]


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
HEADERS = st.dictionaries(st.sampled_from(["Content-Type", "content-type", "X-A", "x-a",
                                           "Set-Cookie"]), TEXT, max_size=3)
PROXY_OUTPUT = st.fixed_dictionaries({}, optional={
    "statusCode": st.sampled_from([200, 201, 404, 500, "200", 99, 1000, None, "x"]),
    "headers": HEADERS | st.none() | st.just("notadict"),
    "multiValueHeaders": st.dictionaries(st.sampled_from(["X-A", "X-B", "set-cookie"]),
                                         st.lists(TEXT, max_size=2), max_size=2) | st.none(),
    "body": TEXT | st.sampled_from(["aGVsbG8=", "!!", ""]) | st.none() | st.just(42),
    "isBase64Encoded": st.booleans() | st.sampled_from(["true", None]),
    "cookies": st.lists(TEXT, max_size=2),
})
OUTPUTS = st.one_of(
    PROXY_OUTPUT.map(lambda doc: json.dumps(doc).encode()),
    st.sampled_from([b"", b"null", b"[]", b'"text"', b"42", b"{bad", b"\xff", b"{}"]),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(api=st.sampled_from(sorted(APIS)), output=OUTPUTS,
       error=st.sampled_from([None, None, "Unhandled", "Throttled"]),
       when=st.sampled_from(["now", "later", "never"]),
       accept=st.sampled_from(["*/*", "image/png", "application/json"]),
       path=st.sampled_from(["/fn", "/fn", "/busy"]))
def test_the_answer_path_gives_what_the_deferred_path_gives(
        gateways: Any, api: str, output: bytes, error: str | None, when: str, accept: str,
        path: str) -> None:
    seen = []
    for fast in (True, False):
        h, worker = gateways[(api, fast)]
        worker.plan = (when, rt.InvokeResult("-", output, error))
        worker.started.clear()
        prefix = "/prod" if APIS[api][0] == "REST" else ""
        pending = h.exchange("GET", prefix + path, headers=[
            ("Accept", accept), ("X-Amzn-Trace-Id", "Root=1-67e2a3b4-0123456789abcdef01234567")])
        if isinstance(pending, Deferred):
            box: list[Any] = []
            pending.addBoth(box.append)
            h.clock.advance(1)
            h.clock.advance(1)
            exchange = box[0]
        else:
            exchange = pending
        response = exchange.response
        ids = {"x-amzn-requestid", "x-amz-apigw-id", "apigw-requestid"}
        seen.append((response.status, response.body, [
            (k, re.sub("Parent=[0-9a-f]+", "", v))  # (a random span id per request)
            for k, v in response.headers.items if k.lower() not in ids],
            [inv.called for inv in worker.started], len(h.gateway.pipeline.deadlines)))
    assert seen[0] == seen[1]
