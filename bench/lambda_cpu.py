"""CPU per warm Lambda invoke, gateway and worker measured apart, steady on a loaded box.

The gateway of ``bench/lambda_bench.py`` (same config, same trivial handler, 2 real warm
workers of the shipped worker) runs in this process on the real reactor; one in-memory
keep-alive client connection (a StringTransport, as ``bench/mock_cpu.py``) sends
``GET /prod/hello`` again as soon as the previous response is complete, so exactly one
invoke is in flight and nothing but the gateway and its workers does work.

* default: per invoke, the gateway's CPU (``time.process_time``), the workers' CPU (the
  kernel's ``/proc/<pid>/schedstat`` run time, nanoseconds, summed over the workers), the
  gateway's Python calls (cProfile's count) and, for scale, the same gateway's MOCK route;
* ``--profile``: the gateway's top functions by own time over the invokes;
* ``--requests K``: only send K invokes (after 300 warm-up ones), for an instruction
  count of the gateway process (the workers are not traced)::

      for k in 300 1300; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
          python bench/lambda_cpu.py --requests $k; done
      # gateway instructions per invoke = (Collected at 1300 - Collected at 300) / 1000

* ``--marked K``: the same K invokes between two calls of ``os.getpgrp()``, so that
  callgrind dumps its counts at each (``--dump-before=os_getpgrp``) and the second dump
  holds exactly those invokes, without the start-up whose variation (workers starting
  slower under load) makes the difference of two runs noisy (±30 M)::

      valgrind --tool=callgrind --dump-before=os_getpgrp --callgrind-out-file=/tmp/cg \\
          python bench/lambda_cpu.py --marked 1000
      # gateway instructions per invoke = the summary line of /tmp/cg.2 / 1000

The worker side under callgrind: ``WORKER_CALLGRIND=1`` runs each worker as
``valgrind --tool=callgrind python -m twistgw_lambda.worker`` and prints where the
outputs went (the difference of two runs again gives instructions per invoke);
``WORKER_PROFILE=FILE`` runs them under cProfile (FILE holds a worker's stats at exit).
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # type: ignore[import-not-found]  # noqa: E402
from lambda_bench import gateway_config  # type: ignore[import-not-found]  # noqa: E402

REQUEST = (b"GET /prod/%s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n"
           b"Accept: */*\r\n\r\n")
HELLO_BODY = b'{"hello": "world"}'


def _worker_ns(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


class Driver:
    """One in-memory keep-alive connection that sends the next invoke when the response
    to the previous one is complete, and stops the reactor after ``n`` of them."""

    def __init__(self, gateway: Any, path: bytes) -> None:
        from twisted.internet import reactor
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        self.reactor: Any = reactor
        self.request = REQUEST % path
        self.left = 0
        driver = self

        class _Transport(StringTransport):
            def write(self, data: bytes) -> None:
                super().write(data)
                out = self.value()
                end = out.find(b"\r\n\r\n")
                length = out.find(b"\r\nContent-Length: ", 0, end)
                if end < 0 or length < 0:
                    return
                size = int(out[length + 18:out.index(b"\r\n", length + 2)])
                if len(out) < end + 4 + size:
                    return
                self.clear()
                if not out.startswith(b"HTTP/1.1 200 ") or not out.endswith(HELLO_BODY):
                    raise SystemExit(f"answered {out!r}")
                driver.reactor.callLater(0, driver.next)

        self.transport = _Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        self.proto = gateway.sites["public"].buildProtocol(self.transport.getPeer())
        self.proto.makeConnection(self.transport)

    def next(self) -> None:
        if self.left <= 0:
            done, self.done = self.done, None
            if done is not None:
                done.callback(None)
            return
        self.left -= 1
        self.proto.dataReceived(self.request)

    def run(self, n: int) -> Any:
        """A Deferred that fires once ``n`` invokes were answered."""
        from twisted.internet import defer

        self.left = n
        self.done: Any = defer.Deferred()
        d = self.done
        self.next()
        return d


async def start_gateway() -> Any:
    """The benchmark gateway, started (workers warm) on the global reactor."""
    from twisted.internet import defer

    from twistgw.config import load_config
    from twistgw.gateway import Gateway

    root = Path(tempfile.mkdtemp(prefix="lambda-cpu-"))
    config = gateway_config(root)
    doc = yaml.safe_load(config.read_text())
    hello = doc["functions"]["Hello"]
    # The workers run this checkout's worker module, as the gateway runs its plugin.
    import twistgw_lambda

    hello["environment"] = {"PYTHONPATH": str(Path(twistgw_lambda.__file__).parent.parent)}
    # Under valgrind the child is a copy of the traced gateway until it execs, and the
    # memory watchdog would kill it at 128 MB.
    hello["memory"] = 1024
    if os.environ.get("WORKER_CALLGRIND"):
        hello.update(runtime="command", timeout=60, command=[
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={root}/callgrind.%p",
            sys.executable, "-m", "twistgw_lambda.worker"])
        print(f"worker callgrind outputs: {root}/callgrind.*", flush=True)
    elif os.environ.get("WORKER_PROFILE"):  # cProfile stats of a worker, written at exit
        hello.update(runtime="command", min_workers=1, max_workers=1, command=[
            sys.executable, "-m", "cProfile", "-o", os.environ["WORKER_PROFILE"], "-m",
            "twistgw_lambda.worker"])
    config.write_text(yaml.safe_dump(doc))
    gateway = Gateway(load_config(config))
    await defer.maybeDeferred(gateway._call_all, "startup")
    gateway.ready = True
    gc.collect()
    gc.freeze()  # as twistd apigw does once serving
    return gateway


def worker_pids() -> list[int]:
    from twistgw_lambda.plugin import _state

    (_config, runtime), = _state.runtimes.values()
    return [w.transport.pid for w in runtime.pools["Hello"].workers]


async def measure(driver: Driver, n: int) -> tuple[float, float, float]:
    """Gateway, worker and gateway-kernel CPU microseconds per invoke over ``n`` invokes."""
    pids = worker_pids()
    w0, t0, g0 = _worker_ns(pids), os.times(), time.process_time()
    await driver.run(n)
    g1, t1, w1 = time.process_time(), os.times(), _worker_ns(pids)
    return (g1 - g0) / n * 1e6, (w1 - w0) / n / 1e3, (t1.system - t0.system) / n * 1e6


def mock_client(gateway: Any) -> Callable[[], bytes]:
    return bench._in_memory_client(gateway.sites["public"], REQUEST % b"mock")


def main(argv: list[str]) -> int:
    """Run :func:`amain` on the reactor (see the module doc)."""
    from twisted.internet import defer, task

    os.chdir(BENCH)
    bench.OUT.mkdir(exist_ok=True)
    with bench.quiet_twisted_log():
        return task.react(lambda _r: defer.ensureDeferred(amain(argv)))  # type: ignore[no-any-return]


async def amain(argv: list[str]) -> int:
    """The measurements, on the running reactor."""
    gateway = await start_gateway()
    driver = Driver(gateway, b"hello")
    await driver.run(300)
    if argv[:1] == ["--requests"]:
        await driver.run(int(argv[1]))
        return 0
    if argv[:1] == ["--marked"]:  # os.getpgrp() marks the start and end (module doc)
        os.getpgrp()
        await driver.run(int(argv[1]))
        os.getpgrp()
        return 0
    n, repeats = int(os.environ.get("N", 3000)), int(os.environ.get("R", 5))
    if argv[:1] == ["--profile"]:
        profile = cProfile.Profile(time.process_time)
        t0 = os.times()
        profile.enable()
        await driver.run(n)
        profile.disable()
        t1 = os.times()
        print(f"user {(t1.user - t0.user) / n * 1e6:.0f} us, system "
              f"{(t1.system - t0.system) / n * 1e6:.0f} us per invoke (profiled)")
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(35)
        return 0
    runs = [await measure(driver, n) for _ in range(repeats)]
    profile = cProfile.Profile()
    profile.enable()
    await driver.run(1000)
    profile.disable()
    calls = pstats.Stats(profile).total_calls / 1000  # type: ignore[attr-defined]
    send = mock_client(gateway)
    for _ in range(2000):
        send()
    mock_runs = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(n * 5):
            send()
        mock_runs.append((time.process_time() - started) / (n * 5) * 1e6)
    mock_runs.sort()
    gw = sorted(r[0] for r in runs)
    wk = sorted(r[1] for r in runs)
    sy = sorted(r[2] for r in runs)
    print(f"lambda invoke: gateway CPU best {gw[0]:6.1f} us, median {gw[len(gw) // 2]:6.1f}"
          f" us; workers CPU best {wk[0]:6.1f} us, median {wk[len(wk) // 2]:6.1f} us; "
          f"{calls:.0f} gateway Python calls per invoke; of the gateway's CPU, "
          f"{sy[len(sy) // 2]:.0f} us in the kernel (median)")
    print(f"MOCK request:  gateway CPU best {mock_runs[0]:6.1f} us, median "
          f"{mock_runs[len(mock_runs) // 2]:6.1f} us")
    print(f"ratio (gateway + workers) / MOCK, medians: "
          f"{(gw[len(gw) // 2] + wk[len(wk) // 2]) / mock_runs[len(mock_runs) // 2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
