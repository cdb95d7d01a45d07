"""The installed ``twistgw`` command: ``validate`` and ``routes``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from acceptance_support import (
    LOOPBACK_LISTENER,
    command,
    mock_operation,
    run_command,
    write_config,
)

SHOP = {
    "openapi": "3.0.1",
    "info": {"title": "shop", "version": "1"},
    "paths": {
        "/items": {"get": mock_operation(200, "[]"), "post": mock_operation(201, "{}")},
        "/items/{id}": {"get": mock_operation(200, "{}")},
        "/{proxy+}": {"x-amazon-apigateway-any-method": mock_operation(200, "{}")},
    },
}
ADMIN = {
    "openapi": "3.0.1",
    "info": {"title": "admin", "version": "1"},
    "paths": {"/health": {"get": mock_operation(200, "{}")}},
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path,
        {
            "listeners": [LOOPBACK_LISTENER],
            "apis": [
                {"id": "shop", "type": "REST", "definition": "shop.yaml",
                 "stages": [{"name": "prod"}, {"name": "beta"}]},
                {"id": "admin", "type": "REST", "definition": "admin.yaml",
                 "stages": [{"name": "v1"}]},
            ],
            "plugins": {"enabled": ["mock", "mapping"]},
        },
        {"shop.yaml": SHOP, "admin.yaml": ADMIN},
    )


def twistgw(*args: str) -> tuple[int, str]:
    result = run_command([*command("twistgw"), *args])
    return result.returncode, result.stdout


def test_validate_good_config(config: Path) -> None:
    status, out = twistgw("validate", str(config))
    assert status == 0, out
    assert out.strip() == (f"{config}: OK (2 APIs, 5 routes; plugins: gateway_responses==core, "
                           "access_log==core, mapping==0.1.0, mock==0.1.0)")


def test_validate_bad_config(config: Path) -> None:
    config.write_text(config.read_text().replace("stages:", "stagez:", 1))
    status, out = twistgw("validate", str(config))
    assert status == 1
    assert out.startswith(f"error: {config}: apis[0].stagez: unknown key; the keys allowed "
                          "here are: "), out
    assert "Traceback" not in out


def test_validate_defaults_to_the_demo() -> None:
    status, out = twistgw("validate")
    assert status == 0, out
    # The installed package's twistgw/demo/, or examples/demo/ when the twistgw package is
    # imported from a source tree (PYTHONPATH pointing at the checkout).
    assert re.match(r"\S+/(twistgw|examples)/demo/gateway\.yaml: OK \(1 API, 5 routes; "
                    r"plugins: ", out), out


def test_routes_prints_the_route_table(config: Path) -> None:
    status, out = twistgw("routes", str(config))
    assert status == 0, out
    lines = [line.rstrip() for line in out.splitlines()]
    assert lines[0] == "API shop (REST, shop) stages: prod, beta; listeners: public"
    shop_routes = [re.sub(r"\s+", " ", line.strip()) for line in lines[1:5]]
    assert shop_routes == [
        "GET /items -> MOCK",
        "POST /items -> MOCK",
        "GET /items/{id} -> MOCK",
        "ANY /{proxy+} -> MOCK",
    ]
    assert lines[5] == "API admin (REST, admin) stages: v1; listeners: public"
    assert re.sub(r"\s+", " ", lines[6].strip()) == "GET /health -> MOCK"
    assert len(lines) == 7


def test_routes_of_a_broken_config_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"apis": [{"id": "x", "definition": "gone.yaml",
                                                "stages": ["prod"]}]})
    status, out = twistgw("routes", str(config))
    assert status == 1
    assert f"error: {config}: apis[0].definition: gone.yaml does not exist" in out


def test_no_command_prints_usage() -> None:
    status, out = twistgw()
    assert status == 2
    assert "usage: twistgw" in out
