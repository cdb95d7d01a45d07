"""``twistd apigw --workers 2`` as an operator runs it: a supervisor and two workers.

Real twistd, real sockets on ``tcp:0`` (one port, bound once by the supervisor and shared),
real signals: a worker killed with SIGKILL is replaced while the port keeps answering, and
SIGTERM ends everything with status 0.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acceptance_support import (
    LOOPBACK_LISTENER,
    PROCESS_TIMEOUT,
    http_request,
    mock_operation,
    run_command,
    running_gateway,
    twistd,
    wait_for_log,
    write_config,
)

from twistgw.testing import RunningGateway

DEFINITION = {
    "openapi": "3.0.1",
    "info": {"title": "workers", "version": "1"},
    "paths": {"/hello": {"get": mock_operation(200, '{"hello": "world"}')}},
}
_STARTED = re.compile(r"worker (\d) started \(pid (\d+)\)")


def _config(directory: Path, plugins: tuple[str, ...] = (),
            settings: dict[str, Any] | None = None) -> Path:
    enabled: dict[str, Any] = {"enabled": ["mock", "mapping", *plugins]}
    if settings:
        enabled["settings"] = settings
    return write_config(directory, {
        "listeners": [LOOPBACK_LISTENER],
        "apis": [{"id": "w", "type": "REST", "definition": "w.yaml",
                  "stages": [{"name": "v1"}]}],
        "plugins": enabled,
    }, {"w.yaml": DEFINITION})


def _pids(text: str) -> dict[int, int]:
    """The latest pid of each worker slot, from the supervisor's log."""
    return {int(slot): int(pid) for slot, pid in _STARTED.findall(text)}


def _serving_count(text: str, slot: int) -> int:
    return len(re.findall(rf"\[worker-{slot}\] serving http://", text))


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(_config(tmp_path), extra_args=["--workers", "2"]) as running:
        wait_for_log(running, lambda t: _serving_count(t, 1) >= 1 and _serving_count(t, 2) >= 1,
                     timeout=PROCESS_TIMEOUT)
        yield running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_one_port_and_serve(gw: RunningGateway) -> None:
    text = gw.log_text
    pids = _pids(text)
    assert sorted(pids) == [1, 2]
    assert gw.process is not None and gw.process.pid not in pids.values()
    assert all(_alive(pid) for pid in pids.values())
    # tcp:0 was bound once, by the supervisor: both workers serve that same port.
    ports = set(re.findall(r"\[worker-\d\] serving http://127\.0\.0\.1:(\d+)/", text))
    assert ports == {str(gw.port)}
    for _ in range(20):
        reply = http_request(gw.url("/v1/hello"))
        assert (reply.status, reply.json()) == (200, {"hello": "world"})


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(gw: RunningGateway) -> None:
    old = _pids(gw.log_text)[1]
    os.kill(old, signal.SIGKILL)
    # The other worker holds the shared socket: every request in the meantime answers.
    deadline = time.monotonic() + PROCESS_TIMEOUT
    answered = 0
    while time.monotonic() < deadline:
        reply = http_request(gw.url("/v1/hello"))
        assert reply.status == 200
        answered += 1
        text = gw.log_text
        if _pids(text)[1] != old and _serving_count(text, 1) >= 2:
            break
        time.sleep(0.02)
    text = gw.log_text
    assert f"worker 1 (pid {old}) was killed by signal 9; starting a replacement" in text
    new = _pids(text)[1]
    assert new != old and _alive(new) and not _alive(old)
    assert _serving_count(text, 1) >= 2, text
    assert answered >= 1
    for _ in range(10):
        assert http_request(gw.url("/v1/hello")).status == 200


def test_sigterm_stops_every_worker_and_exits_0(gw: RunningGateway) -> None:
    pids = _pids(gw.log_text)
    port = gw.port
    assert gw.stop(timeout=PROCESS_TIMEOUT) == 0
    assert not any(_alive(pid) for pid in pids.values())
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
            ("127.0.0.1", port), timeout=2):
        pass
    assert "stopping: SIGTERM to 2 workers" in gw.log_text


def test_sighup_reaches_every_worker(gw: RunningGateway) -> None:
    assert gw.process is not None
    gw.process.send_signal(signal.SIGHUP)
    text = wait_for_log(gw, lambda t: "forwarded SIGHUP to the workers" in t)
    assert gw.process.poll() is None
    assert all(_alive(pid) for pid in _pids(text).values())
    assert http_request(gw.url("/v1/hello")).status == 200


def test_quotas_in_memory_are_refused_with_workers(tmp_path: Path) -> None:
    config = _config(tmp_path, plugins=("access",), settings={"access": {
        "api_keys": [{"id": "k", "value": "k" * 24}],
        "usage_plans": [{"id": "gold", "apis": [{"api": "w", "stage": "v1"}],
                         "quota": {"limit": 100, "period": "DAY"}, "keys": ["k"]}]}})
    result = run_command(twistd("apigw", "--config", str(config), "--workers", "2"))
    assert result.returncode != 0
    assert "plugins.settings.access.store" in result.stdout
    assert "usage plans gold have quotas" in result.stdout
    # One process counts exactly: the same config starts without --workers.
    with running_gateway(config) as single:
        assert http_request(single.url("/v1/hello")).status == 200


def test_memory_throttles_warn_loudly_with_workers(tmp_path: Path) -> None:
    config = _config(tmp_path, plugins=("access",), settings={"access": {
        "stage_throttles": [{"api": "w", "stage": "v1", "rate": 100, "burst": 50}]}})
    with running_gateway(config, extra_args=["--workers", "2"]) as running:
        text = wait_for_log(running, lambda t: "every worker keeps its own throttle" in t)
        assert "--workers 2: plugins.settings.access.store is memory" in text


def test_endpoints_that_cannot_be_shared_are_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    text = config.read_text().replace("tcp:0:interface=127.0.0.1",
                                      "unix:/tmp/twistgw-workers-test.sock")
    config.write_text(text)
    result = run_command(twistd("apigw", "--config", str(config), "--workers", "2"))
    assert result.returncode != 0
    assert "--workers shares tcp: and tcp6: sockets only" in result.stdout


def test_admin_listener_on_a_fixed_port_is_refused_with_workers(tmp_path: Path) -> None:
    config = _config(tmp_path, plugins=("admin",))
    text = config.read_text().replace(
        "listeners:\n", "listeners:\n- name: admin\n  endpoint: tcp:0:interface=127.0.0.1\n"
        "  admin: true\n", 1)
    config.write_text(text.replace("tcp:0:interface=127.0.0.1\n  admin", "tcp:19999\n  admin"))
    result = run_command(twistd("apigw", "--config", str(config), "--workers", "2"))
    assert result.returncode != 0
    assert "an admin listener is served by every worker separately" in result.stdout
