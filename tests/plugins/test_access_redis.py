"""The access plugin's Redis store: shared buckets and quotas (issue #6, shared state).

A real ``redis-server`` is started by the tests on a free loopback port (never a system
service).  The store is exercised in a subprocess running the real reactor (the suite's
in-process gateways run on ``task.Clock``), then two real gateway processes share one
quota through one Redis, and the fail-open / fail-closed policies are checked while Redis
is down and after it comes back.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_access_units import RUN_STEPS_EXPECTED

from twistgw.testing import RunningGateway, write_config

KEY = "redis-key-0123456789abcdefghij"
BURST_KEY = "burst-key-0123456789abcdefghij"
LIMIT = b'{"message":"Limit Exceeded"}'
TOO_MANY = b'{"message":"Too Many Requests"}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on a free loopback port, without persistence; restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def command(self, *args: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"".join([b"*%d\r\n" % len(args)] + [
                b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args]))
            return s.recv(65536)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- the store, on the real reactor in a subprocess ------------------------------------------

STORE_SCRIPT = textwrap.dedent("""
    import json, sys
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred
    from twistgw_access.redis_store import RedisSettings, RedisStore, StoreUnavailable
    from twistgw_access.store import Bucket, Counter

    async def main(reactor, url, failure, reachable):
        # A generous timeout: a busy machine must not turn a slow answer into a failure.
        store = RedisStore(RedisSettings(url=url, failure=failure, timeout_ms=5000,
                                         prefix="t:"), reactor)
        store.start()
        if reachable:  # wait for the connection (bounded), not a guessed delay
            for _ in range(400):
                if store.client.proto is not None:
                    break
                await task.deferLater(reactor, 0.05, lambda: None)
        else:
            await task.deferLater(reactor, 0.2, lambda: None)
        out = {}
        async def take(bucket, rate, burst):
            try:
                return await store.take_token(bucket, rate, burst, 0.0)
            except StoreUnavailable:
                return "unavailable"
        # One token per 1000 s: the time this script takes adds nothing measurable, so
        # the refill is decided by the 1500 s moved below, however busy the machine is.
        out["burst"] = [await take("b1", 0.001, 3) for _ in range(4)]
        if reachable:  # 1500 s pass for the bucket: its last refill moves back
            last = float(await store.client.execute("HGET", "t:b:b1", "last"))
            await store.client.execute("HSET", "t:b:b1", "last", "%.6f" % (last - 1500))
        out["refilled"] = [await take("b1", 0.001, 3) for _ in range(2)]
        counts = []
        for _ in range(3):
            try:
                c = await store.count_request("q1", 86400.0 * 30000, 2, 86400.0 * 30001)
                counts.append([c.allowed, c.used])
            except StoreUnavailable:
                counts.append("unavailable")
        out["counts"] = counts
        try:
            out["used"] = await store.quota_used("q1", 86400.0 * 30000)
        except StoreUnavailable:
            out["used"] = "unavailable"
        out["offset"] = store.offset
        try:  # the shared cache (Lambda authorizer results): never refuses, even closed
            await store.cache_put("k", b"v", 5000)
            found = await store.cache_get("k")
            out["cache"] = [found[0].decode(), found[1]] if found else None
        except StoreUnavailable:
            out["cache"] = "unavailable"
        proto = store.client.proto  # None when Redis is unreachable
        out["nodelay"] = bool(proto and proto.transport.getTcpNoDelay())
        # test_access_units.RUN_STEPS_EXPECTED's steps, in one script per request (a
        # period in the future: the key expires at its end).
        DAY0 = 86400.0 * 30000
        steps = [Bucket("r1", 0.0, 2), Counter("rq", DAY0, DAY0 + 86400, 3), Bucket("r2", 0.0, 1)]
        out["run"] = []
        for _ in range(3):
            try:
                o = await store.run(steps, 0.0)
                out["run"].append([o.refused, o.quota and [o.quota.allowed, o.quota.used]])
            except StoreUnavailable:
                out["run"].append("unavailable")
        store.stop()
        print(json.dumps(out))

    task.react(lambda r: ensureDeferred(main(r, sys.argv[1], sys.argv[2],
                                             sys.argv[3] == "reachable")))
""")


def run_store(url: str, failure: str, reachable: bool = True) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", STORE_SCRIPT, url, failure,
                           "reachable" if reachable else "unreachable"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def test_store_buckets_and_quotas_in_redis(redis: RedisServer) -> None:
    out = run_store(redis.url, "closed")
    # Burst 3 then empty; 1500 s at 1/1000 s (Redis TIME) refill one token, not two.
    assert out["burst"] == [True, True, True, False]
    assert out["refilled"] == [True, False]
    assert out["counts"] == [[True, 1], [True, 2], [False, 2]]
    assert out["used"] == 2
    assert abs(out["offset"]) < 5
    assert out["nodelay"] is True  # pipelined commands are not held back by Nagle
    assert out["cache"][0] == "v" and 4000 < out["cache"][1] <= 5000
    assert redis.command("TYPE", "t:c:k") == b"+string\r\n"
    # One request's steps in one script, with the memory store's semantics.
    assert [tuple(r) if r[1] is None else (r[0], tuple(r[1])) for r in out["run"]] == \
        RUN_STEPS_EXPECTED
    assert redis.command("GET", f"t:q:rq:{86400 * 30000}") == b"$1\r\n2\r\n"
    # Namespaced keys that expire: the bucket once refilled (3 tokens at 1/1000 s, plus
    # 1 s), the quota after its period.
    assert redis.command("TYPE", "t:b:b1") == b"+hash\r\n"
    ttl = int(redis.command("PTTL", "t:b:b1")[1:-2])
    assert 3_001_000 - 60_000 < ttl <= 3_001_000
    assert redis.command("EXPIRETIME", f"t:q:q1:{86400 * 30000}") == \
        b":%d\r\n" % (86400 * 30001 + 60)
    # The scripts are cached server-side; after SCRIPT FLUSH, EVALSHA falls back to EVAL.
    assert redis.command("SCRIPT", "FLUSH") == b"+OK\r\n"
    assert run_store(redis.url, "closed")["counts"] == [[False, 2]] * 3


def test_store_unreachable_follows_the_failure_policy() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    closed = run_store(url, "closed", reachable=False)
    assert closed["burst"] == ["unavailable"] * 4
    assert closed["counts"] == ["unavailable"] * 3
    assert closed["used"] == "unavailable"
    assert closed["run"] == ["unavailable"] * 3
    assert closed["cache"] is None  # a miss: the authorizer is invoked, not refused
    opened = run_store(url, "open", reachable=False)
    assert opened["burst"] == [True] * 4
    assert opened["run"] == [[None, None]] * 3  # fail open: every step passes
    assert opened["counts"] == [[True, 0]] * 3


HUNG_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred, gatherResults
    from twistgw_access.redis_store import RedisSettings, RedisStore, StoreUnavailable

    async def main(reactor, url):
        store = RedisStore(RedisSettings(url=url, failure="closed", timeout_ms=100,
                                         max_pending=2), reactor)
        store.start()
        for _ in range(400):  # connected (bounded wait); the TIME probe then never answers
            if store.client.proto is not None:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        start = time.monotonic()
        async def take():
            try:
                await store.take_token("b", 1.0, 1, 0.0)
                return ["taken", time.monotonic() - start]
            except StoreUnavailable as e:
                return [str(e), time.monotonic() - start]
        results = await gatherResults([ensureDeferred(take()) for _ in range(3)])
        store.stop()
        print(json.dumps(results))

    task.react(lambda r: ensureDeferred(main(r, sys.argv[1])))
""")


def test_store_times_out_and_bounds_pending_commands(redis: RedisServer) -> None:
    # A stopped redis-server still accepts connections (the listen backlog) but never
    # answers: each command times out, and past max_pending commands fail at once.
    assert redis.process is not None
    redis.process.send_signal(signal.SIGSTOP)
    try:
        done = subprocess.run([sys.executable, "-c", HUNG_SCRIPT, redis.url],
                              capture_output=True, timeout=30)
    finally:
        redis.process.send_signal(signal.SIGCONT)
    assert done.returncode == 0, done.stderr.decode()
    results = sorted(json.loads(done.stdout.decode().strip().splitlines()[-1]),
                     key=lambda r: r[1])
    # The unanswered TIME probe holds one of the two slots (its reply may yet come, even
    # after its timeout), so the first take waits its 100 ms and the other two fail at
    # once, before any timeout could have fired (bounds loose for a busy machine).
    assert [r[0] for r in results] == ["2 commands pending", "2 commands pending",
                                       "Redis did not answer in time"], results
    assert results[1][1] < 0.09 <= results[2][1] < 10.0, results


# -- real gateways sharing one Redis ---------------------------------------------------------


def gateway_config(folder: Path, url: str | None, failure: str, limit: int) -> Path:
    """Two keys on one API; the access plugin's store in Redis at ``url`` (else memory)."""
    op = {"responses": {"200": {"description": "ok"}}, "security": [{"api_key": []}],
          "x-amazon-apigateway-integration": {
              "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
              "responses": {"default": {"statusCode": "200", "responseTemplates": {
                  "application/json": '{"ok": true}'}}}}}
    definition = {
        "openapi": "3.0.1", "info": {"title": "shared", "version": "1"},
        "components": {"securitySchemes": {
            "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}},
        "paths": {"/keyed": {"get": op}},
    }
    return Path(write_config(folder, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "shared", "type": "REST", "definition": "shared.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping", "access"], "settings": {"access": {
            # A generous timeout: on a busy machine a slow answer must not refuse requests.
            "store": {"url": url, "failure": failure, "timeout_ms": 3000} if url else "memory",
            "api_keys": [{"id": "partner", "value": KEY},
                         {"id": "bursty", "value": BURST_KEY}],
            "usage_plans": [{"id": "gold", "apis": [{"api": "shared", "stage": "prod"}],
                             "quota": {"limit": limit, "period": "DAY"},
                             "keys": ["partner"]},
                            # rate 0: the burst is all there is, no race with the clock.
                            {"id": "tight", "apis": [{"api": "shared", "stage": "prod"}],
                             "throttle": {"rate": 0, "burst": 3}, "keys": ["bursty"]}],
        }}},
        "access_log": False,
    }, {"shared.yaml": definition}))


def call(gw: RunningGateway, key: str = KEY) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", "/prod/keyed", headers={"x-api-key": key})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_two_gateways_enforce_one_quota_and_one_bucket(redis: RedisServer,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    configs = [gateway_config(tmp_path_factory.mktemp(f"gw{i}"), redis.url, "closed", 5)
               for i in range(2)]
    with RunningGateway(configs[0]) as one, RunningGateway(configs[1]) as two:
        assert wait_for(lambda: call(one)[0] == 200 and call(two)[0] == 200)
        redis.command("FLUSHDB")  # the probes above counted; start the quota afresh
        answers = [call((one, two)[i % 2]) for i in range(6)]
        assert [a[0] for a in answers[:5]] == [200] * 5
        assert answers[5] == (429, LIMIT)
        assert call(one) == (429, LIMIT) and call(two) == (429, LIMIT)
        # One token bucket too: burst 3 between both gateways, then THROTTLED on each.
        answers = [call((one, two)[i % 2], BURST_KEY) for i in range(4)]
        assert [a[0] for a in answers[:3]] == [200] * 3
        assert answers[3] == (429, TOO_MANY)
        assert call(one, BURST_KEY) == (429, TOO_MANY)


def test_redis_down_fail_open_fail_closed_and_recovery(
        redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    open_cfg = gateway_config(tmp_path_factory.mktemp("open"), redis.url, "open", 1000)
    closed_cfg = gateway_config(tmp_path_factory.mktemp("closed"), redis.url, "closed",
                                1000)
    with RunningGateway(open_cfg) as opened, RunningGateway(closed_cfg) as closed:
        assert wait_for(lambda: call(opened)[0] == 200 and call(closed)[0] == 200)
        before = {gw: (gw.log_text.count("unavailable"), gw.log_text.count(
            "reachable again")) for gw in (opened, closed)}
        redis.stop()
        # Fail-open allows, fail-closed answers THROTTLED; each logs once, not per request.
        assert [call(opened)[0] for _ in range(3)] == [200] * 3
        assert [call(closed) for _ in range(3)] == [(429, TOO_MANY)] * 3
        for gw in (opened, closed):
            assert gw.log_text.count("unavailable") == before[gw][0] + 1, gw.log_text
        assert "allowing requests (failure: open)" in opened.log_text
        assert "refusing requests with THROTTLED (failure: closed)" in closed.log_text
        redis.start()
        # Both reconnect by themselves and say so.
        assert wait_for(lambda: call(closed)[0] == 200)
        assert wait_for(lambda: call(opened)[0] == 200 and opened.log_text.count(
            "reachable again") == before[opened][1] + 1)
        assert closed.log_text.count("reachable again") == before[closed][1] + 1
        assert int(redis.command("GET", f"twistgw:access:q:quota:gold:key:partner:"
                                 f"{int(time.time()) // 86400 * 86400}")
                   .split(b"\r\n")[1]) >= 2


# -- twistgw usage: the report read straight from Redis --------------------------------------


def usage_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twistgw.cli", "usage", *args],
                          capture_output=True, text=True, timeout=60)


def test_usage_cli_reads_the_quota_from_redis(redis: RedisServer,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    config = gateway_config(tmp_path_factory.mktemp("usage"), redis.url, "closed", 5)
    with RunningGateway(config) as gw:
        assert wait_for(lambda: call(gw)[0] == 200)
        redis.command("FLUSHDB")
        assert [call(gw)[0] for _ in range(3)] == [200] * 3
    # The gateway is gone; the counts are still in Redis.
    done = usage_cli("--config", str(config), "--key", "partner", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["items"]
    day = int(time.time()) // 86400 * 86400
    assert row == {"key_id": "partner", "enabled": True, "plan_id": "gold", "used": 3,
                   "limit": 5, "remaining": 2, "period": "DAY",
                   "period_start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(day)),
                   "period_end": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                               time.gmtime(day + 86400))}
    done = usage_cli("--config", str(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["KEY", "PLAN", "USED", "LIMIT", "REMAINING", "PERIOD"]
    assert lines[1].split()[:5] == ["partner", "gold", "3", "5", "2"]
    assert lines[2].split()[:5] == ["bursty", "tight", "0", "-", "-"]
    done = usage_cli("--config", str(config), "--key", "nobody")
    assert done.returncode == 1
    assert "no API key with id 'nobody'" in done.stderr
    redis.stop()
    done = usage_cli("--config", str(config))
    assert done.returncode == 1
    assert f"cannot reach Redis at 127.0.0.1:{redis.port}" in done.stderr


def test_usage_cli_points_at_the_admin_endpoint_for_the_memory_store(
        tmp_path: Path) -> None:
    config = gateway_config(tmp_path, None, "closed", 5)
    done = usage_cli("--config", str(config))
    assert done.returncode == 1
    assert "GET /usage" in done.stderr and "store: memory" in done.stderr
    done = usage_cli("--config", str(tmp_path / "missing.yaml"))
    assert done.returncode == 1 and done.stderr.startswith("error: ")
