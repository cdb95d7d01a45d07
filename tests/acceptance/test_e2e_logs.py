"""Logs of the real daemon: twistd's ``--logfile``, the JSON observer, and no credentials.

A Lambda handler prints the whole event it gets (Authorization, Cookie, x-api-key, a
signed query string ...) and the access log asks for ``$context.identity.apiKey``: without
redaction every secret the client sent would be in the log.  The test sends them and greps
the log for each one, in text (``--logfile``), in JSON lines (``--logger
twistgw.jsonlog.observer``) and in JSON lines re-published from two workers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from acceptance_support import PROCESS_TIMEOUT, http_request, write_config

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsZWFrLXRlc3QifQ.c2lnbmF0dXJlLXNlY3JldA"
API_KEY = "leakTestApiKey0123456789abcdef"
SECRETS = {
    "Authorization": f"Bearer {JWT}",
    "x-api-key": API_KEY,
    "Cookie": "session=cookieSecret987654; theme=dark",
    "Proxy-Authorization": "Basic dXNlcjpiYXNpY1NlY3JldA==",
    "X-Amz-Security-Token": "stsTokenSecret55555",
}
QUERY_SECRET = "sigSecretabcdef0123456789"
LEAKS = [JWT, "eyJzdWIiOiJsZWFrLXRlc3QifQ", API_KEY, "cookieSecret987654",
         "dXNlcjpiYXNpY1NlY3JldA", "stsTokenSecret55555", QUERY_SECRET]
MARKER = "visible-marker-42"

HANDLER = '''
import json

def echo(event, context):
    print("event: " + json.dumps(event))
    return {"statusCode": 200, "body": "ok"}
'''


def _config(root: Path) -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "app.py").write_text(HANDLER, encoding="utf-8")
    integration = {
        "type": "aws_proxy", "httpMethod": "POST",
        "uri": "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
               "arn:aws:lambda:eu-west-1:123456789012:function:Echo/invocations"}
    definition = {
        "openapi": "3.0.1", "info": {"title": "logs", "version": "1"},
        "components": {"securitySchemes": {
            "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}},
        "paths": {"/echo": {"get": {
            "security": [{"api_key": []}],
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": integration}}},
    }
    return write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "logs", "type": "REST", "definition": "logs.yaml",
                  "stages": [{"name": "v1"}]}],
        "functions": {"Echo": {"handler": "app.echo", "code": "src", "runtime": "python",
                               "timeout": 5}},
        "access_log": {"format": "key=$context.identity.apiKey id=$context.identity.apiKeyId"
                                 " rid=$context.requestId"},
        "plugins": {"enabled": ["mock", "mapping", "lambda", "access"],
                    "settings": {"access": {
                        "api_keys": [{"id": "leaky", "value": API_KEY}],
                        "usage_plans": [{"id": "plan", "apis": [{"api": "logs", "stage": "v1"}],
                                         "keys": ["leaky"]}]}}},
    }, {"logs.yaml": definition})


@contextmanager
def _daemon(config: Path, log: Path, twistd_args: list[str], apigw_args: list[str],
            stdout: Path, env: dict[str, str] | None = None
            ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``twistd -n [twistd_args] apigw --config ... [apigw_args]``, its output in
    ``stdout``; yields it and its port once ``log`` names the URL it serves."""
    argv = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
            "sys.argv[0] = 'twistd'; run()", "-n", "--pidfile=", *twistd_args, "apigw",
            "--config", str(config), *apigw_args]
    with open(stdout, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=config.parent,
                                env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while True:
            text = log.read_text(errors="replace") if log.exists() else ""
            found = re.search(r"serving http://127\.0\.0\.1:(\d+)/", text)
            if found:
                yield proc, int(found.group(1))
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"twistd did not start ({proc.poll()}):\n{text}\n"
                            f"{stdout.read_text(errors='replace')}")
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(PROCESS_TIMEOUT)


def _exercise(port: int, log: Path) -> str:
    url = f"http://127.0.0.1:{port}/v1/echo?X-Amz-Signature={QUERY_SECRET}&x=1"
    reply = http_request(url, headers={**SECRETS, "X-Marker": MARKER})
    assert reply.status == 200, reply
    deadline = time.monotonic() + 10
    while True:  # the handler's output and the access-log line arrive asynchronously
        text = log.read_text(errors="replace")
        if MARKER in text and "id=leaky" in text:
            return text
        assert time.monotonic() < deadline, text
        time.sleep(0.05)


def _assert_no_secret(text: str) -> None:
    for secret in LEAKS:
        assert secret not in text, f"{secret!r} leaked into the log"
    assert "[REDACTED]" in text
    assert "key=[REDACTED] id=leaky" in text  # the access-log field, masked


def _expected_versions() -> list[str]:
    version = metadata.version("twistgw")
    return [f"plugin loaded: {name}=={version}" for name in ("access", "lambda", "mock",
                                                              "mapping")]


#: An access line in twistd's text log: its own time and namespace, as any event's.
ACCESS_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[twistgw\.access#info\] "
                         r"key=\[REDACTED\] id=leaky rid=[0-9a-f-]{36}$", re.M)


def test_text_logfile_has_no_secret_and_names_plugin_versions(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    with _daemon(_config(tmp_path), log, ["--logfile", str(log)], [],
                 tmp_path / "stdout.txt") as (_proc, port):
        text = _exercise(port, log)
    _assert_no_secret(text)
    assert f'"X-Marker": "{MARKER}"' in text  # the event really was logged
    for line in _expected_versions():
        assert line in text
    assert ACCESS_TEXT.search(text), text


def test_text_on_stdout_with_n_has_access_lines_and_no_secret(tmp_path: Path) -> None:
    out = tmp_path / "stdout.txt"
    with _daemon(_config(tmp_path), out, [], [], out) as (proc, port):
        text = _exercise(port, out)
        for _ in range(3):
            _exercise(port, out)
        proc.terminate()
        proc.wait(PROCESS_TIMEOUT)
        text = out.read_text(errors="replace")
    _assert_no_secret(text)
    assert len(ACCESS_TEXT.findall(text)) == 4, text
    assert "Server Shut Down." in text.splitlines()[-1]


def test_text_logfile_rotated_by_sigusr1_gets_the_later_access_lines(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    with _daemon(_config(tmp_path), log, ["--logfile", str(log)], [],
                 tmp_path / "stdout.txt") as (proc, port):
        before = _exercise(port, log)
        proc.send_signal(signal.SIGUSR1)  # twistd rotates its LogFile: gateway.log.1
        rotated = tmp_path / "gateway.log.1"
        deadline = time.monotonic() + 10
        while not rotated.exists() or log.read_text() == before:
            assert time.monotonic() < deadline, "SIGUSR1 did not rotate the log"
            time.sleep(0.05)
        after = _exercise(port, log)
    assert len(ACCESS_TEXT.findall(rotated.read_text())) == 1
    assert len(ACCESS_TEXT.findall(after)) == 1, after


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for doc in lines:
        assert {"time", "level", "namespace", "message"} <= set(doc), doc
    return lines


@pytest.mark.parametrize("workers", [1, 2])
def test_json_observer_writes_one_object_per_line_without_secrets(tmp_path: Path,
                                                                 workers: int) -> None:
    log = tmp_path / "gateway.jsonl"
    apigw_args = ["--workers", str(workers)] if workers > 1 else []
    with _daemon(_config(tmp_path), log, ["--logger", "twistgw.jsonlog.observer"],
                 apigw_args, log) as (_proc, port):
        text = _exercise(port, log)
    _assert_no_secret(text)
    docs = _json_lines(text)  # every line is one JSON object
    messages = [d["message"] for d in docs]
    for line in _expected_versions():
        assert line in messages
    access = next(d for d in docs if d["namespace"] == "twistgw.access")
    assert access["line"].startswith("key=[REDACTED] id=leaky rid=")
    assert access["message"] == access["line"] and access["level"] == "info"
    workers_fields = {"worker", "worker_pid", "system"} if workers > 1 else set()
    assert set(access) == {"time", "level", "namespace", "message", "line", *workers_fields}
    printed = next(d for d in docs if MARKER in d["message"])
    assert printed["level"] == "info"
    if workers > 1:
        assert access["worker"] in (1, 2) and printed["system"].startswith("worker-")


def test_json_log_file_is_reopened_on_sigusr1_after_logrotate_moved_it(tmp_path: Path) -> None:
    log = tmp_path / "gateway.jsonl"
    with _daemon(_config(tmp_path), log, ["--logger", "twistgw.jsonlog.observer"], [],
                 tmp_path / "stdout.txt", env={"TWISTGW_JSONLOG_PATH": str(log)}
                 ) as (proc, port):
        before = _exercise(port, log)
        rotated = tmp_path / "gateway.jsonl.1"
        log.rename(rotated)  # what logrotate does, then its postrotate sends SIGUSR1
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not log.exists():
            assert time.monotonic() < deadline, "SIGUSR1 did not reopen the log file"
            time.sleep(0.05)
        after = _exercise(port, log)
        assert proc.poll() is None
    assert "id=leaky" in before and rotated.read_text().startswith(before[:100])
    _json_lines(after)
    _assert_no_secret(after)
