"""The access plugin on one node: API keys, usage plans, quotas and throttles.

Behaviour from aws-apigw-spec.md §5.1-§5.3, §A.2 and §4.1: a key route without a valid
key in a plan for the stage answers ``403 {"message":"Forbidden"}``; throttles answer
``429 {"message":"Too Many Requests"}``, quotas ``429 {"message":"Limit Exceeded"}``.
Every gateway here runs on the harness's ``task.Clock`` (the plugin takes it from
``gateway.reactor`` in ``startup``), so refills and calendar periods are exact.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import twistgw_access
from twisted.internet.defer import Deferred
from twistgw_access.store import MemoryStore

from twistgw import Allow, Principal, Response, hookimpl
from twistgw.models import Context, IntegrationResponse
from twistgw.variables import lookup

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory, LogCapture

    from twistgw.testing import GatewayHarness

KEY_A = "alpha-0123456789abcdefghij"
KEY_B = "bravo-0123456789abcdefghij"
KEY_OFF = "off-0123456789abcdefghijkl"
KEY_LONE = "lone-0123456789abcdefghijk"

FORBIDDEN = b'{"message":"Forbidden"}'
TOO_MANY = b'{"message":"Too Many Requests"}'
LIMIT = b'{"message":"Limit Exceeded"}'


def keys() -> list[dict[str, Any]]:
    return [{"id": "a", "value": KEY_A}, {"id": "b", "value": KEY_B},
            {"id": "off", "value": KEY_OFF, "enabled": False},
            {"id": "lone", "value": KEY_LONE}]


def api_doc(b: Builders, **root: Any) -> dict[str, Any]:
    """/pets and /pets/{id} need a key (the x-api-key scheme); /open does not."""
    keyed = {**b.mock_op(200), "security": [{"api_key": []}]}
    return b.openapi(
        {"/pets": {"get": keyed, "post": keyed}, "/pets/{id}": {"get": keyed},
         "/open": {"get": b.mock_op(200)}},
        components={"securitySchemes": {
            "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}},
        **root)


def plan(**extra: Any) -> dict[str, Any]:
    """A plan covering testapi/prod for keys a and off."""
    return {"id": "gold", "apis": [{"api": "testapi", "stage": "prod"}],
            "keys": ["a", "off"], **extra}


def harness(make_harness: HarnessFactory, b: Builders, settings: Mapping[str, Any], *,
            definition: Mapping[str, Any] | None = None,
            plugins: list[tuple[str, Any]] | None = None,
            apis: list[dict[str, Any]] | None = None,
            definitions: Mapping[str, Any] | None = None) -> GatewayHarness:
    """A gateway with the access plugin, started (so it counts on the harness clock)."""
    config = b.gateway_config(apis, stages=[{"name": "prod"}, {"name": "beta"}])
    config["plugins"] = {"enabled": ["mock", "mapping", "access"],
                         "settings": {"access": dict(settings)}}
    h = make_harness(definition if definition is not None else
                     (None if definitions else api_doc(b)),
                     config=config, plugins=plugins or [], definitions=definitions)
    h.gateway.pm.hook.startup(gateway=h.gateway)
    return h


def get(h: GatewayHarness, path: str, key: str | None = None, method: str = "GET",
        **headers: str) -> Response:
    hdrs = dict(headers)
    if key is not None:
        hdrs["x-api-key"] = key
    return h.request(method, path, headers=hdrs)


def assert_refused(response: Response, status: int, body: bytes, error_type: str) -> None:
    assert (response.status, response.body) == (status, body)
    assert response.headers.get("x-amzn-ErrorType") == error_type
    assert response.headers.get("Content-Type") == "application/json"
    assert response.headers.get("x-amzn-RequestId")


def epoch(text: str) -> float:
    """``2026-11-27T23:59:58`` (UTC) as epoch seconds."""
    import time

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))


# -- API keys ------------------------------------------------------------------------------


def test_missing_key_is_forbidden(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [plan()]})
    assert_refused(get(h, "/prod/pets"), 403, FORBIDDEN, "ForbiddenException")
    assert_refused(get(h, "/prod/pets", ""), 403, FORBIDDEN, "ForbiddenException")


def test_wrong_key_is_forbidden(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [plan()]})
    for wrong in (KEY_A[:-1], KEY_A + "x", KEY_A.upper(), "x" * 5000, "é" * 30, " " + KEY_A):
        assert_refused(get(h, "/prod/pets", wrong), 403, FORBIDDEN, "ForbiddenException")


def test_disabled_key_is_forbidden(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [plan()]})
    assert_refused(get(h, "/prod/pets", KEY_OFF), 403, FORBIDDEN, "ForbiddenException")


def test_key_not_in_a_plan_for_this_stage(make_harness: HarnessFactory, b: Builders) -> None:
    """Key a's plan covers prod only; key lone is in no plan at all (§5.1)."""
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [plan()]})
    assert get(h, "/prod/pets", KEY_A).status == 200
    assert_refused(get(h, "/beta/pets", KEY_A), 403, FORBIDDEN, "ForbiddenException")
    assert_refused(get(h, "/prod/pets", KEY_LONE), 403, FORBIDDEN, "ForbiddenException")


def test_good_key_passes(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [plan()]})
    assert get(h, "/prod/pets", KEY_A).status == 200
    assert h.request("GET", "/prod/pets/7", headers={"X-API-Key": KEY_A}).status == 200
    assert get(h, "/prod/pets", KEY_A, method="POST").status == 200


def test_routes_without_a_key_scheme_ignore_keys(make_harness: HarnessFactory,
                                                 b: Builders) -> None:
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [plan()]})
    assert get(h, "/prod/open").status == 200
    assert get(h, "/prod/open", "not a key at all").status == 200
    assert get(h, "/prod/open", KEY_OFF).status == 200


def test_key_value_from_a_secret(make_harness: HarnessFactory, b: Builders,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWISTGW_TEST_KEY", KEY_B)
    h = harness(make_harness, b, {
        "api_keys": [{"id": "b", "value": {"$env": "TWISTGW_TEST_KEY"}}],
        "usage_plans": [{"id": "p", "apis": [{"api": "testapi", "stage": "prod"}],
                         "keys": ["b"]}]})
    assert get(h, "/prod/pets", KEY_B).status == 200
    settings = twistgw_access.control_for(h.gateway).settings
    assert KEY_B not in repr(settings)


class Probe:
    """Answers every integration with the ``$context`` values an access log would see."""

    @hookimpl(tryfirst=True)
    def integrate(self, ctx: Context, request: Any) -> IntegrationResponse:
        names = ("identity.apiKeyId", "identity.apiKey", "authorizer.principalId")
        body = "|".join(str(lookup(ctx, n)) for n in names)
        return IntegrationResponse(status=200, body=body.encode())


def test_context_identity_names_the_key(make_harness: HarnessFactory, b: Builders) -> None:
    """``$context.identity.apiKeyId``/``apiKey`` on key routes only; no authorizer id."""
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [plan()]},
                plugins=[("probe", Probe())])
    assert get(h, "/prod/pets", KEY_A).body == f"a|{KEY_A}|None".encode()
    assert get(h, "/prod/open", KEY_A).body == b"None|None|None"


@attrs.define
class FakeAuthorizer:
    """An authorizer naming the caller and (maybe) a usageIdentifierKey."""

    key: str | None

    @hookimpl(tryfirst=True)
    def authorize(self, ctx: Context) -> Allow:
        return Allow(Principal("user-1", context={"tier": "gold"},
                               usage_identifier_key=self.key))


def test_api_key_source_authorizer(make_harness: HarnessFactory, b: Builders) -> None:
    """apiKeySource AUTHORIZER: the key is the authorizer's usageIdentifierKey, and the
    authorizer's principal is kept (only the key id is added)."""
    doc = api_doc(b, **{"x-amazon-apigateway-api-key-source": "AUTHORIZER"})
    settings = {"api_keys": keys(), "usage_plans": [plan()]}
    h = harness(make_harness, b, settings, definition=doc,
                plugins=[("authz", FakeAuthorizer(KEY_A)), ("probe", Probe())])
    assert get(h, "/prod/pets").body == f"a|{KEY_A}|user-1".encode()
    # The header is not read under AUTHORIZER, even with a good key in it.
    h2 = harness(make_harness, b, settings, definition=doc,
                 plugins=[("authz", FakeAuthorizer(None))])
    assert_refused(get(h2, "/prod/pets", KEY_A), 403, FORBIDDEN, "ForbiddenException")


# -- usage-plan throttles and quotas ------------------------------------------------------------


def test_key_burst_then_429_then_refill(make_harness: HarnessFactory, b: Builders) -> None:
    """Per-key token bucket: capacity = burst, refilled at rate per second (§5.3)."""
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [
        plan(throttle={"rate": 2, "burst": 3})]})
    for _ in range(3):
        assert get(h, "/prod/pets", KEY_A).status == 200
    assert_refused(get(h, "/prod/pets", KEY_A), 429, TOO_MANY, "TooManyRequestsException")
    h.clock.advance(0.5)  # one token back
    assert get(h, "/prod/pets", KEY_A).status == 200
    assert get(h, "/prod/pets", KEY_A).status == 429
    h.clock.advance(10)  # refills to the burst, not beyond
    assert [get(h, "/prod/pets/1", KEY_A).status for _ in range(4)] == [200, 200, 200, 429]


def test_key_throttle_is_per_key(make_harness: HarnessFactory, b: Builders) -> None:
    settings = {"api_keys": keys(), "usage_plans": [
        {**plan(throttle={"rate": 1, "burst": 1}), "keys": ["a", "b"]}]}
    h = harness(make_harness, b, settings)
    assert get(h, "/prod/pets", KEY_A).status == 200
    assert get(h, "/prod/pets", KEY_A).status == 429
    assert get(h, "/prod/pets", KEY_B).status == 200


def test_method_throttle_beats_key_throttle(make_harness: HarnessFactory, b: Builders) -> None:
    """The plan's per-method limit applies first, and only to its method (§5.2)."""
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [{
        **plan(throttle={"rate": 1, "burst": 5}),
        "apis": [{"api": "testapi", "stage": "prod",
                  "method_throttles": {"/pets/GET": {"rate": 1, "burst": 1}}}]}]})
    assert get(h, "/prod/pets", KEY_A).status == 200
    assert_refused(get(h, "/prod/pets", KEY_A), 429, TOO_MANY, "TooManyRequestsException")
    # Other methods only meet the key's bucket: 5 tokens, 1 taken by the first GET (the
    # refused one stopped at its method's limit, before the key's bucket).
    assert [get(h, "/prod/pets/1", KEY_A).status for _ in range(5)] == [200] * 4 + [429]
    h.clock.advance(1)
    assert get(h, "/prod/pets", KEY_A).status == 200


def test_quota_per_day_resets_at_utc_midnight(make_harness: HarnessFactory, b: Builders,
                                              log_events: LogCapture) -> None:
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [
        plan(quota={"limit": 2, "period": "DAY"})]})
    h.clock.advance(epoch("2026-11-27T23:59:58"))
    assert get(h, "/prod/pets", KEY_A).status == 200
    assert get(h, "/prod/pets/3", KEY_A).status == 200
    assert_refused(get(h, "/prod/pets", KEY_A), 429, LIMIT, "LimitExceededException")
    h.clock.advance(1.5)  # 23:59:59.5: same day
    assert get(h, "/prod/pets", KEY_A).status == 429
    h.clock.advance(0.5)  # midnight UTC
    assert get(h, "/prod/pets", KEY_A).status == 200
    resets = [t for t in log_events.texts() if "quota reset" in t]
    assert resets == ["quota reset for API key a in usage plan gold: new DAY period "
                      "2026-11-28T00:00:00Z to 2026-11-29T00:00:00Z; 2 of 2 requests used "
                      "in the previous one"]


def test_quota_per_week_with_offset(make_harness: HarnessFactory, b: Builders) -> None:
    """WEEK offset 1: weeks start on Monday 00:00 UTC (2026-11-30 is a Monday)."""
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [
        plan(quota={"limit": 1, "period": "WEEK", "offset": 1})]})
    h.clock.advance(epoch("2026-11-24T12:00:00"))  # a Tuesday
    assert get(h, "/prod/pets", KEY_A).status == 200
    h.clock.advance(epoch("2026-11-29T23:59:59") - h.clock.seconds())  # Sunday night
    assert get(h, "/prod/pets", KEY_A).status == 429
    h.clock.advance(1)
    assert get(h, "/prod/pets", KEY_A).status == 200


def test_throttled_requests_do_not_use_quota(make_harness: HarnessFactory,
                                             b: Builders) -> None:
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [
        plan(throttle={"rate": 1, "burst": 1}, quota={"limit": 5, "period": "MONTH"})]})
    assert [get(h, "/prod/pets", KEY_A).status for _ in range(3)] == [200, 429, 429]
    rows = twistgw_access.usage(h.gateway)
    assert [(r.key_id, r.used) for r in _fired(rows) if r.plan_id == "gold"] == [
        ("a", 1), ("off", 0)]


def _fired(d: Deferred[list[twistgw_access.KeyUsage]]) -> list[twistgw_access.KeyUsage]:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the in-memory usage report answers at once"
    result: list[twistgw_access.KeyUsage] = box[0]
    return result


def test_usage_report(make_harness: HarnessFactory, b: Builders) -> None:
    """Operators read current usage per key (the read API until issue #7's endpoint)."""
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [
        plan(quota={"limit": 10, "period": "MONTH", "offset": 2})]})
    h.clock.advance(epoch("2026-11-02T10:00:00"))  # before the 3rd: October's period
    for _ in range(3):
        assert get(h, "/prod/pets", KEY_A).status == 200
    rows = {r.key_id: r for r in _fired(twistgw_access.usage(h.gateway))}
    assert rows["a"] == twistgw_access.KeyUsage(
        key_id="a", enabled=True, plan_id="gold", used=3, limit=10, remaining=7,
        period="MONTH", period_start="2026-10-03T00:00:00Z",
        period_end="2026-11-03T00:00:00Z")
    assert (rows["off"].enabled, rows["off"].used) == (False, 0)
    assert (rows["lone"].plan_id, rows["lone"].limit) == (None, None)
    assert [r.key_id for r in _fired(twistgw_access.usage(h.gateway, ["b"]))] == ["b"]


# -- stage and account throttles --------------------------------------------------------------


def test_stage_throttle_for_keyless_routes(make_harness: HarnessFactory, b: Builders) -> None:
    """Stage limits apply per method to every request, with or without a key (§5.3)."""
    h = harness(make_harness, b, {"stage_throttles": [
        {"api": "testapi", "stage": "prod", "rate": 1, "burst": 2,
         "methods": {"/open/GET": {"rate": 1, "burst": 1}}}],
        "api_keys": keys(), "usage_plans": [plan()]})
    assert get(h, "/prod/open").status == 200
    assert_refused(get(h, "/prod/open"), 429, TOO_MANY, "TooManyRequestsException")
    assert get(h, "/beta/open").status == 200  # another stage: no limit configured
    assert get(h, "/beta/open").status == 200
    # /pets GET has no entry of its own: the stage default (burst 2), its own bucket.
    assert [get(h, "/prod/pets", KEY_A).status for _ in range(3)] == [200, 200, 429]
    assert get(h, "/prod/pets", KEY_A, method="POST").status == 200
    h.clock.advance(1)
    assert get(h, "/prod/open").status == 200


def test_key_checks_come_before_the_stage_throttle(make_harness: HarnessFactory,
                                                   b: Builders) -> None:
    h = harness(make_harness, b, {"stage_throttles": [
        {"api": "testapi", "stage": "prod", "rate": 0, "burst": 0}],
        "api_keys": keys(), "usage_plans": [plan()]})
    assert get(h, "/prod/pets").status == 403
    assert get(h, "/prod/pets", KEY_A).status == 429


def test_account_throttle_spans_apis_and_stages(make_harness: HarnessFactory,
                                                b: Builders) -> None:
    apis = [{"id": i, "definition": f"{i}.yaml", "stages": [{"name": "prod"}]}
            for i in ("one", "two")]
    h = harness(make_harness, b, {"account_throttle": {"rate": 1, "burst": 3}}, apis=apis,
                definitions={"one.yaml": api_doc(b), "two.yaml": api_doc(b)})
    statuses = [get(h, "/prod/open", **{"x-apigw-api-id": i}).status
                for i in ("one", "two", "one", "two")]
    assert statuses == [200, 200, 200, 429]
    h.clock.advance(1)
    assert get(h, "/prod/open", **{"x-apigw-api-id": "two"}).status == 200


def test_account_default_is_5000_burst(make_harness: HarnessFactory, b: Builders) -> None:
    """Without settings: 10,000 rps and a burst of 5,000 (AWS's account default)."""
    h = harness(make_harness, b, {})
    statuses = [get(h, "/prod/open").status for _ in range(5001)]
    assert statuses.count(200) == 5000
    assert statuses[-1] == 429
    h.clock.advance(0.0001)  # 10,000 per second: one token per 100 µs
    assert get(h, "/prod/open").status == 200
    assert get(h, "/prod/open").status == 429


def test_gateway_response_customisation_applies(make_harness: HarnessFactory,
                                                b: Builders) -> None:
    doc = api_doc(b, **{"x-amazon-apigateway-gateway-responses": {
        "THROTTLED": {"statusCode": "503",
                      "responseTemplates": {"application/json": '{"slow":"down"}'}}}})
    h = harness(make_harness, b, {"account_throttle": {"rate": 0, "burst": 0}},
                definition=doc)
    response = get(h, "/prod/open")
    assert (response.status, response.body) == (503, b'{"slow":"down"}')


# -- bounded state -------------------------------------------------------------------------------


def test_unknown_keys_create_no_state(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, {"api_keys": keys(), "usage_plans": [
        plan(throttle={"rate": 1, "burst": 9}, quota={"limit": 9, "period": "DAY"})]})
    store = twistgw_access.control_for(h.gateway).store
    assert isinstance(store, MemoryStore)
    assert get(h, "/prod/pets", KEY_A).status == 200
    before = (dict(store.buckets), dict(store.counters))
    for i in range(200):
        assert get(h, "/prod/pets", f"guess-{i:04d}-0123456789abcdef").status == 403
    assert (set(store.buckets), set(store.counters)) == (set(before[0]), set(before[1]))



def test_http_api_stage_throttle(make_harness: HarnessFactory, b: Builders) -> None:
    """HTTP APIs have stage/route throttles too, answered with their fixed body (§4.4)."""
    apis = [{"id": "h", "type": "HTTP", "definition": "h.yaml"}]
    doc = b.openapi({"/pets": {"get": b.proxy_op()}})
    h = harness(make_harness, b, {"stage_throttles": [
        {"api": "h", "stage": "$default", "methods": {"/pets/GET": {"rate": 1, "burst": 1}}}]},
        apis=apis, definitions={"h.yaml": doc}, plugins=[("echo", b.echo())])
    assert h.request("GET", "/pets").status == 200
    response = h.request("GET", "/pets")
    assert (response.status, response.body) == (429, TOO_MANY)
    assert response.headers.get("apigw-requestid")
    assert response.headers.get("x-amzn-ErrorType") is None
