"""End to end: the real daemon (``twistd -n apigw``) runs Lambda handlers in warm workers.

Handler modules are written to a temporary folder; the gateway spawns
``python -m twistgw_lambda.worker`` processes that talk the Lambda Runtime API to it.
One daemon serves the module (a REST API and an HTTP API), so warm-worker behaviour
(init once, replacement after a timeout) is observed across requests.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from twistgw.testing import RunningGateway, write_config

HANDLERS = '''
import json, os, time

INIT_COUNT = 0
INIT_COUNT += 1
with open(os.path.join(os.environ["COUNT_DIR"], "inits-%d" % os.getpid()), "w") as f:
    f.write("1")


def echo(event, context):
    print("handling", event["httpMethod"] if "httpMethod" in event else event["version"])
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({
                "event": event, "pid": os.getpid(), "inits": INIT_COUNT,
                "cwd": os.getcwd(),
                "context": {
                    "function_name": context.function_name,
                    "memory_limit_in_mb": context.memory_limit_in_mb,
                    "aws_request_id": context.aws_request_id,
                    "invoked_function_arn": context.invoked_function_arn,
                    "remaining": context.get_remaining_time_in_millis(),
                    "function_version": context.function_version,
                },
                "env": {k: v for k, v in os.environ.items()
                        if k.startswith(("AWS_", "_HANDLER", "LAMBDA_", "GREETING", "_X_AMZN"))},
            })}


def boom(event, context):
    raise ValueError("kaboom")


def slow(event, context):
    time.sleep(float((event.get("queryStringParameters") or {}).get("s", "5")))
    return {"statusCode": 200, "body": "slept"}


def die(event, context):
    os._exit(3)


def malformed(event, context):
    return {"statusCode": 200, "wrongValue": "value"}


def slow_pid(event, context):
    time.sleep(float((event.get("queryStringParameters") or {}).get("s", "0.5")))
    return {"statusCode": 200, "body": str(os.getpid())}


def flood(event, context):
    import sys
    sys.stdout.write("x" * (3 * 1024 * 1024))
    for i in range(20000):
        print("line", i)
    sys.stderr.write("to stderr\\n")
    return {"statusCode": 200, "body": "flooded"}


def v2_plain(event, context):
    return {"message": "Hello from Lambda!"}


def v2_cookies(event, context):
    return {"statusCode": 201, "cookies": ["a=1; Path=/", "b=2"],
            "headers": {"content-type": "text/plain"}, "body": "made"}
'''

BROKEN = "import no_such_module_anywhere\n\ndef handler(event, context):\n    return {}\n"


def _lambda(name: str, http_api: bool = False) -> dict[str, Any]:
    integration: dict[str, Any] = {
        "type": "aws_proxy", "httpMethod": "POST",
        "uri": f"arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
               f"arn:aws:lambda:eu-west-1:123456789012:function:{name}/invocations"}
    if http_api:
        integration["payloadFormatVersion"] = "2.0"
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": integration}


def _fn(handler: str, code: str = "src", **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"handler": handler, "code": code, "runtime": "python",
                            "timeout": 2, "memory": 256}
    spec.update(kw)
    return spec


@pytest.fixture(scope="module")
def counts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("counts")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, counts: Path) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("lambda-e2e")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text(HANDLERS, encoding="utf-8")
    (root / "broken").mkdir()
    (root / "broken" / "bad.py").write_text(BROKEN, encoding="utf-8")
    env = {"COUNT_DIR": str(counts), "GREETING": "hi"}
    rest = {"openapi": "3.0.1", "info": {"title": "lambdas", "version": "1"}, "paths": {
        "/echo/{id}": {"get": _lambda("Echo"), "post": _lambda("Echo")},
        "/boom": {"get": _lambda("Boom")},
        "/slow": {"get": _lambda("Slow")},
        "/die": {"get": _lambda("Die")},
        "/malformed": {"get": _lambda("Malformed")},
        "/broken": {"get": _lambda("Broken")},
        "/one": {"get": _lambda("OneAtATime")},
        "/two": {"get": _lambda("TwoAtATime")},
        "/flood": {"get": _lambda("Flood")},
        "/reaped": {"get": _lambda("Reaped")},
        "/patient": {"get": {**_lambda("Patient"), "x-amazon-apigateway-integration": {
            **_lambda("Patient")["x-amazon-apigateway-integration"],
            "timeoutInMillis": 300}}},
    }}
    http_api = {"openapi": "3.0.1", "info": {"title": "v2", "version": "1"}, "paths": {
        "/plain": {"get": _lambda("V2Plain", True)},
        "/cookies": {"get": _lambda("V2Cookies", True)},
        "/echo": {"get": _lambda("Echo", True)},
        "/boom": {"get": _lambda("Boom", True)},
    }}
    path = write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [
            {"id": "restapi", "type": "REST", "definition": "rest.yaml",
             "stages": [{"name": "prod", "variables": {"fn": "Echo"}}]},
            {"id": "httpapi", "type": "HTTP", "definition": "http.yaml",
             "stages": [{"name": "$default"}]},
        ],
        "functions": {
            "Echo": _fn("app.echo", min_workers=1, max_workers=2, environment=env),
            "Boom": _fn("app.boom", environment=env),
            "Slow": _fn("app.slow", timeout=1, min_workers=1, max_workers=1, environment=env),
            "Patient": _fn("app.slow", timeout=5, max_workers=1, environment=env),
            "Die": _fn("app.die", environment=env),
            "Malformed": _fn("app.malformed", environment=env),
            "Broken": _fn("bad.handler", code="broken"),
            "OneAtATime": _fn("app.slow_pid", timeout=5, max_workers=1, environment=env),
            "TwoAtATime": _fn("app.slow_pid", timeout=5, max_workers=2, environment=env),
            "Flood": _fn("app.flood", timeout=10, environment=env),
            "Reaped": _fn("app.slow_pid", idle_timeout=1, environment=env),
            "V2Plain": _fn("app.v2_plain", environment=env),
            "V2Cookies": _fn("app.v2_cookies", environment=env),
        },
        "plugins": {"enabled": ["mock", "mapping", "lambda"]},
        "access_log": False,
    }, {"rest.yaml": rest, "http.yaml": http_api})
    with RunningGateway(path, timeout=30) as running:
        yield running


def _get(gw: RunningGateway, path: str, headers: dict[str, str] | None = None,
         api: str = "restapi", method: str = "GET", body: bytes | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request(method, path, body=body,
                     headers={"x-apigw-api-id": api, **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def _wait_log(gw: RunningGateway, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = gw.log_text
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged:\n{gw.log_text[-4000:]}")


def test_handler_returns_json_with_the_rest_event_and_context(gw: RunningGateway) -> None:
    status, headers, body = _get(gw, "/prod/echo/42?a=1&a=2&b=x+y", {"X-Multi": "one"})
    assert status == 200, body
    doc = json.loads(body)
    event = doc["event"]
    assert event["resource"] == "/echo/{id}"
    assert event["path"] == "/echo/42"
    assert event["requestContext"]["path"] == "/prod/echo/42"
    assert event["pathParameters"] == {"id": "42"}
    assert event["queryStringParameters"] == {"a": "2", "b": "x y"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x y"]}
    assert event["stageVariables"] == {"fn": "Echo"}
    assert event["body"] is None and event["isBase64Encoded"] is False
    assert event["headers"]["X-Multi"] == "one"
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    ctx = doc["context"]
    assert ctx["function_name"] == "Echo"
    assert ctx["memory_limit_in_mb"] == "256"
    assert ctx["invoked_function_arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:Echo"
    assert 0 < ctx["remaining"] <= 2000
    assert ctx["function_version"] == "$LATEST"
    # The worker runs in its code folder (it changes there itself: it is spawned
    # without a working directory, see runtime.Worker.spawn).
    assert doc["cwd"] == doc["env"]["LAMBDA_TASK_ROOT"]
    assert doc["cwd"] != os.getcwd()
    env = doc["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "Echo"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["_HANDLER"] == "app.echo"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"  # from the ARN
    assert env["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    assert env["GREETING"] == "hi"
    assert headers["x-amzn-trace-id"] == env["_X_AMZN_TRACE_ID"]
    assert headers["content-type"] == "application/json"
    assert "x-amzn-requestid" in headers
    text = _wait_log(gw, "handling GET")
    assert "lambda Echo [" in text


def test_init_code_runs_once_per_worker_across_invokes(gw: RunningGateway,
                                                       counts: Path) -> None:
    seen = []
    for _ in range(5):
        status, _h, body = _get(gw, "/prod/echo/1")
        assert status == 200
        doc = json.loads(body)
        seen.append((doc["pid"], doc["inits"]))
    assert all(inits == 1 for _pid, inits in seen)
    pids = {pid for pid, _ in seen}
    assert len(pids) == 1  # sequential requests reuse the one warm worker
    assert (counts / f"inits-{pids.pop()}").exists()


def test_post_body_reaches_the_event(gw: RunningGateway) -> None:
    status, _h, body = _get(gw, "/prod/echo/7", {"Content-Type": "application/json"},
                            method="POST", body=b'{"x": 1}')
    assert status == 200
    event = json.loads(body)["event"]
    assert event["body"] == '{"x": 1}'
    assert event["httpMethod"] == "POST"


def test_multi_megabyte_events_and_results_cross_the_runtime_api_intact(
        gw: RunningGateway) -> None:
    """A 3 MB event does not fit the worker's socket in one send: the rest goes through
    the transport's buffer, in order, and later answers on that connection follow it."""
    for n in range(2):
        sent = b'{"blob": "' + b"%d-abcdefgh" % n * 300_000 + b'"}'
        status, _h, body = _get(gw, "/prod/echo/7", {"Content-Type": "application/json"},
                                method="POST", body=sent)
        assert status == 200
        assert json.loads(body)["event"]["body"] == sent.decode()
    status, _h, body = _get(gw, "/prod/echo/7")
    assert status == 200 and json.loads(body)["event"]["body"] is None


def test_unhandled_exception_is_502_and_logged(gw: RunningGateway) -> None:
    status, headers, body = _get(gw, "/prod/boom")
    assert status == 502
    assert body == b'{"message": "Internal server error"}'
    assert headers["x-amzn-errortype"] == "InternalServerErrorException"
    _wait_log(gw, "Lambda execution failed with status 200 due to customer function error: "
                  "kaboom. Lambda request id: ")


def test_malformed_output_is_502_with_aws_log_wording(gw: RunningGateway) -> None:
    status, _h, body = _get(gw, "/prod/malformed")
    assert status == 502
    assert body == b'{"message": "Internal server error"}'
    text = _wait_log(gw, "Execution failed due to configuration error: Malformed Lambda "
                         "proxy response")
    assert 'Lambda output should follow the next JSON format: { "isBase64Encoded": ' in text
    assert 'but was: {"statusCode": 200, "wrongValue": "value"}' in text


def test_function_timeout_kills_the_worker_and_the_next_request_works(
        gw: RunningGateway) -> None:
    status, _h, body = _get(gw, "/prod/slow?s=5")
    assert status == 502
    assert body == b'{"message": "Internal server error"}'
    _wait_log(gw, "Task timed out after 1.00 seconds")
    status, _h, body = _get(gw, "/prod/slow?s=0")
    assert (status, body) == (200, b"slept")


def test_integration_timeout_is_504(gw: RunningGateway) -> None:
    started = time.monotonic()
    status, _h, body = _get(gw, "/prod/patient?s=3")
    assert time.monotonic() - started < 2.5  # the 300 ms integration timeout, not 3 s
    assert status == 504
    assert body == b'{"message": "Endpoint request timed out"}'


def test_worker_exiting_mid_invoke_is_502_and_never_hangs(gw: RunningGateway) -> None:
    status, _h, body = _get(gw, "/prod/die")
    assert status == 502
    assert body == b'{"message": "Internal server error"}'
    _wait_log(gw, "Runtime exited with error: exit status 3")


def test_module_that_fails_to_import_is_502_and_logged(gw: RunningGateway) -> None:
    status, _h, body = _get(gw, "/prod/broken")
    assert status == 502
    assert body == b'{"message": "Internal server error"}'
    text = _wait_log(gw, "lambda Broken: init failed")
    assert "Unable to import module 'bad': No module named 'no_such_module_anywhere'" in text
    # and again: a broken module never wedges the pool
    status, _h, _b = _get(gw, "/prod/broken")
    assert status == 502


def test_http_api_v2_inference_and_cookies(gw: RunningGateway) -> None:
    status, headers, body = _get(gw, "/plain", api="httpapi")
    assert status == 200
    assert body == b'{"message": "Hello from Lambda!"}'
    assert headers["content-type"] == "application/json"
    assert "apigw-requestid" in headers
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("GET", "/cookies", headers={"x-apigw-api-id": "httpapi"})
    resp = conn.getresponse()
    assert resp.status == 201 and resp.read() == b"made"
    cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
    conn.close()
    assert cookies == ["a=1; Path=/", "b=2"]


def test_http_api_v2_event_and_errors(gw: RunningGateway) -> None:
    status, _h, body = _get(gw, "/echo?x=1&x=2", {"Cookie": "s=1; t=2"}, api="httpapi")
    assert status == 200
    event = json.loads(body)["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /echo"
    assert event["rawPath"] == "/echo"
    assert event["rawQueryString"] == "x=1&x=2"
    assert event["queryStringParameters"] == {"x": "1,2"}
    assert event["cookies"] == ["s=1", "t=2"]
    assert "cookie" not in event["headers"]
    assert "body" not in event and "pathParameters" not in event
    status, _h, body = _get(gw, "/boom", api="httpapi")
    assert (status, body) == (500, b'{"message":"Internal Server Error"}')


def test_request_payload_over_6mb_is_413(gw: RunningGateway) -> None:
    status, _h, body = _get(gw, "/prod/echo/1", {"Content-Type": "text/plain"},
                                 method="POST", body=b"x" * (6 * 1024 * 1024 + 10))
    assert status == 413
    assert json.loads(body) == {"message": "Request Too Long"}


def _parallel(gw: RunningGateway, path: str, n: int) -> list[tuple[int, bytes]]:
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(_get, gw, path) for _ in range(n)]
        return [(f.result()[0], f.result()[2]) for f in futures]


def test_a_busy_worker_queues_the_next_invoke(gw: RunningGateway) -> None:
    _get(gw, "/prod/one?s=0")  # warm
    started = time.monotonic()
    results = _parallel(gw, "/prod/one?s=0.5", 2)
    elapsed = time.monotonic() - started
    assert [s for s, _ in results] == [200, 200]
    assert len({b for _, b in results}) == 1  # max_workers 1: the same process, in turn
    assert elapsed >= 1.0


def test_a_queued_invoke_whose_client_left_is_never_run(gw: RunningGateway) -> None:
    _get(gw, "/prod/one?s=0")  # warm
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_get, gw, "/prod/one?s=0.6")
        time.sleep(0.15)  # the first invoke is running; the next one queues
        gone = socket.create_connection(("127.0.0.1", gw.port))
        gone.sendall(b"GET /prod/one?s=5 HTTP/1.1\r\nHost: x\r\nx-apigw-api-id: restapi"
                     b"\r\n\r\n")
        time.sleep(0.15)
        # The client leaves (a reset: a plain FIN reads as a half-close, which the
        # gateway still answers): its queued invoke is cancelled.
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        started = time.monotonic()
        status, _h, _b = _get(gw, "/prod/one?s=0")
        waited = time.monotonic() - started
        assert first.result()[0] == 200
    assert status == 200
    assert waited < 3.5  # served after the first invoke, not after a 5 s ghost


def test_a_pool_runs_invokes_in_parallel_up_to_max_workers(gw: RunningGateway) -> None:
    results = _parallel(gw, "/prod/two?s=0.8", 2)
    assert [s for s, _ in results] == [200, 200]
    assert len({b for _, b in results}) == 2  # two workers, one invoke each
    started = time.monotonic()
    results = _parallel(gw, "/prod/two?s=0.8", 2)
    assert time.monotonic() - started < 1.5  # both warm now: side by side, not 1.6 s
    assert [s for s, _ in results] == [200, 200]


def test_a_handler_flooding_stdout_is_logged_in_bounded_lines(gw: RunningGateway) -> None:
    status, _h, body = _get(gw, "/prod/flood")
    assert (status, body) == (200, b"flooded")
    started = time.monotonic()
    assert _get(gw, "/prod/echo/1")[0] == 200  # the gateway is not busy writing logs
    assert time.monotonic() - started < 2.5
    text = _wait_log(gw, "lines not logged")
    assert "lambda Flood: worker #1 wrote more than 1000 lines a second; " in text
    flood_lines = [line for line in text.splitlines() if "lambda Flood [" in line]
    assert flood_lines and all(len(line) < 8300 for line in flood_lines)
    assert re.search(r"lambda Flood \[[0-9a-f-]{36}\] x{8192}$", text, re.M)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_idle_workers_beyond_min_are_stopped(gw: RunningGateway) -> None:
    status, _h, body = _get(gw, "/prod/reaped")
    assert status == 200
    pid = int(body)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    _wait_log(gw, "lambda Reaped: stopping worker #1, idle for 1 s")
    status, _h, body = _get(gw, "/prod/reaped")  # a fresh worker serves the next one
    assert status == 200 and int(body) != pid


def test_min_workers_are_warm_before_serving_and_gone_after_shutdown(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['MARKS'], str(os.getpid())).write_text('')\n"
        "def handler(event, context):\n"
        "    return {'statusCode': 200, 'body': str(os.getpid())}\n", encoding="utf-8")
    marks = tmp_path / "marks"
    marks.mkdir()
    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {"Fn": _fn("app.handler", code=".", min_workers=2,
                                environment={"MARKS": str(marks)})},
        "plugins": {"enabled": ["lambda"]},
        "access_log": False,
    }, {"api.yaml": {"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
                     "paths": {"/x": {"get": _lambda("Fn")}}}})
    with RunningGateway(path, timeout=30) as running:
        # both workers finished init before the listener opened
        assert len(list(marks.iterdir())) == 2
        status, _h, body = _get(running, "/prod/x", api="a")
        assert status == 200
        pid = int(body)
        assert str(pid) in {m.name for m in marks.iterdir()}
        running.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the worker outlived the gateway")
