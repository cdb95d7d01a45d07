"""Reload and drain costs (issue 8), with a real twistd gateway and wrk.

    cd /work/main && /work/venv/bin/pip install -q --no-deps --force-reinstall .
    /work/venv/bin/python bench/reload.py

``throughput``: the MOCK route of bench/configs/mock-nolog.yaml under ``wrk -t1 -c50``
(keep-alive, gateway on core 0, wrk on core 1 as in bench/run.py) for ``DURATION``
seconds, once undisturbed and once with a ``SIGHUP`` every ``RELOAD_EVERY`` seconds
(each one a full reload of the unchanged config).  Reports requests/s, p99, wrk's socket
errors and non-2xx answers for both, and how many reloads were applied.
``latency``: ``RELOADS`` reloads one after the other, each timed from the signal to its
"reload N applied" log line (polled every 2 ms, so the figure includes up to 2 ms of
polling).
``drain``: ``CONNECTIONS`` idle keep-alive connections open, then ``SIGTERM``: the time to
exit and the exit status (idle connections are closed at once, so nothing waits for
``shutdown_grace``).

Environment as bench/run.py (``DURATION``, ``CONNECTIONS``, ``SERVER_CPU``,
``CLIENT_CPU``), plus ``RELOAD_EVERY`` (default 0.5) and ``RELOADS`` (default 20).
Results go to bench/out/reload-results.json.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as base  # noqa: E402  (bench/run.py: machine info, servers, wrk parsing)

RELOAD_EVERY = float(os.environ.get("RELOAD_EVERY", "0.5"))
RELOADS = int(os.environ.get("RELOADS", "20"))


def _pid(server: base.Server) -> int:
    assert server.proc is not None
    return server.proc.pid


def _applied(server: base.Server) -> int:
    return server.log_path.read_text(errors="replace").count(" applied: ")


def throughput() -> dict[str, Any]:
    server = base.gateway_server("reload-gateway", "mock-nolog.yaml").start()
    try:
        base.wrk(server.url, base.WARMUP)
        quiet = base.wrk(server.url, base.DURATION, "wrk-reload-quiet.txt")
        stop = threading.Event()
        sent = [0]

        def hup() -> None:
            while not stop.wait(RELOAD_EVERY):
                os.kill(_pid(server), signal.SIGHUP)
                sent[0] += 1

        thread = threading.Thread(target=hup, daemon=True)
        thread.start()
        try:
            busy = base.wrk(server.url, base.DURATION, "wrk-reload-sighup.txt")
        finally:
            stop.set()
            thread.join()
        time.sleep(1.0)
        return {"quiet": asdict(quiet), "with_sighup": asdict(busy), "sighups": sent[0],
                "applied": _applied(server),
                "rejected": server.log_path.read_text(errors="replace").count(" rejected")}
    finally:
        base.stop_all()


def latency() -> dict[str, Any]:
    server = base.gateway_server("reload-latency", "mock-nolog.yaml").start()
    try:
        times: list[float] = []
        for n in range(1, RELOADS + 1):
            start = time.monotonic()
            os.kill(_pid(server), signal.SIGHUP)
            while _applied(server) < n:
                if time.monotonic() - start > 30:
                    raise RuntimeError(f"reload {n} did not apply; see {server.log_path}")
                time.sleep(0.002)
            times.append((time.monotonic() - start) * 1000)
        return {"reloads": RELOADS, "median_ms": statistics.median(times),
                "max_ms": max(times)}
    finally:
        base.stop_all()


def drain() -> dict[str, Any]:
    server = base.gateway_server("reload-drain", "mock-nolog.yaml").start()
    socks: list[socket.socket] = []
    try:
        for _ in range(base.CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /prod/mock HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = b""
            while base.MOCK_BODY not in data:
                data += sock.recv(65536)
            socks.append(sock)
        assert server.proc is not None
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        status = server.proc.wait(120)
        return {"idle_connections": len(socks), "exit_status": status,
                "seconds_to_exit": time.monotonic() - start}
    finally:
        for sock in socks:
            sock.close()
        base.stop_all()


def main() -> None:
    base.OUT.mkdir(exist_ok=True)
    signal.signal(signal.SIGTERM, base._terminate)
    results = {"machine": base.machine(), "throughput": throughput(), "latency": latency(),
               "drain": drain()}
    (base.OUT / "reload-results.json").write_text(json.dumps(results, indent=2))
    t = results["throughput"]
    quiet, busy = t["quiet"], t["with_sighup"]
    base.say(f"MOCK, no reload:        {quiet['rps']:.0f} req/s, p99 {quiet['p99_ms']:.1f} ms, "
             f"errors {quiet['errors']}, non-2xx {quiet['non_2xx']}")
    base.say(f"MOCK, SIGHUP every {RELOAD_EVERY:g}s: {busy['rps']:.0f} req/s, p99 "
             f"{busy['p99_ms']:.1f} ms, errors {busy['errors']}, non-2xx {busy['non_2xx']} "
             f"({t['sighups']} SIGHUPs, {t['applied']} reloads applied, {t['rejected']} "
             "rejected)")
    lat = results["latency"]
    base.say(f"reload latency (signal -> applied): median {lat['median_ms']:.1f} ms, max "
             f"{lat['max_ms']:.1f} ms over {lat['reloads']}")
    d = results["drain"]
    base.say(f"SIGTERM with {d['idle_connections']} idle keep-alive connections: exit "
             f"{d['exit_status']} after {d['seconds_to_exit']:.2f} s")


if __name__ == "__main__":
    main()
