"""In-process benchmark of VTL mapping templates (issue 5's target).

Target: a route with a typical request and a typical response template (about 20 lines
of JSON reshaping each, MOCK backend) serves at >= 0.6 x the requests/s of a plain MOCK
route, in the same run.  This measures the pipeline in-process (no sockets, no wrk):
the ratio of the two routes' per-request CPU, which is what the templates change; the
HTTP layer both share only brings the ratio closer to 1.

    cd /work/main && /work/venv/bin/pip install -q --no-deps --force-reinstall .
    /work/venv/bin/python bench/mapping.py [N]
    /work/venv/bin/python bench/mapping.py --http   # over sockets: twistd + wrk
    /work/venv/bin/python bench/mapping.py --cpu    # CPU per request, load-independent

``--cpu`` sends both routes' POST through the full HTTP stack in memory (StringTransport,
one keep-alive connection, as ``bench/mock_cpu.py``) and prints ``time.process_time`` per
request (best of ``R`` runs of ``N``), Python calls per request (cProfile's count) and
the mapping route's extra cost over the plain one; ``--profile`` prints the top functions
of the VTL route.  ``--requests K ROUTE`` (``plain`` or ``vtl``) only sends K requests
after 200 warm-up ones, for an instruction count that other processes cannot disturb
(``ROUTE`` may also be one of ``--ablate``'s copies, e.g. ``"no requestOverride"``)::

    for k in 300 1300; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        /work/venv/bin/python bench/mapping.py --requests $k vtl; done
    # instructions per request = (Collected at 1300 - Collected at 300) / 1000

``--ablate [N]`` adds copies of the templated route with one piece taken out (the
``requestOverride`` line, the ``#foreach``, ``$input.params()``, ...) and prints the CPU
per request of each and what each piece costs: where the templates' time goes, which
instruction counts alone do not tell (their extra instructions run at about half the
plain route's instructions per µs).

``--http`` serves the same two routes from ``twistd -n apigw`` pinned to core 0 and POSTs
the same body with ``wrk -t1 -c50`` pinned to core 1, ``ROUNDS`` (default 3) rounds of
``DURATION`` (default 10) seconds per route, alternating which route goes first; it
prints each round's ratio and the median, and the gateway's CPU per request on each
route (from ``/proc/<pid>/stat``) with their ratio: the gateway is saturated on both
routes, so the two ratios agree; where they do not, the gateway was not the bottleneck.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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


#: ``--ablate``: the templated route with one piece taken out (name -> request and
#: response template); the CPU a piece costs is the templated route's minus its copy's.
ABLATIONS = {
    "no requestOverride": (REQUEST_TEMPLATE.replace(
        "#set($context.requestOverride.header.X-Order = $order.id)\n", ""), RESPONSE_TEMPLATE),
    "no #foreach": (REQUEST_TEMPLATE[:REQUEST_TEMPLATE.index("#foreach")]
                    + REQUEST_TEMPLATE[REQUEST_TEMPLATE.index("#end\n\n#end") + 10:],
                    RESPONSE_TEMPLATE),
    "no escapeJavaScript": (REQUEST_TEMPLATE.replace(
        "$util.escapeJavaScript($order.customer.name)", "$order.customer.name"),
        RESPONSE_TEMPLATE),
    "no $input.params() map": (REQUEST_TEMPLATE, RESPONSE_TEMPLATE.replace(
        "#set($q = $input.params())\n", "").replace("$q.querystring.source", "web")),
    "literal response template": (REQUEST_TEMPLATE, '{"status": "accepted"}'),
    "literal request template": ('{"statusCode": 200}', RESPONSE_TEMPLATE),
}
if (REQUEST_TEMPLATE, RESPONSE_TEMPLATE) in ABLATIONS.values():  # a replace that missed
    raise AssertionError("an ablation leaves the templates as they are")


def config_file(directory: Path, extra: dict[str, tuple[str, str]] | None = None) -> Path:
    """The gateway config serving ``/prod/plain`` and ``/prod/vtl`` (and ``/prod/a<i>``
    for each of ``extra``'s template pairs)."""
    definition = {"openapi": "3.0.1", "info": {"title": "bench", "version": "1"}, "paths": {
        "/plain": {"post": _op('{"statusCode": 200}', '{"status": "accepted"}')},
        "/vtl": {"post": _op(REQUEST_TEMPLATE, RESPONSE_TEMPLATE)},
        **{f"/a{i}": {"post": _op(*pair)} for i, pair in enumerate((extra or {}).values())},
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
    from live import Live, cpu_ns, wrk
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
        cpu_ratios = []
        try:
            assert gateway.proc is not None
            pid = gateway.proc.pid  # (taskset execs twistd: the same process)
            base = f"http://127.0.0.1:{gateway.port}/prod/"
            for route in ("plain", "vtl"):
                wrk(f"{base}{route}?source=web", 2, 50, script=script)  # warm-up
            for rnd in range(rounds):
                order = ("plain", "vtl") if rnd % 2 == 0 else ("vtl", "plain")
                rps: dict[str, float] = {}
                us: dict[str, float] = {}  # the gateway's CPU per request
                for route in order:
                    before = cpu_ns(pid)
                    load = wrk(f"{base}{route}?source=web", duration, 50, script=script)
                    us[route] = (cpu_ns(pid) - before) / max(load.requests, 1) / 1e3
                    rps[route] = load.rps
                ratios.append(rps["vtl"] / rps["plain"])
                cpu_ratios.append(us["plain"] / us["vtl"])
                print(f"round {rnd}: plain {rps['plain']:8.0f} req/s {us['plain']:5.1f} us, "
                      f"VTL {rps['vtl']:8.0f} req/s {us['vtl']:5.1f} us, ratio "
                      f"{ratios[-1]:.2f} x (of CPU per request {cpu_ratios[-1]:.2f} x)",
                      flush=True)
        finally:
            gateway.stop()
    median = statistics.median(ratios)
    print(f"median ratio      {median:8.2f} x   target >= 0.60 x: "
          f"{'met' if median >= 0.6 else 'NOT met'}")
    print(f"median ratio of the gateway's CPU per request {statistics.median(cpu_ratios):.2f} x "
          "(equal to the requests/s ratio when the gateway is the bottleneck)")


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


def _post(route: str) -> bytes:
    return (f"POST /prod/{route}?source=web HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
            "User-Agent: bench\r\nAccept: */*\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY


def in_memory(directory: Path, extra: dict[str, tuple[str, str]] | None = None
              ) -> dict[str, Callable[[], bytes]]:
    """A keep-alive in-memory connection per route through the full HTTP stack (the
    ``extra`` routes keyed by their names)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import _in_memory_client  # type: ignore[import-not-found]

    from twistgw.config import load_config
    from twistgw.gateway import Gateway

    gateway = Gateway(load_config(config_file(directory, extra)))
    gateway.ready = True
    routes = {"plain": "plain", "vtl": "vtl",
              **{name: f"a{i}" for i, name in enumerate(extra or {})}}
    clients = {name: _in_memory_client(gateway.sites["public"], _post(route))
               for name, route in routes.items()}
    for route, send in clients.items():
        out = send()
        head, _, body = out.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"{route} answered {out!r}")
        json.loads(body)
    return clients


def cpu(argv: list[str]) -> None:
    """``--cpu``, ``--profile`` and ``--requests K ROUTE`` (see the module doc)."""
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([lambda event: None], discardBuffer=True,
                                     redirectStandardIO=False)
    with tempfile.TemporaryDirectory() as tmp:
        # --requests K "<ablation>" counts one of --ablate's copies (its routes only
        # then: more routes would change the other routes' counts)
        ablated = argv[0] == "--ablate" or (argv[0] == "--requests" and argv[2] in ABLATIONS)
        clients = in_memory(Path(tmp), ABLATIONS if ablated else None)
        if argv[0] == "--ablate":
            ablate(clients, int(argv[1]) if len(argv) > 1 else 3000)
            return
        if argv[0] == "--requests":
            if argv[2] not in clients:
                raise SystemExit(f"--requests: no route {argv[2]!r}; routes: plain, vtl, "
                                 + ", ".join(map(repr, ABLATIONS)))
            send = clients[argv[2]]
            for _ in range(200 + int(argv[1])):
                send()
            return
        if argv[0] == "--profile":
            send = clients["vtl"]
            for _ in range(500):
                send()
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(2000):
                send()
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(35)
            return
        n, repeats = int(os.environ.get("N", 5000)), int(os.environ.get("R", 5))
        best: dict[str, float] = {}
        from mock_cpu import cpu_per_request  # type: ignore[import-not-found]

        for route, send in clients.items():
            runs, calls = cpu_per_request(send, n, repeats)
            best[route] = runs[0]
            print(f"{route:5s} route CPU per request: best {runs[0]:6.1f} us, median "
                  f"{runs[len(runs) // 2]:6.1f} us; {calls:.0f} Python calls per request")
        print(f"VTL extra per request: {best['vtl'] - best['plain']:6.1f} us "
              f"(ratio of CPU {best['plain'] / best['vtl']:.2f} x)")


def ablate(clients: dict[str, Callable[[], bytes]], n: int) -> None:
    """``--ablate [N]``: CPU per request of every route (best of 3 runs of ``n``, the
    routes interleaved, after 2000 warm-up requests each) and what each piece the
    ablated copies leave out costs.  Process-to-process spread is about 1 us: compare
    the medians of several runs."""
    for send in clients.values():
        for _ in range(2000):
            send()
    best = dict.fromkeys(clients, float("inf"))
    for _ in range(3):
        for name, send in clients.items():
            started = time.process_time()
            for _ in range(n):
                send()
            best[name] = min(best[name], (time.process_time() - started) / n * 1e6)
    for name, us in best.items():
        cost = f"   the piece costs {best['vtl'] - us:5.1f} us" if name in ABLATIONS else ""
        print(f"{name:26s} {us:6.1f} us per request{cost}")


def main() -> None:
    if sys.argv[1:] == ["--http"]:
        over_http()
        return
    if sys.argv[1:2] in (["--cpu"], ["--profile"], ["--requests"], ["--ablate"]):
        cpu(sys.argv[1:])
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
