"""A reload (SIGHUP) keeps the admin plugin's metrics and listener (issue 8): requests
served before and after the switch are counted in the same series."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import twistgw_admin
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from twistgw.config import load_config
from twistgw.gateway import Gateway
from twistgw.testing import make_inbound, write_config

if TYPE_CHECKING:
    from conftest import Builders


def _get(gateway: Gateway, path: str) -> int:
    result: Any = gateway.pipeline.handle(gateway.deployment,
                                          make_inbound("GET", path, listener="public"))
    if isinstance(result, Deferred):
        box: list[Any] = []
        result.addBoth(box.append)
        result = box[0]
    gateway.pipeline.finished(result)
    return int(result.response.status)


def _count(gateway: Gateway) -> float:
    text = generate_latest(twistgw_admin.metrics_for(gateway).metrics.registry).decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == "twistgw_requests_total")


def test_metrics_and_admin_listener_survive_a_reload(tmp_path: Path, b: Builders) -> None:
    def write(body: str) -> Path:
        config = b.gateway_config(stages=[{"name": "prod"}])
        config["listeners"].append({"name": "ops", "endpoint": "tcp:0", "admin": True})
        config["plugins"] = {"enabled": ["mock", "mapping", "admin"]}
        return write_config(tmp_path, config, {
            "api.yaml": b.openapi({"/v": {"get": b.mock_op(200, body)}})})

    reactor = MemoryReactorClock()
    gateway = Gateway(load_config(write("1")), reactor=reactor)
    gateway.startService()
    admin = twistgw_admin.metrics_for(gateway)
    assert len(admin.ports) == 1
    assert _get(gateway, "/prod/v") == 200
    write("2")
    box: list[Any] = []
    gateway.reload().addBoth(box.append)
    assert box == [True]
    assert _get(gateway, "/prod/v") == 200
    assert twistgw_admin.metrics_for(gateway) is admin  # same listener, same registry
    assert _count(gateway) == 2
    gateway.stopService()
    assert twistgw_admin._admins.get(id(gateway.config)) is None  # shut down cleanly
