"""The sample plugin (tests/sample_plugins), installed like any third-party plugin.

It is enabled through the config's allowlist (``plugins: {enabled: [sample, mock,
mapping]}``) of a real ``twistd -n apigw`` and driven over HTTP.  There is one
``test_hook_<name>`` per hook (test_contract.py checks that), plus the failure cases: a
hook that raises gives the client AWS's 500 and the log names the plugin and the hook.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acceptance_support import (
    LOOPBACK_LISTENER,
    PROCESS_TIMEOUT,
    command,
    http_request,
    mock_operation,
    require_sample_plugin,
    run_command,
    running_gateway,
    twistd,
    wait_for_log,
    write_config,
)

from twistgw.testing import RunningGateway

SAMPLE_VERSION = "1.0.0"
GREETING = "hello from the definition"
PETS = [{"id": 1, "type": "dog"}]
INTERNAL_ERROR = b'{"message": "Internal server error"}'


def sample_definition(greeting: bool = True) -> dict[str, Any]:
    """MOCK routes, plus /sample/{id}: a MOCK route the sample plugin takes over."""
    doc: dict[str, Any] = {
        "openapi": "3.0.1",
        "info": {"title": "sample api", "version": "1"},
        "paths": {
            "/pets": {"get": mock_operation(200, '[{"id": 1, "type": "dog"}]')},
            # No response template: what the integration answered passes through mapping.
            "/sample/{id}": {"get": mock_operation(200), "post": mock_operation(200)},
        },
    }
    if greeting:
        doc["x-amazon-apigateway-sample-greeting"] = GREETING
    return doc


def sample_config(directory: Path, settings: dict[str, Any] | None = None,
                  enabled: list[str] | None = None, greeting: bool = True) -> Path:
    if settings is None:
        settings = {"integrate_paths": ["/sample/{id}"], "raise_on_header": True}
    return write_config(
        directory,
        {
            "listeners": [LOOPBACK_LISTENER],
            "apis": [{"id": "sampleapi", "type": "REST", "definition": "api.yaml",
                      "stages": [{"name": "test"}]}],
            "plugins": {"enabled": enabled or ["sample", "mock", "mapping"],
                        "settings": {"sample": settings}},
        },
        {"api.yaml": sample_definition(greeting)},
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    require_sample_plugin()
    with running_gateway(sample_config(tmp_path_factory.mktemp("sample"))) as running:
        yield running


def assert_plugin_failure_logged(gw: RunningGateway, hook: str) -> None:
    wait_for_log(gw, lambda text: f"plugin sample failed in hook {hook}" in text
                 and f"RuntimeError: sample plugin: {hook} failed as x-sample-raise asked"
                 in text)


# -- set-up hooks -----------------------------------------------------------------------------


def test_plugin_is_loaded_with_its_version(gw: RunningGateway) -> None:
    assert f"plugin loaded: sample=={SAMPLE_VERSION}" in gw.log_text


def test_hook_register(gw: RunningGateway, tmp_path: Path) -> None:
    # The definition uses the extension the plugin claims: it loads, and the plugin reads it.
    echo = http_request(gw.url("/test/sample/1")).json()
    assert echo["greeting"] == GREETING
    # Without the plugin nobody claims the extension, and the config is refused.
    config = sample_config(tmp_path, settings={}, enabled=["mock", "mapping"])
    result = run_command([*command("twistgw"), "validate", str(config)])
    assert result.returncode == 1, result.stdout
    assert "x-amazon-apigateway-sample-greeting" in result.stdout
    assert "api.yaml" in result.stdout


@pytest.mark.parametrize(("settings", "key", "hint"), [
    ({"integrate_paths": "/sample"}, "plugins.settings.sample.integrate_paths",
     "expected a list"),
    ({"integrate_paths": ["sample/{id}"]}, "plugins.settings.sample.integrate_paths[0]",
     "starting with '/'"),
    ({"wrap_body": "yes"}, "plugins.settings.sample.wrap_body", "expected true or false"),
    ({"colour": "blue"}, "plugins.settings.sample.colour", "the sample plugin reads"),
])
def test_hook_configure(tmp_path: Path, settings: dict[str, Any], key: str, hint: str) -> None:
    require_sample_plugin()
    config = sample_config(tmp_path, settings=settings)
    result = run_command(twistd("apigw", "--config", str(config)), cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{config}: {key}: " in result.stdout, result.stdout
    assert hint in result.stdout
    assert "Traceback" not in result.stdout
    checked = run_command([*command("twistgw"), "validate", str(config)])
    assert checked.returncode == 1
    assert key in checked.stdout


# -- lifecycle hooks --------------------------------------------------------------------------


def test_hook_startup(gw: RunningGateway) -> None:
    assert (f"sample plugin {SAMPLE_VERSION} started; answering ['/sample/{{id}}']"
            in gw.log_text), gw.log_text


def test_hook_shutdown(tmp_path: Path) -> None:
    require_sample_plugin()
    with running_gateway(sample_config(tmp_path)) as own:
        assert http_request(own.url("/test/pets")).status == 200
        assert http_request(own.url("/test/sample/1")).status == 200
        # A generous bound: on a busy machine 10 s (the default) could end in SIGKILL.
        status = own.stop(timeout=PROCESS_TIMEOUT)
        log = own.log_text
    assert status == 0, f"exit status {status}:\n{log}"
    assert "sample plugin stopped (requests finished: 2)" in log, log
    assert log.index("sample plugin stopped") < log.index("Server Shut Down.")


# -- request path -----------------------------------------------------------------------------


def test_hook_authorize(gw: RunningGateway) -> None:
    denied = http_request(gw.url("/test/pets"), headers={"x-sample-deny": "yes"})
    assert denied.status == 401
    assert denied.json() == {"message": "Unauthorized"}
    assert denied.header("x-amzn-ErrorType") == "UnauthorizedException"
    allowed = http_request(gw.url("/test/sample/1"), headers={"x-sample-user": "alice"})
    assert allowed.status == 200
    assert allowed.json()["principal"] == "alice"
    anonymous = http_request(gw.url("/test/sample/1"))
    assert anonymous.json()["principal"] == "anonymous"


def test_hook_map_request(gw: RunningGateway) -> None:
    echo = http_request(gw.url("/test/sample/7"), headers={"x-sample-user": "bob"}).json()
    # The integration (the plugin's own integrate) received the header map_request added.
    assert echo["headers"]["x-sample-mapped"] == "principal=bob"


def test_hook_integrate(gw: RunningGateway) -> None:
    reply = http_request(gw.url("/test/sample/42"), "POST", body=b"{}",
                         headers={"Content-Type": "application/json"})
    assert reply.status == 200
    echo = reply.json()
    assert echo["plugin"] == "sample"
    assert echo["resource"] == "/sample/{id}"
    assert echo["method"] == "POST"
    assert echo["path_params"] == {"id": "42"}


def test_integrate_leaves_mock_routes_to_mock(gw: RunningGateway) -> None:
    reply = http_request(gw.url("/test/pets"))
    assert reply.status == 200
    assert reply.json() == PETS


def test_hook_map_response(gw: RunningGateway) -> None:
    # The "done when": a plugin outside the package changes a response.
    pets = http_request(gw.url("/test/pets"))
    assert pets.status == 200
    assert pets.header("x-sample-plugin") == SAMPLE_VERSION, pets.headers
    owned = http_request(gw.url("/test/sample/1"))
    assert owned.header("x-sample-plugin") == SAMPLE_VERSION, owned.headers


def test_map_response_rewrites_the_body(tmp_path: Path) -> None:
    require_sample_plugin()
    config = sample_config(tmp_path, settings={"wrap_body": True})
    with running_gateway(config) as own:
        reply = http_request(own.url("/test/pets"))
    assert reply.status == 200
    assert reply.json() == {"data": PETS, "plugin": "sample"}
    assert int(reply.header("Content-Length") or -1) == len(reply.body)


def test_hook_handle_error(gw: RunningGateway) -> None:
    # On its own routes the plugin renders errors in its own shape...
    owned = http_request(gw.url("/test/sample/1"), headers={"x-sample-deny": "yes"})
    assert owned.status == 401
    assert owned.json() == {"plugin": "sample", "error": "UNAUTHORIZED",
                            "message": "Unauthorized"}
    assert owned.header("x-amzn-ErrorType") == "UnauthorizedException"
    # ...and leaves every other route to AWS's gateway responses.
    other = http_request(gw.url("/test/nowhere"))
    assert other.status == 403
    assert other.json() == {"message": "Missing Authentication Token"}


def test_hook_request_started(gw: RunningGateway) -> None:
    # An observer's failure is logged and never changes the response.
    reply = http_request(gw.url("/test/pets"), headers={"x-sample-raise": "request_started"})
    assert reply.status == 200
    assert reply.json() == PETS
    assert_plugin_failure_logged(gw, "request_started")


def test_hook_request_finished(gw: RunningGateway) -> None:
    before = http_request(gw.url("/test/sample/1")).json()["finished_before"]
    assert http_request(gw.url("/test/pets")).status == 200
    after = http_request(gw.url("/test/sample/1")).json()["finished_before"]
    assert after >= before + 2
    reply = http_request(gw.url("/test/pets"), headers={"x-sample-raise": "request_finished"})
    assert reply.status == 200
    assert reply.json() == PETS
    assert_plugin_failure_logged(gw, "request_finished")


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("hook", "path", "headers"), [
    ("authorize", "/test/pets", {}),
    ("map_request", "/test/pets", {}),
    ("integrate", "/test/pets", {}),
    ("map_response", "/test/pets", {}),
    ("handle_error", "/test/pets", {"x-sample-deny": "yes"}),
])
def test_raising_hook_gives_500_and_the_daemon_keeps_serving(
        gw: RunningGateway, hook: str, path: str, headers: dict[str, str]) -> None:
    reply = http_request(gw.url(path), headers={"x-sample-raise": hook, **headers})
    assert reply.status == 500
    assert reply.body == INTERNAL_ERROR
    assert reply.header("x-amzn-ErrorType") == "InternalServerErrorException"
    assert reply.header("x-amzn-RequestId")
    assert_plugin_failure_logged(gw, hook)
    assert gw.process is not None and gw.process.poll() is None
    after = http_request(gw.url("/test/pets"))
    assert (after.status, after.json()) == (200, PETS)


def test_enabled_plugin_not_installed_stops_startup(tmp_path: Path) -> None:
    config = sample_config(tmp_path, settings={}, enabled=["nosuch", "mock", "mapping"],
                           greeting=False)
    result = run_command(twistd("apigw", "--config", str(config)), cwd=tmp_path)
    assert result.returncode != 0
    assert re.search(rf"{re.escape(str(config))}: plugins\.enabled\[0\]: plugin 'nosuch' is "
                     r"enabled but not installed", result.stdout), result.stdout
    assert "install its package or remove it from the list" in result.stdout
