"""Issue 3's Lambda benchmark: one trivial handler, four ways, in one run.

* the gateway's ``runtime: python`` route with 2 warm workers (``twistd -n apigw``);
* the same gateway's MOCK route (the floor: no integration);
* the handler called directly in a loop (what the handler itself costs);
* the same API under ``chalice local`` (AWS's own local server for Chalice apps).

Every server runs pinned to core 0 (``SERVER_CPU``; a gateway's workers inherit it),
wrk to core 1 (``CLIENT_CPU``), the same concurrency for all, rounds in rotating order.
Targets (issue 3): warm invoke p50 <= MOCK p50 + 1 ms (one connection); Lambda route
>= 0.5 x the MOCK route's requests/s; >= 20 x chalice local's requests/s at the same
concurrency; first request to a cold function <= 300 ms beyond the handler's own init.

    /work/venv/bin/python bench/lambda_bench.py        # DURATION=10 ROUNDS=3 CONNECTIONS=10
    CHALICE=/path/to/venv/bin/chalice ...              # default: chalice on PATH

chalice is a benchmark-only dependency: install it in a separate virtualenv
(``python3 -m venv /tmp/chalice-venv && /tmp/chalice-venv/bin/pip install chalice``),
never in twistgw's runtime dependencies.  Results go to stdout and
``bench/out/lambda-results.json``.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from live import Live, wrk
from run import GATEWAY_PORT_RE, twistd_argv

DURATION = int(os.environ.get("DURATION", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "10"))
COLD_SAMPLES = int(os.environ.get("COLD_SAMPLES", "5"))
OUT = Path(__file__).resolve().parent / "out"

HANDLER = '''
import time
_STARTED = time.perf_counter()
BODY = '{"hello": "world"}'


def hello(event, context):
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": BODY}


INIT_MS = (time.perf_counter() - _STARTED) * 1000
'''

CHALICE_APP = '''from chalice import Chalice

app = Chalice(app_name="bench")


@app.route("/hello")
def hello():
    return {"hello": "world"}
'''

ARN = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
       "arn:aws:lambda:us-east-1:123456789012:function:{name}/invocations")


def _proxy(name: str) -> dict[str, Any]:
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "aws_proxy", "httpMethod": "POST",
                                                "uri": ARN.format(name=name)}}


def gateway_config(root: Path) -> Path:
    from twistgw.testing import write_config

    (root / "src").mkdir()
    (root / "src" / "app.py").write_text(HANDLER)
    mock = {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
                "responses": {"default": {"statusCode": "200", "responseTemplates": {
                    "application/json": '{"hello": "world"}'}}}}}
    definition = {"openapi": "3.0.1", "info": {"title": "bench", "version": "1"}, "paths": {
        "/mock": {"get": mock}, "/hello": {"get": _proxy("Hello")},
        "/cold": {"get": _proxy("Cold")}}}
    return write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "bench", "definition": "api.yaml", "stages": [{"name": "prod"}]}],
        "functions": {
            "Hello": {"handler": "app.hello", "code": "src", "min_workers": 2,
                      "max_workers": 2},
            "Cold": {"handler": "app.hello", "code": "src", "min_workers": 0,
                     "max_workers": 1, "idle_timeout": 1},
        },
        "plugins": {"enabled": ["mock", "mapping", "lambda"]}, "access_log": False,
    }, {"api.yaml": definition})


def chalice_project(root: Path) -> Path:
    project = root / "chalice-bench"
    (project / ".chalice").mkdir(parents=True)
    (project / "app.py").write_text(CHALICE_APP)
    (project / "requirements.txt").write_text("")
    (project / ".chalice" / "config.json").write_text(json.dumps(
        {"version": "2.0", "app_name": "bench", "stages": {"dev": {}}}))
    return project


def direct_calls(root: Path, n: int = 200000) -> float:
    """Microseconds per direct call of the handler (the handler's own cost)."""
    sys.path.insert(0, str(root / "src"))
    import app  # type: ignore[import-not-found]

    event: dict[str, Any] = {"httpMethod": "GET", "path": "/hello"}
    start = time.perf_counter()
    for _ in range(n):
        app.hello(event, None)
    return (time.perf_counter() - start) / n * 1e6


def cold_starts(port: int) -> list[float]:
    """Milliseconds for the first request to a function with no worker (the worker of
    the previous sample is reaped after its 1 s idle_timeout)."""
    samples = []
    for _ in range(COLD_SAMPLES):
        time.sleep(2.5)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        start = time.perf_counter()
        conn.request("GET", "/prod/cold")
        response = conn.getresponse()
        response.read()
        samples.append((time.perf_counter() - start) * 1000)
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"cold request answered {response.status}")
    return samples


def main() -> int:
    chalice = os.environ.get("CHALICE") or shutil.which("chalice")
    if not chalice:
        print("chalice not found: set CHALICE=/path/to/bin/chalice (see the docstring)")
        return 2
    OUT.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="lambda-bench-"))
    config = gateway_config(root)
    project = chalice_project(root)
    gateway = Live("gateway", twistd_argv(config), GATEWAY_PORT_RE).start()
    with socket.socket() as s:  # chalice local needs a port number of its own
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chalice_server = Live("chalice", [chalice, "local", "--no-autoreload", "--port",
                                      str(port)], r"Serving on http://127\.0\.0\.1:(\d+)",
                          cwd=project).start()
    results: dict[str, Any] = {"duration_s": DURATION, "rounds": ROUNDS,
                               "connections": CONNECTIONS, "runs": []}
    try:
        urls = {"mock": f"http://127.0.0.1:{gateway.port}/prod/mock",
                "lambda": f"http://127.0.0.1:{gateway.port}/prod/hello",
                "chalice": f"http://127.0.0.1:{chalice_server.port}/hello"}
        for url in urls.values():  # warm up every server and check it answers
            wrk(url, 2, CONNECTIONS)
        order = list(urls)
        for rnd in range(ROUNDS):
            for name in order[rnd % 3:] + order[:rnd % 3]:
                load = wrk(urls[name], DURATION, CONNECTIONS)
                run: dict[str, Any] = {"round": rnd, "server": name, "rps": load.rps,
                                       "p50_ms": load.p50_ms, "p99_ms": load.p99_ms,
                                       "errors": load.errors, "non_2xx": load.non_2xx}
                if name != "chalice":
                    one = wrk(urls[name], DURATION, 1)
                    run.update(p50_1conn_ms=one.p50_ms, p99_1conn_ms=one.p99_ms)
                results["runs"].append(run)
                print(json.dumps(run), flush=True)
        results["direct_us_per_call"] = direct_calls(root)
        results["cold_ms"] = cold_starts(gateway.port)
    finally:
        gateway.stop()
        chalice_server.stop()

    def med(server: str, key: str) -> float:
        return statistics.median(r[key] for r in results["runs"] if r["server"] == server)

    summary = {
        "mock_rps": med("mock", "rps"), "lambda_rps": med("lambda", "rps"),
        "chalice_rps": med("chalice", "rps"),
        "mock_p50_ms": med("mock", "p50_1conn_ms"),
        "lambda_p50_ms": med("lambda", "p50_1conn_ms"),
        "cold_median_ms": statistics.median(results["cold_ms"]),
    }
    summary["lambda_vs_mock"] = summary["lambda_rps"] / summary["mock_rps"]
    summary["lambda_vs_chalice"] = summary["lambda_rps"] / summary["chalice_rps"]
    summary["warm_over_mock_p50_ms"] = summary["lambda_p50_ms"] - summary["mock_p50_ms"]
    results["summary"] = summary
    (OUT / "lambda-results.json").write_text(json.dumps(results, indent=2))
    ok = {"warm p50 <= MOCK + 1 ms": summary["warm_over_mock_p50_ms"] <= 1.0,
          "lambda >= 0.5 x MOCK rps": summary["lambda_vs_mock"] >= 0.5,
          "lambda >= 20 x chalice local rps": summary["lambda_vs_chalice"] >= 20,
          "cold start <= 300 ms": summary["cold_median_ms"] <= 300}
    print(json.dumps(summary, indent=2))
    print(f"direct handler call: {results['direct_us_per_call']:.2f} us")
    for what, met in ok.items():
        print(f"{what}: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
