"""The AWS runtime interface client (awslambdaric) serves invokes from a function pool.

``python -m awslambdaric module.handler`` is Lambda's own Runtime API client; a pool
that runs it instead of the shipped worker proves the Runtime API endpoints speak the
real protocol (headers, paths, status codes).  Pools need the real reactor and real
processes, so the pool runs in a child interpreter and prints what it got.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HANDLER = '''
def handler(event, context):
    return {"statusCode": 200, "body": "%s %r %s %s" % (
        context.function_name, context.memory_limit_in_mb,
        context.get_remaining_time_in_millis() > 0, event["path"])}


def boom(event, context):
    raise ValueError("kaboom")
'''

DRIVER = '''
import json, sys
from pathlib import Path
from twisted.internet import defer, reactor
from twistgw_lambda.functions import FunctionConfig
from twistgw_lambda.runtime import FunctionPool

results = []


async def main():
    for handler in ("app.handler", "app.boom"):
        cfg = FunctionConfig(name="Ric", handler=handler, code=Path(sys.argv[1]))
        pool = FunctionPool(cfg, reactor, "us-east-1",
                            command=[sys.executable, "-m", "awslambdaric", handler])
        for i in range(2):
            r = await pool.invoke(json.dumps({"path": "/x%d" % i}).encode(),
                                  "arn:aws:lambda:us-east-1:123456789012:function:Ric",
                                  "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=1;Sampled=0")
            results.append([handler, r.function_error, json.loads(r.payload)])
        await pool.stop()


def go():
    d = defer.ensureDeferred(main())
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())


reactor.callWhenRunning(go)
reactor.callLater(40, reactor.stop)
reactor.run()
print(json.dumps(results))
'''


def test_awslambdaric_serves_invokes_and_errors(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(HANDLER, encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path)], capture_output=True,
                          timeout=60, text=True)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    ok1, ok2, err1, err2 = results
    assert ok1 == ["app.handler", None, {"statusCode": 200, "body": "Ric '128' True /x0"}]
    assert ok2[2]["body"] == "Ric '128' True /x1"  # a second invoke, after /next again
    for _handler, function_error, doc in (err1, err2):
        assert function_error == "Unhandled"
        assert doc["errorMessage"] == "kaboom" and doc["errorType"] == "ValueError"
        assert doc["stackTrace"]


BOOTSTRAP = '''#!{python}
"""A custom runtime in a dozen lines: anything that speaks the Runtime API is a worker."""
import json, os, urllib.request

api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    body = json.dumps({{"statusCode": 200, "body": "custom " + event["path"] + " "
                       + os.environ["AWS_LAMBDA_FUNCTION_NAME"]}}).encode()
    urllib.request.urlopen(urllib.request.Request(api + rid + "/response", data=body)).read()
'''


def test_runtime_command_runs_awslambdaric_and_a_custom_bootstrap(tmp_path: Path) -> None:
    import http.client

    from twistgw.testing import RunningGateway, write_config

    (tmp_path / "app.py").write_text(HANDLER, encoding="utf-8")
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_text(BOOTSTRAP.format(python=sys.executable), encoding="utf-8")
    bootstrap.chmod(0o755)

    def op(name: str) -> dict[str, object]:
        return {"responses": {"200": {"description": "ok"}},
                "x-amazon-apigateway-integration": {
                    "type": "aws_proxy", "httpMethod": "POST",
                    "uri": f"arn:aws:lambda:us-east-1:123456789012:function:{name}"}}

    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {
            "Ric": {"runtime": "command", "code": ".",
                    "command": ["python", "-m", "awslambdaric", "app.handler"]},
            "Custom": {"runtime": "command", "code": ".", "command": ["./bootstrap"]},
        },
        "plugins": {"enabled": ["lambda"]},
        "access_log": False,
    }, {"api.yaml": {"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
                     "paths": {"/ric": {"get": op("Ric")}, "/custom": {"get": op("Custom")}}}})
    with RunningGateway(path, timeout=30) as gw:
        for route, expected in (("/prod/ric", b"Ric '128' True /ric"),
                                ("/prod/custom", b"custom /custom Custom")):
            for _ in range(2):
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
                conn.request("GET", route)
                resp = conn.getresponse()
                assert (resp.status, resp.read()) == (200, expected), gw.log_text[-2000:]
                conn.close()
