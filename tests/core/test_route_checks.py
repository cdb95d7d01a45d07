"""Registry.add_route_check: plugins refuse routes at load time, naming file and path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from twistgw import ConfigError, Registry, hookimpl
from twistgw.config import load_config
from twistgw.gateway import Gateway
from twistgw.testing import write_config

if TYPE_CHECKING:
    from twistgw.deployment import Route

    from ..conftest import Builders


class NoDeletes:
    """Refuses every DELETE operation, the way a plugin refuses what it cannot serve."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def register(self, registry: Registry) -> None:
        registry.add_route_check(self.check)

    def check(self, route: Route) -> None:
        op = route.operation
        self.seen.append(f"{op.method} {op.path}")
        if op.method == "DELETE":
            file, _, path = op.where.partition(": ")
            raise ConfigError(file, path, "DELETE is not served by this plugin; remove it")


def definition(b: Builders) -> dict[str, Any]:
    return b.openapi({"/pets": {"get": b.mock_op(200), "delete": b.mock_op(200)}})


def test_route_check_sees_every_route_and_refuses_with_file_and_path(
        tmp_path: Path, b: Builders) -> None:
    plugin = NoDeletes()
    path = write_config(tmp_path, b.gateway_config(), {"api.yaml": definition(b)})
    with pytest.raises(ConfigError) as info:
        Gateway(load_config(path), extra_plugins=[("nodeletes", plugin)])
    assert "GET /pets" in plugin.seen
    message = str(info.value)
    assert "api.yaml" in message
    assert "/pets" in message and "delete" in message.lower()
    assert "DELETE is not served by this plugin" in message


def test_route_check_refusal_is_a_warning_when_not_strict(tmp_path: Path, b: Builders) -> None:
    plugin = NoDeletes()
    path = write_config(tmp_path, b.gateway_config(strict=False), {"api.yaml": definition(b)})
    gateway = Gateway(load_config(path), extra_plugins=[("nodeletes", plugin)])
    assert any("DELETE is not served" in w for w in gateway.deployment.warnings)
