"""The access plugin's parts: settings checks, quota periods, the in-memory store."""

from __future__ import annotations

import calendar
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from twistgw_access.periods import period_bounds
from twistgw_access.redis_store import RedisSettings, parse_url
from twistgw_access.settings import ACCOUNT_DEFAULT, Throttle, parse_settings
from twistgw_access.store import (
    AccessStore,
    Bucket,
    Counter,
    MemoryStore,
    Outcome,
    QuotaCount,
)

from twistgw.config import GatewayConfig, parse_config
from twistgw.dispatch import run_maybe_sync
from twistgw.errors import ConfigError

if TYPE_CHECKING:
    from conftest import Builders

GOOD_KEY = "k" * 20


def config_with(tmp_path: Path, b: Builders, settings: Any) -> GatewayConfig:
    (tmp_path / "api.yaml").write_text("openapi: 3.0.1\npaths: {}\n", encoding="utf-8")
    doc = b.gateway_config(stages=[{"name": "prod"}, {"name": "beta"}])
    doc["apis"].append({"id": "httpapi", "type": "HTTP", "definition": "api.yaml"})
    doc["plugins"] = {"enabled": ["access"], "settings": {"access": settings}}
    return parse_config(doc, "gateway.yaml", tmp_path)


def plan(**extra: Any) -> dict[str, Any]:
    return {"id": "p", "apis": [{"api": "testapi", "stage": "prod"}], "keys": ["k"],
            **extra}


KEYS = [{"id": "k", "value": GOOD_KEY}]


def test_redis_store_settings(tmp_path: Path, b: Builders) -> None:
    store = parse_settings(config_with(tmp_path, b, {"store": {
        "url": "redis://:secret@10.0.0.5:6380/2", "failure": "closed"}})).store
    assert store == RedisSettings(url="redis://:secret@10.0.0.5:6380/2", failure="closed",
                                  timeout_ms=50)
    assert parse_url(store.url) == ("10.0.0.5", 6380, "secret", 2, None)
    assert parse_url("redis://gw:p%40ss@cache") == ("cache", 6379, "p@ss", 0, "gw")
    assert parse_settings(config_with(tmp_path, b, {})).store == "memory"


@pytest.mark.parametrize(("settings", "path", "fragment"), [
    ({"bogus": 1}, "access.bogus", "unknown key"),
    ({"api_keys": [{"id": "k", "value": "short"}]}, "access.api_keys[0].value",
     "API Key value should be at least 20 characters"),
    ({"api_keys": [{"id": "k", "value": "x" * 129}]}, "access.api_keys[0].value",
     "exceeds maximum size of 128 characters"),
    ({"api_keys": [{"id": "k", "value": "with spaces in the key value"}]},
     "access.api_keys[0].value", "printable ASCII"),
    ({"api_keys": [{"id": "k", "value": 12345678901234567890}]}, "access.api_keys[0].value",
     "$env"),
    ({"api_keys": [{"id": "k", "value": GOOD_KEY}, {"id": "k", "value": "m" * 20}]},
     "access.api_keys[1].id", "a second API key"),
    ({"api_keys": [{"id": "k", "value": GOOD_KEY}, {"id": "j", "value": GOOD_KEY}]},
     "access.api_keys[1].value", "must be unique"),
    ({"api_keys": [{"id": "bad id", "value": GOOD_KEY}]}, "access.api_keys[0].id",
     "letters, digits"),
    ({"api_keys": [{"id": "k", "value": GOOD_KEY, "enabled": "yes"}]},
     "access.api_keys[0].enabled", "true or false"),
    ({"api_keys": KEYS, "usage_plans": [plan(keys=["nope"])]}, "access.usage_plans[0].keys[0]",
     "no API key has id 'nope'"),
    ({"api_keys": KEYS, "usage_plans": [plan(apis=[{"api": "zzz", "stage": "prod"}])]},
     "access.usage_plans[0].apis[0].api", "no API has id 'zzz'"),
    ({"api_keys": KEYS, "usage_plans": [plan(apis=[{"api": "testapi", "stage": "dev"}])]},
     "access.usage_plans[0].apis[0].stage", "has no stage 'dev'"),
    ({"api_keys": KEYS, "usage_plans": [plan(apis=[{"api": "httpapi", "stage": "$default"}])]},
     "access.usage_plans[0].apis[0].api", "REST and WebSocket APIs only"),
    ({"api_keys": KEYS, "usage_plans": [plan(quota={"limit": 5, "period": "YEAR"})]},
     "access.usage_plans[0].quota.period", "use DAY, WEEK, MONTH"),
    ({"api_keys": KEYS, "usage_plans": [plan(quota={"limit": 5, "period": "DAY",
                                                     "offset": 1})]},
     "access.usage_plans[0].quota.offset", "use 0"),
    ({"api_keys": KEYS, "usage_plans": [plan(quota={"limit": 5, "period": "WEEK",
                                                     "offset": 7})]},
     "access.usage_plans[0].quota.offset", "0 = Sunday"),
    ({"api_keys": KEYS, "usage_plans": [plan(quota={"limit": -1, "period": "DAY"})]},
     "access.usage_plans[0].quota.limit", "whole number"),
    ({"api_keys": KEYS, "usage_plans": [plan(throttle={"rate": 5})]},
     "access.usage_plans[0].throttle", "missing required key 'burst'"),
    ({"api_keys": KEYS, "usage_plans": [plan(throttle={"rate": -1, "burst": 1})]},
     "access.usage_plans[0].throttle.rate", ">= 0"),
    ({"account_throttle": {"rate": float("inf"), "burst": 1}}, "access.account_throttle.rate",
     "finite"),
    ({"api_keys": KEYS, "usage_plans": [plan(throttle={"rate": 1, "burst": 1.5})]},
     "access.usage_plans[0].throttle.burst", "whole number"),
    ({"api_keys": KEYS, "usage_plans": [plan(throttle={"rate": 20000, "burst": 1})]},
     "access.usage_plans[0].throttle.rate", "exceeds the account throttle rate"),
    ({"api_keys": KEYS, "usage_plans": [plan(apis=[{
        "api": "testapi", "stage": "prod", "method_throttles": {"pets/GET": {
            "rate": 1, "burst": 1}}}])]},
     "access.usage_plans[0].apis[0].method_throttles.pets/GET", "\"/pets/GET\""),
    ({"api_keys": KEYS, "usage_plans": [plan(), {**plan(), "id": "q"}]},
     "access.usage_plans[1].keys", "already in usage plan 'p' for stage testapi/prod"),
    ({"api_keys": KEYS, "usage_plans": [plan(), plan()]}, "access.usage_plans[1].id",
     "a second usage plan"),
    ({"stage_throttles": [{"api": "testapi", "stage": "prod", "rate": 1}]},
     "access.stage_throttles[0]", "missing required key 'burst'"),
    ({"stage_throttles": [{"api": "testapi", "stage": "prod", "methods": {
        "/pets/FETCH": {"rate": 1, "burst": 1}}}]},
     "access.stage_throttles[0].methods./pets/FETCH", "methods: GET"),
    ({"stage_throttles": [{"api": "testapi", "stage": "prod"},
                          {"api": "testapi", "stage": "prod"}]},
     "access.stage_throttles[1]", "merge them"),
    ({"account_throttle": {"rate": 10, "burst": 5},
      "stage_throttles": [{"api": "testapi", "stage": "prod", "rate": 10, "burst": 6}]},
     "access.stage_throttles[0].burst", "raise plugins.settings.access.account_throttle"),
    ({"store": "redis"}, "access.store", "use 'memory' or {url:"),
    ({"store": {"failure": "open"}}, "access.store", "missing required key 'url'"),
    ({"store": {"url": "http://127.0.0.1:6379"}}, "access.store.url", "redis://"),
    ({"store": {"url": "redis://127.0.0.1:6379/x"}}, "access.store.url", "not a number"),
    ({"store": {"url": "redis://h:1/0", "failure": "maybe"}}, "access.store.failure",
     "'closed'"),
    ({"store": {"url": "redis://h:1/0", "timeout_ms": 0}}, "access.store.timeout_ms",
     "from 1 to 60000"),
    ({"store": {"url": "redis://h:1/0", "pool": 3}}, "access.store.pool", "unknown key"),
])
def test_config_errors(tmp_path: Path, b: Builders, settings: Any, path: str,
                       fragment: str) -> None:
    config = config_with(tmp_path, b, settings)
    with pytest.raises(ConfigError) as info:
        parse_settings(config)
    assert info.value.file == "gateway.yaml"
    assert info.value.path == f"plugins.settings.{path}"
    assert fragment in info.value.problem
    # A refused key value is never repeated in the message.
    for key in settings.get("api_keys", []):
        if isinstance(key.get("value"), str) and len(key["value"]) >= 5:
            assert key["value"] not in str(info.value)


def test_config_error_stops_the_gateway(tmp_path: Path, b: Builders) -> None:
    """``configure`` refuses the config before anything serves."""
    from twistgw.gateway import Gateway

    config = config_with(tmp_path, b, {"api_keys": [{"id": "k", "value": "short"}]})
    with pytest.raises(ConfigError, match=r"plugins\.settings\.access\.api_keys\[0\]\.value"):
        Gateway(config, reactor=object())


def test_defaults(tmp_path: Path, b: Builders) -> None:
    settings = parse_settings(config_with(tmp_path, b, {}))
    assert settings.account == ACCOUNT_DEFAULT == Throttle(rate=10000.0, burst=5000)
    assert (dict(settings.keys), dict(settings.plans), settings.store) == ({}, {}, "memory")


def test_key_values_are_kept_hashed_only(tmp_path: Path, b: Builders) -> None:
    settings = parse_settings(config_with(tmp_path, b, {"api_keys": KEYS}))
    key = settings.keys["k"]
    assert len(key.digest) == 32 and GOOD_KEY.encode() not in key.digest
    assert GOOD_KEY not in repr(settings)


# -- quota periods ----------------------------------------------------------------------------


def at(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))


def bounds(now: str, period: str, offset: int = 0) -> tuple[str, str]:
    start, end = period_bounds(at(now), period, offset)
    fmt = "%Y-%m-%dT%H:%M:%S"
    return time.strftime(fmt, time.gmtime(start)), time.strftime(fmt, time.gmtime(end))


@pytest.mark.parametrize(("now", "period", "offset", "expected"), [
    ("2026-11-27T23:59:59", "DAY", 0, ("2026-11-27T00:00:00", "2026-11-28T00:00:00")),
    ("2026-11-28T00:00:00", "DAY", 0, ("2026-11-28T00:00:00", "2026-11-29T00:00:00")),
    # 2026-11-27 is a Friday; weeks start on Sunday (0) or Monday (1).
    ("2026-11-27T12:00:00", "WEEK", 0, ("2026-11-22T00:00:00", "2026-11-29T00:00:00")),
    ("2026-11-27T12:00:00", "WEEK", 1, ("2026-11-23T00:00:00", "2026-11-30T00:00:00")),
    ("2026-11-22T00:00:00", "WEEK", 0, ("2026-11-22T00:00:00", "2026-11-29T00:00:00")),
    ("2026-11-27T12:00:00", "WEEK", 5, ("2026-11-27T00:00:00", "2026-12-04T00:00:00")),
    ("2026-11-27T12:00:00", "WEEK", 6, ("2026-11-21T00:00:00", "2026-11-28T00:00:00")),
    ("2026-11-27T12:00:00", "MONTH", 0, ("2026-11-01T00:00:00", "2026-12-01T00:00:00")),
    ("2026-12-31T23:59:59", "MONTH", 0, ("2026-12-01T00:00:00", "2027-01-01T00:00:00")),
    ("2026-11-27T12:00:00", "MONTH", 27, ("2026-10-28T00:00:00", "2026-11-28T00:00:00")),
    ("2026-01-05T00:00:00", "MONTH", 9, ("2025-12-10T00:00:00", "2026-01-10T00:00:00")),
    ("2026-02-28T00:00:00", "MONTH", 27, ("2026-02-28T00:00:00", "2026-03-28T00:00:00")),
])
def test_period_bounds(now: str, period: str, offset: int, expected: tuple[str, str]) -> None:
    assert bounds(now, period, offset) == expected


def test_period_bounds_refuses_unknown_periods() -> None:
    with pytest.raises(ValueError):
        period_bounds(0.0, "YEAR")


# -- the in-memory store ------------------------------------------------------------------------


def sync(coro: Any) -> Any:
    result = run_maybe_sync(coro)
    assert not hasattr(result, "addCallback"), "the memory store never waits"
    return result


def test_memory_store_is_an_access_store() -> None:
    assert isinstance(MemoryStore(), AccessStore)


def test_token_bucket() -> None:
    store = MemoryStore()
    taken = [sync(store.take_token("b", 2.0, 3, 100.0)) for _ in range(4)]
    assert taken == [True, True, True, False]
    assert sync(store.take_token("b", 2.0, 3, 100.25)) is False  # half a token
    assert sync(store.take_token("b", 2.0, 3, 100.5)) is True
    # A clock that went back adds nothing (and takes nothing away).
    assert sync(store.take_token("b", 2.0, 3, 50.0)) is False
    assert sync(store.take_token("b", 2.0, 3, 1000.0)) is True
    assert store.buckets["b"][0] == 2.0  # capped at the burst, minus the one taken
    # Burst 0 never allows; rate 0 never refills.
    assert sync(store.take_token("zero", 5.0, 0, 0.0)) is False
    assert [sync(store.take_token("once", 0.0, 1, t)) for t in (0.0, 99.0)] == [True, False]


def test_quota_counter() -> None:
    store = MemoryStore()
    counts = [sync(store.count_request("q", 0.0, 2)) for _ in range(3)]
    assert [(c.allowed, c.used, c.previous) for c in counts] == [
        (True, 1, None), (True, 2, None), (False, 2, None)]
    assert sync(store.quota_used("q", 0.0)) == 2
    assert sync(store.quota_used("q", 86400.0)) == 0
    rolled = sync(store.count_request("q", 86400.0, 2))
    assert (rolled.allowed, rolled.used, rolled.previous) == (True, 1, 2)
    assert sync(store.count_request("zero", 0.0, 0)).allowed is False


#: Three requests with the same steps, bucket r1 (burst 2), quota rq (3), bucket r2
#: (burst 1), give on every store: all pass; the last bucket is empty (the quota counted
#: the request anyway: AWS's limits are best effort); the first bucket is empty (nothing
#: after it ran, so the quota stays at 2).  test_access_redis.py holds Redis to it too.
RUN_STEPS_EXPECTED = [(None, (True, 1)), (2, (True, 2)), (0, None)]
DAY0 = 86400.0 * 30000


def test_run_stops_at_the_first_refusal() -> None:
    store = MemoryStore()
    steps = [Bucket("r1", 0.0, 2), Counter("rq", DAY0, DAY0 + 86400, 3), Bucket("r2", 0.0, 1)]
    outcomes = [sync(store.run(steps, 0.0)) for _ in range(3)]
    assert [(o.refused, o.quota and (o.quota.allowed, o.quota.used))
            for o in outcomes] == RUN_STEPS_EXPECTED
    assert sync(store.quota_used("rq", DAY0)) == 2
    full = sync(store.run([Counter("full", 0.0, 86400.0, 0), Bucket("after", 1.0, 1)], 0.0))
    assert (full.refused, full.quota) == (0, QuotaCount(allowed=False, used=0))
    assert "after" not in store.buckets
    assert sync(store.run([], 0.0)) == Outcome(refused=None)


# -- method throttles must name an operation ---------------------------------------------------


def keyed_config(tmp_path: Path, b: Builders, settings: Any, **top: Any) -> GatewayConfig:
    doc = b.openapi({"/pets": {"get": b.mock_op(200),
                               "x-amazon-apigateway-any-method": b.mock_op(200)},
                     "/": {"get": b.mock_op(200)}})
    import yaml

    (tmp_path / "api.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    cfg = b.gateway_config(**top)
    cfg["plugins"] = {"enabled": ["access"], "settings": {"access": settings}}
    return parse_config(cfg, "gateway.yaml", tmp_path)


def stage_methods(methods: dict[str, Any]) -> dict[str, Any]:
    return {"stage_throttles": [{"api": "testapi", "stage": "prod", "methods": methods}]}


def test_method_throttles_naming_operations_are_accepted(tmp_path: Path, b: Builders) -> None:
    one = {"rate": 1, "burst": 1}
    settings = parse_settings(keyed_config(tmp_path, b, stage_methods(
        {"/pets/GET": one, "/pets/ANY": one, "//GET": one})))
    assert set(settings.stage_throttles[("testapi", "prod")].methods) == {
        "/pets/GET", "/pets/ANY", "//GET"}


@pytest.mark.parametrize(("key", "hint"), [
    ("/pets/POST", "the operations on /pets are: /pets/ANY, /pets/GET"),
    ("/cats/GET", "API 'testapi' has no resource /cats"),
])
def test_method_throttle_naming_no_operation(tmp_path: Path, b: Builders, key: str,
                                             hint: str) -> None:
    config = keyed_config(tmp_path, b, {"api_keys": KEYS, "usage_plans": [plan(apis=[{
        "api": "testapi", "stage": "prod",
        "method_throttles": {key: {"rate": 1, "burst": 1}}}])]})
    with pytest.raises(ConfigError) as info:
        parse_settings(config)
    assert info.value.path == (f"plugins.settings.access.usage_plans[0].apis[0]."
                               f"method_throttles.{key}")
    assert "names no operation of API 'testapi', so it would never apply" in info.value.problem
    assert hint in info.value.problem


def test_method_throttle_check_follows_strict(tmp_path: Path, b: Builders) -> None:
    config = keyed_config(tmp_path, b, stage_methods({"/cats/GET": {"rate": 1, "burst": 1}}),
                          strict=False)
    assert parse_settings(config).stage_throttles


def test_api_keys_on_http_api_routes_are_refused(tmp_path: Path, b: Builders) -> None:
    """AWS has API keys for REST APIs only: such a route could only ever answer 401."""
    import yaml

    doc = b.openapi({"/pets": {"get": {
        **b.proxy_op(), "security": [{"key": []}]}}}, components={"securitySchemes": {
            "key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}})
    (tmp_path / "http.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    cfg = b.gateway_config([{"id": "h", "type": "HTTP", "definition": "http.yaml"}])
    cfg["plugins"] = {"enabled": ["access"]}
    with pytest.raises(ConfigError) as info:
        parse_settings(parse_config(cfg, "gateway.yaml", tmp_path))
    assert info.value.file.endswith("http.yaml")
    assert info.value.path == "paths./pets.get.security"
    assert "apply to REST APIs only" in info.value.problem


# -- the token bucket's promise, for any arrival pattern ----------------------------------------

@hypothesis_settings(max_examples=200, deadline=None)
@given(rate=st.floats(min_value=0.0, max_value=100.0),
       burst=st.integers(min_value=0, max_value=50),
       gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200))
def test_bucket_never_allows_more_than_burst_plus_refill(rate: float, burst: int,
                                                         gaps: list[float]) -> None:
    """Over any window, allowed requests <= burst + rate * elapsed (the AWS definition),
    and a request is refused only when the bucket really is empty."""
    store = MemoryStore()
    now = 1000.0
    allowed = 0
    for gap in gaps:
        now += gap
        if sync(store.take_token("b", rate, burst, now)):
            allowed += 1
        else:
            assert store.buckets["b"][0] < 1.0
    assert allowed <= burst + rate * (now - 1000.0) + 1e-6
