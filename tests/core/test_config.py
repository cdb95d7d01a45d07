"""Config errors: every refusal names the file, the key path inside it and the fix.

Covers the gateway config (:mod:`twistgw.config`), the plugin allowlist
(:mod:`twistgw.plugins`), the definition loader and the deployment check that refuses
what nothing implements (:mod:`twistgw.deployment`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from twisted.internet.task import Clock

from twistgw.config import GatewayConfig, Secret, load_config
from twistgw.errors import ConfigError
from twistgw.gateway import Gateway
from twistgw.testing import write_config

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

PETS = {"/pets": {"get": {"responses": {"200": {"description": "ok"}},
                          "x-amazon-apigateway-integration": {
                              "type": "mock",
                              "requestTemplates": {"application/json": '{"statusCode": 200}'},
                              "responses": {"default": {"statusCode": "200"}}}}}}


def _doc(paths: Mapping[str, Any] = PETS, **root: Any) -> dict[str, Any]:
    return {"openapi": "3.0.1", "info": {"title": "t", "version": "1"}, **root,
            "paths": dict(paths)}


def _config(**top: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "petstore", "definition": "api.yaml", "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping"]},
        "access_log": False,
    }
    config.update(top)
    return config


def _api(**fields: Any) -> dict[str, Any]:
    api: dict[str, Any] = {"id": "petstore", "definition": "api.yaml",
                           "stages": [{"name": "prod"}]}
    api.update(fields)
    return api


def build(tmp_path: Path, config: Mapping[str, Any],
          definitions: Mapping[str, Any] | None = None) -> Gateway:
    """Load ``config`` and build the gateway exactly as ``twistd apigw`` would (no bind)."""
    path = write_config(tmp_path, config, {"api.yaml": _doc()} if definitions is None
                        else definitions)
    return Gateway(load_config(path), reactor=Clock())


def refused(tmp_path: Path, config: Mapping[str, Any],
            definitions: Mapping[str, Any] | None = None) -> ConfigError:
    """The ConfigError that loading ``config`` raises."""
    with pytest.raises(ConfigError) as info:
        build(tmp_path, config, definitions)
    return info.value


def assert_names(error: ConfigError, file: Path | str, path: str, *fix: str) -> None:
    """``error`` reads ``<file>: <path>: <problem>`` and the problem gives ``fix``."""
    text = str(error)
    assert error.file == str(file)
    assert error.path == path
    assert text.startswith(f"{file}: {path}: "), text
    for words in fix:
        assert words in error.problem, (words, text)


# -- the gateway config ------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    err = refused(tmp_path, _config(listenrs=[]))
    assert_names(err, tmp_path / "gateway.yaml", "listenrs", "unknown key",
                 "the keys allowed here are:", "listeners")


def test_unknown_key_in_an_api(tmp_path: Path) -> None:
    err = refused(tmp_path, _config(apis=[_api(stagez=[{"name": "prod"}])]))
    assert_names(err, tmp_path / "gateway.yaml", "apis[0].stagez", "unknown key",
                 "stages")


def test_missing_definition_file(tmp_path: Path) -> None:
    err = refused(tmp_path, _config(apis=[_api(definition="nosuch.yaml")]))
    assert_names(err, tmp_path / "gateway.yaml", "apis[0].definition", "nosuch.yaml",
                 "does not exist", f"relative paths resolve against {tmp_path}")


def test_definition_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    sub = tmp_path / "defs"
    sub.mkdir()
    (sub / "api.yaml").write_text(yaml.safe_dump(_doc()), encoding="utf-8")
    gw = build(tmp_path, _config(apis=[_api(definition="defs/api.yaml")]), {})
    assert gw.config.apis[0].definition == sub / "api.yaml"


@pytest.mark.parametrize("name", ["pr od", "", "a/b", "x" * 129, "$default"])
def test_bad_stage_name(tmp_path: Path, name: str) -> None:
    err = refused(tmp_path, _config(apis=[_api(stages=[{"name": name}])]))
    expected_fix = "expected a non-empty string" if name == "" else "use letters, digits"
    assert_names(err, tmp_path / "gateway.yaml", "apis[0].stages[0].name", expected_fix)


def test_rest_api_needs_a_stage(tmp_path: Path) -> None:
    err = refused(tmp_path, _config(apis=[_api(stages=[])]))
    assert_names(err, tmp_path / "gateway.yaml", "apis[0].stages", "stages: [{name: prod}]")


def test_duplicate_listener(tmp_path: Path) -> None:
    listeners = [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"},
                 {"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}]
    err = refused(tmp_path, _config(listeners=listeners))
    assert_names(err, tmp_path / "gateway.yaml", "listeners[1].name", "'public'",
                 "names must be unique")


def test_unknown_listener_referenced(tmp_path: Path) -> None:
    err = refused(tmp_path, _config(apis=[_api(listeners=["private"])]))
    assert_names(err, tmp_path / "gateway.yaml", "apis[0].listeners[0]", "'private'",
                 "define it under listeners")


@pytest.mark.parametrize(("variables", "key", "fix"), [
    ({"bad-name": "x"}, "bad-name", "names use letters, digits and '_'"),
    ({"url": "has space"}, "url", "values use letters, digits and -._~:/?#&=,"),
    ({"flag": True}, "flag", "values are strings"),
    ({"nested": {"a": 1}}, "nested", "values are strings"),
])
def test_bad_stage_variable(tmp_path: Path, variables: dict[str, Any], key: str,
                            fix: str) -> None:
    err = refused(tmp_path, _config(apis=[_api(stages=[{"name": "prod",
                                                        "variables": variables}])]))
    assert_names(err, tmp_path / "gateway.yaml", f"apis[0].stages[0].variables.{key}", fix)


def test_good_stage_variables_are_kept_as_strings(tmp_path: Path) -> None:
    stages = [{"name": "prod", "variables": {"url": "http://h:9000/a?b=c", "n": 3}}]
    gw = build(tmp_path, _config(apis=[_api(stages=stages)]))
    assert dict(gw.config.apis[0].stages[0].variables) == {"url": "http://h:9000/a?b=c",
                                                           "n": "3"}


def test_env_secret_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWISTGW_TEST_TOKEN", raising=False)
    plugins = {"enabled": ["mock", "mapping"],
               "settings": {"mock": {"token": {"$env": "TWISTGW_TEST_TOKEN"}}}}
    err = refused(tmp_path, _config(plugins=plugins))
    assert_names(err, tmp_path / "gateway.yaml", "plugins.settings.mock.token",
                 "TWISTGW_TEST_TOKEN is not set", "export it before starting the gateway")


def test_env_secret_set_is_resolved_and_hidden(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWISTGW_TEST_TOKEN", "s3cr3t-value")
    plugins = {"enabled": ["mock", "mapping"],
               "settings": {"mock": {"token": {"$env": "TWISTGW_TEST_TOKEN"},
                                     "nested": [{"k": {"$env": "TWISTGW_TEST_TOKEN"}}]}}}
    gw = build(tmp_path, _config(plugins=plugins))
    token = gw.config.plugin_settings("mock")["token"]
    assert isinstance(token, Secret)
    assert token == "s3cr3t-value"
    assert gw.config.plugin_settings("mock")["nested"][0]["k"] == "s3cr3t-value"
    assert repr(token) == "Secret('***')"
    assert "s3cr3t-value" not in repr(gw.config)
    assert "s3cr3t-value" not in repr(gw.config.plugins)


def test_file_secret(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("from-a-file\n", encoding="utf-8")
    plugins = {"enabled": ["mock", "mapping"],
               "settings": {"mock": {"token": {"$file": "token.txt"}}}}
    gw = build(tmp_path, _config(plugins=plugins))
    token = gw.config.plugin_settings("mock")["token"]
    assert isinstance(token, Secret)
    assert token == "from-a-file"
    assert "from-a-file" not in repr(gw.config)


def test_file_secret_missing(tmp_path: Path) -> None:
    plugins = {"enabled": ["mock", "mapping"],
               "settings": {"mock": {"token": {"$file": "nosuch.txt"}}}}
    err = refused(tmp_path, _config(plugins=plugins))
    assert_names(err, tmp_path / "gateway.yaml", "plugins.settings.mock.token.$file",
                 "cannot read the secret file")


def test_plugin_enabled_but_not_installed(tmp_path: Path) -> None:
    err = refused(tmp_path, _config(plugins={"enabled": ["mock", "nosuch"]}))
    assert_names(err, tmp_path / "gateway.yaml", "plugins.enabled[1]", "'nosuch'",
                 "enabled but not installed", "install its package or remove it")


def test_plugin_listed_twice(tmp_path: Path) -> None:
    err = refused(tmp_path, _config(plugins={"enabled": ["mock", "mock"]}))
    assert_names(err, tmp_path / "gateway.yaml", "plugins.enabled", "listed twice")


def test_listener_tls_is_not_implemented_yet(tmp_path: Path) -> None:
    listeners = [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1",
                  "tls": {"certificate": "gw.pem", "key": "gw.key"}}]
    err = refused(tmp_path, _config(listeners=listeners))
    assert_names(err, tmp_path / "gateway.yaml", "listeners[0].tls",
                 "'tls' is not implemented", "remove it or enable the plugin")


def test_invalid_yaml_in_the_gateway_config(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("apis:\n  - id: x\n    definition: a: b\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: line 3 column 18: invalid YAML: mapping values are "
                               "not allowed here")


def test_invalid_yaml_in_a_definition(tmp_path: Path) -> None:
    text = "openapi: 3.0.1\npaths:\n  /pets:\n    get: {responses: [\n"
    err = refused(tmp_path, _config(), {"api.yaml": text})
    assert err.file == str(tmp_path / "api.yaml")
    assert err.path == "line 5 column 1"
    assert "invalid YAML" in err.problem


def test_invalid_json_definition_reports_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "api.json").write_text('{"openapi": "3.0.1",\n "paths": {,}}',
                                       encoding="utf-8")
    err = refused(tmp_path, _config(apis=[_api(definition="api.json")]), {})
    assert err.file == str(tmp_path / "api.json")
    assert err.path == "line 2 column 12"
    assert "invalid JSON" in err.problem


# -- definitions checked against what the plugins implement ------------------------------------


def test_unknown_extension_is_an_error(tmp_path: Path) -> None:
    paths = {"/pets": {"get": {**PETS["/pets"]["get"], "x-amazon-apigateway-nosuch": 1}}}
    err = refused(tmp_path, _config(), {"api.yaml": _doc(paths)})
    assert_names(err, tmp_path / "api.yaml", "paths./pets.get.x-amazon-apigateway-nosuch",
                 "not implemented", "enable a plugin that provides it", "'strict: false'")


def test_unknown_root_extension_is_an_error(tmp_path: Path) -> None:
    err = refused(tmp_path, _config(),
                  {"api.yaml": _doc(**{"x-amazon-apigateway-policy": {"Version": "x"}})})
    assert_names(err, tmp_path / "api.yaml", "x-amazon-apigateway-policy", "not implemented")


def test_unknown_extension_is_a_warning_when_not_strict(tmp_path: Path) -> None:
    paths = {"/pets": {"get": {**PETS["/pets"]["get"], "x-amazon-apigateway-nosuch": 1}}}
    gw = build(tmp_path, _config(strict=False), {"api.yaml": _doc(paths)})
    warnings = gw.deployment.warnings
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"{tmp_path / 'api.yaml'}: paths./pets.get.x-amazon-apigateway-nosuch: ")
    assert "strict is false" in warnings[0]


def test_integration_type_no_plugin_implements(tmp_path: Path, b: Builders) -> None:
    doc = b.openapi({"/p": {"get": b.proxy_op()}})
    err = refused(tmp_path, _config(), {"api.yaml": doc})
    assert_names(err, tmp_path / "api.yaml",
                 "paths./p.get.x-amazon-apigateway-integration.type",
                 "HTTP_PROXY integration type is not implemented",
                 "enable the plugin that provides it")


def test_unimplemented_integration_type_when_not_strict(make_harness: HarnessFactory,
                                                        b: Builders) -> None:
    """Served anyway under ``strict: false``: the route answers 500, never silently 200."""
    h = make_harness(b.openapi({"/p": {"get": b.proxy_op()}}),
                     config=b.gateway_config(strict=False))
    assert any("HTTP_PROXY integration type is not implemented" in w
               for w in h.gateway.deployment.warnings)
    response = h.request("GET", "/prod/p")
    assert response.status == 500
    assert response.body == b'{"message": "Internal server error"}'


def test_http_api_with_a_mock_integration_is_refused(tmp_path: Path, b: Builders) -> None:
    doc = b.openapi({"/p": {"get": b.mock_op()}})
    err = refused(tmp_path, _config(apis=[_api(type="HTTP", stages=None)]),
                  {"api.yaml": doc})
    assert_names(err, tmp_path / "api.yaml",
                 "paths./p.get.x-amazon-apigateway-integration.type",
                 "HTTP APIs support aws_proxy and http_proxy integrations, not mock",
                 "serve this API as type REST")


def test_http_api_integration_needs_payload_format_version(tmp_path: Path,
                                                           b: Builders) -> None:
    op = b.proxy_op()
    del op["x-amazon-apigateway-integration"]["payloadFormatVersion"]
    err = refused(tmp_path, _config(apis=[_api(type="HTTP", stages=None)]),
                  {"api.yaml": b.openapi({"/p": {"get": op}})})
    assert_names(err, tmp_path / "api.yaml",
                 "paths./p.get.x-amazon-apigateway-integration.payloadFormatVersion",
                 '"2.0" for Lambda')


def test_invalid_gateway_response_type(tmp_path: Path) -> None:
    doc = _doc(**{"x-amazon-apigateway-gateway-responses": {
        "NOT_A_TYPE": {"statusCode": "400"}}})
    err = refused(tmp_path, _config(), {"api.yaml": doc})
    assert_names(err, tmp_path / "api.yaml",
                 "x-amazon-apigateway-gateway-responses.NOT_A_TYPE",
                 "is not a gateway response type", "use one of", "DEFAULT_4XX",
                 "MISSING_AUTHENTICATION_TOKEN")


def test_request_too_large_cannot_be_customised(tmp_path: Path) -> None:
    doc = _doc(**{"x-amazon-apigateway-gateway-responses": {
        "REQUEST_TOO_LARGE": {"statusCode": "400"}}})
    err = refused(tmp_path, _config(), {"api.yaml": doc})
    assert_names(err, tmp_path / "api.yaml",
                 "x-amazon-apigateway-gateway-responses.REQUEST_TOO_LARGE",
                 "does not support customising", "remove this entry")


def test_vtl_request_template_is_refused_as_not_implemented(tmp_path: Path,
                                                            b: Builders) -> None:
    """Without the mapping plugin (which claims 'mapping_templates') VTL is refused."""
    doc = b.openapi({"/p": {"post": b.mock_op(template="$input.body")}})
    err = refused(tmp_path, _config(plugins={"enabled": ["mock"]}), {"api.yaml": doc})
    assert_names(err, tmp_path / "api.yaml",
                 "paths./p.post.x-amazon-apigateway-integration.requestTemplates."
                 "application/json",
                 "a VTL mapping template is not implemented", "'mapping_templates'")


def test_vtl_response_template_is_refused_as_not_implemented(tmp_path: Path,
                                                             b: Builders) -> None:
    doc = b.openapi({"/p": {"get": b.mock_op(body='{"id": "$input.params(\'id\')"}')}})
    err = refused(tmp_path, _config(plugins={"enabled": ["mock"]}), {"api.yaml": doc})
    assert_names(err, tmp_path / "api.yaml",
                 "paths./p.get.x-amazon-apigateway-integration.responses.default."
                 "responseTemplates.application/json",
                 "a VTL mapping template is not implemented")


def test_operation_without_integration_is_refused(tmp_path: Path) -> None:
    doc = _doc({"/p": {"get": {"responses": {"200": {"description": "ok"}}}}})
    err = refused(tmp_path, _config(), {"api.yaml": doc})
    assert_names(err, tmp_path / "api.yaml", "paths./p.get",
                 "no x-amazon-apigateway-integration", "type: mock")


def test_authorizer_kind_nobody_implements(tmp_path: Path, b: Builders) -> None:
    doc = b.openapi(
        {"/p": {"get": {**b.mock_op(), "security": [{"auth": []}]}}},
        components={"securitySchemes": {"auth": {
            "type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {"type": "token",
                                               "authorizerUri": "arn:x"}}}})
    err = refused(tmp_path, _config(), {"api.yaml": doc})
    assert_names(err, tmp_path / "api.yaml", "paths./p.get.security",
                 "the token authorizer (scheme 'auth') is not implemented")


def test_valid_config_loads(tmp_path: Path) -> None:
    gw = build(tmp_path, _config())
    assert isinstance(gw.config, GatewayConfig)
    assert [a.id for a in gw.config.apis] == ["petstore"]
    assert gw.deployment.warnings == ()
