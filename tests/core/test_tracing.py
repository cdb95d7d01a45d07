"""One trace per request (aws-apigw-spec.md §A.8), shared by integrations, logs and exporters."""

from __future__ import annotations

import re

from twistgw.testing import GatewayHarness, make_context
from twistgw.tracing import parse_trace_header, trace_header, trace_root
from twistgw.variables import lookup

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
MOCK = {"openapi": "3.0.1", "info": {"title": "m", "version": "1"}, "paths": {"/m": {
    "get": {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
                "responses": {"default": {"statusCode": "200"}}}}}}}


def _harness() -> GatewayHarness:
    return GatewayHarness({"listeners": [{"name": "p", "endpoint": "tcp:0"}],
                           "apis": [{"id": "m", "type": "REST", "definition": "m.yaml",
                                     "stages": [{"name": "v1"}]}],
                           "plugins": {"enabled": ["mock"]}, "access_log": False},
                          definitions={"m.yaml": MOCK})


def test_generated_trace_is_stable_and_is_the_xray_trace_id() -> None:
    ctx = make_context()
    header = trace_header(ctx)
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0",
                        header)
    assert trace_header(ctx) == header
    assert lookup(ctx, "xrayTraceId") == trace_root(ctx) == header[5:40]


def test_generated_traces_differ_across_blocks_of_random_bytes() -> None:
    """Root and Parent come from a block of ``os.urandom`` bytes read once per 256 traces;
    no two requests share them, across block boundaries too."""
    headers = [trace_header(make_context()) for _ in range(3 * 256 + 7)]
    roots = {parse_trace_header(h)["Root"][-24:] for h in headers}
    parents = {parse_trace_header(h)["Parent"] for h in headers}
    assert len(roots) == len(parents) == len(headers)


def test_a_forked_child_does_not_repeat_its_parents_traces() -> None:
    import os

    trace_header(make_context())  # a block is read and partly used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, trace_header(make_context()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    parent = trace_header(make_context())
    assert parse_trace_header(child)["Parent"] != parse_trace_header(parent)["Parent"]


def test_client_root_and_extra_fields_are_kept() -> None:
    ctx = make_context(trace_id=f"Root={ROOT};Lineage=a:1")
    fields = parse_trace_header(trace_header(ctx))
    assert fields["Root"] == ROOT and fields["Lineage"] == "a:1"
    assert fields["Sampled"] == "0" and len(fields["Parent"]) == 16
    assert lookup(ctx, "xrayTraceId") == ROOT


def test_pipeline_records_the_phases_it_ran() -> None:
    h = _harness()
    exchange = h.exchange("GET", "/v1/m", headers={"X-Amzn-Trace-Id": f"Root={ROOT}"})
    assert not hasattr(exchange, "addCallback")
    phases = exchange.outcome.finish.phases  # type: ignore[union-attr]
    assert [p[0] for p in phases] == ["integrate"]
    assert all(started <= ended for _, started, ended in phases)
    ctx = exchange.ctx  # type: ignore[union-attr]
    assert lookup(ctx, "xrayTraceId") == ROOT
    assert lookup(ctx, "authorize.latency", exchange.outcome.finish) is None  # type: ignore[union-attr]
