"""REST Lambda authorizers, TOKEN and REQUEST (aws-apigw-spec.md §5.4), and resource
policies (§5.9).

The pipeline runs in-process; fake function pools stand in for the worker processes
(``use_runtime``), so the authorizer function's events, invocation counts and outputs are
visible.  ``received_at`` stands in for the clock the result cache reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from twisted.internet import defer
from twistgw_auth import lambda_auth, lambda_cache_for
from twistgw_lambda.plugin import FunctionNotFound, invoke, use_runtime
from twistgw_lambda.runtime import InvokeResult

from twistgw.errors import ConfigError
from twistgw.models import InboundRequest, Response
from twistgw.testing import GatewayHarness, make_context, make_inbound
from twistgw.variables import ACCOUNT_ID as ACCOUNT
from twistgw.variables import lookup

REGION = "eu-west-1"
ARN = ("arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
       "arn:aws:lambda:eu-west-1:123456789012:function:{name}/invocations")
API = "a1b2c3d4e5"
T0 = 1_800_000_000.0


def policy(effect: str, resource: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"principalId": "user-7",
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}]},
            **extra}


ALLOW_ALL = policy("Allow", f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API}/*")


class FakePool:
    def __init__(self, output: Callable[[dict[str, Any]], Any]) -> None:
        self.output = output
        self.events: list[dict[str, Any]] = []

    def invoke(self, payload: bytes, arn: str, trace: str) -> defer.Deferred[InvokeResult]:
        event = json.loads(payload)
        self.events.append(event)
        result = self.output(event)
        if isinstance(result, InvokeResult):
            return defer.succeed(result)
        return defer.succeed(InvokeResult("fake-id", json.dumps(result).encode()))


@attrs.define
class FakeRuntime:
    pools: dict[str, FakePool]


def echo(event: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "body": json.dumps(event["requestContext"].get("authorizer"))}


def token_scheme(**auth: Any) -> dict[str, Any]:
    return {"type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {
                "type": "token", "authorizerUri": ARN.format(name="Auth"), **auth}}


def request_scheme(**auth: Any) -> dict[str, Any]:
    return {"type": "apiKey", "name": "Unused", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {
                "type": "request", "authorizerUri": ARN.format(name="Auth"), **auth}}


Gateways = list[Callable[[], None]]


@pytest.fixture
def undo() -> Iterator[Gateways]:
    made: Gateways = []
    yield made
    for u in made:
        u()


def gateway(tmp_path: Any, undo: Gateways, scheme: dict[str, Any],
            authorizer: Callable[[dict[str, Any]], Any],
            root: dict[str, Any] | None = None,
            api_type: str = "REST",
            listeners: list[dict[str, Any]] | None = None) -> tuple[GatewayHarness, FakePool]:
    (tmp_path / "src").mkdir(parents=True, exist_ok=True)
    closed = {"responses": {"200": {"description": "ok"}}, "security": [{"custom": []}],
          "x-amazon-apigateway-integration": {"type": "aws_proxy", "httpMethod": "POST",
                                              "uri": ARN.format(name="Fn")}}
    if api_type == "HTTP":
        closed["x-amazon-apigateway-integration"]["payloadFormatVersion"] = "2.0"
    op = closed
    open_op = {k: v for k, v in op.items() if k != "security"}
    definition = {"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
                  **(root or {}),
                  "paths": {"/pets/{id}": {"get": op, "post": op}, "/open": {"get": open_op}},
                  "components": {"securitySchemes": {"custom": scheme}}}
    config = {
        "listeners": listeners or [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": API, "type": api_type, "definition": "api.yaml",
                  **({"endpoint_type": "REGIONAL"} if api_type == "REST" else {}),
                  "stages": [{"name": "prod", "variables": {"tier": "gold"}}]}],
        "functions": {n: {"handler": "app.handler", "code": str(tmp_path / "src")}
                      for n in ("Fn", "Auth")},
        "plugins": {"enabled": ["mock", "mapping", "lambda", "auth"]},
        "access_log": False,
    }
    h = GatewayHarness(config, definitions={"api.yaml": definition})
    auth = FakePool(authorizer)
    undo.append(use_runtime(h.config, FakeRuntime({"Fn": FakePool(echo), "Auth": auth})))
    return h, auth


def run(h: GatewayHarness, method: str, path: str, *, at: float = T0,
        listener: str | None = None, **kw: Any) -> Response:
    inbound: InboundRequest = make_inbound(method, path, **kw)
    inbound = attrs.evolve(inbound, listener=listener or h.default_listener, received_at=at)
    result = h.gateway.pipeline.handle(h.gateway.deployment, inbound)
    if isinstance(result, defer.Deferred):
        box: list[Any] = []
        result.addBoth(box.append)
        assert box, "the request did not complete synchronously"
        result = box[0]
    return result.response


def body(r: Response) -> Any:
    return json.loads(r.body)


# -- TOKEN ------------------------------------------------------------------------------


def test_token_allow_passes_principal_and_context(tmp_path: Any, undo: Gateways) -> None:
    h, auth = gateway(tmp_path, undo, token_scheme(), lambda e: {
        **ALLOW_ALL, "context": {"tier": "gold", "n": 1, "ok": True}})
    r = run(h, "GET", "/prod/pets/42", headers={"Authorization": "Bearer abc"})
    assert r.status == 200
    assert body(r) == {"tier": "gold", "n": "1", "ok": "true", "principalId": "user-7",
                       "integrationLatency": 0}
    assert auth.events == [{"type": "TOKEN", "authorizationToken": "Bearer abc",
                            "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:"
                                         f"{API}/prod/GET/pets/42"}]


def test_token_missing_is_401_without_invoking(tmp_path: Any, undo: Gateways) -> None:
    h, auth = gateway(tmp_path, undo, token_scheme(), lambda e: ALLOW_ALL)
    r = run(h, "GET", "/prod/pets/42")
    assert (r.status, body(r)) == (401, {"message": "Unauthorized"})
    r = run(h, "GET", "/prod/pets/42", headers={"Authorization": ""})
    assert r.status == 401
    assert auth.events == []


def test_token_validation_expression(tmp_path: Any, undo: Gateways) -> None:
    h, auth = gateway(tmp_path, undo, token_scheme(
        identityValidationExpression=r"^Bearer [-0-9a-zA-Z\._]*$"), lambda e: ALLOW_ALL)
    assert run(h, "GET", "/prod/pets/1", headers={"Authorization": "Basic x"}).status == 401
    assert auth.events == []
    assert run(h, "GET", "/prod/pets/1", headers={"Authorization": "Bearer a.b"}).status \
        == 200


def test_token_other_header(tmp_path: Any, undo: Gateways) -> None:
    h, _ = gateway(tmp_path, undo, token_scheme(
        identitySource="method.request.header.X-Token"), lambda e: ALLOW_ALL)
    assert run(h, "GET", "/prod/pets/1", headers={"Authorization": "t"}).status == 401
    assert run(h, "GET", "/prod/pets/1", headers={"X-Token": "t"}).status == 200


def test_unauthorized_error_is_401_other_errors_500(tmp_path: Any, undo: Gateways) -> None:
    outputs: dict[str, Any] = {
        "u": InvokeResult("i", b'{"errorMessage": "Unauthorized"}', "Unhandled"),
        "boom": InvokeResult("i", b'{"errorMessage": "boom"}', "Unhandled"),
        "nopolicy": {"principalId": "x"},
        "nested": {**ALLOW_ALL, "context": {"a": {"b": 1}}},
        "text": InvokeResult("i", b"not json"),
    }
    h, _ = gateway(tmp_path, undo, token_scheme(authorizerResultTtlInSeconds=0),
                      lambda e: outputs[e["authorizationToken"]])
    r = run(h, "GET", "/prod/pets/1", headers={"Authorization": "u"})
    assert (r.status, body(r)) == (401, {"message": "Unauthorized"})
    for token in ("boom", "nopolicy", "nested", "text"):
        r = run(h, "GET", "/prod/pets/1", headers={"Authorization": token})
        assert (r.status, body(r)) == (500, {"message": None}), token
        assert r.headers.get("x-amzn-ErrorType") == "AuthorizerConfigurationException"


def test_deny_and_uncovered_method_are_403(tmp_path: Any, undo: Gateways) -> None:
    base = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API}/prod"
    outputs: dict[str, Any] = {
        "deny": policy("Deny", f"{base}/*"),
        "get-only": policy("Allow", f"{base}/GET/*"),
        "both": {"principalId": "p", "policyDocument": {"Statement": [
            {"Action": "execute-api:*", "Effect": "Allow", "Resource": "*"},
            {"Action": "execute-api:Invoke", "Effect": "Deny",
             "Resource": f"{base}/GET/pets/?"}]}},
    }
    h, _ = gateway(tmp_path, undo, token_scheme(authorizerResultTtlInSeconds=0),
                      lambda e: outputs[e["authorizationToken"]])
    r = run(h, "GET", "/prod/pets/1", headers={"Authorization": "deny"})
    assert (r.status, body(r)) == (403, {"message": "User is not authorized to access this "
                                                    "resource with an explicit deny"})
    assert run(h, "GET", "/prod/pets/1", headers={"Authorization": "get-only"}).status == 200
    r = run(h, "POST", "/prod/pets/1", headers={"Authorization": "get-only"})
    assert (r.status, body(r)) == (403, {"message":
                                         "User is not authorized to access this resource"})
    assert run(h, "GET", "/prod/pets/1", headers={"Authorization": "both"}).status == 403
    assert run(h, "GET", "/prod/pets/12", headers={"Authorization": "both"}).status == 200


# -- the result cache ---------------------------------------------------------------------


def test_cache_by_token_and_ttl(tmp_path: Any, undo: Gateways) -> None:
    h, auth = gateway(tmp_path, undo, token_scheme(authorizerResultTtlInSeconds=60),
                      lambda e: ALLOW_ALL)
    a, b = {"Authorization": "a"}, {"Authorization": "b"}
    assert run(h, "GET", "/prod/pets/1", headers=a).status == 200
    assert run(h, "POST", "/prod/pets/2", headers=a, at=T0 + 59).status == 200
    assert len(auth.events) == 1  # any method of the API reuses the policy
    assert run(h, "GET", "/prod/pets/1", headers=b, at=T0 + 1).status == 200
    assert len(auth.events) == 2
    assert run(h, "GET", "/prod/pets/1", headers=a, at=T0 + 60).status == 200
    assert len(auth.events) == 3


def test_cached_policy_for_one_path_denies_others(tmp_path: Any, undo: Gateways) -> None:
    """The KC pitfall: a policy naming only the method ARN, cached, refuses other paths."""
    h, auth = gateway(tmp_path, undo, token_scheme(),
                      lambda e: policy("Allow", e["methodArn"]))
    assert run(h, "GET", "/prod/pets/1", headers={"Authorization": "a"}).status == 200
    assert run(h, "GET", "/prod/pets/2", headers={"Authorization": "a"}).status == 403
    assert len(auth.events) == 1


def test_ttl_zero_and_errors_are_not_cached(tmp_path: Any, undo: Gateways) -> None:
    h, auth = gateway(tmp_path, undo, token_scheme(authorizerResultTtlInSeconds=0),
                      lambda e: ALLOW_ALL)
    for _ in range(3):
        run(h, "GET", "/prod/pets/1", headers={"Authorization": "a"})
    assert len(auth.events) == 3
    calls: list[int] = []

    def flaky(e: dict[str, Any]) -> Any:
        calls.append(1)
        return InvokeResult("i", b'{"errorMessage": "x"}', "Unhandled") \
            if len(calls) == 1 else ALLOW_ALL

    h2, _ = gateway(tmp_path / "2", undo, token_scheme(), flaky)
    assert run(h2, "GET", "/prod/pets/1", headers={"Authorization": "a"}).status == 500
    assert run(h2, "GET", "/prod/pets/1", headers={"Authorization": "a"}).status == 200
    assert len(calls) == 2


def test_ttl_capped_at_3600() -> None:
    auth = lambda_auth.from_scheme("c", "token", token_scheme(
        authorizerResultTtlInSeconds=99999))
    assert auth.ttl == 3600
    assert lambda_auth.from_scheme("c", "token", token_scheme()).ttl == 300


def test_cache_is_bounded() -> None:
    cache = lambda_auth.AuthorizerCache(size=3)
    result = lambda_auth._Result("p", (), {}, None)
    for i in range(5):
        cache.put((i,), 100.0, result)
    assert list(cache.entries) == [(2,), (3,), (4,)]
    assert cache.get((2,), 0.0) is result
    cache.put((5,), 100.0, result)
    assert list(cache.entries) == [(4,), (2,), (5,)]
    assert cache.get((4,), 100.0) is None  # expired


class FakeShared:
    """A :class:`lambda_auth.SharedCache` in a dict: ``name -> (value, ms left)``."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        self.puts: list[tuple[str, int]] = []

    async def cache_get(self, key: str) -> tuple[bytes, int] | None:
        return self.data.get(key)

    async def cache_put(self, key: str, value: bytes, ttl_ms: int) -> None:
        self.puts.append((key, ttl_ms))
        self.data[key] = (value, ttl_ms)


def test_shared_cache_round_trip_and_local_expiry() -> None:
    shared = FakeShared()
    cache = lambda_auth.AuthorizerCache()
    statement = policy("Allow", "*")["policyDocument"]["Statement"][0]
    result = lambda_auth._Result("user-1", (statement,), {"tier": "gold", "n": 3}, "k" * 20)
    key = ("api", "custom", "Auth", ("Bearer a",))
    name = lambda_auth.shared_key(key)
    assert name.startswith("authz:") and "Bearer" not in name
    assert lambda_auth.load_result(lambda_auth.dump_result(result)) == result
    shared.data[name] = (lambda_auth.dump_result(result), 5000)
    found = defer.ensureDeferred(lambda_auth._cached(cache, shared, key, 100.0))
    assert found.result == result
    # Kept locally until the shared entry's own expiry (5 s left), not a fresh TTL.
    assert cache.entries[key][0] == 105.0
    del shared.data[name]
    assert cache.get(key, 104.9) == result and cache.get(key, 105.0) is None
    # Anything but a result written by dump_result is a miss, not an error.
    for junk in (b"not json", b"[]", b'{"p": 1, "s": [], "c": {}}'):
        shared.data[name] = (junk, 5000)
        assert lambda_auth.load_result(junk) is None
        missed = defer.ensureDeferred(lambda_auth._cached(cache, shared, key, 200.0))
        assert missed.result is None


# -- REQUEST ------------------------------------------------------------------------------


def test_request_event_and_cache_by_every_source(tmp_path: Any, undo: Gateways) -> None:
    h, auth = gateway(tmp_path, undo, request_scheme(
        identitySource="method.request.header.X-User, method.request.querystring.q, "
                       "stageVariables.tier"), lambda e: ALLOW_ALL)
    r = run(h, "GET", "/prod/pets/42?q=1", headers={"X-User": "u"})
    assert r.status == 200
    event = auth.events[0]
    assert event["type"] == "REQUEST"
    assert event["methodArn"].endswith(f"{API}/prod/GET/pets/42")
    assert event["resource"] == "/pets/{id}"
    assert event["path"] == "/pets/42"
    assert event["headers"]["X-User"] == "u"
    assert event["queryStringParameters"] == {"q": "1"}
    assert event["pathParameters"] == {"id": "42"}
    assert event["stageVariables"] == {"tier": "gold"}
    assert event["requestContext"]["stage"] == "prod"
    assert "authorizer" not in event["requestContext"]
    assert "body" not in event
    run(h, "GET", "/prod/pets/42?q=1", headers={"X-User": "u"})
    assert len(auth.events) == 1
    run(h, "GET", "/prod/pets/42?q=2", headers={"X-User": "u"})
    run(h, "GET", "/prod/pets/42?q=2", headers={"X-User": "v"})
    assert len(auth.events) == 3
    # A missing identity source (with caching on) is 401 without invoking.
    assert run(h, "GET", "/prod/pets/42", headers={"X-User": "u"}).status == 401
    assert len(auth.events) == 3


def test_request_ttl_zero_sources_optional(tmp_path: Any, undo: Gateways) -> None:
    h, auth = gateway(tmp_path, undo, request_scheme(
        identitySource="method.request.header.X-User", authorizerResultTtlInSeconds=0),
        lambda e: ALLOW_ALL)
    assert run(h, "GET", "/prod/pets/42").status == 200
    assert len(auth.events) == 1


def test_usage_identifier_key_feeds_api_key_source_authorizer(tmp_path: Any,
                                                              undo: Gateways) -> None:
    h, _ = gateway(tmp_path, undo, token_scheme(),
                      lambda e: {**ALLOW_ALL, "usageIdentifierKey": "k" * 30})
    r = run(h, "GET", "/prod/pets/1", headers={"Authorization": "a"})
    assert r.status == 200
    cache = lambda_cache_for(h.config)
    (entry,) = cache.entries.values()
    assert entry[1].usage_identifier_key == "k" * 30


# -- units ------------------------------------------------------------------------------


def test_wildcards() -> None:
    st = [{"Action": "execute-api:Invoke", "Effect": "Allow",
           "Resource": "arn:aws:execute-api:*:*:abc/*/GET/pets/?"}]
    assert lambda_auth.evaluate(st, "arn:aws:execute-api:r:1:abc/prod/GET/pets/1") == "Allow"
    assert lambda_auth.evaluate(st, "arn:aws:execute-api:r:1:abc/prod/GET/pets/12") == ""
    assert lambda_auth.evaluate(st, "arn:aws:execute-api:r:1:abd/prod/GET/pets/1") == ""


def test_public_invoke_api(tmp_path: Any, undo: Gateways) -> None:
    h, _ = gateway(tmp_path, undo, token_scheme(), lambda e: {"hello": e["x"]})
    d = defer.ensureDeferred(invoke(h.config, "Auth", b'{"x": 1}'))
    box: list[Any] = []
    d.addBoth(box.append)
    assert box[0].payload == b'{"hello": 1}'
    d = defer.ensureDeferred(invoke(h.config, "Nope", b"{}"))
    d.addErrback(lambda f: box.append(f.value))
    assert isinstance(box[1], FunctionNotFound)


# -- resource policies (§5.9) -------------------------------------------------------------


def resource_policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"x-amazon-apigateway-policy": {"Version": "2012-10-17",
                                           "Statement": list(statements)}}


def stmt(effect: str, resource: str = "execute-api:/*", **extra: Any) -> dict[str, Any]:
    return {"Effect": effect, "Principal": "*", "Action": "execute-api:Invoke",
            "Resource": resource, **extra}


OPEN_ARN = f"arn:aws:execute-api:us-east-1:{ACCOUNT}:{API}/prod/GET/open"


def test_policy_allow_by_source_ip(tmp_path: Any, undo: Gateways) -> None:
    h, _ = gateway(tmp_path, undo, token_scheme(), lambda e: ALLOW_ALL,
                   root=resource_policy(stmt("Allow", Condition={
                       "IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "2001:db8::/32"]}})))
    assert run(h, "GET", "/prod/open").status == 200
    assert run(h, "GET", "/prod/open", client_ip="2001:db8::7").status == 200
    for ip in ("10.1.2.3", "::1"):
        r = run(h, "GET", "/prod/open", client_ip=ip)
        assert (r.status, body(r)) == (403, {"message": "User: anonymous is not authorized "
                                         f"to perform: execute-api:Invoke on resource: "
                                         f"{OPEN_ARN}"}), ip
        assert r.headers.get("x-amzn-ErrorType") == "AccessDeniedException"


def test_policy_explicit_deny_wins(tmp_path: Any, undo: Gateways) -> None:
    h, _ = gateway(tmp_path, undo, token_scheme(), lambda e: ALLOW_ALL,
                   root=resource_policy(
                       stmt("Allow"),
                       stmt("Deny", Condition={"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}})))
    assert run(h, "GET", "/prod/open", client_ip="10.9.9.9").status == 200
    r = run(h, "GET", "/prod/open")
    assert (r.status, body(r)["message"]) == (
        403, f"User: anonymous is not authorized to perform: execute-api:Invoke on resource: "
             f"{OPEN_ARN} with an explicit deny")


def test_policy_resources_expand_and_match(tmp_path: Any, undo: Gateways) -> None:
    h, _ = gateway(tmp_path, undo, token_scheme(), lambda e: ALLOW_ALL,
                   root=resource_policy(stmt("Allow", "execute-api:/prod/POST/*")))
    assert run(h, "GET", "/prod/open").status == 403
    h2, _ = gateway(tmp_path / "2", undo, token_scheme(), lambda e: ALLOW_ALL,
                    root=resource_policy(stmt("Allow", ["execute-api:/*/GET/op?n"])))
    assert run(h2, "GET", "/prod/open").status == 200


def test_policy_deny_is_checked_before_the_lambda_authorizer(tmp_path: Any,
                                                            undo: Gateways) -> None:
    h, auth = gateway(tmp_path, undo, token_scheme(), lambda e: ALLOW_ALL,
                      root=resource_policy(stmt("Deny", "execute-api:/*/POST/*")))
    r = run(h, "POST", "/prod/pets/1", headers={"Authorization": "a"})
    assert r.status == 403
    assert body(r)["message"].endswith("/prod/POST/pets/1 with an explicit deny")
    assert auth.events == []
    # Silent policy + the authorizer's Allow → allowed (Table A).
    assert run(h, "GET", "/prod/pets/1", headers={"Authorization": "a"}).status == 200
    assert len(auth.events) == 1
    # ... but a route without an authorizer needs the policy's explicit Allow.
    assert run(h, "GET", "/prod/open").status == 403


def test_policy_with_unsupported_condition_is_refused_at_load(tmp_path: Any,
                                                              undo: Gateways) -> None:
    for condition, problem in (
            ({"StringEquals": {"aws:UserAgent": "curl"}},
             "Condition.StringEquals.aws:UserAgent: string conditions are supported on "
             "aws:SourceVpce only"),
            ({"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
             "Condition.DateGreaterThan: only IpAddress and NotIpAddress")):
        with pytest.raises(ConfigError) as err:
            gateway(tmp_path, undo, token_scheme(), lambda e: ALLOW_ALL,
                    root=resource_policy(stmt("Allow", Condition=condition)))
        assert "x-amazon-apigateway-policy" in str(err.value)
        assert problem in str(err.value)


#: A private-API style gateway: one listener stands for the VPC endpoint ``vpce-1a2b``.
VPCE_LISTENERS = [
    {"name": "private", "endpoint": "tcp:0:interface=127.0.0.1", "vpce": "vpce-1a2b"},
    {"name": "partner", "endpoint": "tcp:0:interface=127.0.0.1", "vpce": "vpce-99ff"},
    {"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"},
]


def test_policy_source_vpce_is_the_listeners_vpce(tmp_path: Any, undo: Gateways) -> None:
    # AWS's private-API pattern: allow all, deny unless through our endpoint.
    h, _ = gateway(tmp_path, undo, token_scheme(), lambda e: ALLOW_ALL,
                   listeners=VPCE_LISTENERS, root=resource_policy(
                       stmt("Allow"),
                       stmt("Deny", Condition={
                           "StringNotEquals": {"aws:SourceVpce": "vpce-1a2b"}})))
    assert run(h, "GET", "/prod/open", listener="private").status == 200
    for listener in ("partner", "public"):  # another vpce, and none at all
        r = run(h, "GET", "/prod/open", listener=listener)
        assert (r.status, body(r)["message"]) == (
            403, f"User: anonymous is not authorized to perform: execute-api:Invoke on "
                 f"resource: {OPEN_ARN} with an explicit deny"), listener
    # StringLike / StringEquals allow; a listener without a vpce never equals anything.
    h2, _ = gateway(tmp_path / "2", undo, token_scheme(), lambda e: ALLOW_ALL,
                    listeners=VPCE_LISTENERS, root=resource_policy(
                        stmt("Allow", Condition={"StringLike": {"aws:SourceVpce": "vpce-9*"}}),
                        stmt("Allow", "execute-api:/*/POST/*", Condition={
                            "StringEquals": {"aws:SourceVpce": ["vpce-1a2b", "vpce-x"]}})))
    assert [run(h2, "GET", "/prod/open", listener=n).status
            for n in ("private", "partner", "public")] == [403, 200, 403]


def test_context_identity_vpce_id_is_the_listeners_vpce(tmp_path: Any, undo: Gateways) -> None:
    """``$context.identity.vpceId`` names the listener's endpoint id (§6.13), else null."""
    h, _ = gateway(tmp_path, undo, token_scheme(), lambda e: ALLOW_ALL,
                   listeners=VPCE_LISTENERS)
    api = h.gateway.deployment.apis[API]
    seen = {}
    for name in ("private", "partner", "public"):
        inbound = attrs.evolve(make_inbound("GET", "/prod/open"), listener=name)
        seen[name] = lookup(make_context(inbound, deployment_api=api), "identity.vpceId")
    assert seen == {"private": "vpce-1a2b", "partner": "vpce-99ff", "public": None}


def test_listener_vpce_must_be_an_endpoint_id(tmp_path: Any, undo: Gateways) -> None:
    with pytest.raises(ConfigError) as err:
        gateway(tmp_path, undo, token_scheme(), lambda e: ALLOW_ALL, listeners=[
            {"name": "private", "endpoint": "tcp:0:interface=127.0.0.1", "vpce": "my vpc"}])
    assert "listeners[0].vpce" in str(err.value)
    assert "vpce-0a1b2c3d" in str(err.value)


def test_http_authorizer_payload_version_checked_at_load(tmp_path: Any,
                                                         undo: Gateways) -> None:
    for extra, problem in (
            ({}, "authorizerPayloadFormatVersion '(missing)'"),
            ({"authorizerPayloadFormatVersion": "3.0"}, "need '1.0' or '2.0'"),
            ({"authorizerPayloadFormatVersion": "1.0", "enableSimpleResponses": True},
             "enableSimpleResponses needs authorizerPayloadFormatVersion '2.0'")):
        with pytest.raises(ConfigError) as err:
            gateway(tmp_path, undo, request_scheme(
                identitySource=["$request.header.X-User"], **extra), lambda e: ALLOW_ALL,
                api_type="HTTP")
        assert "securitySchemes.custom.x-amazon-apigateway-authorizer" in str(err.value)
        assert problem in str(err.value)


def test_http_payload_1_event_and_policy_output(tmp_path: Any, undo: Gateways) -> None:
    outputs: dict[str, Any] = {
        "ok": {**ALLOW_ALL, "context": {"tier": "gold", "roles": ["a"]}},
        "deny": policy("Deny", "*"),
        "boom": InvokeResult("i", b'{"errorMessage": "Unauthorized"}', "Unhandled"),
    }
    h, auth = gateway(tmp_path, undo, http_scheme(authorizerPayloadFormatVersion="1.0"),
                      lambda e: outputs[e["identitySource"].split(",")[0]],
                      api_type="HTTP")
    r = run(h, "GET", "/prod/pets/7?q=1", headers={"X-User": "ok"})
    assert r.status == 200, r.body
    assert body(r) == {"lambda": {"tier": "gold", "roles": ["a"]}}
    event = auth.events[0]
    assert list(event)[:5] == ["version", "type", "methodArn", "identitySource",
                               "authorizationToken"]
    assert (event["version"], event["type"]) == ("1.0", "REQUEST")
    assert event["methodArn"] == f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API}/prod/GET/pets/7"
    assert event["identitySource"] == event["authorizationToken"] == "ok,1"
    # The REST-compatible (1.0) request fields, without the body.
    assert (event["resource"], event["httpMethod"]) == ("/pets/{id}", "GET")
    assert event["path"].endswith("/pets/7")  # as the Lambda plugin's 1.0 event has it
    assert event["headers"]["x-user"] == "ok"
    assert event["queryStringParameters"] == {"q": "1"}
    assert event["pathParameters"] == {"id": "7"}
    assert event["requestContext"]["stage"] == "prod"
    assert "body" not in event and "authorizer" not in event["requestContext"]
    assert "routeArn" not in event
    r = run(h, "GET", "/prod/pets/7?q=1", headers={"X-User": "deny"})
    assert (r.status, body(r)) == (403, {"message": "Forbidden"})
    r = run(h, "GET", "/prod/pets/7?q=1", headers={"X-User": "boom"})
    assert (r.status, body(r)) == (500, {"message": "Internal Server Error"})
    r = run(h, "GET", "/prod/pets/7", headers={"X-User": "ok"})  # q missing
    assert (r.status, body(r)) == (401, {"message": "Unauthorized"})
    assert len(auth.events) == 3


# -- HTTP API Lambda authorizers, payload 2.0 (§5.5) ----------------------------------------


def http_scheme(**auth: Any) -> dict[str, Any]:
    return request_scheme(**{"authorizerPayloadFormatVersion": "2.0", "identitySource": [
        "$request.header.X-User", "$request.querystring.q"], **auth})


def test_http_simple_response(tmp_path: Any, undo: Gateways) -> None:
    h, auth = gateway(tmp_path, undo, http_scheme(enableSimpleResponses=True),
                      lambda e: {"isAuthorized": e["identitySource"][0] == "ok",
                                 "context": {"roles": ["a", "b"], "n": 1}},
                      api_type="HTTP")
    r = run(h, "GET", "/prod/pets/7?q=1", headers={"X-User": "ok"})
    assert r.status == 200, r.body
    assert body(r) == {"lambda": {"roles": ["a", "b"], "n": 1}}
    event = auth.events[0]
    assert event["version"] == "2.0"
    assert event["type"] == "REQUEST"
    assert event["routeArn"] == (f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API}/prod/GET/"
                                 "pets/7")
    assert event["identitySource"] == ["ok", "1"]
    assert event["routeKey"] == "GET /pets/{id}"
    assert event["headers"]["x-user"] == "ok"
    assert "body" not in event and "authorizer" not in event["requestContext"]
    r = run(h, "GET", "/prod/pets/7?q=1", headers={"X-User": "no"})
    assert (r.status, body(r)) == (403, {"message": "Forbidden"})
    r = run(h, "GET", "/prod/pets/7", headers={"X-User": "ok"})  # q missing
    assert (r.status, body(r)) == (401, {"message": "Unauthorized"})
    assert len(auth.events) == 2  # TTL defaults to 0 on HTTP APIs: no caching


def test_http_errors_and_policy_output_and_cache(tmp_path: Any, undo: Gateways) -> None:
    outputs: dict[str, Any] = {
        "boom": InvokeResult("i", b'{"errorMessage": "Unauthorized"}', "Unhandled"),
        "bad": {"isAuthorized": "yes"},
        "policy": ALLOW_ALL,
        "deny": policy("Deny", "*"),
    }
    h, auth = gateway(tmp_path, undo, http_scheme(authorizerResultTtlInSeconds=60),
                      lambda e: outputs[e["identitySource"][0]], api_type="HTTP")
    for user in ("boom", "bad"):
        r = run(h, "GET", "/prod/pets/1?q=1", headers={"X-User": user})
        assert (r.status, body(r)) == (500, {"message": "Internal Server Error"}), user
    assert run(h, "GET", "/prod/pets/1?q=1", headers={"X-User": "policy"}).status == 200
    assert run(h, "GET", "/prod/pets/2?q=1", headers={"X-User": "policy"}).status == 200
    r = run(h, "GET", "/prod/pets/1?q=1", headers={"X-User": "deny"})
    assert (r.status, body(r)) == (403, {"message": "Forbidden"})
    assert [e["identitySource"][0] for e in auth.events] == ["boom", "bad", "policy", "deny"]
