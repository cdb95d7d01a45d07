"""``--workers`` and long-run memory benchmarks (issue 8), with real twistd gateways and wrk.

    cd /work/main && /work/venv/bin/pip install -q --no-deps --force-reinstall .
    /work/venv/bin/python bench/workers.py [all|throughput|rss] ...

``throughput`` (``wrk -t1 -c50``, keep-alive, medians of ``ROUNDS`` alternating rounds):
    the MOCK route of bench/configs/mock-nolog.yaml served by one process and by
    ``--workers 2``.  Both the gateway and wrk may use every core (``taskset -c 0-N``):
    pinning the gateway to one core, as bench/run does, would hide what a second worker
    adds.  Reports ``os.cpu_count()`` and the load average before the run: on a machine
    shared with other jobs the ratio is a floor, not a promise.
``rss`` (minutes):
    one gateway process (bench/configs/mock.yaml: access log on, as in production) driven
    over keep-alive connections to just over 10,000 requests, then on to 1,000,000; the
    process's VmRSS is read after the first 10,000 and after each further chunk.  Target: RSS after
    1,000,000 within 10 % of RSS after 10,000.

Environment as bench/run.py: ``DURATION``, ``WARMUP``, ``ROUNDS``, ``CONNECTIONS``;
``RSS_TOTAL`` (default 1000000) and ``RSS_CHUNK_SECONDS`` (default 30: wrk runs in timed
chunks, RSS is read after each).  Results go to
bench/out/workers-results.json, logs to bench/out/workers-*.log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as base  # noqa: E402  (bench/run.py: machine info, servers, wrk parsing)

OUT = base.OUT
MOCK_BODY = base.MOCK_BODY
ALL_CORES = f"0-{(os.cpu_count() or 1) - 1}"
RSS_TOTAL = int(os.environ.get("RSS_TOTAL", "1000000"))
RSS_CHUNK_SECONDS = int(os.environ.get("RSS_CHUNK_SECONDS", "30"))
RSS_FIRST = 10000
TARGET_RSS_GROWTH = 0.10

def say(text: str = "") -> None:
    print(text, flush=True)


def gateway(name: str, config: str, workers: int = 1) -> base.Server:
    argv = base.twistd_argv(base.CONFIGS / config)
    if workers > 1:
        argv += ["--workers", str(workers)]
    return base.Server(name, argv, base.GATEWAY_PORT_RE, "/prod/mock", MOCK_BODY,
                       cpu=ALL_CORES)


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run_throughput() -> dict[str, Any]:
    pinned, base.CLIENT_CPU = base.CLIENT_CPU, ALL_CORES
    try:
        return _throughput()
    finally:
        base.CLIENT_CPU = pinned


def _throughput() -> dict[str, Any]:
    say(f"throughput: MOCK route, one process vs --workers 2; os.cpu_count() = "
        f"{os.cpu_count()}, load average before: {_load()}; gateway and wrk on cores "
        f"{ALL_CORES}; {base.ROUNDS} rounds of {base.DURATION}s")
    results: dict[str, list[base.WrkResult]] = {"one process": [], "--workers 2": []}
    for rnd in range(base.ROUNDS):
        for label, workers in (("one process", 1), ("--workers 2", 2)):
            server = gateway(f"workers-{workers}", "mock-nolog.yaml", workers).start()
            try:
                results[label].append(base.measure(server, rnd))
            finally:
                server.stop()
    out: dict[str, Any] = {"cpu_count": os.cpu_count(), "load_before": _load(),
                           "cores": ALL_CORES}
    for label, runs in results.items():
        med = base.median_result(runs)
        out[label] = {"rps": med.rps, "p50_ms": med.p50_ms, "p99_ms": med.p99_ms,
                      "errors": med.errors, "non_2xx": med.non_2xx,
                      "rounds_rps": [r.rps for r in runs]}
        say(f"  {label:12s} {med.rps:9.0f} req/s  p50 {med.p50_ms:6.2f} ms  "
            f"p99 {med.p99_ms:6.2f} ms  errors {med.errors}  non-2xx {med.non_2xx}  "
            f"(rounds: {', '.join(f'{r.rps:.0f}' for r in runs)})")
    ratio = out["--workers 2"]["rps"] / out["one process"]["rps"]
    out["ratio"] = ratio
    say(f"  --workers 2 / one process = {ratio:.2f} with {os.cpu_count()} cores "
        f"(load average after: {_load()})")
    return out


def _drive(url: str, seconds: int, log_name: str) -> int:
    """wrk for ``seconds`` over keep-alive connections; returns the requests it counted
    (wrk 4.1 cannot stop at a count, so the chunks are timed and the counts reported)."""
    argv = ["taskset", "-c", base.CLIENT_CPU, "wrk", "-t1", f"-c{base.CONNECTIONS}",
            f"-d{seconds}s", url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    (OUT / log_name).write_text(" ".join(argv) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    found = re.search(r"(\d+) requests in", proc.stdout)
    if not found:
        raise RuntimeError(f"unparsable wrk output:\n{proc.stdout}")
    if "Non-2xx" in proc.stdout or "Socket errors" in proc.stdout:
        raise RuntimeError(f"wrk saw errors:\n{proc.stdout}")
    return int(found.group(1))


def run_rss() -> dict[str, Any]:
    say(f"rss: one gateway (mock.yaml, access log on) on core {base.SERVER_CPU}, wrk on "
        f"core {base.CLIENT_CPU}: {RSS_FIRST} requests, then on to {RSS_TOTAL}")
    server = gateway("workers-rss", "mock.yaml")
    server.cpu = base.SERVER_CPU
    server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid  # taskset execs twistd: the same process
        sent = 0
        while sent < RSS_FIRST:  # short chunks until the first 10,000
            sent += _drive(server.url, 1, f"workers-rss-first-{sent}.txt")
        first = base.vm_rss_kib(pid)
        samples = [(sent, first)]
        say(f"  after {sent:>9,} requests: RSS {first / 1024:6.1f} MiB")
        i = 0
        while sent < RSS_TOTAL:
            sent += _drive(server.url, RSS_CHUNK_SECONDS, f"workers-rss-{i}.txt")
            rss = base.vm_rss_kib(pid)
            samples.append((sent, rss))
            say(f"  after {sent:>9,} requests: RSS {rss / 1024:6.1f} MiB")
            i += 1
    finally:
        server.stop()
    last = samples[-1][1]
    growth = (last - first) / first
    ok = growth <= TARGET_RSS_GROWTH
    say(f"  RSS after {samples[-1][0]:,} = {last / 1024:.1f} MiB vs {first / 1024:.1f} MiB "
        f"after {samples[0][0]:,}: {growth * 100:+.1f} % (target <= +10 %: "
        f"{base.mark(ok)})")
    return {"samples": samples, "growth": growth, "target_met": ok,
            "median_rss_kib": statistics.median(r for _, r in samples)}


PARTS = {"throughput": run_throughput, "rss": run_rss}


def main(argv: Sequence[str]) -> int:
    parts = list(argv) or ["all"]
    if parts == ["all"]:
        parts = ["throughput", "rss"]
    if any(p not in PARTS for p in parts):
        say(f"usage: bench/workers.py [all|{'|'.join(PARTS)}] ...")
        return 2
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/workers.py needs {tool} on PATH")
    OUT.mkdir(exist_ok=True)
    # timeout(1) or Ctrl-C must still stop the gateways (the finally below).
    signal.signal(signal.SIGTERM, base._terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    info = base.machine()
    say(f"twistgw workers bench ({info['commit']}): {info['nproc']} cpus, {info['cpu']}; "
        f"{info['installed']} (fingerprint {info['fingerprint']})")
    report: dict[str, Any] = {"machine": info, "duration": base.DURATION,
                              "warmup": base.WARMUP, "rounds": base.ROUNDS}
    try:
        for part in parts:
            say()
            report[part] = PARTS[part]()
    finally:
        base.stop_all()
    path = OUT / "workers-results.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    previous.update(report)
    path.write_text(json.dumps(previous, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
