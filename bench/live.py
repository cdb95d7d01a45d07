"""Shared pieces of the live (sockets + wrk) benchmarks in bench/lambda_bench.py and
bench/mapping.py --http: start a server pinned to a core, wait for its port, drive it
with wrk pinned to the other core, stop it.  wrk output is parsed by bench/run.py's
``parse_wrk`` (one parser for every benchmark).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import WrkResult, parse_wrk

__all__ = ["Live", "wrk", "cpu_ns", "SERVER_CPU", "CLIENT_CPU"]

SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")

_TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int) -> int:
    """Nanoseconds of CPU (user + system) ``pid`` used, every thread of it included, dead
    ones too (chalice local serves each connection on a thread); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int((int(fields[11]) + int(fields[12])) * _TICK_NS)
    except (OSError, ValueError, IndexError):
        return 0


class Live:
    """One server process pinned to ``SERVER_CPU``; its port is read from its output."""

    def __init__(self, name: str, argv: Sequence[str], port_re: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = ["taskset", "-c", SERVER_CPU, *argv]
        self.port_re = re.compile(port_re)
        self.cwd = cwd
        self.env = env
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60.0) -> Live:
        out = open(self.log, "wb")  # the child writes it until stop()
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=self.cwd, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.port_re.search(self.log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def wrk(url: str, seconds: int, connections: int, headers: Sequence[str] = (),
        script: Path | None = None) -> WrkResult:
    """``wrk -t1 -c<connections> --latency`` pinned to ``CLIENT_CPU``."""
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
            "--latency"]
    for header in headers:
        argv += ["-H", header]
    if script is not None:
        argv += ["-s", str(script)]
    proc = subprocess.run([*argv, url], capture_output=True, text=True,
                          timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)
