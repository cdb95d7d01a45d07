"""``twistd --help`` lists apigw; ``twistd -n apigw`` alone serves the demo on port 8080.

These are the README's two commands.  The demo daemon binds the fixed port 8080 (that is
the point of the test).  Two suites on one machine (CI while a developer runs the tests)
would both want it: the module takes a machine-wide lock file first and then waits,
bounded, for the port to be free; if something else keeps it the test fails saying so.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from acceptance_support import (
    PROCESS_TIMEOUT,
    command,
    http_request,
    run_command,
    running_gateway,
)

from twistgw.testing import RunningGateway

DEMO = "http://127.0.0.1:8080"


def test_twistd_help_lists_apigw() -> None:
    result = run_command([*command("twistd"), "--help"])
    assert result.returncode == 0, result.stdout
    assert re.search(r"^\s+apigw\s+\S", result.stdout, re.M), result.stdout


def test_twistd_apigw_help_describes_the_config_option() -> None:
    result = run_command([*command("twistd"), "apigw", "--help"])
    assert result.returncode == 0, result.stdout
    assert "--config" in result.stdout


#: Held while a demo daemon of any test run on this machine owns port 8080.
LOCK_FILE = os.path.join(tempfile.gettempdir(), "twistgw-test-demo-8080.lock")
#: Bounds on waiting for another suite's demo module (seconds, generous for a busy box).
LOCK_WAIT = 300.0
PORT_WAIT = 60.0


@contextmanager
def _demo_port_lock() -> Iterator[None]:
    """Serialise the demo modules of concurrent test runs (flock: freed if a run dies)."""
    with open(LOCK_FILE, "a+b") as lock:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test run held {LOCK_FILE} (port 8080, the demo's) "
                                f"for over {LOCK_WAIT:g}s")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _port_8080_free() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 8080))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _wait_for_port_8080() -> None:
    deadline = time.monotonic() + PORT_WAIT
    while not _port_8080_free():
        if time.monotonic() > deadline:
            pytest.fail(f"port 8080 on 127.0.0.1 stayed busy for {PORT_WAIT:g}s: the demo "
                        "test needs it, because `twistd -n apigw` with no flag serves the "
                        "demo there; stop whatever listens on it (ss -ltnp 'sport = :8080') "
                        "and rerun")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def demo() -> Iterator[RunningGateway]:
    with _demo_port_lock():
        _wait_for_port_8080()
        with running_gateway(None) as gw:
            yield gw


def test_demo_logs_the_url_it_serves(demo: RunningGateway) -> None:
    assert demo.base_urls == [DEMO]
    assert re.search(r"serving http://127\.0\.0\.1:8080/prod/ -> REST API 'demo'",
                     demo.log_text), demo.log_text


def test_demo_pets_is_json(demo: RunningGateway) -> None:
    reply = http_request(f"{DEMO}/prod/pets")
    assert reply.status == 200
    assert reply.header("Content-Type") == "application/json"
    pets = reply.json()
    assert [p["type"] for p in pets] == ["dog", "cat"]
    assert reply.header("x-amzn-RequestId")


def test_demo_unknown_path_gets_the_customised_404(demo: RunningGateway) -> None:
    reply = http_request(f"{DEMO}/prod/nope")
    assert reply.status == 404
    assert reply.json() == {"message": "Missing Authentication Token", "stage": "prod"}
    assert reply.header("x-amzn-ErrorType") == "MissingAuthenticationTokenException"


def test_demo_default_4xx_adds_cors_to_other_errors(demo: RunningGateway) -> None:
    # POST /pets has passthroughBehavior never and only a JSON request template.
    reply = http_request(f"{DEMO}/prod/pets", "POST", body=b"hi",
                         headers={"Content-Type": "text/plain"})
    assert reply.status == 415
    assert reply.json() == {"message": "Unsupported Media Type"}
    assert reply.header("Access-Control-Allow-Origin") == "*"


def test_demo_stops_cleanly_on_sigterm(demo: RunningGateway) -> None:
    # Runs last in this module: it ends the module's daemon.
    assert http_request(f"{DEMO}/prod/health").status == 200
    status = demo.stop(timeout=PROCESS_TIMEOUT)
    log = demo.log_text
    assert "SIGTERM: stopping; listeners close now" in log
    assert "Server Shut Down." in log
    assert "Traceback" not in log, log
    # The gateway handles SIGTERM itself (stock twistd re-raises the signal after
    # shutting down, exit status -15): a drained gateway exits 0 (issue 8).
    assert status == 0, f"exit status {status}:\n{log}"
