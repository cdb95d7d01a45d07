"""CPU per access-log line through twistd's real log observers, steady on a loaded box.

twistd's logging is set up in-process exactly as ``twistd -n apigw`` does it: the
gateway's redaction observer first (``makeService``), then ``UnixAppLogger.start`` with
the chosen options, which builds the observer and calls ``globalLogBeginner.beginLoggingTo``.
The full HTTP stack then serves MOCK requests over a StringTransport (as
``bench/mock_cpu.py``) with ``configs/mock.yaml`` (access log through twistd's log),
``mock-logfile.yaml`` (its own file) and ``mock-nolog.yaml``; the difference to
``mock-nolog`` is what one access-log line costs.  Loggers (``LOGGER``):

* ``text``: ``-n`` without ``--logfile``: text lines on standard output (this script's
  stdout is sent to ``out/log-cpu-stdout.txt``, as bench/run sends twistd's);
* ``logfile``: ``--logfile out/log-cpu-twistd.log`` (a rotating ``LogFile``);
* ``json``: ``--logger twistgw.jsonlog.observer`` on standard output.

Two measures:

* default: ``time.process_time`` per request (median of ``R`` runs of ``N``) for every
  logger and config, and cProfile's Python calls per request.  With ``PER_TURN=M`` the
  reactor runs, one turn (``reactor.iterate(0)``) every M requests, as in a gateway
  serving the connections a poll found ready: the access log then holds its lines and
  writes them together (every 0.1 s, or 64 KiB);
* ``--requests K LOGGER CONFIG``: only K requests (after 200 warm-up ones), for an
  instruction count other processes cannot disturb::

      for k in 300 1300; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
          python bench/log_cpu.py --requests $k text mock.yaml; done
      # instructions per request = (Collected at 1300 - Collected at 300) / 1000
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import run as bench  # type: ignore[import-not-found]
from mock_cpu import client, cpu_per_request  # type: ignore[import-not-found]

LOGGERS = ("text", "logfile", "json")
CONFIGS = ("mock-nolog.yaml", "mock.yaml", "mock-logfile.yaml")


def start_twistd_logging(logger: str) -> None:
    """Install the gateway's redaction and twistd's observer for ``logger``, as twistd."""
    from twisted.application.service import Application
    from twisted.scripts._twistd_unix import UnixAppLogger

    from twistgw.redaction import install_redaction

    out = open(bench.OUT / "log-cpu-stdout.txt", "w")
    os.dup2(out.fileno(), 1)
    options: dict[str, Any] = {"nodaemon": True, "logfile": ""}
    if logger == "logfile":
        options["logfile"] = str(bench.OUT / "log-cpu-twistd.log")
    elif logger == "json":
        from twistgw.jsonlog import observer

        options["logger"] = observer
    install_redaction()
    UnixAppLogger(options).start(Application("log-cpu"))


def in_turns(send: Callable[[], bytes], per_turn: int) -> Callable[[], bytes]:
    """``send``, with a reactor turn after every ``per_turn`` requests (0: no reactor)."""
    if not per_turn:
        return send
    from twisted.internet import reactor

    if not reactor.running:  # type: ignore[attr-defined]
        reactor.startRunning(installSignalHandlers=False)  # type: ignore[attr-defined]
    count = 0

    def send_in_turns() -> bytes:
        nonlocal count
        out = send()
        count += 1
        if count % per_turn == 0:
            reactor.iterate(0)  # type: ignore[attr-defined]
        return out

    return send_in_turns


def main(argv: list[str]) -> int:
    """Print CPU per access-log line, or just send requests (see the module doc)."""
    os.chdir(bench.BENCH)  # the configs' relative paths (the log file) are from here
    bench.OUT.mkdir(exist_ok=True)
    per_turn = int(os.environ.get("PER_TURN", 0))
    if argv[:1] == ["--requests"]:
        start_twistd_logging(argv[2])
        send = in_turns(client(argv[3]), per_turn)
        for _ in range(200 + int(argv[1])):
            send()
        return 0
    loggers = argv or list(LOGGERS)
    n, repeats = int(os.environ.get("N", 20000)), int(os.environ.get("R", 5))
    report = sys.stderr
    for logger in loggers:
        if os.fork() == 0:  # one process per logger: twistd's logging starts once
            start_twistd_logging(logger)
            results = {}
            for config in CONFIGS:
                runs, calls = cpu_per_request(in_turns(client(config), per_turn), n, repeats)
                results[config] = (runs[len(runs) // 2], calls)
            base_us, base_calls = results["mock-nolog.yaml"]
            for config in CONFIGS[1:]:
                us, calls = results[config]
                print(f"{logger:8s} {config:18s} {us:6.1f} us/request, access log line "
                      f"{us - base_us:5.1f} us, {calls - base_calls:4.0f} Python calls",
                      file=report, flush=True)
            os._exit(0)
        os.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
