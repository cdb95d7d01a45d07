"""The request-path models: the field order the core's positional constructions rely on.

The pipeline and the server build ``Context``, ``InboundRequest``, ``IntegrationRequest``,
``Response``, ``Exchange`` and ``Outcome`` with positional arguments on every request
(keyword arguments were a quarter of a ``Context``'s construction cost).  A field added
in the middle of one of these classes would silently shift every value after it: add new
fields at the end.  These tests fail first if that rule is broken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest

from twistgw import IntegrationResponse, hookimpl
from twistgw.models import Context, InboundRequest, IntegrationRequest, Response
from twistgw.pipeline import Exchange, Outcome

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

#: The leading fields each positional construction passes, in order.
POSITIONAL = {
    Context: ["request", "request_id", "extended_request_id", "received_at",
              "deployment_api", "stage", "route", "method", "path", "request_path",
              "path_params", "principal", "domain_name", "base_path_matched", "trace_id"],
    InboundRequest: ["method", "raw_path", "raw_query", "query", "headers", "body",
                     "client_ip", "client_port", "listener", "scheme", "server_port",
                     "http_version", "received_at", "tls"],
    IntegrationRequest: ["method", "uri", "headers", "query", "path_params", "body",
                         "timeout"],
    Response: ["status", "headers", "body", "upgrade"],
    Exchange: ["ctx", "response", "outcome"],
    Outcome: ["deployment", "access_log"],
}


@pytest.mark.parametrize("cls", list(POSITIONAL), ids=lambda c: c.__name__)
def test_positional_field_order(cls: type) -> None:
    names = [f.name for f in attrs.fields(cls) if f.init]
    expected = POSITIONAL[cls]
    assert names[:len(expected)] == expected
    # Any field after them has a default, so the positional calls stay complete.
    assert all(f.default is not attrs.NOTHING for f in attrs.fields(cls)[len(expected):]
               if f.init)


def test_the_pipelines_context_has_each_value_in_its_field(make_harness: HarnessFactory,
                                                            b: Builders) -> None:
    """Through a real request: every positional value lands in the right field."""
    seen: list[tuple[Context, IntegrationRequest]] = []

    class Spy:
        @hookimpl
        def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse:
            seen.append((ctx, request))
            return IntegrationResponse(status=200, body=b"ok")

    doc = b.openapi({"/items/{id}": {"post": b.proxy_op("http://backend.invalid/{id}",
                                                        timeoutInMillis=1234)}})
    h = make_harness(doc, plugins=[("spy", Spy()), ("echo", b.echo())])
    response = h.request("POST", "/prod/items/7?q=1", body=b"payload",
                         headers={"X-Amzn-Trace-Id": "Root=1-abc", "Host": "example.test"})
    assert response.status == 200
    ctx, request = seen[0]
    assert ctx.request.method == "POST" and ctx.request.raw_path == "/prod/items/7"
    assert ctx.request.query == (("q", "1"),) and ctx.request.body == b"payload"
    assert ctx.request_id == response.headers.get("x-amzn-RequestId")
    assert ctx.extended_request_id == response.headers.get("x-amz-apigw-id")
    assert ctx.received_at > 0 and ctx.deployment_api is not None
    assert ctx.stage is not None and ctx.route is not None
    assert (ctx.method, ctx.path, ctx.request_path) == ("POST", "/items/7", "/prod/items/7")
    assert dict(ctx.path_params) == {"id": "7"} and ctx.principal is None
    assert ctx.domain_name == "example.test" and ctx.base_path_matched is None
    assert ctx.trace_id == "Root=1-abc"
    assert (request.method, request.body, request.timeout) == ("POST", b"payload", 1.234)
    assert request.uri == "http://backend.invalid/{id}"
    assert request.query == (("q", "1"),) and dict(request.path_params) == {"id": "7"}
    assert request.headers.get("x-amzn-trace-id") == "Root=1-abc"
