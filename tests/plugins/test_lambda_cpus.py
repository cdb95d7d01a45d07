"""``functions.<name>.cpus``: the CPUs a function's workers run on (Linux CPU affinity).

A gateway pinned to one CPU whose workers the scheduler wakes onto that same CPU loses
most of its time to them (bench/RESULTS.md); ``cpus`` lets the operator keep them apart.
Checked at load time; a worker the system will not place is logged and still serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_lambda_config import build, good
from test_lambda_e2e import _get
from twisted.internet.task import Clock
from twistgw_lambda.functions import parse_function
from twistgw_lambda.runtime import FunctionPool, Worker

from twistgw import ConfigError
from twistgw.testing import RunningGateway, write_config

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"),
                                reason="CPU affinity is Linux-only")

HANDLER = '''
import json, os


def where(event, context):
    return {"statusCode": 200, "body": json.dumps(sorted(os.sched_getaffinity(0)))}
'''

ARN = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
       "arn:aws:lambda:us-east-1:123456789012:function:{name}/invocations")
#: A CPU this process may use: the one the placed function's workers are kept on.
CPU = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0


def _proxy(name: str) -> dict[str, Any]:
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "aws_proxy", "httpMethod": "POST",
                                                "uri": ARN.format(name=name)}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("lambda-cpus")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text(HANDLER, encoding="utf-8")
    definition = {"openapi": "3.0.1", "info": {"title": "cpus", "version": "1"}, "paths": {
        "/placed": {"get": _proxy("Placed")}, "/free": {"get": _proxy("Free")}}}
    path = write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "restapi", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {
            "Placed": {"handler": "app.where", "code": "src", "min_workers": 1,
                       "cpus": [CPU]},
            "Free": {"handler": "app.where", "code": "src", "min_workers": 1},
        },
        "plugins": {"enabled": ["mock", "mapping", "lambda"]},
        "access_log": False,
    }, {"api.yaml": definition})
    with RunningGateway(path, timeout=30) as running:
        yield running


def test_workers_of_a_function_with_cpus_run_only_there(gw: RunningGateway) -> None:
    status, _headers, body = _get(gw, "/prod/placed")
    assert (status, json.loads(body)) == (200, [CPU])


def test_workers_without_cpus_keep_the_gateways_affinity(gw: RunningGateway) -> None:
    gateway_cpus = sorted(os.sched_getaffinity(0))  # the gateway is this test's child
    status, _headers, body = _get(gw, "/prod/free")
    assert (status, json.loads(body)) == (200, gateway_cpus)


@pytest.mark.parametrize("value", [[], [-1], [os.cpu_count() or 1], "1", [True], [0.5],
                                   {"cpu": 0}, [0, 0]])
def test_bad_cpus_name_the_key_and_the_fix(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, good(cpus=value))
    assert info.value.path == "functions.Fn.cpus"
    assert "CPU" in info.value.problem


def test_cpus_are_kept_sorted_and_a_single_number_is_a_list(tmp_path: Path) -> None:
    config = parse_function("Fn", {"handler": "app.handler", "code": str(tmp_path),
                                   "cpus": CPU}, "gateway.yaml", tmp_path)
    assert config.cpus == (CPU,)
    if (os.cpu_count() or 1) > 1:
        both = parse_function("Fn", {"handler": "app.handler", "code": str(tmp_path),
                                     "cpus": [1, 0]}, "gateway.yaml", tmp_path)
        assert both.cpus == (0, 1)


def test_a_remote_function_takes_no_cpus(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, {"Fn": {"remote": {"region": "eu-west-1"}, "cpus": [0]}})
    assert info.value.path == "functions.Fn.cpus"


def test_a_worker_the_system_will_not_place_is_logged_and_kept(tmp_path: Path,
                                                               log_events: Any) -> None:
    config = parse_function("Fn", {"handler": "app.handler", "code": str(tmp_path),
                                   "cpus": [CPU]}, "gateway.yaml", tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    worker = Worker(FunctionPool(config, Clock(), "us-east-1"), 1)
    worker.transport = SimpleNamespace(pid=int(gone.stdout))  # exited and reaped
    worker.place((CPU,))
    assert worker.state == "starting"
    assert any(f"worker #1 cannot be kept on CPUs {CPU}" in text
               for text in log_events.texts())
