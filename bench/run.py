"""twistgw benchmark harness (run it through ``bench/run``).

Parts (default ``all`` = ``http`` then ``lookup``)::

    bench/run [all|http|lookup|profile]

``http``
    On loopback, with every server pinned to core 0 (``taskset -c 0``) and wrk to core 1:
    a bare twisted.web hello-world (bench/hello_twisted.py) and the gateway
    (``twistd -n apigw``) serving a MOCK route, once with the access log on (as in
    production) and once with ``access_log: false``.  Each is driven with
    ``wrk -t1 -c50 -d${DURATION}s --latency`` (keep-alive) after a warm-up; prints
    requests/s, p50/p99 and the gateway/bare ratios against the targets.
``lookup``
    ``RouteTable.match`` time for an API of 10 routes vs one of 5,000 routes, over the
    same fixed request paths (timeit, best of several repeats).
``profile``
    Where a MOCK request's time goes: the full HTTP stack driven in memory (no sockets,
    no reactor) for the bare Site and the gateway's Site, with and without cProfile;
    then the live gateway under wrk with ``twistd --profile``.  Not part of ``all``.

Environment: ``DURATION`` (seconds per measurement, default 10), ``WARMUP`` (default 2),
``ROUNDS`` (alternate the servers this many times and report medians, default 3),
``CONNECTIONS`` (default 50), ``SERVER_CPU`` / ``CLIENT_CPU`` (default 0 / 1).
Servers' logs, profiles and ``results.json`` go to bench/out/.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import platform
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import timeit
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
CONFIGS = BENCH / "configs"

DURATION = int(os.environ.get("DURATION", "10"))
WARMUP = int(os.environ.get("WARMUP", "2"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "50"))
SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")
#: ``BACKEND_HEADS=vary``: the proxy benchmark's nginx backend adds an ``X-Request-Id``
#: header with a fresh value to every answer, so no two answer heads are the same (the
#: gateway's fast client keeps the parse of a head it has seen before; a fixed backend
#: answer always hits that table, a real backend's often does not).
BACKEND_HEADS = os.environ.get("BACKEND_HEADS", "fixed")
START_TIMEOUT = 30.0

#: Targets of issue 2 ("Benchmark").
TARGET_RPS_RATIO = 0.70
TARGET_P99_MS = 10.0
TARGET_LOOKUP_RATIO = 2.0


def say(text: str = "") -> None:
    print(text, flush=True)


# -- machine ------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import twisted

    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        wrk = "?"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = "?"
    return {
        "installed": installed_vs_tree(),
        "fingerprint": installed_fingerprint(),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "wrk": wrk,
        "kernel": platform.release(),
        "commit": commit,
    }


def installed_vs_tree() -> str:
    """Whether the measured (installed) twistgw is the source in this tree."""
    import importlib.util

    differing: list[str] = []
    for package, source in (("twistgw", ROOT / "twistgw"),
                            ("twistgw_mock", ROOT / "plugins" / "twistgw_mock"),
                            ("twistgw_mapping", ROOT / "plugins" / "twistgw_mapping"),
                            ("twistgw_http", ROOT / "plugins" / "twistgw_http")):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            differing.append(f"{package} (not installed)")
            continue
        installed = Path(next(iter(spec.submodule_search_locations)))
        if installed.resolve() == source.resolve():
            return "editable install of this tree (bench/README.md asks for a regular one)"
        for src in sorted(source.glob("*.py")):
            inst = installed / src.name
            if not inst.exists() or inst.read_bytes() != src.read_bytes():
                differing.append(f"{package}/{src.name}")
    try:
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "twistgw", "plugins"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        dirty = ""
    tree = "the working tree (with uncommitted changes)" if dirty else "the commit"
    if differing:
        return (f"installed twistgw DIFFERS from the tree ({', '.join(differing[:5])}); "
                "run pip install --force-reinstall --no-deps . first")
    return f"installed twistgw = {tree}"


def installed_fingerprint() -> str:
    """A hash of the installed twistgw and shipped plugins (to detect a reinstall mid-run)."""
    import hashlib
    import importlib.util

    digest = hashlib.sha256()
    for package in ("twistgw", "twistgw_mock", "twistgw_mapping", "twistgw_http"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for path in sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# -- servers ------------------------------------------------------------------------------

_RUNNING: list[Server] = []


class Server:
    """A server subprocess pinned to a core, its log in bench/out, stopped by pid."""

    def __init__(self, name: str, argv: Sequence[str], port_re: str, path: str,
                 expect: bytes, cpu: str | None = None, port: int = 0) -> None:
        self.name = name
        self.argv = list(argv)
        self.port_re = re.compile(port_re)
        self.path = path
        self.expect = expect
        self.cpu = cpu if cpu is not None else SERVER_CPU
        #: A port known in advance (nginx): wait for it to accept instead of a log line.
        self.fixed_port = port
        self.log_path = OUT / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> Server:
        with open(self.log_path, "wb") as log:
            # A session of its own: a Ctrl-C in the terminal reaches only bench/run,
            # which then stops the server itself (and waits for it).
            self.proc = subprocess.Popen(
                ["taskset", "-c", self.cpu, *self.argv], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=OUT,
                start_new_session=True)
        _RUNNING.append(self)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.fixed_port:
                if _accepts(self.fixed_port):
                    self.port = self.fixed_port
                    break
            else:
                m = self.port_re.search(self.log_path.read_text(errors="replace"))
                if m:
                    self.port = int(m.group(1))
                    break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log_path}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{self.name} did not start within {START_TIMEOUT:.0f}s; "
                               f"see {self.log_path}")
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            body = resp.read()
            if resp.status != 200 or body != self.expect:
                raise RuntimeError(f"{self.name}: GET {self.url} gave {resp.status} {body!r}")
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self in _RUNNING:
            _RUNNING.remove(self)
        return proc.returncode


def _accepts(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop_all() -> None:
    for server in list(reversed(_RUNNING)):
        try:
            server.stop()
        except Exception as e:
            say(f"warning: could not stop {server.name}: {e}")


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def twistd_argv(config: Path, *extra: str) -> list[str]:
    """``twistd -n apigw --config CONFIG`` from the interpreter running this script."""
    twistd = Path(sys.executable).parent / "twistd"
    head = [str(twistd)] if twistd.exists() else [
        sys.executable, "-c", "import sys; from twisted.scripts.twistd import run;"
        " sys.argv[0] = 'twistd'; run()"]
    return [*head, "-n", "--pidfile=", *extra, "apigw", "--config", str(config)]


MOCK_BODY = b'{"message": "hello, world"}'
GATEWAY_PORT_RE = r"serving http://127\.0\.0\.1:(\d+)/"


def bare_server() -> Server:
    return Server("bare", [sys.executable, str(BENCH / "hello_twisted.py"), "0"],
                  r"listening on 127\.0\.0\.1:(\d+)", "/", MOCK_BODY)


def gateway_server(name: str, config: str, *extra: str) -> Server:
    return Server(name, twistd_argv(CONFIGS / config, *extra), GATEWAY_PORT_RE,
                  "/prod/mock", MOCK_BODY)


# -- wrk ----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    non_2xx: int


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    total = re.search(r"(\d+) requests in", text)
    if not (rps and p50 and p99 and total):
        raise ValueError(f"unparsable wrk output:\n{text}")
    errors = sum(int(n) for n in re.findall(
        r"(?:connect|read|write|timeout) (\d+)", text))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(rps=float(rps.group(1)), p50_ms=_ms(p50.group(1)),
                     p99_ms=_ms(p99.group(1)), requests=int(total.group(1)),
                     errors=errors, non_2xx=int(non_2xx.group(1)) if non_2xx else 0)


def wrk(url: str, seconds: int, log_name: str | None = None, extra: Sequence[str] = ()
        ) -> WrkResult:
    """``wrk`` against ``url``; ``extra`` arguments (``-H 'Connection: close'``) go before it."""
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s",
            "--latency", *extra, url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    if log_name:
        (OUT / log_name).write_text(" ".join(argv) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)


def measure(server: Server, rnd: int, extra: Sequence[str] = ()) -> WrkResult:
    if WARMUP > 0:
        wrk(server.url, WARMUP, extra=extra)
    return wrk(server.url, DURATION, f"wrk-{server.name}-{rnd}.txt", extra)


def median_result(results: list[WrkResult]) -> WrkResult:
    if len(results) == 1:
        return results[0]
    return WrkResult(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        non_2xx=sum(r.non_2xx for r in results),
    )


def mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run_http() -> dict[str, Any]:
    (OUT / "access.log").unlink(missing_ok=True)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/run http needs {tool} on PATH")
    servers = [
        bare_server(),
        gateway_server("gateway", "mock.yaml"),
        gateway_server("gateway-nolog", "mock-nolog.yaml"),
        gateway_server("gateway-logfile", "mock-logfile.yaml"),
    ]
    labels = {
        "bare": "bare twisted.web hello-world",
        "gateway": "gateway MOCK, access log on",
        "gateway-nolog": "gateway MOCK, access_log: false",
        "gateway-logfile": "gateway MOCK, access log to its own file",
    }
    say(f"== http: wrk -t1 -c{CONNECTIONS} -d{DURATION}s --latency (keep-alive), "
        f"warm-up {WARMUP}s, {ROUNDS} round(s); servers on cpu {SERVER_CPU}, "
        f"wrk on cpu {CLIENT_CPU}")
    for s in servers:
        s.start()
        say(f"   started {s.name:14} pid {s.proc.pid if s.proc else '?'} {s.url}")
    per: dict[str, list[WrkResult]] = {s.name: [] for s in servers}
    for rnd in range(ROUNDS):
        # Rotate the order so no server always runs first (or right after another).
        for s in servers[rnd % len(servers):] + servers[:rnd % len(servers)]:
            r = measure(s, rnd)
            per[s.name].append(r)
            say(f"   round {rnd + 1} {s.name:14} {r.rps:10.0f} req/s  p50 {r.p50_ms:6.2f} ms"
                f"  p99 {r.p99_ms:6.2f} ms  errors {r.errors}  non-2xx {r.non_2xx}")
    for s in servers:
        s.stop()
    res = {name: median_result(rs) for name, rs in per.items()}
    bare = res["bare"]
    say()
    say(f"medians over {ROUNDS} round(s); ratios are medians of per-round ratios")
    say("| server | req/s | p50 ms | p99 ms | requests | socket errors | non-2xx |")
    say("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in res.items():
        say(f"| {labels[name]} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.requests} | {r.errors} | {r.non_2xx} |")
    say()
    say("| check | value | target | |")
    say("|---|---:|---:|---|")
    checks: dict[str, Any] = {}
    for name in ("gateway", "gateway-nolog", "gateway-logfile"):
        r = res[name]
        # The median of per-round ratios: each round's runs are close in time, so a
        # noisy neighbour on the machine moves both sides of a ratio together.
        ratio = statistics.median(g.rps / b.rps for g, b in zip(per[name], per["bare"],
                                                                  strict=True))
        ok_ratio = ratio >= TARGET_RPS_RATIO
        ok_p99 = r.p99_ms <= TARGET_P99_MS
        clean = r.errors == 0 and r.non_2xx == 0
        say(f"| {labels[name]}: req/s vs bare | {ratio:.2f} x | >= {TARGET_RPS_RATIO:.2f} x"
            f" | {mark(ok_ratio)} |")
        say(f"| {labels[name]}: p99 | {r.p99_ms:.2f} ms | <= {TARGET_P99_MS:.0f} ms"
            f" | {mark(ok_p99)} |")
        if not clean:
            say(f"| {labels[name]}: errors | {r.errors + r.non_2xx} | 0 | NOT met |")
        checks[name] = {"rps_ratio": ratio, "rps_ratio_met": ok_ratio, "p99_met": ok_p99,
                        "clean": clean}
    say(f"| bare twisted.web p99 (for reference) | {bare.p99_ms:.2f} ms | | |")
    # The server saturates its one core, so 1/rps is its CPU time per request.
    bare_us = 1e6 / bare.rps
    budget = bare_us / TARGET_RPS_RATIO - bare_us
    say()
    say(f"core-0 time per request: bare {bare_us:.1f} us; at {TARGET_RPS_RATIO:.2f} x the "
        f"gateway may add at most {budget:.1f} us")
    for name in ("gateway", "gateway-nolog", "gateway-logfile"):
        added = 1e6 / res[name].rps - bare_us
        say(f"   {labels[name]}: {1e6 / res[name].rps:.1f} us, adds {added:.1f} us "
            f"({added / budget:.1f} x the budget)")
    return {"results": {k: asdict(v) for k, v in res.items()},
            "rounds": {k: [asdict(r) for r in v] for k, v in per.items()},
            "checks": checks}


# -- route lookup -------------------------------------------------------------------------

#: Routes of one REST resource family; ``{i}`` is the family number.  Ten per family.
_FAMILY = (
    ("GET", "/v1/resource{i}"),
    ("POST", "/v1/resource{i}"),
    ("GET", "/v1/resource{i}/{{id}}"),
    ("PUT", "/v1/resource{i}/{{id}}"),
    ("DELETE", "/v1/resource{i}/{{id}}"),
    ("GET", "/v1/resource{i}/{{id}}/sub"),
    ("GET", "/v1/resource{i}/{{id}}/sub/{{subId}}"),
    ("ANY", "/v1/resource{i}/{{id}}/sub/{{subId}}/actions/{{proxy+}}"),
    ("GET", "/v2/accounts/{{accountId}}/resource{i}/settings"),
    ("ANY", "/v1/resource{i}/files/{{proxy+}}"),
)

#: The fixed request paths timed against both tables (all but the misses hit family 0
#: and family 0's routes exist in both tables, so both tables do the same matching work).
LOOKUP_REQUESTS = (
    ("GET", "/v1/resource0"),
    ("POST", "/v1/resource0/"),
    ("GET", "/v1/resource0/8f3a2c"),
    ("DELETE", "/v1/resource0/8f3a2c"),
    ("GET", "/v1/resource0/8f3a2c/sub"),
    ("GET", "/v1/resource0/8f3a2c/sub/42"),
    ("POST", "/v1/resource0/8f3a2c/sub/42/actions/run/now"),
    ("GET", "/v2/accounts/123456789012/resource0/settings"),
    ("GET", "/v1/resource0/files/a/b/c/report.pdf"),
    ("GET", "/v1/unknown/path"),  # miss: 403 Missing Authentication Token
    ("PATCH", "/v1/resource0"),  # method miss
)


def lookup_routes(n: int) -> list[tuple[str, str, str]]:
    """``n`` realistic routes (n a multiple of 10): literals, {params}, {proxy+}, ANY."""
    out: list[tuple[str, str, str]] = []
    i = 0
    while len(out) < n:
        for method, template in _FAMILY:
            path = template.format(i=i)
            out.append((method, path, f"{method} {path}"))
        i += 1
    return out[:n]


def time_lookup(table: Any, requests: Sequence[tuple[str, str]], number: int,
                repeat: int) -> float:
    """Best per-lookup time in nanoseconds."""
    match = table.match

    def loop() -> None:
        for method, path in requests:
            match(method, path)

    best = min(timeit.repeat(loop, number=number, repeat=repeat))
    return best / (number * len(requests)) * 1e9


def run_lookup() -> dict[str, Any]:
    from twistgw.routing import RouteTable

    number, repeat = 20000, 7
    say(f"== lookup: RouteTable.match over {len(LOOKUP_REQUESTS)} fixed request paths, "
        f"timeit number={number} x {len(LOOKUP_REQUESTS)} lookups, best of {repeat}")
    tables = {}
    for n in (10, 5000):
        started = time.perf_counter()
        tables[n] = RouteTable(lookup_routes(n))
        build_ms = (time.perf_counter() - started) * 1000
        say(f"   {n:5d} routes: compiled in {build_ms:.1f} ms")
    # Both tables must answer the fixed requests identically.
    for method, path in LOOKUP_REQUESTS:
        a, b = tables[10].match(method, path), tables[5000].match(method, path)
        got_a = (a.route, dict(a.params)) if a else None
        got_b = (b.route, dict(b.params)) if b else None
        if got_a != got_b:
            raise RuntimeError(f"{method} {path}: 10 routes -> {got_a}, 5000 -> {got_b}")
    far = tuple((m, p.replace("resource0", "resource499")) for m, p in LOOKUP_REQUESTS)
    ns = {n: time_lookup(t, LOOKUP_REQUESTS, number, repeat) for n, t in tables.items()}
    ns_far = time_lookup(tables[5000], far, number, repeat)
    ratio = ns[5000] / ns[10]
    say()
    say("| route table | ns per match() |")
    say("|---|---:|")
    say(f"| 10 routes | {ns[10]:.0f} |")
    say(f"| 5,000 routes | {ns[5000]:.0f} |")
    say(f"| 5,000 routes, same paths into the last-added family | {ns_far:.0f} |")
    say()
    say("| check | value | target | |")
    say("|---|---:|---:|---|")
    say(f"| lookup 5,000 / 10 routes | {ratio:.2f} x | <= {TARGET_LOOKUP_RATIO:.0f} x | "
        f"{mark(ratio <= TARGET_LOOKUP_RATIO)} |")
    return {"ns_10": ns[10], "ns_5000": ns[5000], "ns_5000_far": ns_far, "ratio": ratio,
            "met": ratio <= TARGET_LOOKUP_RATIO}


# -- profile ------------------------------------------------------------------------------


def _in_memory_client(site: Any, request: bytes) -> Callable[[], bytes]:
    """One keep-alive connection of ``site`` over a StringTransport; returns send()."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    proto = site.buildProtocol(transport.getPeer())
    proto.makeConnection(transport)

    def send() -> bytes:
        proto.dataReceived(request)
        out: bytes = transport.value()
        transport.clear()
        return out

    return send


def in_memory_sites() -> dict[str, Callable[[], bytes]]:
    """The bare Site and the gateway's Sites, each behind an in-memory connection."""
    sys.path.insert(0, str(BENCH))
    from hello_twisted import Hello, QuietSite  # type: ignore[import-not-found]

    from twistgw.config import load_config
    from twistgw.gateway import Gateway

    req = (b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n"
           b"Accept: */*\r\n\r\n")
    from twistgw.http import GatewaySite, HttpRequest
    from twistgw.limits import Limits

    def hello(request: HttpRequest) -> None:
        request.respond(200, b"Content-Type: application/json\r\n", MOCK_BODY)

    clients = {
        "bare": _in_memory_client(QuietSite(Hello()), req % b"/"),
        # The gateway's HTTP layer (twistgw.http) answering the same body.
        "hardened Site + hello": _in_memory_client(GatewaySite(hello, Limits()),
                                                   req % b"/"),
    }
    for name, config in (("gateway", "mock.yaml"), ("gateway-nolog", "mock-nolog.yaml"),
                         ("gateway-logfile", "mock-logfile.yaml")):
        gw = Gateway(load_config(CONFIGS / config))
        gw.ready = True
        clients[name] = _in_memory_client(gw.sites["public"], req % b"/prod/mock")
    for name, send in clients.items():
        out = send()
        if not out.startswith(b"HTTP/1.1 200 ") or not out.endswith(MOCK_BODY):
            raise RuntimeError(f"in-memory {name} answered {out!r}")
    return clients


def pipeline_only(config: str) -> Callable[[], object]:
    """``pipeline.handle`` + ``finished`` for one prebuilt request: no HTTP at all."""
    from twistgw.testing import GatewayHarness, make_inbound

    harness = GatewayHarness(CONFIGS / config)
    gateway = harness.gateway
    inbound = make_inbound("GET", "/prod/mock", listener=harness.default_listener,
                           headers={"Host": "127.0.0.1:8080", "User-Agent": "bench",
                                    "Accept": "*/*"})
    pipeline, deployment = gateway.pipeline, gateway.deployment
    exchange = pipeline.handle(deployment, inbound)
    if getattr(exchange, "response", None) is None or exchange.response.body != MOCK_BODY:
        raise RuntimeError(f"pipeline answered {exchange!r}")

    def handle() -> object:
        ex = pipeline.handle(deployment, inbound)
        pipeline.finished(ex)
        return ex

    return handle


def breakdown(send: Callable[[], bytes], n: int = 50000) -> dict[str, float]:
    """Microseconds per request spent in the gateway's glue and pipeline, measured in situ.

    Wraps a few twistgw functions with perf_counter accumulators (in this process only)
    while ``send`` drives the in-memory connection: unlike a tight loop around
    ``pipeline.handle``, this sees the pipeline as it runs between the HTTP layer's own work
    (colder caches), and unlike cProfile it does not inflate call-heavy code.  Each wrapper
    adds about 0.1-0.3 us.
    """
    import twistgw.server as server_mod
    from twistgw.pipeline import Pipeline

    acc: dict[str, float] = {}
    targets = [
        (server_mod.GatewayHandler, "__call__", "GatewayHandler (all of the below)"),
        (server_mod, "inbound_from_http", "  inbound_from_http"),
        (Pipeline, "handle", "  Pipeline.handle (resolve, route, hooks, finalize)"),
        (server_mod.GatewayHandler, "_write", "  GatewayHandler._write (incl. finished)"),
        (Pipeline, "finished", "    Pipeline.finished (request_finished: access log)"),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]

    def wrap(func: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                acc[label] = acc.get(label, 0.0) + time.perf_counter() - started
        return timed

    try:
        for (owner, name, label), (_, _, func) in zip(targets, saved, strict=True):
            setattr(owner, name, wrap(func, label))
        for _ in range(2000):
            send()
        acc.clear()
        started = time.perf_counter()
        for _ in range(n):
            send()
        total = time.perf_counter() - started
    finally:
        for owner, name, func in saved:
            setattr(owner, name, func)
    out = {"whole request (HTTP parse to response bytes)": total}
    out.update({label: acc.get(label, 0.0) for _, _, label in targets})
    return {k: v / n * 1e6 for k, v in out.items()}


@contextmanager
def quiet_twisted_log() -> Iterator[None]:
    """Send twisted.logger events (the access log) to a file, as twistd would."""
    from twisted.logger import globalLogBeginner, textFileLogObserver

    with open(OUT / "profile-inmemory-log.txt", "w") as f:
        observer = textFileLogObserver(f)
        globalLogBeginner.beginLoggingTo([observer], discardBuffer=True,
                                         redirectStandardIO=False)
        try:
            yield
        finally:
            from twisted.logger import globalLogPublisher

            globalLogPublisher.removeObserver(observer)


def _top(stats: pstats.Stats, total: float, key: int, limit: int,
         only: Callable[[tuple[str, int, str]], bool] = lambda f: True) -> list[str]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(((func, v) for func, v in raw.items() if only(func)),
                  key=lambda item: item[1][key], reverse=True)[:limit]
    lines = []
    for (file, line, name), (_cc, nc, tt, ct, _callers) in rows:
        where = file
        for marker in ("site-packages/", "lib/python3.11/"):
            if marker in file:
                where = file.split(marker, 1)[1]
        lines.append(f"| {where}:{line} {name} | {nc} | {100 * tt / total:.1f} % | "
                     f"{100 * ct / total:.1f} % |")
    return lines


def run_profile() -> dict[str, Any]:
    results: dict[str, Any] = {}
    (OUT / "access.log").unlink(missing_ok=True)
    say("== profile 1: full HTTP stack in memory (StringTransport, one keep-alive "
        "connection, no reactor), same request bytes")
    with quiet_twisted_log():
        clients = in_memory_sites()
        n = 20000
        us: dict[str, float] = {}
        for name, send in clients.items():
            for _ in range(2000):
                send()
            best = min(timeit.repeat(send, number=n, repeat=5))
            us[name] = best / n * 1e6
        for name, config in (("pipeline only (access log on)", "mock.yaml"),
                             ("pipeline only (access_log: false)", "mock-nolog.yaml")):
            handle = pipeline_only(config)
            for _ in range(2000):
                handle()
            us[name] = min(timeit.repeat(handle, number=n, repeat=5)) / n * 1e6
        say("| server (in memory) | us per request | added over bare | bare/this |")
        say("|---|---:|---:|---:|")
        for name, v in us.items():
            if name.startswith("pipeline only"):
                say(f"| {name}: no HTTP, one prebuilt request in a tight loop | {v:.1f} | | |")
            else:
                say(f"| {name} | {v:.1f} | {v - us['bare']:.1f} | {us['bare'] / v:.2f} |")
        results["us_per_request"] = us
        say()
        say("-- where the gateway's time goes, in situ (perf_counter wrappers, no profiler)")
        say("| us per request | gateway (log on) | gateway-nolog |")
        say("|---|---:|---:|")
        parts = {name: breakdown(clients[name]) for name in ("gateway", "gateway-nolog")}
        for label in parts["gateway"]:
            say(f"| {label} | {parts['gateway'][label]:.1f} | "
                f"{parts['gateway-nolog'][label]:.1f} |")
        say(f"| (bare twisted.web, whole request) | {us['bare']:.1f} | {us['bare']:.1f} |")
        results["breakdown"] = parts
        for name in ("bare", "gateway", "gateway-nolog"):
            send = clients[name]
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                send()
            prof.disable()
            path = OUT / f"profile-inmemory-{name}.prof"
            prof.dump_stats(path)
            stats = pstats.Stats(str(path), stream=io.StringIO())
            total = stats.total_tt  # type: ignore[attr-defined]
            say()
            say(f"-- {name}: {n} requests under cProfile, {total / n * 1e6:.1f} us/request "
                f"profiled; {path.relative_to(ROOT)}")
            say("| function | calls | tottime % | cumtime % |")
            say("|---|---:|---:|---:|")
            for line in _top(stats, total, 2, 25):
                say(line)
            if name != "bare":
                say()
                say(f"-- {name}: twistgw functions by cumulative time")
                say("| function | calls | tottime % | cumtime % |")
                say("|---|---:|---:|---:|")
                for line in _top(stats, total, 3, 25,
                                 lambda f: "twistgw" in f[0] or "attr" in f[0]):
                    say(line)
    if shutil.which("wrk") is None:
        return results
    say()
    say(f"== profile 2: live gateway (access log on) under twistd --profile --profiler=cprofile,"
        f" wrk -c{CONNECTIONS} for {DURATION}s")
    prof_path = OUT / "profile-live-gateway.prof"
    if prof_path.exists():
        prof_path.unlink()
    server = gateway_server("gateway-profiled", "mock.yaml", f"--profile={prof_path}",
                            "--profiler=cprofile", "--savestats")
    try:
        server.start()
        r = wrk(server.url, DURATION, "wrk-gateway-profiled.txt")
        say(f"   under the profiler: {r.rps:.0f} req/s, p99 {r.p99_ms:.2f} ms")
    finally:
        server.stop(timeout=60)
    deadline = time.monotonic() + 30
    while not prof_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if prof_path.exists():
        stats = pstats.Stats(str(prof_path), stream=io.StringIO())
        total = stats.total_tt  # type: ignore[attr-defined]
        say(f"-- live: {prof_path.relative_to(ROOT)}, {total:.1f} s profiled")
        say("| function | calls | tottime % | cumtime % |")
        say("|---|---:|---:|---:|")
        for line in _top(stats, total, 2, 25):
            say(line)
        say()
        say("| function (cumulative) | calls | tottime % | cumtime % |")
        say("|---|---:|---:|---:|")
        for line in _top(stats, total, 3, 30):
            say(line)
    else:
        say("   twistd wrote no profile (see bench/out/gateway-profiled.log)")
    return results


# -- proxy (issue 4) ----------------------------------------------------------------------

#: Targets of issue 4 ("Benchmark (bench/)").
TARGET_PROXY_VS_TREQ = 2.5
TARGET_PROXY_VS_BARE = 0.45
TARGET_PROXY_P99_MS = 15.0
TARGET_RSS_DRIFT = 0.10
RSS_WINDOW_S = 60

PROXY_PATH = "/hello"

_NGINX_COMMON = """\
# Generated by bench/run proxy; do not edit.
daemon off;
master_process off;
worker_processes 1;
pid {out}/{name}.pid;
error_log {out}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{body}
}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_server(name: str, body: str, port: int, cpu: str, path: str = PROXY_PATH
                 ) -> Server:
    """nginx, one process (``master_process off``), config and pid file in bench/out."""
    tmp = OUT / f"{name}-tmp"
    tmp.mkdir(exist_ok=True)
    conf = OUT / f"{name}.conf"
    conf.write_text(_NGINX_COMMON.format(out=OUT, name=name, tmp=tmp, body=body))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return Server(name, [nginx, "-p", str(OUT), "-e", str(OUT / f"{name}-error.log"),
                         "-c", str(conf)], "", path, MOCK_BODY, cpu=cpu, port=port)


def nginx_backend(port: int) -> Server:
    if BACKEND_HEADS not in ("fixed", "vary"):
        raise SystemExit(f"BACKEND_HEADS must be fixed or vary, not {BACKEND_HEADS!r}")
    vary = ("\n            add_header X-Request-Id $request_id;"
            if BACKEND_HEADS == "vary" else "")
    body = f"""\
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            default_type application/json;{vary}
            return 200 '{MOCK_BODY.decode()}';
        }}
    }}"""
    return nginx_server("nginx-backend", body, port, CLIENT_CPU)


def nginx_proxy(port: int, backend_port: int) -> Server:
    body = f"""\
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return nginx_server("nginx-proxy", body, port, SERVER_CPU)


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proxy_gateway_config(backend_port: int, client: str = "fast") -> Path:
    """bench/configs/proxy.yaml with the backend's address and the outbound client
    (``fast`` or ``agent``), written to bench/out."""
    text = (CONFIGS / "proxy.yaml").read_text().replace(
        "@BACKEND@", f"127.0.0.1:{backend_port}").replace("@CLIENT@", client)
    path = OUT / ("proxy.yaml" if client == "fast" else f"proxy-{client}.yaml")
    path.write_text(text)
    return path


def proxy_gateway(config: Path, name: str = "proxy-gateway", *extra: str) -> Server:
    return Server(name, twistd_argv(config, *extra), GATEWAY_PORT_RE, "/prod" + PROXY_PATH,
                  MOCK_BODY)


def run_proxy() -> dict[str, Any]:
    for tool in ("wrk", "taskset", "nginx"):
        if shutil.which(tool) is None and not (tool == "nginx"
                                               and Path("/usr/sbin/nginx").exists()):
            raise SystemExit(f"bench/run proxy needs {tool} on PATH")
    (OUT / "proxy-access.log").unlink(missing_ok=True)
    backend_port = free_port()
    backend = nginx_backend(backend_port)
    backend_url = f"http://127.0.0.1:{backend_port}"
    config = proxy_gateway_config(backend_port)
    agent_config = proxy_gateway_config(backend_port, "agent")
    servers = [
        Server("proxy-bare", [sys.executable, str(BENCH / "hello_twisted.py"), "0"],
               r"listening on 127\.0\.0\.1:(\d+)", PROXY_PATH, MOCK_BODY),
        nginx_proxy(free_port(), backend_port),
        Server("proxy-treq", [sys.executable, str(BENCH / "naive_treq_proxy.py"),
                              backend_url, "0"],
               r"listening on 127\.0\.0\.1:(\d+)", PROXY_PATH, MOCK_BODY),
        proxy_gateway(agent_config, "proxy-gateway-agent"),
        proxy_gateway(config),
    ]
    labels = {
        "proxy-bare": "(a) bare twisted.web hello-world (not proxying)",
        "nginx-proxy": "(b) nginx proxy_pass, keepalive upstream",
        "proxy-treq": "(c) naive treq proxy (bench/naive_treq_proxy.py)",
        "proxy-gateway-agent": "(d0) gateway HTTP_PROXY, client: agent (Twisted's Agent, "
                               "before)",
        "proxy-gateway": "(d) gateway HTTP_PROXY, client: fast (the default), access log "
                         "to its own file",
    }
    say(f"== proxy: wrk -t1 -c{CONNECTIONS} -d{DURATION}s --latency (keep-alive), "
        f"warm-up {WARMUP}s, {ROUNDS} round(s); servers under test on cpu {SERVER_CPU}, "
        f"wrk and the nginx backend on cpu {CLIENT_CPU}; backend answer heads: "
        f"{BACKEND_HEADS}")
    backend.start()
    say(f"   started {backend.name:14} pid {backend.proc.pid if backend.proc else '?'} "
        f"{backend.url} (cpu {CLIENT_CPU}, one process)")
    for s in servers:
        s.start()
        say(f"   started {s.name:14} pid {s.proc.pid if s.proc else '?'} {s.url}")
    gw = servers[-1]
    assert gw.proc is not None
    gw_pid = gw.proc.pid
    rss_first = vm_rss_kib(gw_pid)
    rss_runs: list[dict[str, Any]] = []
    per: dict[str, list[WrkResult]] = {s.name: [] for s in servers}
    cpu: dict[str, list[float]] = {s.name: [] for s in servers}
    load_before = os.getloadavg()
    for rnd in range(ROUNDS):
        for s in servers[rnd % len(servers):] + servers[:rnd % len(servers)]:
            if WARMUP > 0:
                wrk(s.url, WARMUP)
            before = vm_rss_kib(gw_pid) if s is gw else 0
            assert s.proc is not None
            cpu0, wall0 = cpu_seconds(s.proc.pid), time.monotonic()
            r = wrk(s.url, DURATION, f"wrk-{s.name}-{rnd}.txt")
            busy = (cpu_seconds(s.proc.pid) - cpu0) / (time.monotonic() - wall0)
            cpu[s.name].append(busy)
            if s is gw:
                after = vm_rss_kib(gw_pid)
                rss_runs.append({"round": rnd + 1, "start_kib": before, "end_kib": after,
                                 "drift": (after - before) / before})
            per[s.name].append(r)
            say(f"   round {rnd + 1} {s.name:14} {r.rps:10.0f} req/s  p50 {r.p50_ms:6.2f} ms"
                f"  p99 {r.p99_ms:6.2f} ms  errors {r.errors}  non-2xx {r.non_2xx}"
                f"  server cpu {100 * busy:3.0f} %")
    rss_last = vm_rss_kib(gw_pid)
    load_after = os.getloadavg()
    res = {name: median_result(rs) for name, rs in per.items()}
    say()
    say(f"medians over {ROUNDS} round(s); ratios are medians of per-round ratios")
    say(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(anything above about 2 means other processes shared these 2 cores)")
    say("| server (cpu " + SERVER_CPU + ") | req/s | p50 ms | p99 ms | requests | "
        "socket errors | non-2xx | server cpu % | cpu us/req |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in res.items():
        busy = statistics.median(cpu[name])
        say(f"| {labels[name]} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.requests} | {r.errors} | {r.non_2xx} | {100 * busy:.0f} | "
            f"{1e6 * busy / r.rps:.0f} |")

    def ratio(a: str, b: str) -> float:
        return statistics.median(x.rps / y.rps for x, y in zip(per[a], per[b], strict=True))

    g = res["proxy-gateway"]
    vs_treq = ratio("proxy-gateway", "proxy-treq")
    vs_bare = ratio("proxy-gateway", "proxy-bare")
    worst = max(rss_runs, key=lambda x: abs(x["drift"]))
    ok = {"vs_treq": vs_treq >= TARGET_PROXY_VS_TREQ, "vs_bare": vs_bare >= TARGET_PROXY_VS_BARE,
          "p99": g.p99_ms <= TARGET_PROXY_P99_MS,
          "rss": abs(worst["drift"]) <= TARGET_RSS_DRIFT,
          "clean": g.errors == 0 and g.non_2xx == 0}
    window = (f"{RSS_WINDOW_S} s run" if DURATION >= RSS_WINDOW_S else
              f"{DURATION} s run, SHORTER than the {RSS_WINDOW_S} s of the target")
    say()
    say("| check | value | target | |")
    say("|---|---:|---:|---|")
    say(f"| gateway req/s vs naive treq proxy | {vs_treq:.2f} x | >= {TARGET_PROXY_VS_TREQ} x"
        f" | {mark(ok['vs_treq'])} |")
    say(f"| gateway req/s vs bare twisted.web | {vs_bare:.2f} x | >= {TARGET_PROXY_VS_BARE} x"
        f" | {mark(ok['vs_bare'])} |")
    say(f"| gateway p99 | {g.p99_ms:.2f} ms | <= {TARGET_PROXY_P99_MS:.0f} ms"
        f" | {mark(ok['p99'])} |")
    say(f"| gateway VmRSS drift over one {window} (worst round: {worst['start_kib']} -> "
        f"{worst['end_kib']} KiB) | {100 * worst['drift']:+.1f} % | within "
        f"±{100 * TARGET_RSS_DRIFT:.0f} % | {mark(ok['rss'])} |")
    if not ok["clean"]:
        say(f"| gateway errors | {g.errors + g.non_2xx} | 0 | NOT met |")
    # On a shared machine the servers under test get different shares of their core
    # (column "server cpu %"), which moves req/s ratios; CPU time per request does not
    # depend on the share, so these two lines are the steadier comparison.
    def cpu_ratio(a: str, b: str) -> float:
        return statistics.median(
            (cb / y.rps) / (ca / x.rps) for x, y, ca, cb in
            zip(per[a], per[b], cpu[a], cpu[b], strict=True))

    say(f"| gateway vs naive treq proxy, by CPU time per request | "
        f"{cpu_ratio('proxy-gateway', 'proxy-treq'):.2f} x | (>= {TARGET_PROXY_VS_TREQ} x) |"
        " |")
    say(f"| gateway vs bare twisted.web, by CPU time per request | "
        f"{cpu_ratio('proxy-gateway', 'proxy-bare'):.2f} x | (>= {TARGET_PROXY_VS_BARE} x) |"
        " |")
    say(f"| (for reference) gateway with client: agent vs naive treq, by CPU time | "
        f"{cpu_ratio('proxy-gateway-agent', 'proxy-treq'):.2f} x | | |")
    say(f"| (for reference) nginx proxy vs bare twisted.web | "
        f"{ratio('nginx-proxy', 'proxy-bare'):.2f} x | | |")
    say(f"| (for reference) naive treq vs bare twisted.web | "
        f"{ratio('proxy-treq', 'proxy-bare'):.2f} x | | |")
    say(f"gateway VmRSS: {rss_first} KiB after start-up check, {rss_last} KiB at the end "
        f"({100 * (rss_last - rss_first) / rss_first:+.1f} % over the whole part, warm-ups "
        "and other servers' turns included)")
    out: dict[str, Any] = {
        "backend": backend_url,
        "results": {k: asdict(v) for k, v in res.items()},
        "rounds": {k: [asdict(r) for r in v] for k, v in per.items()},
        "ratios": {"vs_treq": vs_treq, "vs_bare": vs_bare},
        "server_cpu": cpu, "loadavg": [load_before, load_after],
        "rss": {"runs": rss_runs, "first_kib": rss_first, "last_kib": rss_last,
                "window_s": DURATION},
        "checks": ok,
    }
    for s in servers:
        s.stop()
    if not ok["vs_treq"] or os.environ.get("PROXY_PROFILE"):
        out["profile"] = proxy_profile(config)
        if os.environ.get("PROXY_PROFILE"):
            out["profile_agent"] = proxy_profile(agent_config, "agent")
    backend.stop()
    return out


def proxy_profile(config: Path, client: str = "fast") -> dict[str, Any]:
    """The gateway's proxy path live under ``twistd --profile`` (cProfile) and wrk."""
    seconds = min(DURATION, 10)
    say()
    say(f"== proxy profile (client: {client}): gateway HTTP_PROXY under twistd --profile "
        f"--profiler=cprofile, wrk -c{CONNECTIONS} for {seconds}s")
    suffix = "" if client == "fast" else f"-{client}"
    prof_path = OUT / f"profile-live-proxy-gateway{suffix}.prof"
    prof_path.unlink(missing_ok=True)
    server = proxy_gateway(config, f"proxy-gateway{suffix}-profiled", f"--profile={prof_path}",
                           "--profiler=cprofile", "--savestats")
    try:
        server.start()
        r = wrk(server.url, seconds, f"wrk-proxy-gateway{suffix}-profiled.txt")
        say(f"   under the profiler: {r.rps:.0f} req/s, p99 {r.p99_ms:.2f} ms")
    finally:
        server.stop(timeout=60)
    deadline = time.monotonic() + 30
    while not prof_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not prof_path.exists():
        say("   twistd wrote no profile (see bench/out/proxy-gateway-profiled.log)")
        return {}
    stats = pstats.Stats(str(prof_path), stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    say(f"-- {prof_path.relative_to(ROOT)}, {total:.1f} s profiled, {r.requests} requests")
    say("| function (by own time) | calls | tottime % | cumtime % |")
    say("|---|---:|---:|---:|")
    for line in _top(stats, total, 2, 25):
        say(line)
    say()
    say("| twistgw / treq / twisted.web.client function (cumulative) | calls | tottime % "
        "| cumtime % |")
    say("|---|---:|---:|---:|")
    for line in _top(stats, total, 3, 30, lambda f: any(
            k in f[0] for k in ("twistgw", "treq", "web/client", "_newclient"))):
        say(line)
    return {"rps_profiled": r.rps, "requests": r.requests, "profiled_s": total}


# -- main ---------------------------------------------------------------------------------

PARTS = {"http": run_http, "lookup": run_lookup, "profile": run_profile,
         "proxy": run_proxy}


def main(argv: Sequence[str]) -> int:
    parts = list(argv) or ["all"]
    if parts == ["all"]:
        parts = ["http", "lookup"]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        say(f"usage: bench/run [all|{'|'.join(PARTS)}] ...  (unknown: {' '.join(unknown)})")
        return 2
    OUT.mkdir(exist_ok=True)
    # Ctrl-C must stop the servers even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    info = machine()
    say(f"twistgw bench ({info['commit']}): {info['nproc']} cpus, {info['cpu']}, "
        f"{info['implementation']} {info['python']}, Twisted {info['twisted']}, "
        f"{info['wrk']}")
    say(f"{info['installed']} (fingerprint {info['fingerprint']})")
    report: dict[str, Any] = {"machine": info, "duration": DURATION, "warmup": WARMUP,
                              "rounds": ROUNDS, "connections": CONNECTIONS}
    try:
        for part in parts:
            say()
            report[part] = PARTS[part]()
    except KeyboardInterrupt:
        say("\ninterrupted; stopping servers")
        return 130
    finally:
        stop_all()
    if installed_fingerprint() != report["machine"]["fingerprint"]:
        say("WARNING: the installed twistgw changed during this run (someone reinstalled "
            "it); the numbers mix two versions")
        report["installed_changed"] = True
    (OUT / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
