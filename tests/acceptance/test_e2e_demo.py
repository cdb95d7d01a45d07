"""``twistd --help`` lists apigw; ``twistd -n apigw`` alone serves the demo on port 8080.

These are the README's two commands.  The demo daemon binds the fixed port 8080 (that is
the point of the test); if something else holds it the test fails saying so.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterator

import pytest
from acceptance_support import command, http_request, run_command, running_gateway

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


def _port_8080_free() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 8080))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                pytest.fail("port 8080 on 127.0.0.1 is busy: the demo test needs it, because "
                            "`twistd -n apigw` with no flag serves the demo there; stop "
                            "whatever listens on it (ss -ltnp 'sport = :8080') and rerun")
            raise


@pytest.fixture(scope="module")
def demo() -> Iterator[RunningGateway]:
    _port_8080_free()
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
    status = demo.stop()
    log = demo.log_text
    assert "SIGTERM: stopping; listeners close now" in log
    assert "Server Shut Down." in log
    assert "Traceback" not in log, log
    # The gateway handles SIGTERM itself (stock twistd re-raises the signal after
    # shutting down, exit status -15): a drained gateway exits 0 (issue 8).
    assert status == 0, f"exit status {status}:\n{log}"
