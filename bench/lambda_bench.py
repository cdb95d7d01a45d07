"""Issue 3's Lambda benchmark: one trivial handler, four ways, in one run.

* the gateway's ``runtime: python`` route with 2 warm workers (``twistd -n apigw``);
* the same gateway's MOCK route (the floor: no integration);
* the handler called directly in a loop (what the handler itself costs);
* the same API under ``chalice local`` (AWS's own local server for Chalice apps).

Two configurations, measured one after the other in the same run:

* **pinned** (the headline, conservative): every server pinned to core 0 (``SERVER_CPU``;
  a gateway's workers inherit it, so gateway and workers share one core), wrk on core 1
  (``CLIENT_CPU``);
* **workers unpinned**: the same servers, still on core 0, but the gateway's worker
  processes may run on any core (they are separate processes, as Lambda's are on their
  own machines); chalice local, one process, stays on core 0 as before.  wrk on core 1.
* **workers placed**: a second gateway, on core 0 as before, whose config keeps the
  workers off its core with the function setting ``cpus`` (every other core, here the
  one wrk runs on): how an operator deploys it once the scheduler's habit of waking a
  worker onto the gateway's own core is known.  Its own MOCK route and chalice local are
  measured again in the same rounds.

The same concurrency for all, rounds in rotating order.  Each run also records the CPU
time each server spent per request (the gateway process and its workers apart, from
``/proc/<pid>/stat``, every thread counted): a CPU-bound server shows about 1 core-second
per second of run, a latency-bound one much less.  Targets (issue 3): warm invoke p50 <= MOCK p50 +
1 ms (one connection); Lambda route >= 0.5 x the MOCK route's requests/s; >= 20 x chalice
local's requests/s at the same concurrency; first request to a cold function <= 300 ms
beyond the handler's own init.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from live import SERVER_CPU, Live, wrk
from live import cpu_ns as _cpu_ns
from run import GATEWAY_PORT_RE, twistd_argv

DURATION = int(os.environ.get("DURATION", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "10"))
COLD_SAMPLES = int(os.environ.get("COLD_SAMPLES", "5"))
OUT = Path(__file__).resolve().parent / "out"
#: The configurations measured, in order (module doc).
CONFIGS = ("pinned", "workers unpinned", "workers placed")

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


def gateway_config(root: Path, worker_cpus: list[int] | None = None) -> Path:
    """The benchmark gateway's config; ``worker_cpus``: the ``cpus`` of its functions."""
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
    placed = {"cpus": worker_cpus} if worker_cpus else {}
    return write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "bench", "definition": "api.yaml", "stages": [{"name": "prod"}]}],
        "functions": {
            "Hello": {"handler": "app.hello", "code": "src", "min_workers": 2,
                      "max_workers": 2, **placed},
            "Cold": {"handler": "app.hello", "code": "src", "min_workers": 0,
                     "max_workers": 1, "idle_timeout": 1, **placed},
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


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (a gateway's workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _cpu_sample(pid: int) -> tuple[int, int]:
    """(process, children) CPU nanoseconds so far."""
    return _cpu_ns(pid), sum(_cpu_ns(c) for c in _children(pid))


def unpin_children(pid: int) -> list[int]:
    """Let ``pid``'s child processes (the workers) run on every core."""
    kids = _children(pid)
    for kid in kids:
        subprocess.run(["taskset", "-a", "-p", "-c", f"0-{(os.cpu_count() or 1) - 1}",
                        str(kid)], check=True, capture_output=True)
    return kids


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
    # The CPUs wrk and the workers may share: every core but the servers' own.
    others = sorted(set(range(os.cpu_count() or 1)) - {int(c) for c in SERVER_CPU.split(",")})
    (root / "placed").mkdir()
    placed_gateway = Live("gateway-placed", twistd_argv(gateway_config(
        root / "placed", others or None)), GATEWAY_PORT_RE).start()
    with socket.socket() as s:  # chalice local needs a port number of its own
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chalice_server = Live("chalice", [chalice, "local", "--no-autoreload", "--port",
                                      str(port)], r"Serving on http://127\.0\.0\.1:(\d+)",
                          cwd=project).start()
    results: dict[str, Any] = {"duration_s": DURATION, "rounds": ROUNDS,
                               "connections": CONNECTIONS, "runs": []}
    servers = {"mock": gateway, "lambda": gateway, "chalice": chalice_server}
    try:
        urls = {"mock": f"http://127.0.0.1:{gateway.port}/prod/mock",
                "lambda": f"http://127.0.0.1:{gateway.port}/prod/hello",
                "chalice": f"http://127.0.0.1:{chalice_server.port}/hello"}
        for url in urls.values():  # warm up every server and check it answers
            wrk(url, 2, CONNECTIONS)
        order = list(urls)
        for config in CONFIGS:
            if config == "workers unpinned":
                assert gateway.proc is not None
                results["unpinned_workers"] = unpin_children(gateway.proc.pid)
            if config == "workers placed":
                results["placed_workers_cpus"] = others
                servers = {**servers, "mock": placed_gateway, "lambda": placed_gateway}
                for name in ("mock", "lambda"):
                    urls[name] = urls[name].replace(f":{gateway.port}/",
                                                    f":{placed_gateway.port}/")
                    wrk(urls[name], 2, CONNECTIONS)
            for rnd in range(ROUNDS):
                for name in order[rnd % 3:] + order[:rnd % 3]:
                    proc = servers[name].proc
                    assert proc is not None
                    before = _cpu_sample(proc.pid)
                    load = wrk(urls[name], DURATION, CONNECTIONS)
                    after = _cpu_sample(proc.pid)
                    done = max(load.requests, 1)
                    run: dict[str, Any] = {
                        "config": config, "round": rnd, "server": name, "rps": load.rps,
                        "p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "errors": load.errors,
                        "non_2xx": load.non_2xx,
                        "server_cpu_us_per_req": (after[0] - before[0]) / done / 1e3,
                        "workers_cpu_us_per_req": (after[1] - before[1]) / done / 1e3,
                        "server_cores_busy": (after[0] - before[0]) / DURATION / 1e9}
                    if name != "chalice" and config == "pinned":
                        one = wrk(urls[name], DURATION, 1)
                        run.update(p50_1conn_ms=one.p50_ms, p99_1conn_ms=one.p99_ms)
                    if name == "chalice":
                        one = wrk(urls[name], DURATION, 1)
                        run.update(rps_1conn=one.rps, p50_1conn_ms=one.p50_ms)
                    results["runs"].append(run)
                    print(json.dumps(run), flush=True)
        results["direct_us_per_call"] = direct_calls(root)
        results["cold_ms"] = cold_starts(gateway.port)
    finally:
        gateway.stop()
        placed_gateway.stop()
        chalice_server.stop()

    def med(server: str, key: str, config: str = "pinned") -> float:
        return statistics.median(r[key] for r in results["runs"]
                                 if r["server"] == server and r["config"] == config)

    summary: dict[str, Any] = {}
    for config in CONFIGS:
        part = {
            "mock_rps": med("mock", "rps", config), "lambda_rps": med("lambda", "rps", config),
            "chalice_rps": med("chalice", "rps", config),
            "chalice_rps_1conn": med("chalice", "rps_1conn", config),
            "chalice_cores_busy": med("chalice", "server_cores_busy", config),
            "mock_cpu_us_per_req": med("mock", "server_cpu_us_per_req", config),
            "lambda_gateway_cpu_us_per_req": med("lambda", "server_cpu_us_per_req", config),
            "lambda_workers_cpu_us_per_req": med("lambda", "workers_cpu_us_per_req", config),
            "chalice_cpu_us_per_req": med("chalice", "server_cpu_us_per_req", config),
        }
        part["lambda_vs_mock"] = part["lambda_rps"] / part["mock_rps"]
        part["lambda_vs_chalice"] = part["lambda_rps"] / part["chalice_rps"]
        summary[config] = part
    pinned = summary["pinned"]
    pinned["mock_p50_ms"] = med("mock", "p50_1conn_ms")
    pinned["lambda_p50_ms"] = med("lambda", "p50_1conn_ms")
    pinned["warm_over_mock_p50_ms"] = pinned["lambda_p50_ms"] - pinned["mock_p50_ms"]
    summary["cold_median_ms"] = statistics.median(results["cold_ms"])
    results["summary"] = summary
    (OUT / "lambda-results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"direct handler call: {results['direct_us_per_call']:.2f} us")
    ok = {"warm p50 <= MOCK + 1 ms": pinned["warm_over_mock_p50_ms"] <= 1.0,
          "cold start <= 300 ms": summary["cold_median_ms"] <= 300}
    for config in CONFIGS:
        ok[f"[{config}] lambda >= 0.5 x MOCK rps"] = summary[config]["lambda_vs_mock"] >= 0.5
        ok[f"[{config}] lambda >= 20 x chalice local rps"] = \
            summary[config]["lambda_vs_chalice"] >= 20
    for what, met in ok.items():
        print(f"{what}: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
