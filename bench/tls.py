"""Issue 7 benchmarks: what metrics cost, TLS keep-alive, TLS handshakes per second.

Usage (after ``pip install --force-reinstall --no-deps .``, as for bench/run)::

    /work/venv/bin/python bench/tls.py [admin] [admin-cpu] [keepalive] [handshake]

``admin``
    The MOCK route of bench/configs/mock-api.yaml over plain HTTP keep-alive, by the
    gateway without the admin plugin (``access_log: false``) and the same gateway with the
    admin plugin and an admin listener (every request counted in Prometheus metrics).
``admin-cpu``
    CPU per MOCK request through the whole HTTP stack in memory (no sockets), without and
    with the admin plugin's metrics: their cost per request, free of wrk's noise.
``keepalive``
    The same MOCK route over TLS keep-alive against a bare twisted.web hello-world over
    TLS (bench/hello_twisted_tls.py), same certificate (ECDSA P-256), same run, rounds
    alternated.  Target: gateway >= 0.70 x bare.
``handshake``
    New connections per second, each a full TLS handshake plus one request
    (``wrk -H 'Connection: close'``), for the gateway and for nginx (one worker process)
    on the same certificate.

Servers run pinned to core ``SERVER_CPU`` and wrk to ``CLIENT_CPU`` (bench/run's
settings: ``DURATION``, ``WARMUP``, ``ROUNDS``, ``CONNECTIONS``).  Certificates and
generated configs go to bench/out/tls/.
"""

from __future__ import annotations

import datetime
import json
import shutil
import ssl
import statistics
import sys
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run
from run import (
    CONFIGS,
    MOCK_BODY,
    OUT,
    ROUNDS,
    Server,
    WrkResult,
    median_result,
    nginx_server,
    say,
    twistd_argv,
)

TLS = OUT / "tls"
TARGET_TLS_RATIO = 0.70


def make_pki() -> tuple[Path, Path, Path]:
    """A CA and an ECDSA P-256 server certificate for 127.0.0.1 (ca, chain, key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    TLS.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("bench CA")).issuer_name(name("bench CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=90))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = TLS / "ca.pem", TLS / "server.pem", TLS / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    # Server.start checks each server with urllib: trust the bench CA for that.
    ctx = ssl.create_default_context(cafile=str(paths[0]))
    urllib.request.install_opener(urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ctx)))
    return paths


class TlsServer(Server):
    """A :class:`run.Server` reached over https."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{self.path}"


def gateway_config(name: str, listener: dict[str, Any], *, admin: bool = False) -> Path:
    """A bench gateway config in bench/out/tls (the MOCK API of bench/configs)."""
    listeners = [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1", **listener}]
    plugins = ["mapping", "mock"]
    if "tls" in listener:
        plugins.append("tls")
    if admin:
        listeners.append({"name": "ops", "endpoint": "tcp:0", "admin": True})
        plugins.append("admin")
    doc = {"listeners": listeners,
           "apis": [{"id": "bench", "type": "REST",
                     "definition": str(CONFIGS / "mock-api.yaml"),
                     "stages": [{"name": "prod"}], "listeners": ["public"]}],
           "access_log": False, "plugins": {"enabled": plugins}}
    TLS.mkdir(parents=True, exist_ok=True)
    path = TLS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def gateway(name: str, config: Path, tls: bool) -> Server:
    cls = TlsServer if tls else Server
    scheme = "https" if tls else "http"
    return cls(name, twistd_argv(config), rf"serving {scheme}://127\.0\.0\.1:(\d+)/",
               "/prod/mock", MOCK_BODY)


def nginx_tls(cert: Path, key: Path) -> Server:
    port = run.free_port()
    body = f"""\
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {run_ciphers()};
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {{
            default_type application/json;
            return 200 '{MOCK_BODY.decode()}';
        }}
    }}"""
    server = nginx_server("nginx-tls", body, port, run.SERVER_CPU, path="/prod/mock")
    server.__class__ = TlsServer
    return server


def run_ciphers() -> str:
    from twistgw_tls import MOZILLA_INTERMEDIATE

    return MOZILLA_INTERMEDIATE


def rounds(servers: list[Server], extra: tuple[str, ...] = ()
           ) -> tuple[dict[str, list[WrkResult]], dict[str, list[float]]]:
    """Alternate the servers ``ROUNDS`` times: wrk results and the server's CPU time per
    request (utime + stime over the measured run, warm-up excluded), which a busy
    neighbour on the machine moves far less than requests/s."""
    per: dict[str, list[WrkResult]] = {s.name: [] for s in servers}
    cpu: dict[str, list[float]] = {s.name: [] for s in servers}
    for rnd in range(ROUNDS):
        for s in servers[rnd % len(servers):] + servers[:rnd % len(servers)]:
            assert s.proc is not None
            if run.WARMUP > 0:
                run.wrk(s.url, run.WARMUP, extra=extra)
            before = run.cpu_seconds(s.proc.pid)
            r = run.wrk(s.url, run.DURATION, f"wrk-{s.name}-{rnd}.txt", extra)
            us = (run.cpu_seconds(s.proc.pid) - before) / max(r.requests, 1) * 1e6
            per[s.name].append(r)
            cpu[s.name].append(us)
            say(f"   round {rnd + 1} {s.name:16} {r.rps:10.0f} req/s  p50 {r.p50_ms:6.2f} ms"
                f"  p99 {r.p99_ms:6.2f} ms  cpu {us:7.1f} us/req  errors {r.errors}"
                f"  non-2xx {r.non_2xx}")
    return per, cpu


def report(title: str, per: dict[str, list[WrkResult]], cpu: dict[str, list[float]],
           labels: dict[str, str], ratios: list[tuple[str, str, float | None]]
           ) -> dict[str, Any]:
    res = {name: median_result(rs) for name, rs in per.items()}
    say()
    say(f"{title}: medians over {ROUNDS} round(s); ratios are medians of per-round ratios")
    say("| server | req/s | p50 ms | p99 ms | server cpu us/req | requests | socket errors "
        "| non-2xx |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in res.items():
        say(f"| {labels[name]} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{statistics.median(cpu[name]):.1f} | {r.requests} | {r.errors} | {r.non_2xx} |")
    out: dict[str, Any] = {"results": {k: vars(v) for k, v in res.items()},
                           "cpu_us": {k: statistics.median(v) for k, v in cpu.items()}}
    for a, b, target in ratios:
        ratio = statistics.median(x.rps / y.rps for x, y in zip(per[a], per[b], strict=True))
        cpu_ratio = statistics.median(y / x for x, y in zip(cpu[a], cpu[b], strict=True))
        verdict = "" if target is None else (" met" if ratio >= target else " NOT met")
        say(f"| {labels[a]} / {labels[b]} | {ratio:.2f} x req/s, {cpu_ratio:.2f} x by cpu "
            f"per request |{'' if target is None else f' >= {target:.2f} x'} |{verdict}")
        out[f"{a}/{b}"] = {"rps": ratio, "cpu": cpu_ratio}
    return out


def part_admin() -> dict[str, Any]:
    servers = [gateway("gw-plain", gateway_config("plain", {}), False),
               gateway("gw-admin", gateway_config("admin", {}, admin=True), False)]
    labels = {"gw-plain": "gateway MOCK, no admin plugin",
              "gw-admin": "gateway MOCK, admin plugin + metrics"}
    return run_part("admin", servers, labels, [("gw-admin", "gw-plain", None)])


def part_admin_cpu() -> dict[str, Any]:
    """CPU per MOCK request through the whole HTTP stack in memory (bench/run.py's
    StringTransport client: Site, hardened channel, pipeline, response bytes; no sockets),
    without and with the admin plugin's metrics.  The two are timed alternately, seven
    times 5,000 requests each, best of each kept: a busy machine moves both alike."""
    import timeit

    import twistgw_admin

    from twistgw.config import load_config
    from twistgw.gateway import Gateway
    from twistgw.variables import Finish

    request = b"GET /prod/mock HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n"
    clients: dict[str, Any] = {}
    gateways: dict[str, Gateway] = {}
    for name, admin in (("plain", False), ("admin", True)):
        gw = Gateway(load_config(gateway_config(name, {}, admin=admin)))
        gw.ready = True
        if admin:
            twistgw_admin.metrics_for(gw)
        gateways[name] = gw
        clients[name] = run._in_memory_client(gw.sites["public"], request)
        if not clients[name]().endswith(MOCK_BODY):
            raise RuntimeError(f"in-memory {name} did not answer the MOCK body")
    calls: dict[str, float] = {}
    for name, send in clients.items():
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(lambda send=send: [send() for _ in range(1000)])
        calls[name] = pstats.Stats(profile).total_calls / 1000  # type: ignore[attr-defined]
    best = {name: float("inf") for name in clients}
    for _ in range(7):
        for name, send in clients.items():
            best[name] = min(best[name], timeit.timeit(send, number=5000) / 5000 * 1e6)
    metrics = twistgw_admin.metrics_for(gateways["admin"]).metrics
    counted = sum(s.requests for s in metrics.series())
    assert counted >= 35001, counted  # every in-memory request was counted
    from twistgw.testing import GatewayHarness

    harness = GatewayHarness(gateway_config("admin", {}, admin=True))
    exchange = harness.exchange("GET", "/prod/mock")
    assert not isinstance(exchange, Deferred)
    alone = twistgw_admin.metrics_for(harness.gateway).metrics
    finish = Finish(response_latency_ms=1, integration_latency_ms=0)
    runs = timeit.repeat(lambda: alone.observe(exchange.ctx, 200, finish), number=50000,
                         repeat=7)
    out = {**best, "observe": min(runs) / 50000 * 1e6,
           "calls_plain": calls["plain"], "calls_admin": calls["admin"]}
    say(f"== admin-cpu: MOCK request through the HTTP stack in memory, best of 7 x 5000 "
        f"(alternated): without the admin plugin {out['plain']:.1f} us, with it "
        f"{out['admin']:.1f} us; GatewayMetrics.observe alone {out['observe']:.2f} us; "
        f"Python function calls per request (cProfile, deterministic) {calls['plain']:.1f} "
        f"-> {calls['admin']:.1f}")
    return out


def bare_tls(name: str, chain: Path, key: Path) -> Server:
    """bench/hello_twisted_tls.py: the stock Site over Twisted's TLS, same certificate."""
    return TlsServer(name, [sys.executable, str(Path(__file__).resolve().parent /
                                                "hello_twisted_tls.py"), str(chain), str(key)],
                     r"listening on 127\.0\.0\.1:(\d+)", "/", MOCK_BODY)


def part_keepalive(chain: Path, key: Path) -> dict[str, Any]:
    tls = {"tls": {"certificate": str(chain), "key": str(key)}}
    servers = [bare_tls("bare-tls", chain, key),
               gateway("gw-tls", gateway_config("tls", tls), True)]
    labels = {"bare-tls": "bare twisted.web over TLS", "gw-tls": "gateway MOCK over TLS"}
    return run_part("keepalive", servers, labels,
                    [("gw-tls", "bare-tls", TARGET_TLS_RATIO)])


def part_handshake(chain: Path, key: Path) -> dict[str, Any]:
    tls = {"tls": {"certificate": str(chain), "key": str(key)}}
    servers = [gateway("gw-tls-hs", gateway_config("tls-hs", tls), True),
               nginx_tls(chain, key), bare_tls("bare-tls-hs", chain, key)]
    labels = {"gw-tls-hs": "gateway MOCK, new TLS connection per request",
              "nginx-tls": "nginx (1 worker), new TLS connection per request",
              "bare-tls-hs": "bare twisted.web over TLS, new TLS connection per request"}
    return run_part("handshake", servers, labels, [("gw-tls-hs", "nginx-tls", None),
                                                   ("gw-tls-hs", "bare-tls-hs", None)],
                    extra=("-H", "Connection: close"))


def run_part(name: str, servers: list[Server], labels: dict[str, str],
             ratios: list[tuple[str, str, float | None]], extra: tuple[str, ...] = ()
             ) -> dict[str, Any]:
    say(f"== {name}: wrk -t1 -c{run.CONNECTIONS} -d{run.DURATION}s --latency "
        f"{' '.join(repr(e) for e in extra)} warm-up {run.WARMUP}s, {ROUNDS} round(s); "
        f"servers on cpu {run.SERVER_CPU}, wrk on cpu {run.CLIENT_CPU}")
    try:
        for s in servers:
            s.start()
            say(f"   started {s.name:16} {s.url}")
        per, cpu = rounds(servers, extra)
    finally:
        for s in servers:
            s.stop()
    return report(name, per, cpu, labels, ratios)


def main(argv: list[str]) -> int:
    parts = argv or ["admin", "admin-cpu", "keepalive", "handshake"]
    OUT.mkdir(exist_ok=True)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/tls.py needs {tool} on PATH")
    say(f"machine: {run.machine()}")
    _ca, chain, key = make_pki()
    results: dict[str, Any] = {}
    try:
        for part in parts:
            if part == "admin":
                results[part] = part_admin()
            elif part == "admin-cpu":
                results[part] = part_admin_cpu()
            elif part == "keepalive":
                results[part] = part_keepalive(chain, key)
            elif part == "handshake":
                results[part] = part_handshake(chain, key)
            else:
                raise SystemExit(f"unknown part {part!r}: admin, admin-cpu, keepalive, "
                                 "handshake")
    finally:
        run.stop_all()
    (OUT / "tls-results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
