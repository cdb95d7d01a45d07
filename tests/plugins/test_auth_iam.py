"""IAM authorization (aws-apigw-spec.md §5.7): SigV4 requests signed by botocore.

botocore's ``SigV4Auth`` signs exactly as the AWS SDKs and the CLI do; the gateway's
verifier is independent code.  Each tampered variant changes one thing after signing
(path, query, a signed header, the body, the date) and must be refused.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

import pytest
from botocore import auth as botocore_auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from twistgw.variables import ACCOUNT_ID, lookup

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw.testing import GatewayHarness

AKID = "AKIAEXAMPLE0000001"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
HOST = "gateway.example.test"
MISMATCH = ("The request signature we calculated does not match the signature you "
            "provided. Check your AWS Secret Access Key and signing method. Consult the "
            "service documentation for details.")


def api(b: Builders) -> dict[str, Any]:
    iam_op = {**b.proxy_op(), "x-amazon-apigateway-auth": {"type": "AWS_IAM"}}
    return b.openapi(
        {"/pets": {"get": iam_op, "post": iam_op},
         "/pets/{id}": {"get": {**b.proxy_op(), "security": [{"sigv4": []}]}},
         "/open": {"get": b.proxy_op()}},
        components={"securitySchemes": {"sigv4": {
            "type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "awsSigv4"}}})


#: The method ARNs of the test API: ``{stage}/{METHOD}/{path}`` follows.
ARN = f"arn:aws:execute-api:eu-west-1:{ACCOUNT_ID}:testapi/"
USER_ARN = "arn:aws:iam::123456789012:user/AIDAEXAMPLEUSER"


def iam_policy(*statements: tuple[str, str | list[str]]) -> dict[str, Any]:
    """An identity policy of ``(effect, resource)`` statements on execute-api:Invoke."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": effect, "Action": "execute-api:Invoke", "Resource": resource}
        for effect, resource in statements]}


ALLOW_ALL = iam_policy(("Allow", ARN + "*"))


def harness(make_harness: HarnessFactory, b: Builders, monkeypatch: pytest.MonkeyPatch,
            api_type: str = "REST", *, key_extra: dict[str, Any] | None = None,
            iam_extra: dict[str, Any] | None = None,
            definition: dict[str, Any] | None = None) -> tuple[GatewayHarness, Any]:
    monkeypatch.setenv("TWISTGW_TEST_IAM_SECRET", SECRET)
    echo = b.echo()
    config = b.gateway_config(api_type=api_type, stages=[{"name": "prod"}])
    key = {"access_key_id": AKID, "secret_access_key": {"$env": "TWISTGW_TEST_IAM_SECRET"},
           "user": "AIDAEXAMPLEUSER", "account_id": "123456789012", "policy": ALLOW_ALL,
           **(key_extra or {})}
    config["plugins"] = {"enabled": ["mock", "mapping", "auth"], "settings": {"auth": {
        "iam": {"region": "eu-west-1", "keys": [{k: v for k, v in key.items()
                                                  if v is not None}],
                **(iam_extra or {})}}}}
    return make_harness(definition or api(b), config=config, plugins=[("echo", echo)]), echo


def signed(method: str, path: str, body: bytes = b"", *, secret: str = SECRET,
           akid: str = AKID, region: str = "eu-west-1", service: str = "execute-api",
           at: datetime.datetime | None = None,
           headers: dict[str, str] | None = None,
           monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, str]:
    """The headers botocore sends for ``method https://HOST{path}`` with ``body``."""
    request = AWSRequest(method=method, url=f"https://{HOST}{path}", data=body,
                         headers={"Host": HOST, **(headers or {})})
    if at is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: at)
    SigV4Auth(Credentials(akid, secret), service, region).add_auth(request)
    if at is not None:
        assert monkeypatch is not None
        monkeypatch.undo()
    return dict(request.headers.items())


def send(h: GatewayHarness, method: str, path: str, headers: dict[str, str],
         body: bytes = b"") -> Any:
    return h.request(method, path, headers=headers, body=body)


def assert_refused(response: Any, message: str, error_type: str = "InvalidSignatureException"
                   ) -> None:
    assert response.status == 403
    assert json.loads(response.body) == {"message": message}
    assert response.headers.get("x-amzn-ErrorType") == error_type


def test_signed_requests_pass_and_name_the_caller(make_harness: HarnessFactory, b: Builders,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    h, echo = harness(make_harness, b, monkeypatch)
    response = send(h, "GET", "/prod/pets?b=2&a=1&a=0", signed("GET", "/prod/pets?b=2&a=1&a=0"))
    assert response.status == 200
    ctx = echo.seen[-1]
    assert lookup(ctx, "identity.accessKey") == AKID
    assert lookup(ctx, "identity.caller") == "AIDAEXAMPLEUSER"
    assert lookup(ctx, "identity.user") == "AIDAEXAMPLEUSER"
    assert lookup(ctx, "identity.accountId") == "123456789012"
    assert lookup(ctx, "identity.userArn") == "arn:aws:iam::123456789012:user/AIDAEXAMPLEUSER"
    assert lookup(ctx, "authorizer.principalId") is None
    body = b'{"name": "rex"}'
    hdrs = signed("POST", "/prod/pets", body, headers={"Content-Type": "application/json"})
    assert send(h, "POST", "/prod/pets", hdrs, body).status == 200
    assert send(h, "GET", "/prod/pets/a%20b", signed("GET", "/prod/pets/a%20b")).status == 200
    assert send(h, "GET", "/prod/open", {}).status == 200
    assert lookup(echo.seen[-1], "identity.accessKey") is None


def test_missing_authorization_is_missing_authentication_token(
        make_harness: HarnessFactory, b: Builders, monkeypatch: pytest.MonkeyPatch) -> None:
    h, echo = harness(make_harness, b, monkeypatch)
    assert_refused(send(h, "GET", "/prod/pets", {}), "Missing Authentication Token",
                   "MissingAuthenticationTokenException")
    assert_refused(send(h, "GET", "/prod/pets/1", {}), "Missing Authentication Token",
                   "MissingAuthenticationTokenException")
    assert not echo.seen


def test_tampered_requests_are_refused(make_harness: HarnessFactory, b: Builders,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    h, echo = harness(make_harness, b, monkeypatch)
    good = signed("GET", "/prod/pets?a=1", headers={"X-Custom": "v"})
    assert send(h, "GET", "/prod/pets?a=1", good).status == 200
    seen = len(echo.seen)
    assert_refused(send(h, "GET", "/prod/pets/1?a=1", good), MISMATCH)  # path
    assert_refused(send(h, "GET", "/prod/pets?a=2", good), MISMATCH)  # query
    assert_refused(send(h, "GET", "/prod/pets?a=1&b=1", good), MISMATCH)  # extra param
    assert_refused(send(h, "GET", "/prod/pets?a=1", {**good, "X-Custom": "w"}), MISMATCH)
    assert_refused(send(h, "GET", "/prod/pets?a=1", {**good, "Host": "other.test"}), MISMATCH)
    assert_refused(send(h, "POST", "/prod/pets?a=1", good), MISMATCH)  # method
    date = good["X-Amz-Date"]
    later = date[:-3] + ("00Z" if date[-3:] != "00Z" else "01Z")
    assert_refused(send(h, "GET", "/prod/pets?a=1", {**good, "X-Amz-Date": later}), MISMATCH)
    sig = good["Authorization"]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert_refused(send(h, "GET", "/prod/pets?a=1", {**good, "Authorization": flipped}),
                   MISMATCH)
    body = b'{"n": 1}'
    post = signed("POST", "/prod/pets", body)
    assert_refused(send(h, "POST", "/prod/pets", post, b'{"n": 2}'), MISMATCH)
    wrong_hash = {**post, "X-Amz-Content-Sha256": "0" * 64}
    assert_refused(send(h, "POST", "/prod/pets", wrong_hash, body),
                   "The provided 'x-amz-content-sha256' header does not match what was "
                   "computed.")
    assert_refused(send(h, "GET", "/prod/pets",
                        signed("GET", "/prod/pets", secret="x" * 40)), MISMATCH)
    assert len(echo.seen) == seen


def test_unknown_key_scope_and_unsigned_host(make_harness: HarnessFactory, b: Builders,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    h, _ = harness(make_harness, b, monkeypatch)
    assert_refused(send(h, "GET", "/prod/pets", signed("GET", "/prod/pets",
                                                       akid="AKIAUNKNOWN0000001")),
                   "The security token included in the request is invalid.",
                   "UnrecognizedClientException")
    assert_refused(send(h, "GET", "/prod/pets", signed("GET", "/prod/pets", region="us-east-1")),
                   "Credential should be scoped to a valid region, not 'us-east-1'.")
    assert_refused(send(h, "GET", "/prod/pets", signed("GET", "/prod/pets", service="s3")),
                   "Credential should be scoped to correct service: 'execute-api'.")
    good = signed("GET", "/prod/pets")
    no_host = good["Authorization"].replace("SignedHeaders=host;x-amz-date",
                                            "SignedHeaders=x-amz-date")
    assert "SignedHeaders=x-amz-date" in no_host
    assert_refused(send(h, "GET", "/prod/pets", {**good, "Authorization": no_host}),
                   "'Host' and 'X-Amz-Date' must be signed headers.",
                   "IncompleteSignatureException")
    response = send(h, "GET", "/prod/pets", {**good, "Authorization": "Bearer abc"})
    assert response.status == 403
    assert response.headers.get("x-amzn-ErrorType") == "IncompleteSignatureException"
    assert json.loads(response.body)["message"].startswith(
        "Authorization header requires 'Credential' parameter.")


def test_expired_and_future_signatures(make_harness: HarnessFactory, b: Builders,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    h, _ = harness(make_harness, b, monkeypatch)
    now = datetime.datetime.now(datetime.UTC)
    old = signed("GET", "/prod/pets", at=now - datetime.timedelta(minutes=16),
                 monkeypatch=monkeypatch)
    response = send(h, "GET", "/prod/pets", old)
    assert response.status == 403
    message = json.loads(response.body)["message"]
    assert message.startswith(f"Signature expired: {old['X-Amz-Date']} is now earlier than ")
    assert message.endswith(" - 15 min.)")
    recent = signed("GET", "/prod/pets", at=now - datetime.timedelta(minutes=14),
                    monkeypatch=monkeypatch)
    assert send(h, "GET", "/prod/pets", recent).status == 200
    future = signed("GET", "/prod/pets", at=now + datetime.timedelta(minutes=16),
                    monkeypatch=monkeypatch)
    response = send(h, "GET", "/prod/pets", future)
    assert response.status == 403
    assert json.loads(response.body)["message"].startswith("Signature not yet current: ")


def test_http_api_refusals_are_forbidden(make_harness: HarnessFactory, b: Builders,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    h, _ = harness(make_harness, b, monkeypatch, api_type="HTTP")
    for headers in ({}, {**signed("GET", "/prod/pets"), "X-Amz-Date": "20200101T000000Z"}):
        response = send(h, "GET", "/prod/pets", headers)
        assert (response.status, response.body) == (403, b'{"message":"Forbidden"}')
    assert send(h, "GET", "/prod/pets", signed("GET", "/prod/pets")).status == 200


def test_identity_policy_allows_only_what_it_names(make_harness: HarnessFactory,
                                                   b: Builders,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    h, echo = harness(make_harness, b, monkeypatch, key_extra={
        "policy": iam_policy(("Allow", [ARN + "prod/GET/pets", ARN + "*/GET/pets/?"]))})
    assert send(h, "GET", "/prod/pets", signed("GET", "/prod/pets")).status == 200
    assert send(h, "GET", "/prod/pets/7", signed("GET", "/prod/pets/7")).status == 200
    seen = len(echo.seen)
    for method, path in (("POST", "/prod/pets"), ("GET", "/prod/pets/77")):
        assert_refused(send(h, method, path, signed(method, path)),
                       f"User: {USER_ARN} is not authorized to perform: execute-api:Invoke "
                       f"on resource: {ARN}prod/{method}/{path[6:]}", "AccessDeniedException")
    assert len(echo.seen) == seen


def test_explicit_deny_wins_over_the_users_allow(make_harness: HarnessFactory, b: Builders,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    h, _ = harness(make_harness, b, monkeypatch, key_extra={
        "policy": iam_policy(("Deny", ARN + "*/*/pets/*"))}, iam_extra={
        "users": {"AIDAEXAMPLEUSER": {"policy": ALLOW_ALL}}})
    assert send(h, "GET", "/prod/pets", signed("GET", "/prod/pets")).status == 200
    assert_refused(send(h, "GET", "/prod/pets/1", signed("GET", "/prod/pets/1")),
                   f"User: {USER_ARN} is not authorized to perform: execute-api:Invoke on "
                   f"resource: {ARN}prod/GET/pets/1 with an explicit deny",
                   "AccessDeniedException")


def test_key_without_policy_invokes_nothing(make_harness: HarnessFactory, b: Builders,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    h, _ = harness(make_harness, b, monkeypatch, key_extra={"policy": None})
    assert_refused(send(h, "GET", "/prod/pets", signed("GET", "/prod/pets")),
                   f"User: {USER_ARN} is not authorized to perform: execute-api:Invoke on "
                   f"resource: {ARN}prod/GET/pets", "AccessDeniedException")
    # The user's policy applies to every key of the user.
    h, _ = harness(make_harness, b, monkeypatch, key_extra={"policy": None}, iam_extra={
        "users": {"AIDAEXAMPLEUSER": {"policy": ALLOW_ALL}}})
    assert send(h, "GET", "/prod/pets", signed("GET", "/prod/pets")).status == 200
    h, _ = harness(make_harness, b, monkeypatch, "HTTP", key_extra={"policy": None})
    response = send(h, "GET", "/prod/pets", signed("GET", "/prod/pets"))
    assert (response.status, response.body) == (403, b'{"message":"Forbidden"}')


def test_resource_policy_allow_is_enough_for_a_silent_identity(
        make_harness: HarnessFactory, b: Builders, monkeypatch: pytest.MonkeyPatch) -> None:
    definition = api(b)
    definition["x-amazon-apigateway-policy"] = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": USER_ARN}, "Action": "execute-api:Invoke",
         "Resource": "execute-api:/*/GET/pets"}]}
    h, _ = harness(make_harness, b, monkeypatch, definition=definition, key_extra={
        "policy": iam_policy(("Allow", ARN + "*/POST/*"))})
    # Same account (Table A): the resource policy's Allow or the identity's suffices.
    assert send(h, "GET", "/prod/pets", signed("GET", "/prod/pets")).status == 200
    assert send(h, "POST", "/prod/pets", signed("POST", "/prod/pets")).status == 200
    assert_refused(send(h, "GET", "/prod/pets/1", signed("GET", "/prod/pets/1")),
                   f"User: {USER_ARN} is not authorized to perform: execute-api:Invoke on "
                   f"resource: {ARN}prod/GET/pets/1", "AccessDeniedException")


@pytest.mark.parametrize(("settings", "where"), [
    ({"iam": {"keys": [{"access_key_id": AKID, "secret_access_key": SECRET, "policy": {
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke",
                       "Resource": "*"}]}}]}},
     "plugins.settings.auth.iam.keys[0].policy.Statement[0].Principal"),
    ({"iam": {"keys": [{"access_key_id": AKID, "secret_access_key": SECRET, "policy": {
        "Statement": [{"Effect": "Maybe", "Action": "execute-api:Invoke",
                       "Resource": "*"}]}}]}},
     "plugins.settings.auth.iam.keys[0].policy"),
    ({"iam": {"keys": [{"access_key_id": AKID, "secret_access_key": SECRET}],
              "users": {"nobody": {"policy": ALLOW_ALL}}}},
     "plugins.settings.auth.iam.users.nobody"),
    ({"iam": {"keys": [{"access_key_id": AKID, "secret_access_key": SECRET, "user": "u"}],
              "users": {"u": ALLOW_ALL}}},  # the policy itself, not {policy: ...}
     "plugins.settings.auth.iam.users.u.Version"),
    ({"iam": {"keys": [{"access_key_id": "lower-case-key-0001", "secret_access_key": SECRET}]}},
     "plugins.settings.auth.iam.keys[0].access_key_id"),
    ({"iam": {"keys": [{"access_key_id": AKID, "secret_access_key": "short"}]}},
     "plugins.settings.auth.iam.keys[0].secret_access_key"),
    ({"jwt": {"leeway": 600}}, "plugins.settings.auth.jwt.leeway"),
    ({"jwt": {"issuers": [{"issuer": "https://i.test", "jwks_uri": "file:///etc/x"}]}},
     "plugins.settings.auth.jwt.issuers[0].jwks_uri"),
    ({"oauth": {}}, "plugins.settings.auth.oauth"),
])
def test_bad_settings_are_refused_at_load(make_harness: HarnessFactory, b: Builders,
                                          settings: dict[str, Any], where: str) -> None:
    from twistgw.errors import ConfigError

    config = b.gateway_config(stages=[{"name": "prod"}])
    config["plugins"] = {"enabled": ["mock", "mapping", "auth"],
                         "settings": {"auth": settings}}
    with pytest.raises(ConfigError) as info:
        make_harness(api(b), config=config)
    assert info.value.path == where
    assert info.value.file.endswith(".yaml")  # the config file, as the core's errors say


def test_iam_route_without_the_plugin_is_refused(make_harness: HarnessFactory,
                                                 b: Builders) -> None:
    from twistgw.errors import ConfigError

    with pytest.raises(ConfigError, match="IAM"):
        make_harness(api(b), config=b.gateway_config(stages=[{"name": "prod"}]),
                     plugins=[("echo", b.echo())])


def test_caller_reaches_the_lambda_events(make_harness: HarnessFactory, b: Builders,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from twistgw_lambda.events import http_v2_event, rest_event

    from twistgw.models import IntegrationRequest

    h, echo = harness(make_harness, b, monkeypatch)
    assert send(h, "GET", "/prod/pets", signed("GET", "/prod/pets")).status == 200
    event = rest_event(echo.seen[-1], IntegrationRequest(method="GET", uri="x"))
    identity = event["requestContext"]["identity"]
    assert (identity["accessKey"], identity["caller"], identity["accountId"]) == (
        AKID, "AIDAEXAMPLEUSER", "123456789012")
    assert "authorizer" not in event["requestContext"]
    h, echo = harness(make_harness, b, monkeypatch, api_type="HTTP")
    assert send(h, "GET", "/prod/pets", signed("GET", "/prod/pets")).status == 200
    event = http_v2_event(echo.seen[-1], IntegrationRequest(method="GET", uri="x"))
    assert event["requestContext"]["authorizer"]["iam"]["accessKey"] == AKID
    assert event["requestContext"]["authorizer"]["iam"]["userId"] == "AIDAEXAMPLEUSER"
