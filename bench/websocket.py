"""WebSocket API benchmark (issue #9): echo through a warm Lambda, and idle connections.

    /work/venv/bin/python bench/websocket.py [echo|idle|all]

``echo``
    The gateway (``twistd -n apigw``, pinned with its Lambda workers to core 0) serves a
    WebSocket API whose ``echo`` route is a python Lambda function (2 warm workers) with a
    route response, and a ``mock`` route answered by a MOCK integration (the gateway's
    own cost, no Lambda).  ``CONNECTIONS`` clients (default 100, asyncio ``websockets`` on
    core 1) each send a message, wait for the answer and send the next, for ``DURATION``
    seconds after a warm-up; prints messages/s and p50/p99 round-trip latency.
``idle``
    Opens ``IDLE`` connections (default 10,000) and leaves them idle; the gateway's
    resident memory (``VmRSS``) before and after, divided by the count, is the memory per
    idle connection (the HTTP channel, the autobahn protocol and the connection record).
    Mind the fd limit: both processes need ``IDLE`` + a few descriptors
    (``ulimit -n``); the listener's ``max_connections`` is raised for the run.

Results go to bench/out/websocket.json; RESULTS.md quotes them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from websockets.asyncio.client import connect

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
DURATION = float(os.environ.get("DURATION", "10"))
WARMUP = float(os.environ.get("WARMUP", "2"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "100"))
IDLE = int(os.environ.get("IDLE", "10000"))
SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")

HANDLER = '''
def echo(event, context):
    return {"statusCode": 200, "body": event["body"]}
'''


def write_config(folder: Path, max_connections: int) -> Path:
    (folder / "code").mkdir()
    (folder / "code" / "app.py").write_text(HANDLER)
    (folder / "chat.yaml").write_text(yaml.safe_dump({
        "route_selection_expression": "$request.body.action",
        "routes": {
            "echo": {"integration": {"type": "AWS_PROXY",
                                     "uri": "arn:aws:lambda:us-east-1:123456789012:function:Echo"},
                     "route_response_selection_expression": "$default"},
            "mock": {"integration": {"type": "MOCK", "response": "pong"},
                     "route_response_selection_expression": "$default"},
        }}))
    config = folder / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1",
                       "limits": {"max_connections": max_connections}}],
        "apis": [{"id": "chat", "type": "WEBSOCKET", "definition": "chat.yaml",
                  "stages": ["prod"]}],
        "functions": {"Echo": {"handler": "app.echo", "code": str(folder / "code"),
                               "runtime": "python", "min_workers": 2, "max_workers": 2}},
        "plugins": {"enabled": ["lambda", "auth", "websocket"],
                    "settings": {"websocket": {"max_connections": max_connections + 10,
                                               "new_connections_per_second": 100_000}}},
        "access_log": False,
    }))
    return config


class Gateway:
    """``twistd -n apigw`` pinned to SERVER_CPU; its URL read from the log."""

    def __init__(self, config: Path) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="ws-bench-", suffix=".log", delete=False)
        cmd = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
               "sys.argv[0]='twistd'; run()", "-n", "--pidfile=", "apigw", "--config",
               str(config)]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", SERVER_CPU, *cmd]
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"serving (http://[^ ]+?)/prod/ ", Path(self.log.name).read_text())
            if found:
                self.url = found.group(1).replace("http://", "ws://") + "/prod"
                return
            time.sleep(0.1)
        raise RuntimeError(Path(self.log.name).read_text())

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None
        return int(match.group(1))

    def cpu_seconds(self) -> float:
        """The gateway process's CPU time so far (user + system; not its Lambda workers):
        CPU per message is robust to a busy machine, where wall-clock rates are not."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def echo_run(gw: Gateway, action: str, seconds: float, warmup: float
                   ) -> dict[str, Any]:
    url = gw.url
    latencies: list[float] = []
    message = json.dumps({"action": action, "data": "x" * 64})
    start_measuring = time.perf_counter() + warmup
    stop = start_measuring + seconds

    async def client() -> None:
        async with connect(url, max_size=None) as ws:
            while True:
                sent = time.perf_counter()
                if sent >= stop:
                    return
                await ws.send(message)
                await ws.recv()
                if sent >= start_measuring:
                    latencies.append(time.perf_counter() - sent)

    async def measure_cpu() -> float:
        await asyncio.sleep(max(start_measuring - time.perf_counter(), 0))
        first = gw.cpu_seconds()
        await asyncio.sleep(max(stop - time.perf_counter(), 0))
        return gw.cpu_seconds() - first

    cpu, *_ = await asyncio.gather(measure_cpu(), *(client() for _ in range(CONNECTIONS)))
    return {"route": action, "connections": CONNECTIONS, "seconds": seconds,
            "gateway_cpu_us_per_message": round(cpu / max(len(latencies), 1) * 1e6),
            "messages": len(latencies), "messages_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2)}


async def idle_run(gw: Gateway, count: int) -> dict[str, Any]:
    # Let the Lambda pool and the first allocations settle before the baseline.
    async with connect(gw.url) as ws:
        await ws.send(json.dumps({"action": "mock"}))
        await ws.recv()
    await asyncio.sleep(1)
    before = gw.rss_kib()
    sockets: list[Any] = []
    started = time.perf_counter()
    for first in range(0, count, 200):
        batch = await asyncio.gather(*(connect(gw.url, ping_interval=None)
                                       for _ in range(min(200, count - first))))
        sockets.extend(batch)
    opened = time.perf_counter() - started
    await asyncio.sleep(2)
    after = gw.rss_kib()
    # Still alive and routed after all that: one round trip on the last connection.
    await sockets[-1].send(json.dumps({"action": "mock"}))
    assert await sockets[-1].recv() == "pong"
    for first in range(0, len(sockets), 500):
        await asyncio.gather(*(ws.close() for ws in sockets[first:first + 500]))
    return {"connections": count, "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_connection": round((after - before) * 1024 / count),
            "open_seconds": round(opened, 1),
            "handshakes_per_s": round(count / opened, 1)}


def main(part: str) -> None:
    OUT.mkdir(exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as tmp:
        gw = Gateway(write_config(Path(tmp), IDLE + 100))
        try:
            if part in ("echo", "all"):
                results["echo_lambda"] = asyncio.run(echo_run(gw, "echo", DURATION, WARMUP))
                print(json.dumps(results["echo_lambda"]))
                results["echo_mock"] = asyncio.run(echo_run(gw, "mock", DURATION, WARMUP))
                print(json.dumps(results["echo_mock"]))
            if part in ("idle", "all"):
                results["idle"] = asyncio.run(idle_run(gw, IDLE))
                print(json.dumps(results["idle"]))
        finally:
            gw.stop()
    (OUT / "websocket.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
