"""A reload (SIGHUP) keeps the auth plugin's caches while what they depend on is unchanged.

The plugin's ``prepare_reload`` is called with the serving gateway and the new config's
deployment (two in-process gateways from test_auth_lambda's builder, fake function pools):
a Lambda authorizer result cached before the reload answers after it unless that
authorizer's definition changed; the JWKS caches and verified tokens carry over while
``plugins.settings.auth`` is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import twistgw_auth
from test_auth_lambda import ALLOW_ALL, Gateways, gateway, run, token_scheme, undo
from twistgw_auth import caches_for, lambda_cache_for

from twistgw.reload import ReloadStep
from twistgw.testing import GatewayHarness

__all__ = ["undo"]  # the fixture, imported for the tests below

TOKEN = {"Authorization": "Bearer abc"}


def _reload(old: GatewayHarness, new: GatewayHarness) -> None:
    step = twistgw_auth.prepare_reload(gateway=old.gateway, deployment=new.gateway.deployment)
    assert isinstance(step, ReloadStep)
    step.commit()


def test_prepare_reload_keeps_results_of_unchanged_lambda_authorizers(
        tmp_path: Path, undo: Gateways) -> None:
    old, before = gateway(tmp_path / "a", undo, token_scheme(), lambda e: ALLOW_ALL)
    assert run(old, "GET", "/prod/pets/1", headers=TOKEN).status == 200
    assert len(before.events) == 1
    new, after = gateway(tmp_path / "b", undo, token_scheme(), lambda e: ALLOW_ALL)
    _reload(old, new)
    assert lambda_cache_for(new.config) is lambda_cache_for(old.config)
    assert run(new, "GET", "/prod/pets/1", headers=TOKEN).status == 200
    assert after.events == []  # answered from the result cached before the reload
    assert run(new, "GET", "/prod/pets/1", headers={"Authorization": "other"}).status == 200
    assert len(after.events) == 1  # another token is still asked for


def test_prepare_reload_drops_results_of_a_changed_lambda_authorizer(
        tmp_path: Path, undo: Gateways) -> None:
    old, _ = gateway(tmp_path / "a", undo, token_scheme(), lambda e: ALLOW_ALL)
    assert run(old, "GET", "/prod/pets/1", headers=TOKEN).status == 200
    changed = token_scheme(identityValidationExpression="^Bearer [a-z]+$")
    new, after = gateway(tmp_path / "b", undo, changed, lambda e: ALLOW_ALL)
    _reload(old, new)
    assert run(new, "GET", "/prod/pets/1", headers=TOKEN).status == 200
    assert len(after.events) == 1  # the changed authorizer decides afresh


def _plain(leeway: int) -> GatewayHarness:
    """A gateway with the auth plugin and its settings, on a MOCK API."""
    op = {"responses": {"200": {"description": "ok"}},
          "x-amazon-apigateway-integration": {
              "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
              "responses": {"default": {"statusCode": "200"}}}}
    return GatewayHarness({
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "plain", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping", "auth"],
                    "settings": {"auth": {"jwt": {"leeway": leeway}}}},
        "access_log": False,
    }, definitions={"api.yaml": {"openapi": "3.0.1", "info": {"title": "p", "version": "1"},
                                 "paths": {"/p": {"get": op}}}})


def test_prepare_reload_keeps_jwks_caches_while_the_settings_are_unchanged() -> None:
    old = _plain(10)
    same = _plain(10)
    _reload(old, same)
    assert caches_for(same.config) is caches_for(old.config)
    changed = _plain(20)
    _reload(same, changed)
    assert caches_for(changed.config) is not caches_for(same.config)
    # The Lambda authorizer results do not depend on these settings: they still carry over.
    assert lambda_cache_for(changed.config) is lambda_cache_for(old.config)
