"""CPU per HTTP_PROXY request in memory: the gateway's own cost of a proxied request.

The gateway of ``bench/run proxy`` (``configs/proxy.yaml``: ``ANY /{proxy+}`` ->
``http_proxy``, access log to its own file, the fast client) is driven without sockets:
the client side is a keep-alive connection over a StringTransport (as
``bench/mock_cpu.py`` does), and the backend side is one pooled fast-client connection
whose transport keeps what the gateway writes; after each request the canned answer nginx
gives in ``bench/run proxy`` is fed to that connection, as the reactor would on the next
``epoll`` turn.  So everything the gateway's Python does for a proxied request is
measured, and none of the syscalls (see ``--live`` in bench/RESULTS.md for those).

Measures, as ``bench/mock_cpu.py``:

* default: ``time.process_time`` per request (best and median of ``R`` runs of ``N``)
  and Python function calls per request (cProfile's count, deterministic);
* ``--profile``: the cProfile table of 20,000 requests (own time and cumulative);
* ``--live [TREE ...]``: the same route live, for the syscalls and reactor turns the
  in-memory run leaves out: the nginx backend of ``bench/run proxy`` (core 1), then in
  turn bare twisted.web and the gateway of each source TREE (default: this one; core 0),
  each under ``wrk -c50`` (core 1) for ``DURATION`` s, ``ROUNDS`` times; prints each
  server's user and system CPU per request (``/proc/<pid>/stat``), which depend much less
  on the box's load than req/s do;
* ``--counts [TREE ...]``: the same live setup, but per request the kernel events that
  cost the server system time, counted by ``perf stat`` on its pid during ``wrk -c50``
  for ``DURATION`` s (needs ``perf`` and tracepoint access): system calls by name, peer
  wake-ups (``sched:sched_waking``) and inter-processor interrupts (``ipi:ipi_send_cpu``).
  These do not depend on the box's load the way CPU time does (bench/RESULTS.md, proxy3);
* ``--requests K``: only send K requests (after 200 warm-up ones), for an instruction
  count other processes on the box cannot disturb::

      for k in 300 2300; do PYTHONHASHSEED=0 valgrind --tool=callgrind \\
          --callgrind-out-file=/dev/null python bench/proxy_cpu.py --requests $k; done
      # instructions per request = (Collected at 2300 - Collected at 300) / 2000
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # type: ignore[import-not-found]  # noqa: E402
from mock_cpu import cpu_per_request  # type: ignore[import-not-found]  # noqa: E402

#: What wrk sends (it adds only Host).
REQUEST = b"GET /prod/hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
#: What the nginx backend of ``bench/run proxy`` answers (nginx 1.22's header order).
ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 12:00:00 GMT"
          b"\r\nContent-Type: application/json\r\nContent-Length: 27\r\n"
          b"Connection: keep-alive\r\n\r\n" + bench.MOCK_BODY)
BACKEND = "127.0.0.1:9"  # never connected: the pool is given an in-memory connection


class _BackendTransport:
    """The backend end of the pooled connection: keeps what the gateway writes."""

    disconnecting = False

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.written.extend(data)

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def loseConnection(self) -> None:
        raise RuntimeError("the gateway closed the backend connection")

    abortConnection = loseConnection

    def getPeer(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 9)

    getHost = getPeer


def client() -> Callable[[], bytes]:
    """send(): one proxied request through the gateway; returns what the client got."""
    from twisted.internet import reactor

    from twistgw.config import load_config
    from twistgw.gateway import Gateway

    config = bench.proxy_gateway_config(9).read_text().replace("127.0.0.1:9", BACKEND)
    path = bench.OUT / "proxy-cpu.yaml"
    path.write_text(config)
    gateway = Gateway(load_config(path))
    gateway.ready = True
    from twistgw_http import _state

    http_client = _state.client_for(gateway.config)
    from twistgw_http.fastclient import parse_target

    target, _ = parse_target(f"http://{BACKEND}/")
    fast = http_client.fast(False)
    backend = _BackendTransport()
    # A request makes the host pool; then its one connection is ours, in memory.
    from twistgw_http.fastclient import _Connection

    pool = fast.host(target)
    conn = _Connection(pool)
    conn.makeConnection(backend)  # type: ignore[arg-type]
    pool.release(conn)
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    proto = gateway.sites["public"].buildProtocol(transport.getPeer())
    proto.makeConnection(transport)
    receive, deliver = proto.dataReceived, conn.dataReceived
    # Deadlines are timers on the global reactor, which does not run here: each request
    # ends with the reactor's own per-iteration step that drops the cancelled ones.
    timers: Any = reactor

    def send() -> bytes:
        receive(REQUEST)  # the request reaches the backend connection ...
        deliver(ANSWER)  # ... whose answer arrives on a later reactor turn
        timers._insertNewDelayedCalls()
        written = backend.written
        if len(written) != 1:
            raise RuntimeError(f"the gateway wrote {written!r} to the backend")
        written.clear()
        out: bytes = transport.value()
        transport.clear()
        return out

    first = send()
    if not first.startswith(b"HTTP/1.1 200 ") or not first.endswith(bench.MOCK_BODY):
        raise RuntimeError(f"proxy answered {first!r}")
    return send


def _cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


#: Tracepoints ``--counts`` reads: everything, then the calls a request makes by name.
_COUNTED = ["raw_syscalls:sys_enter", "sched:sched_waking", "ipi:ipi_send_cpu"] + [
    f"syscalls:sys_enter_{name}" for name in (
        "sendto", "recvfrom", "epoll_wait", "epoll_ctl", "getrandom", "getsockname",
        "write", "read", "accept4", "connect", "close")]


def counts(server: Any) -> None:
    """Print ``server``'s kernel events per request under wrk (``--counts``)."""
    import subprocess

    bench.wrk(server.url, max(bench.WARMUP, 1))
    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(_COUNTED), "-p",
                             str(server.proc.pid), "--", "sleep", str(bench.DURATION + 1)],
                            stderr=subprocess.PIPE, text=True)
    r = bench.wrk(server.url, bench.DURATION)
    _out, err = perf.communicate()
    found = []
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            name = fields[2].rsplit(":", 1)[-1].removeprefix("sys_enter_")
            found.append(f"{name} {int(fields[0]) / r.requests:.3f}")
    print(f"{server.name:22s} per request ({r.requests} requests): " + ", ".join(found))


def servers_for(trees: list[str]) -> tuple[Any, list[Any]]:
    """The nginx backend, bare twisted.web and a proxying gateway of each source tree
    (each gateway's ``PYTHONPATH`` kept on it: see :func:`start`)."""
    backend_port = bench.free_port()
    backend = bench.nginx_backend(backend_port)
    config = bench.proxy_gateway_config(backend_port)
    servers = [bench.Server("proxy-bare", [sys.executable, str(BENCH / "hello_twisted.py"),
                                           "0"], r"listening on 127\.0\.0\.1:(\d+)",
                            bench.PROXY_PATH, bench.MOCK_BODY)]
    for i, tree in enumerate(trees):
        root = Path(tree).resolve()
        server = bench.proxy_gateway(config, f"proxy-gateway-{i}")
        server.pythonpath = f"{root}:{root / 'plugins'}"
        servers.append(server)
    return backend, servers


def start(server: Any) -> None:
    """Start ``server`` with its tree's ``PYTHONPATH``: the child inherits the environment
    when it starts, so setting it while the servers were made (as ``--live`` once did)
    ran every gateway from the last tree given."""
    path = getattr(server, "pythonpath", None)
    if path is not None:
        os.environ["PYTHONPATH"] = path
    server.start()


def live(trees: list[str]) -> None:
    """CPU per request of bare twisted.web and of each tree's proxying gateway, live."""
    import statistics

    backend, servers = servers_for(trees)
    try:
        backend.start()
        for server in servers:
            start(server)
        per: dict[str, list[tuple[float, ...]]] = {s.name: [] for s in servers}
        for _ in range(bench.ROUNDS):
            for server in servers:
                assert server.proc is not None
                bench.wrk(server.url, max(bench.WARMUP, 1))
                u0, s0 = _cpu(server.proc.pid)
                r = bench.wrk(server.url, bench.DURATION)
                u1, s1 = _cpu(server.proc.pid)
                per[server.name].append(((u1 - u0) / r.requests * 1e6,
                                         (s1 - s0) / r.requests * 1e6, r.p99_ms, r.rps,
                                         (u1 - u0 + s1 - s0) / bench.DURATION))
        for server in servers:
            rows = per[server.name]
            user = statistics.median(r[0] for r in rows)
            system = statistics.median(r[1] for r in rows)
            label = server.name if server.name == "proxy-bare" else \
                trees[int(server.name.rsplit("-", 1)[1])]
            # A server short of 100 % of its core is not the bottleneck (wrk and the
            # backend share the other core): its batches per epoll turn are smaller, so
            # its CPU per request is higher than at saturation.
            print(f"{label:40s} CPU per request: user {user:6.1f} us, system {system:6.1f}"
                  f" us, total {user + system:6.1f} us; p99 "
                  f"{statistics.median(r[2] for r in rows):6.2f} ms; "
                  f"{statistics.median(r[3] for r in rows):6.0f} req/s at "
                  f"{100 * statistics.median(r[4] for r in rows):3.0f} % of its core")
    finally:
        bench.stop_all()


def main(argv: list[str]) -> int:
    """Print CPU and calls per request, a profile, or just send requests (module doc)."""
    os.chdir(BENCH)
    bench.OUT.mkdir(exist_ok=True)
    if argv[:1] == ["--live"]:
        live(argv[1:] or [str(BENCH.parent)])
        return 0
    if argv[:1] == ["--counts"]:
        trees = argv[1:] or [str(BENCH.parent)]
        backend, servers = servers_for(trees)
        try:
            backend.start()
            for server in servers:
                start(server)
                counts(server)
        finally:
            bench.stop_all()
        return 0
    with bench.quiet_twisted_log():
        send = client()
        if argv[:1] == ["--requests"]:
            for _ in range(200 + int(argv[-1])):
                send()
            return 0
        if argv[:1] == ["--profile"]:
            for _ in range(2000):
                send()
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(20000):
                send()
            profile.disable()
            stats = pstats.Stats(profile)
            stats.sort_stats("tottime").print_stats(45)
            stats.sort_stats("cumulative").print_stats(60)
            return 0
        n, repeats = int(os.environ.get("N", 20000)), int(os.environ.get("R", 5))
        runs, calls = cpu_per_request(send, n, repeats)
        print(f"HTTP_PROXY in memory: CPU per request best {runs[0]:6.1f} us, median "
              f"{runs[len(runs) // 2]:6.1f} us; {calls:.0f} Python calls per request")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
