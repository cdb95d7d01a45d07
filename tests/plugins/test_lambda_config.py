"""The ``functions:`` section and Lambda URIs are checked at load time, naming key and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twistgw_lambda.arn import parse_function_uri

from twistgw import ConfigError
from twistgw.testing import GatewayHarness

ARN = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
       "arn:aws:lambda:us-east-1:123456789012:function:{name}/invocations")


def build(tmp_path: Path, functions: Any, uri: str | None = None,
          plugins: tuple[str, ...] = ("mock", "mapping", "lambda"),
          **top: Any) -> GatewayHarness:
    (tmp_path / "src").mkdir(exist_ok=True)
    definition = {"openapi": "3.0.1", "info": {"title": "t", "version": "1"}, "paths": {
        "/x": {"get": {"responses": {"200": {"description": "ok"}},
                       "x-amazon-apigateway-integration": {
                           "type": "aws_proxy", "httpMethod": "POST",
                           "uri": uri or ARN.format(name="Fn")}}}}}
    config = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": functions,
        "plugins": {"enabled": list(plugins)},
        "access_log": False,
        **top,
    }
    return GatewayHarness(config, definitions={"api.yaml": definition})


SRC = Path(__file__).parent  # any existing folder will do: nothing is imported here


def good(**kw: Any) -> dict[str, Any]:
    return {"Fn": {"handler": "app.handler", "code": str(SRC), **kw}}


def test_a_valid_function_loads(tmp_path: Path) -> None:
    h = build(tmp_path, good(timeout=30, memory=512, environment={"A": "1", "B": True,
                                                                   "C": 5},
                             min_workers=1, max_workers=3))
    assert h.gateway.deployment.apis["a"]


@pytest.mark.parametrize(("functions", "where", "fix"), [
    (good(handler="app"), "functions.Fn.handler", "module.function"),
    (good(handler=None), "functions.Fn.handler", "module.function"),
    (good(code="nowhere"), "functions.Fn.code", "is not a folder"),
    (good(runtime="java21"), "functions.Fn.runtime", "use 'python' or 'command'"),
    (good(timeout=0), "functions.Fn.timeout", "1..900"),
    (good(timeout=901), "functions.Fn.timeout", "1..900"),
    (good(timeout="3"), "functions.Fn.timeout", "1..900"),
    (good(memory=64), "functions.Fn.memory", "128..10240"),
    (good(min_workers=-1), "functions.Fn.min_workers", "0..256"),
    (good(max_workers=0), "functions.Fn.max_workers", "1..256"),
    (good(min_workers=3, max_workers=2), "functions.Fn.max_workers",
     "below min_workers"),
    (good(idle_timeout=-1), "functions.Fn.idle_timeout", "0..86400"),
    (good(environment=["A=1"]), "functions.Fn.environment", "mapping"),
    (good(environment={"1A": "x"}), "functions.Fn.environment.1A", "start with a letter"),
    (good(environment={"AWS_LAMBDA_FUNCTION_NAME": "x"}),
     "functions.Fn.environment.AWS_LAMBDA_FUNCTION_NAME", "reserved"),
    (good(environment={"A": {"nested": 1}}), "functions.Fn.environment.A", "strings"),
    (good(colour="red"), "functions.Fn.colour", "unknown key"),
    ({"Bad Name": {"handler": "app.handler", "code": str(SRC)}}, "functions.Bad Name",
     "1-64 letters"),
])
def test_bad_function_config_names_key_and_fix(tmp_path: Path, functions: Any, where: str,
                                               fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, functions)
    assert info.value.path == where
    assert fix in info.value.problem
    assert info.value.file.endswith("gateway.yaml")


def test_unknown_function_name_is_a_load_time_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, good(), uri=ARN.format(name="Missing"))
    assert info.value.file.endswith("api.yaml")
    assert info.value.path == "paths./x.get.x-amazon-apigateway-integration.uri"
    assert "'Missing' is not declared under functions:" in info.value.problem
    assert "add functions.Missing" in info.value.problem


def test_unknown_function_under_strict_false_loads_and_answers_500(tmp_path: Path) -> None:
    h = build(tmp_path, good(), uri=ARN.format(name="Missing"), strict=False)
    response = h.request("GET", "/prod/x")
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')


def test_a_non_lambda_uri_is_a_load_time_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, good(), uri="https://example.com/")
    assert "is not a Lambda function URI" in info.value.problem


def test_stage_variable_names_are_checked_per_request(tmp_path: Path) -> None:
    h = build(tmp_path, good(), uri=ARN.format(name="${stageVariables.fn}"))
    response = h.request("GET", "/prod/x")  # no runtime, stage variable unset: 500
    assert (response.status, response.body) == (500, b'{"message": "Internal server error"}')


def test_functions_without_the_plugin_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, good(), plugins=("mock", "mapping"))
    assert "'functions' feature" in str(info.value)


@pytest.mark.parametrize(("uri", "name", "region", "qualifier"), [
    (ARN.format(name="Fn"), "Fn", "us-east-1", None),
    ("arn:aws:lambda:eu-west-1:123456789012:function:Fn", "Fn", "eu-west-1", None),
    ("arn:aws:lambda:eu-west-1:123456789012:function:Fn:live", "Fn", "eu-west-1", "live"),
    ("arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:"
     "eu-west-1:123456789012:function:Fn:7/invocations", "Fn", "eu-west-1", "7"),
])
def test_function_uris(uri: str, name: str, region: str, qualifier: str | None) -> None:
    ref = parse_function_uri(uri)
    assert ref is not None
    assert (ref.name, ref.region, ref.qualifier) == (name, region, qualifier)


def test_not_a_function_uri() -> None:
    assert parse_function_uri("http://example.com") is None
    assert parse_function_uri("arn:aws:s3:::bucket") is None


def test_runtime_command_resolves_its_program(tmp_path: Path) -> None:
    import sys

    from twistgw_lambda.functions import parse_function

    code = tmp_path / "code"
    code.mkdir()
    (code / "bootstrap").write_text("#!/bin/sh\n", encoding="utf-8")
    (code / "bootstrap").chmod(0o755)
    fn = parse_function("F", {"runtime": "command", "code": "code",
                              "command": ["./bootstrap", "x"]}, "gw.yaml", tmp_path)
    assert fn.command == (str(code / "bootstrap"), "x") and fn.handler == ""
    fn = parse_function("F", {"runtime": "command", "code": "code", "handler": "app.h",
                              "command": ["python", "-m", "awslambdaric", "app.h"]},
                        "gw.yaml", tmp_path)
    assert fn.command == (sys.executable, "-m", "awslambdaric", "app.h")
    assert fn.handler == "app.h"


@pytest.mark.parametrize(("spec", "where", "fix"), [
    ({"runtime": "command", "command": []}, "functions.F.command", "list of strings"),
    ({"runtime": "command"}, "functions.F.command", "list of strings"),
    ({"runtime": "command", "command": ["./missing"]}, "functions.F.command",
     "not an executable file"),
    ({"runtime": "command", "command": ["no-such-program-anywhere"]}, "functions.F.command",
     "not an executable file"),
    ({"handler": "app.h", "command": ["./bootstrap"]}, "functions.F.command",
     "only runtime: command"),
])
def test_bad_runtime_command(tmp_path: Path, spec: dict[str, Any], where: str,
                             fix: str) -> None:
    from twistgw_lambda.functions import parse_function

    with pytest.raises(ConfigError) as info:
        parse_function("F", spec, "gw.yaml", tmp_path)
    assert info.value.path == where and fix in info.value.problem
