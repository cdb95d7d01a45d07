"""A broken config stops ``twistd -n apigw --config F`` before it binds, saying what to fix.

Every case checks the operator's view: a non-zero exit (well within the subprocess
timeout), no traceback, and one message naming the file, the key path inside it and the
fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from acceptance_support import (
    LOOPBACK_LISTENER,
    command,
    mock_operation,
    run_command,
    twistd,
    write_config,
)

GOOD_API: dict[str, Any] = {
    "openapi": "3.0.1",
    "info": {"title": "t", "version": "1"},
    "paths": {"/x": {"get": mock_operation(200, '{"ok": true}')}},
}


def api_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": "a", "type": "REST", "definition": "api.yaml",
                             "stages": [{"name": "prod"}]}
    entry.update(changes)
    return entry


def with_root(**extra: Any) -> dict[str, Any]:
    return {**GOOD_API, **extra}


def with_operation(**extra: Any) -> dict[str, Any]:
    return {**GOOD_API, "paths": {"/x": {"get": {**mock_operation(200), **extra}}}}


@attrs.frozen
class Case:
    """A broken config: what is wrong, where the message must point, and the fix it gives."""

    id: str
    config: dict[str, Any]
    definition: dict[str, Any] | str
    file: str  # "gateway.yaml" or "api.yaml": the file the message must name
    key: str
    fix: str


CASES = [
    Case("unknown key in apis[0]",
         {"apis": [api_entry(stage="prod")]}, GOOD_API, "gateway.yaml",
         "apis[0].stage", "unknown key; the keys allowed here are: definition, "),
    Case("unknown top-level key",
         {"apis": [api_entry()], "listener": []}, GOOD_API, "gateway.yaml",
         "listener", "unknown key; the keys allowed here are:"),
    Case("missing definition file",
         {"apis": [api_entry(definition="nothere.yaml")]}, GOOD_API, "gateway.yaml",
         "apis[0].definition", "nothere.yaml does not exist"),
    Case("bad stage name",
         {"apis": [api_entry(stages=[{"name": "pr od"}])]}, GOOD_API, "gateway.yaml",
         "apis[0].stages[0].name", "use letters, digits, '-' and '_'"),
    Case("unknown extension at the root",
         {"apis": [api_entry()]},
         with_root(**{"x-amazon-apigateway-minimum-compression-size": 1024}), "api.yaml",
         "x-amazon-apigateway-minimum-compression-size",
         "set 'strict: false' in the gateway config"),
    Case("unknown extension on an operation",
         {"apis": [api_entry()]},
         with_operation(**{"x-amazon-apigateway-throttle": {"rate": 1}}), "api.yaml",
         "paths./x.get.x-amazon-apigateway-throttle", "remove it, enable a plugin that "
         "provides it"),
    Case("integration type without a plugin",
         # http_proxy is shipped (the http plugin); an allowlist without it leaves the
         # type unimplemented, which is what this case is about.
         {"apis": [api_entry()], "plugins": {"enabled": ["mock", "mapping"]}},
         with_operation(**{"x-amazon-apigateway-integration": {
             "type": "http_proxy", "uri": "http://127.0.0.1:9/", "httpMethod": "GET"}}),
         "api.yaml", "paths./x.get.x-amazon-apigateway-integration.type",
         "enable the plugin that provides it"),
    Case("invalid YAML in a definition",
         {"apis": [api_entry()]}, "openapi: 3.0.1\npaths: [\n", "api.yaml",
         "line 3", "invalid YAML"),
    Case("plugin enabled but not installed",
         {"apis": [api_entry()], "plugins": {"enabled": ["mock", "nosuch"]}}, GOOD_API,
         "gateway.yaml", "plugins.enabled[1]", "plugin 'nosuch' is enabled but not installed"),
]


def write_case(directory: Path, case: Case) -> Path:
    return write_config(directory, {"listeners": [LOOPBACK_LISTENER], **case.config},
                        {"api.yaml": case.definition})


def expected_prefix(directory: Path, config: Path, case: Case) -> str:
    file = config if case.file == "gateway.yaml" else directory / case.file
    return f"{file}: {case.key}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_twistd_refuses_a_broken_config(tmp_path: Path, case: Case) -> None:
    config = write_case(tmp_path, case)
    result = run_command(twistd("apigw", "--config", str(config)), cwd=tmp_path)
    out = result.stdout
    assert result.returncode != 0, out
    assert "configuration error: " + expected_prefix(tmp_path, config, case) in out, out
    assert case.fix in out, out
    assert "Traceback" not in out, out
    assert "serving http" not in out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_refuses_a_broken_config(tmp_path: Path, case: Case) -> None:
    config = write_case(tmp_path, case)
    result = run_command([*command("twistgw"), "validate", str(config)])
    assert result.returncode == 1, result.stdout
    assert result.stdout.startswith("error: " + expected_prefix(tmp_path, config, case)), \
        result.stdout
    assert case.fix in result.stdout
    assert "Traceback" not in result.stdout


def test_strict_false_downgrades_unknown_extensions_to_warnings(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {"listeners": [LOOPBACK_LISTENER], "apis": [api_entry()], "strict": False},
        {"api.yaml": with_root(**{"x-amazon-apigateway-minimum-compression-size": 1024})})
    result = run_command([*command("twistgw"), "validate", str(config)])
    assert result.returncode == 0, result.stdout
    assert f"warning: {tmp_path / 'api.yaml'}: x-amazon-apigateway-minimum-compression-size: " \
        in result.stdout
    assert "OK (1 API, 1 route;" in result.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    result = run_command(twistd("apigw", "--config", str(missing)), cwd=tmp_path)
    assert result.returncode != 0
    assert str(missing) in result.stdout, result.stdout
    assert "Traceback" not in result.stdout
