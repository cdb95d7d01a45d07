"""In-process benchmark of VTL mapping templates (issue 5's target).

Target: a route with a typical request and a typical response template (about 20 lines
of JSON reshaping each, MOCK backend) serves at >= 0.6 x the requests/s of a plain MOCK
route, in the same run.  This measures the pipeline in-process (no sockets, no wrk):
the ratio of the two routes' per-request CPU, which is what the templates change; the
HTTP layer both share only brings the ratio closer to 1.

    cd /work/main && /work/venv/bin/pip install -q --no-deps --force-reinstall .
    /work/venv/bin/python bench/mapping.py [N]
    /work/venv/bin/python bench/mapping.py --http   # over sockets: twistd + wrk

``--http`` serves the same two routes from ``twistd -n apigw`` pinned to core 0 and POSTs
the same body with ``wrk -t1 -c50`` pinned to core 1, ``ROUNDS`` (default 3) rounds of
``DURATION`` (default 10) seconds per route, alternating which route goes first; it
prints each round's ratio and the median.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twistgw.testing import GatewayHarness, write_config

REQUEST_TEMPLATE = """#set($order = $input.path('$'))
#set($context.requestOverride.header.X-Order = $order.id)
{
  "statusCode": 200,
  "orderId": "$order.id",
  "customer": {
    "name": "$util.escapeJavaScript($order.customer.name)",
    "email": "$order.customer.email"
  },
  "items": [
#foreach($item in $order.items)
    {"sku": "$item.sku", "qty": $item.qty, "price": $item.price}#if($foreach.hasNext),#end

#end
  ],
  "source": "$input.params('source')",
  "stage": "$context.stage",
  "requestId": "$context.requestId",
  "total": $order.total
}
"""

RESPONSE_TEMPLATE = """#set($q = $input.params())
{
  "status": "accepted",
  "stage": "$context.stage",
  "requestId": "$context.requestId",
  "source": "$q.querystring.source",
  "client": "$context.identity.sourceIp",
  "method": "$context.httpMethod",
  "resource": "$context.resourcePath",
#if($input.params('source') == "web")
  "channel": "online",
#else
  "channel": "other",
#end
  "links": [
#foreach($rel in ["self", "items", "customer"])
    {"rel": "$rel", "href": "/orders/$rel"}#if($foreach.hasNext),#end

#end
  ]
}
"""

BODY = json.dumps({
    "id": "o-1", "customer": {"name": "Ann O'Neil", "email": "ann@example.com"},
    "items": [{"sku": "a", "qty": 1, "price": 2.5}, {"sku": "b", "qty": 2, "price": 1.0},
              {"sku": "c", "qty": 1, "price": 9.99}],
    "total": 16.49}).encode()


def _op(request_template: str, response_template: str) -> dict[str, Any]:
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "mock",
                "requestTemplates": {"application/json": request_template},
                "responses": {"default": {"statusCode": "200", "responseTemplates": {
                    "application/json": response_template}}}}}


def config_file(directory: Path) -> Path:
    """The gateway config serving ``/prod/plain`` and ``/prod/vtl``."""
    definition = {"openapi": "3.0.1", "info": {"title": "bench", "version": "1"}, "paths": {
        "/plain": {"post": _op('{"statusCode": 200}', '{"status": "accepted"}')},
        "/vtl": {"post": _op(REQUEST_TEMPLATE, RESPONSE_TEMPLATE)},
    }}
    config = {"listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
              "apis": [{"id": "bench", "definition": "api.yaml",
                        "stages": [{"name": "prod"}]}],
              "plugins": {"enabled": ["mapping", "mock"]}, "access_log": False}
    return write_config(directory, config, {"api.yaml": definition})


def harness(directory: Path) -> GatewayHarness:
    return GatewayHarness(config_file(directory))


def over_http() -> None:
    """The two routes over sockets: twistd on core 0, wrk on core 1."""
    from live import Live, wrk
    from run import GATEWAY_PORT_RE, twistd_argv

    duration = int(os.environ.get("DURATION", "10"))
    rounds = int(os.environ.get("ROUNDS", "3"))
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text('wrk.method = "POST"\n'
                          f"wrk.body = {json.dumps(BODY.decode())}\n"
                          'wrk.headers["Content-Type"] = "application/json"\n')
        gateway = Live("mapping", twistd_argv(config_file(Path(tmp))),
                       GATEWAY_PORT_RE).start()
        ratios = []
        try:
            base = f"http://127.0.0.1:{gateway.port}/prod/"
            for route in ("plain", "vtl"):
                wrk(f"{base}{route}?source=web", 2, 50, script=script)  # warm-up
            for rnd in range(rounds):
                order = ("plain", "vtl") if rnd % 2 == 0 else ("vtl", "plain")
                rps = {route: wrk(f"{base}{route}?source=web", duration, 50,
                                  script=script).rps for route in order}
                ratios.append(rps["vtl"] / rps["plain"])
                print(f"round {rnd}: plain {rps['plain']:8.0f} req/s, VTL "
                      f"{rps['vtl']:8.0f} req/s, ratio {ratios[-1]:.2f} x", flush=True)
        finally:
            gateway.stop()
    median = statistics.median(ratios)
    print(f"median ratio      {median:8.2f} x   target >= 0.60 x: "
          f"{'met' if median >= 0.6 else 'NOT met'}")


def rate(h: GatewayHarness, path: str, n: int) -> float:
    headers = {"Content-Type": "application/json"}
    for _ in range(200):
        h.request("POST", path, body=BODY, headers=headers)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            h.request("POST", path, body=BODY, headers=headers)
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> None:
    if sys.argv[1:] == ["--http"]:
        over_http()
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp:
        h = harness(Path(tmp))
        response = h.request("POST", "/prod/vtl?source=web", body=BODY,
                             headers={"Content-Type": "application/json"})
        assert response.status == 200, response.body
        json.loads(response.body)
        plain = rate(h, "/prod/plain?source=web", n)
        vtl = rate(h, "/prod/vtl?source=web", n)
    ratio = vtl / plain
    print(f"plain MOCK route  {plain:8.0f} req/s (in-process)")
    print(f"VTL MOCK route    {vtl:8.0f} req/s (in-process)")
    print(f"ratio             {ratio:8.2f} x   target >= 0.60 x: "
          f"{'met' if ratio >= 0.6 else 'NOT met'}")


if __name__ == "__main__":
    main()
