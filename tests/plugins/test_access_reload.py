"""A reload (SIGHUP) keeps the access plugin's counts (issue 8): the new config's control
shares the running store, so quotas and token buckets are never reset by a reload, and
changed limits apply to the counts already made."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from test_access import KEY_A, LIMIT, api_doc, keys, plan
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from twistgw.config import load_config
from twistgw.gateway import Gateway
from twistgw.testing import make_inbound, write_config

if TYPE_CHECKING:
    from conftest import Builders


def _config(tmp_path: Path, b: Builders, limit: int) -> Path:
    config = b.gateway_config(stages=[{"name": "prod"}])
    config["plugins"] = {"enabled": ["mock", "mapping", "access"], "settings": {"access": {
        "api_keys": keys(), "usage_plans": [plan(quota={"limit": limit, "period": "DAY"})]}}}
    return write_config(tmp_path, config, {"api.yaml": api_doc(b)})


def _get(gateway: Gateway) -> tuple[int, bytes]:
    result: Any = gateway.pipeline.handle(gateway.deployment, make_inbound(
        "GET", "/prod/pets", headers={"x-api-key": KEY_A}, listener="public"))
    if isinstance(result, Deferred):
        box: list[Any] = []
        result.addBoth(box.append)
        result = box[0]
    return result.response.status, result.response.body


def _reload(gateway: Gateway) -> Any:
    box: list[Any] = []
    gateway.reload().addBoth(box.append)
    return box[0]


def test_quota_counts_survive_a_reload_and_new_limits_apply_to_them(
        tmp_path: Path, b: Builders) -> None:
    gateway = Gateway(load_config(_config(tmp_path, b, 3)), reactor=MemoryReactorClock())
    gateway.startService()
    assert [_get(gateway)[0] for _ in range(2)] == [200, 200]
    assert _reload(gateway) is True  # the same settings
    assert _get(gateway)[0] == 200  # the third of 3
    assert _get(gateway) == (429, LIMIT)
    _config(tmp_path, b, 5)
    assert _reload(gateway) is True
    assert [_get(gateway)[0] for _ in range(3)] == [200, 200, 429]  # 4 and 5 of 5
    gateway.stopService()
