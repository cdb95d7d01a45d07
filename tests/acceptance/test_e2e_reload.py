"""SIGHUP reloads a real ``twistd -n apigw`` while clients keep requests flowing (issue 8).

The MOCK route answers ``{"version": N}`` for config version N, so every response says
which deployment served it.  Each request is tagged with the last reload the test saw in
the log *before sending it*: a request sent after "reload k applied" was logged must be
served by version k's deployment (or by k+1's, applied before the test saw it logged),
and no request may fail or lose its connection.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from acceptance_support import (
    LOOPBACK_LISTENER,
    http_request,
    mock_operation,
    running_gateway,
    wait_for_log,
    write_config,
)

CLIENTS = 4
RELOADS = 10
BROKEN = 6  # the reload whose config is broken
#: Requests the clients must have completed in all (a few thousand).
TOTAL = 3000


def _write(root: Path, version: int, *, broken: bool = False) -> Path:
    stage: dict[str, Any] = {"name": "prod"}
    if broken:
        stage["throttle"] = {"rate": 5}  # not a stage key: the loader refuses it
    return write_config(root, {
        "listeners": [LOOPBACK_LISTENER],
        "apis": [{"id": "reload", "definition": "api.yaml", "stages": [stage]}],
        "plugins": {"enabled": ["mock", "mapping"]},
        "access_log": False,
        "shutdown_grace": 10,
    }, {"api.yaml": {
        "openapi": "3.0.1", "info": {"title": f"v{version}", "version": str(version)},
        "paths": {"/v": {"get": mock_operation(200, f'{{"version": {version}}}')}}}})


@attrs.define
class Load:
    """Keep-alive clients that tag every response with the reload seen before sending."""

    port: int
    epoch: int = 0
    stop: threading.Event = attrs.field(factory=threading.Event)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    results: list[tuple[int, int]] = attrs.field(factory=list)  # (epoch, version)
    failures: list[str] = attrs.field(factory=list)
    sockets: list[set[int]] = attrs.field(factory=list)
    threads: list[threading.Thread] = attrs.field(factory=list)

    def start(self) -> None:
        for _ in range(CLIENTS):
            seen: set[int] = set()
            self.sockets.append(seen)
            thread = threading.Thread(target=self.client, args=(seen,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def client(self, seen: set[int]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        while not self.stop.is_set():
            epoch = self.epoch
            try:
                conn.request("GET", "/prod/v")
                resp = conn.getresponse()
                body = resp.read()
                seen.add(id(conn.sock))
                if resp.status != 200 or resp.getheader("connection") == "close":
                    raise AssertionError(f"{resp.status} {resp.getheaders()} {body!r}")
                version = json.loads(body)["version"]
            except Exception as e:  # every failure counts, none is retried
                with self.lock:
                    self.failures.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                continue
            with self.lock:
                self.results.append((epoch, version))
        conn.close()

    def count(self) -> int:
        with self.lock:
            return len(self.results)

    def wait_for(self, total: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < total:
            assert not self.failures, self.failures[:5]
            assert time.monotonic() < deadline, f"only {self.count()} requests done"
            time.sleep(0.02)


def test_ten_sighups_under_load_lose_no_request(tmp_path: Path) -> None:
    path = _write(tmp_path, 0)
    with running_gateway(path) as gw:
        assert gw.process is not None
        load = Load(gw.port)
        load.start()
        try:
            load.wait_for(100)
            expected = {0: 0}  # epoch -> version its requests must get
            for n in range(1, RELOADS + 1):
                broken = n == BROKEN
                _write(tmp_path, n, broken=broken)
                os.kill(gw.process.pid, signal.SIGHUP)
                outcome = "rejected" if broken else "applied"
                wait_for_log(gw, lambda t, n=n: f"reload {n} applied" in t
                             or f"reload {n} rejected" in t, timeout=30)
                assert f"reload {n} {outcome}" in gw.log_text
                expected[n] = expected[n - 1] if broken else n
                load.epoch = n
                load.wait_for(load.count() + 150)
            load.wait_for(TOTAL)
        finally:
            load.stop.set()
            for thread in load.threads:
                thread.join(30)
        assert load.failures == []
        assert len(load.results) >= TOTAL
        for epoch, version in load.results:
            # sent after reload `epoch` was logged, and before the test saw the next one
            # logged (so that one may have been applied already, but no later one)
            assert version in (expected[epoch], expected.get(epoch + 1)), (epoch, version)
        # every version that was applied served requests; the broken one never did
        served = {version for _epoch, version in load.results}
        assert served == set(range(RELOADS + 1)) - {BROKEN}
        # keep-alive connections survived every reload: one socket per client
        assert [len(s) for s in load.sockets] == [1] * CLIENTS
        log = gw.log_text
        assert log.count("applied: ") == RELOADS - 1
        assert log.count(" rejected, still serving the previous config: ") == 1
        assert (f"reload {BROKEN} rejected, still serving the previous config: {path}: "
                "apis[0].stages[0].throttle: unknown key") in log
        assert http_request(gw.url("/prod/v")).json() == {"version": RELOADS}
        assert gw.process.poll() is None  # SIGHUP never terminates the daemon
        assert gw.stop(timeout=30) == 0


HANDLER = '''
import json, os, time
from pathlib import Path

def handler(event, context):
    query = event.get("queryStringParameters") or {}
    if query.get("hold"):
        marks = Path(os.environ["MARKS"])
        (marks / "held").write_text("1")
        deadline = time.time() + 20
        while not (marks / "release").exists() and time.time() < deadline:
            time.sleep(0.02)
    return {"statusCode": 200,
            "body": json.dumps({"pid": os.getpid(), "v": os.environ["V"]})}
'''


def _lambda_config(root: Path, marks: Path, change_version: str) -> Path:
    code = root / "src" / "app.py"
    if not code.exists():  # rewriting it would be a code change (its mtime)
        code.parent.mkdir(parents=True, exist_ok=True)
        code.write_text(HANDLER, encoding="utf-8")

    def op(name: str) -> dict[str, Any]:
        return {"responses": {"200": {"description": "ok"}},
                "x-amazon-apigateway-integration": {
                    "type": "aws_proxy", "httpMethod": "POST",
                    "uri": "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
                           f"arn:aws:lambda:eu-west-1:123456789012:function:{name}"
                           "/invocations"}}

    def fn(version: str) -> dict[str, Any]:
        return {"handler": "app.handler", "code": "src", "runtime": "python", "timeout": 30,
                "min_workers": 1, "max_workers": 2,
                "environment": {"V": version, "MARKS": str(marks)}}

    return write_config(root, {
        "listeners": [LOOPBACK_LISTENER],
        "apis": [{"id": "fns", "definition": "api.yaml", "stages": [{"name": "prod"}]}],
        "functions": {"Keep": fn("1"), "Change": fn(change_version)},
        "plugins": {"enabled": ["lambda"]},
        "access_log": False,
    }, {"api.yaml": {"openapi": "3.0.1", "info": {"title": "fns", "version": "1"},
                     "paths": {"/keep": {"get": op("Keep")},
                               "/change": {"get": op("Change")}}}})


def test_reload_keeps_unchanged_lambda_pools_and_drains_replaced_ones(tmp_path: Path
                                                                       ) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    path = _lambda_config(tmp_path, marks, "1")
    with running_gateway(path) as gw:
        assert gw.process is not None
        keep = http_request(gw.url("/prod/keep")).json()
        change = http_request(gw.url("/prod/change")).json()
        assert keep["v"] == change["v"] == "1"
        held: list[Any] = []
        thread = threading.Thread(target=lambda: held.append(
            http_request(gw.url("/prod/change?hold=1"), timeout=60)), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not (marks / "held").exists():
            assert time.monotonic() < deadline, "the held invoke never started"
            time.sleep(0.02)
        _lambda_config(tmp_path, marks, "2")
        os.kill(gw.process.pid, signal.SIGHUP)
        wait_for_log(gw, lambda t: "reload 1 applied" in t or "reload 1 rejected" in t,
                     timeout=30)
        assert "reload 1 applied" in gw.log_text
        # new requests: the unchanged function keeps its warm worker, the changed one
        # runs in a new pool with the new settings
        assert http_request(gw.url("/prod/keep")).json() == keep
        after = http_request(gw.url("/prod/change")).json()
        assert after["v"] == "2" and after["pid"] != change["pid"]
        # the invoke in flight on the replaced pool finishes there, on the old settings
        assert held == []
        (marks / "release").write_text("1")
        thread.join(60)
        assert len(held) == 1 and held[0].status == 200, held
        assert held[0].json()["v"] == "1"
        assert gw.stop(timeout=30) == 0


def _listeners_config(root: Path, *, small_bodies: bool, extra: bool) -> Path:
    public: dict[str, Any] = dict(LOOPBACK_LISTENER)
    if small_bodies:
        public["limits"] = {"max_body_bytes": 100}
    listeners = [public]
    if extra:
        listeners.append({"name": "extra", "endpoint": "tcp:0:interface=127.0.0.1"})
    return write_config(root, {
        "listeners": listeners,
        "apis": [{"id": "l", "definition": "api.yaml", "stages": [{"name": "prod"}],
                  "listeners": [lst["name"] for lst in listeners]}],
        "plugins": {"enabled": ["mock", "mapping"]},
        "access_log": False,
    }, {"api.yaml": {"openapi": "3.0.1", "info": {"title": "l", "version": "1"},
                     "paths": {"/v": {"get": mock_operation(200, '{"ok": 1}')}}}})


def test_reload_changes_listeners_in_place_and_binds_or_closes_others(tmp_path: Path
                                                                     ) -> None:
    path = _listeners_config(tmp_path, small_bodies=False, extra=False)
    with running_gateway(path) as gw:
        assert gw.process is not None
        port = gw.port
        big = {"body": b"x" * 200, "method": "POST"}
        assert http_request(gw.url("/prod/v"), **big).status != 413
        idle = socket.create_connection(("127.0.0.1", port), timeout=15)
        idle.sendall(b"GET /prod/v HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")

        _listeners_config(tmp_path, small_bodies=True, extra=True)
        os.kill(gw.process.pid, signal.SIGHUP)
        log = wait_for_log(gw, lambda t: "reload 1 " in t and "serving" in t.split(
            "reload 1 ")[-1], timeout=30)
        assert "reload 1 applied" in log
        # same endpoint: the socket stayed (same port), new connections get the new
        # limits, and the idle connection of the old settings was closed
        assert http_request(gw.url("/prod/v"), **big).status == 413
        assert idle.recv(65536) == b""
        idle.close()
        extra_url = log.split("reload 1 applied")[-1].split("serving ")[1].split(" ")[0]
        assert http_request(extra_url + "v").json() == {"ok": 1}
        extra_port = int(extra_url.rsplit(":", 1)[1].split("/")[0])
        assert extra_port != port

        _listeners_config(tmp_path, small_bodies=True, extra=False)
        os.kill(gw.process.pid, signal.SIGHUP)
        wait_for_log(gw, lambda t: "reload 2 applied" in t, timeout=30)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", extra_port), timeout=5).close()
        assert http_request(gw.url("/prod/v")).status == 200
        assert gw.stop(timeout=30) == 0


def test_reload_with_a_function_that_fails_init_is_rejected(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    path = _lambda_config(tmp_path, marks, "1")
    with running_gateway(path) as gw:
        assert gw.process is not None
        before = http_request(gw.url("/prod/change")).json()
        broken = path.read_text(encoding="utf-8").replace("handler: app.handler",
                                                          "handler: missing.handler", 1)
        assert broken != path.read_text(encoding="utf-8")
        path.write_text(broken, encoding="utf-8")
        os.kill(gw.process.pid, signal.SIGHUP)
        log = wait_for_log(gw, lambda t: "reload 1 applied" in t or "reload 1 rejected" in t,
                           timeout=60)
        assert "reload 1 rejected, still serving the previous config" in log
        assert "the function's new code failed init" in log
        # the old pools still serve, warm
        assert http_request(gw.url("/prod/change")).json() == before
        assert http_request(gw.url("/prod/keep")).status == 200
        assert gw.stop(timeout=30) == 0
