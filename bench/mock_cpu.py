"""CPU per MOCK request in memory: the gateway's own cost, steady on a loaded machine.

The full HTTP stack (hardened Site -> channel -> pipeline -> response bytes) runs over a
StringTransport, as in ``bench/run profile`` part 1, for ``configs/mock-nolog.yaml`` and
``configs/mock-logfile.yaml``.  Two measures:

* default: ``time.process_time`` per request (best and median of ``R`` runs of ``N``
  requests) and Python function calls per request (cProfile's count, deterministic);
* ``--requests K CONFIG``: only send K requests (after 200 warm-up ones) through CONFIG,
  for an instruction count that other processes on the box cannot disturb::

      for k in 300 1300; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
          python bench/mock_cpu.py --requests $k mock-logfile.yaml; done
      # instructions per request = (Collected at 1300 - Collected at 300) / 1000

  ``CONFIG`` ``bare`` is the baseline instead: bench/hello_twisted.py's stock twisted.web
  Site over the same kind of connection; ``lean`` is the gateway's HTTP layer
  (``twistgw.http``) alone, answering the same body without the pipeline.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # type: ignore[import-not-found]  # noqa: E402

REQUEST = (b"GET /prod/mock HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n"
           b"Accept: */*\r\n\r\n")


def client(config: str) -> Callable[[], bytes]:
    """An in-memory keep-alive connection to a gateway built from ``configs/<config>``
    (or to bare twisted.web for ``bare``)."""
    if config == "bare":
        from hello_twisted import Hello, QuietSite  # type: ignore[import-not-found]

        bare: Callable[[], bytes] = bench._in_memory_client(QuietSite(Hello()), REQUEST)
        return bare
    if config == "lean":
        from twistgw.http import GatewaySite, HttpRequest
        from twistgw.limits import Limits

        def hello(request: HttpRequest) -> None:
            request.respond(200, b"Content-Type: application/json\r\n", bench.MOCK_BODY)

        lean: Callable[[], bytes] = bench._in_memory_client(GatewaySite(hello, Limits()),
                                                            REQUEST)
        return lean
    from twistgw.config import load_config
    from twistgw.gateway import Gateway

    gateway = Gateway(load_config(bench.CONFIGS / config))
    gateway.ready = True
    send: Callable[[], bytes] = bench._in_memory_client(gateway.sites["public"], REQUEST)
    out = send()
    if not out.startswith(b"HTTP/1.1 200 ") or not out.endswith(bench.MOCK_BODY):
        raise RuntimeError(f"{config} answered {out!r}")
    return send


def main(argv: list[str]) -> int:
    """Print CPU and calls per request, or just send requests (see the module doc)."""
    os.chdir(BENCH)  # the configs' relative paths (the log file) are from here
    bench.OUT.mkdir(exist_ok=True)
    with bench.quiet_twisted_log():
        if argv[:1] == ["--requests"]:
            send = client(argv[2])
            for _ in range(200 + int(argv[1])):
                send()
            return 0
        n, repeats = int(os.environ.get("N", 50000)), int(os.environ.get("R", 5))
        for config in ("mock-nolog.yaml", "mock-logfile.yaml"):
            runs, calls = cpu_per_request(client(config), n, repeats)
            print(f"{config:18s} CPU per request: best {runs[0]:6.1f} us, median "
                  f"{runs[len(runs) // 2]:6.1f} us; {calls:.0f} Python calls per request")
    return 0


def cpu_per_request(send: Callable[[], bytes], n: int, repeats: int
                    ) -> tuple[list[float], float]:
    """After 2000 warm-up requests: µs of CPU per request of ``repeats`` runs of ``n``
    (sorted), and cProfile's Python calls per request."""
    for _ in range(2000):
        send()
    runs = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(n):
            send()
        runs.append((time.process_time() - started) / n * 1e6)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(1000):
        send()
    profile.disable()
    calls = pstats.Stats(profile).total_calls / 1000  # type: ignore[attr-defined]
    return sorted(runs), calls


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
