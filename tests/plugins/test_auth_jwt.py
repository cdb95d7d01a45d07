"""JWT (HTTP API) and Cognito user-pool (REST) authorizers (aws-apigw-spec.md §5.6, §5.8).

Tokens are minted with PyJWT from RSA and P-256 keys generated here.  The in-process
tests give the issuer's JWKS cache a fetcher that serves the test's key set and counts
fetches; the end-to-end test runs the real daemon against a JWKS server on 127.0.0.1, so
the treq fetch, the size cap and the refetch on an unknown ``kid`` run for real.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import jwt
import pytest
import twistgw_auth
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twistgw_auth.jwks import JwksCache

from twistgw.testing import RunningGateway, write_config
from twistgw.variables import lookup

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw.testing import GatewayHarness

ISSUER = "https://idp.example.test/realm"
POOL_ARN = "arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_AbC"
POOL_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC"
AUDIENCE = "gateway-clients"
UNAUTHORIZED = b'{"message":"Unauthorized"}'
FORBIDDEN = b'{"message":"Forbidden"}'

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())
                                     if isinstance(key, rsa.RSAPrivateKey)
                                     else jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    doc.update(kid=kid, use="sig")
    return doc


def mint(key: Any = RSA_KEY, kid: str = "rsa1", alg: str = "RS256", *,
         headers: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now,
                            "exp": now + 300}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, **(headers or {})})


class KeySet:
    """The issuer's JWKS as the tests change it, and how often the gateway fetched it."""

    def __init__(self) -> None:
        self.keys = [jwk(RSA_KEY, "rsa1"), jwk(EC_KEY, "ec1")]
        self.fetches = 0

    def doc(self) -> dict[str, Any]:
        return {"keys": list(self.keys)}

    async def fetch(self, url: str, timeout: float, max_bytes: int) -> Any:
        self.fetches += 1
        return self.doc()


def http_api(b: Builders) -> dict[str, Any]:
    auth = {"type": "jwt", "identitySource": "$request.header.Authorization",
            "jwtConfiguration": {"issuer": ISSUER, "audience": [AUDIENCE, "other"]}}
    return b.openapi(
        {"/pets": {"get": {**b.proxy_op(), "security": [{"jwt": []}]}},
         "/admin": {"get": {**b.proxy_op(), "security": [{"jwt": ["admin", "ops"]}]}},
         "/open": {"get": b.proxy_op()}},
        components={"securitySchemes": {"jwt": {
            "type": "oauth2", "flows": {}, "x-amazon-apigateway-authorizer": auth}}})


def harness(make_harness: HarnessFactory, b: Builders, keys: KeySet, *,
            definition: dict[str, Any] | None = None, api_type: str = "HTTP",
            issuer: str = ISSUER, **jwt_settings: Any) -> tuple[GatewayHarness, Any]:
    echo = b.echo()
    config = b.gateway_config(api_type=api_type, stages=[{"name": "$default"}]
                              if api_type == "HTTP" else [{"name": "prod"}])
    config["plugins"] = {"enabled": ["mock", "mapping", "auth"],
                         "settings": {"auth": {"jwt": {"refetch_interval": 30,
                                                       **jwt_settings}}}}
    h = make_harness(definition or http_api(b), config=config, plugins=[("echo", echo)])
    twistgw_auth.caches_for(h.gateway.config)[issuer] = JwksCache(
        issuer, "https://unused.invalid/jwks", ttl=3600, refetch_interval=30,
        fetch=keys.fetch)
    return h, echo


def call(h: GatewayHarness, path: str, token: str | None, scheme: str = "Bearer ") -> Any:
    headers = {"Authorization": scheme + token} if token is not None else {}
    return h.request("GET", path, headers=headers)


def assert_invalid(response: Any, reason: str) -> None:
    assert (response.status, response.body) == (401, UNAUTHORIZED)
    assert response.headers.get("www-authenticate") == (
        f'Bearer scope="" error="invalid_token" error_description="{reason}"')


@pytest.fixture
def keys() -> KeySet:
    return KeySet()


def test_good_rs256_and_es256_tokens_name_the_caller(make_harness: HarnessFactory,
                                                     b: Builders, keys: KeySet) -> None:
    h, echo = harness(make_harness, b, keys)
    response = call(h, "/pets", mint(email="a@example.test", scope="read write"))
    assert response.status == 200
    ctx = echo.seen[-1]
    assert ctx.principal.kind == "jwt"
    assert lookup(ctx, "authorizer.claims.sub") == "user-1"
    assert lookup(ctx, "authorizer.claims.email") == "a@example.test"
    assert ctx.principal.context["scopes"] == ["read", "write"]
    assert call(h, "/pets", mint(EC_KEY, "ec1", "ES256")).status == 200
    assert call(h, "/pets", mint(), scheme="").status == 200  # no Bearer prefix
    assert call(h, "/open", None).status == 200
    assert keys.fetches == 1  # cached


def test_client_id_counts_as_audience(make_harness: HarnessFactory, b: Builders,
                                      keys: KeySet) -> None:
    h, _ = harness(make_harness, b, keys)
    assert call(h, "/pets", mint(aud=None, client_id="other")).status == 200
    assert call(h, "/pets", mint(aud=["x", AUDIENCE])).status == 200


def test_missing_token_is_401_without_fetching(make_harness: HarnessFactory, b: Builders,
                                               keys: KeySet) -> None:
    h, echo = harness(make_harness, b, keys)
    response = call(h, "/pets", None)
    assert (response.status, response.body) == (401, UNAUTHORIZED)
    assert call(h, "/pets", "", scheme="Bearer ").status == 401
    assert keys.fetches == 0 and not echo.seen


def test_refusals(make_harness: HarnessFactory, b: Builders, keys: KeySet) -> None:
    h, echo = harness(make_harness, b, keys)
    now = int(time.time())
    assert_invalid(call(h, "/pets", mint(exp=now - 120)), "the token has expired")
    assert_invalid(call(h, "/pets", mint(exp=None)), "the token has no exp claim")
    assert_invalid(call(h, "/pets", mint(aud="someone-else")),
                   "the token does not have a valid audience")
    assert_invalid(call(h, "/pets", mint(aud=None)), "the token does not have a valid audience")
    assert_invalid(call(h, "/pets", mint(iss="https://evil.test/realm")),
                   "the token has an invalid issuer")
    assert_invalid(call(h, "/pets", mint(iss=ISSUER + "/x")), "the token has an invalid issuer")
    assert_invalid(call(h, "/pets", mint(iss=None)), "the token has an invalid issuer")
    assert_invalid(call(h, "/pets", mint(nbf=now + 600)), "the token is not valid yet")
    assert_invalid(call(h, "/pets", mint(iat=now + 600)), "the token is not valid yet")
    # The other key's signature under rsa1's kid; a changed payload.
    assert_invalid(call(h, "/pets", mint(RSA_KEY_2)), "the token has an invalid signature")
    head, _payload, sig = mint().split(".")
    forged = base64.urlsafe_b64encode(json.dumps(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "admin", "exp": now + 300}).encode()
    ).rstrip(b"=").decode()
    assert_invalid(call(h, "/pets", f"{head}.{forged}.{sig}"),
                   "the token has an invalid signature")
    assert_invalid(call(h, "/pets", "not-a-jwt"), "the token is malformed")
    assert not echo.seen


def test_malformed_encodings_and_claim_types_refused(make_harness: HarnessFactory,
                                                    b: Builders, keys: KeySet) -> None:
    h, echo = harness(make_harness, b, keys)
    good = mint()
    head, payload, sig = good.split(".")
    assert call(h, "/pets", good).status == 200
    assert call(h, "/pets", f"{head}.{payload}.{sig}=").status == 200  # issuers that pad
    # The same signature bytes spelled another way: base64url's unused trailing bits set
    # (the 256-byte RS256 signature leaves 2 of them in its last character).
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(sig[-1]) | 1]
    assert last != sig[-1]
    for token in (f"{head}.{payload}.{sig[:-1]}{last}", f"{head}.{payload}.{sig}===",
                  f"{head}.{payload}.{sig}!", f"{head}.{payload}", f"{head}.e30x.{sig}",
                  f"{head}.{payload}.{sig}.{sig}"):
        assert_invalid(call(h, "/pets", token), "the token is malformed")
    assert_invalid(call(h, "/pets", f"{head}.{payload}."), "the token has an invalid signature")
    now = int(time.time())
    assert_invalid(call(h, "/pets", mint(exp="tomorrow")),
                   "the token's exp claim is not a number")
    assert_invalid(call(h, "/pets", mint(exp=True)), "the token's exp claim is not a number")
    assert_invalid(call(h, "/pets", mint(nbf=str(now))), "the token's nbf claim is not a number")
    array = base64.urlsafe_b64encode(b"[1]").rstrip(b"=").decode()
    assert_invalid(call(h, "/pets", f"{head}.{array}.{sig}"), "the token is malformed")
    assert len(echo.seen) == 2  # only the two good tokens reached the integration


def test_alg_none_hs256_and_confusion_refused(make_harness: HarnessFactory, b: Builders,
                                              keys: KeySet) -> None:
    h, _ = harness(make_harness, b, keys)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 300}
    none_token = jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa1"})
    assert_invalid(call(h, "/pets", none_token), "signing method none is invalid")
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    # HS/RS confusion: an HMAC token keyed with the issuer's public key.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}).encode()) + "." \
        + b64(json.dumps(claims).encode())
    forged = signing + "." + b64(hmac.new(pem, signing.encode(), hashlib.sha256).digest())
    assert_invalid(call(h, "/pets", forged), "signing method HS256 is invalid")
    # An ES256 header on the RSA key, an RS256 header on the EC key.
    assert_invalid(call(h, "/pets", mint(RSA_KEY, "ec1", "RS256")),
                   "signing method RS256 is invalid for the key")
    assert_invalid(call(h, "/pets", mint(EC_KEY, "rsa1", "ES256")),
                   "signing method ES256 is invalid for the key")
    # RS512 is not accepted even with a good key.
    assert_invalid(call(h, "/pets", mint(alg="RS512")), "signing method RS512 is invalid")
    # A jku / jwk header is never followed: the key comes from the issuer's JWKS only.
    evil = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_invalid(call(h, "/pets", mint(evil, headers={"jku": "https://evil.test/k",
                                                        "jwk": jwk(evil, "rsa1")})),
                   "the token has an invalid signature")


def test_kid_tricks_and_oversized_tokens(make_harness: HarnessFactory, b: Builders,
                                         keys: KeySet) -> None:
    h, _ = harness(make_harness, b, keys, max_token_bytes=4096)
    assert_invalid(call(h, "/pets", mint(kid="../../etc/passwd")),
                   "the token's kid is not in the issuer's key set")
    assert_invalid(call(h, "/pets", mint(kid="x" * 300)), "the token has no valid kid")
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
                       RSA_KEY, algorithm="RS256")  # no kid at all
    assert_invalid(call(h, "/pets", token), "the token has no valid kid")
    assert_invalid(call(h, "/pets", mint(pad="x" * 5000)), "the token is too large")


def test_unknown_kid_refetches_once_per_interval(make_harness: HarnessFactory, b: Builders,
                                                 keys: KeySet) -> None:
    h, _ = harness(make_harness, b, keys)
    assert call(h, "/pets", mint()).status == 200
    assert keys.fetches == 1
    keys.keys.append(jwk(RSA_KEY_2, "rsa2"))  # the IdP rotates in a new key
    assert call(h, "/pets", mint(RSA_KEY_2, "rsa2")).status == 200
    assert keys.fetches == 2
    # Unknown kids within the interval do not reach the IdP again.
    for i in range(5):
        assert call(h, "/pets", mint(kid=f"nope{i}")).status == 401
    assert keys.fetches == 2


def test_route_scopes(make_harness: HarnessFactory, b: Builders, keys: KeySet) -> None:
    h, _ = harness(make_harness, b, keys)
    assert call(h, "/admin", mint(scope="read ops")).status == 200
    assert call(h, "/admin", mint(scp=["admin"])).status == 200
    response = call(h, "/admin", mint(scope="read write"))
    assert (response.status, response.body) == (403, FORBIDDEN)
    assert 'error="insufficient_scope"' in response.headers.get("www-authenticate")
    assert call(h, "/admin", mint()).status == 403


def cognito_api(b: Builders) -> dict[str, Any]:
    scheme = {"type": "apiKey", "name": "Authorization", "in": "header",
              "x-amazon-apigateway-authtype": "cognito_user_pools",
              "x-amazon-apigateway-authorizer": {"type": "cognito_user_pools",
                                                 "providerARNs": [POOL_ARN]}}
    return b.openapi(
        {"/me": {"get": {**b.proxy_op(), "security": [{"pool": []}]}},
         "/orders": {"get": {**b.proxy_op(), "security": [{"pool": ["orders/read"]}]}}},
        components={"securitySchemes": {"pool": scheme}})


def test_cognito_user_pool_authorizer(make_harness: HarnessFactory, b: Builders,
                                      keys: KeySet) -> None:
    h, echo = harness(make_harness, b, keys, definition=cognito_api(b), api_type="REST",
                      issuer=POOL_ISSUER)
    id_token = mint(iss=POOL_ISSUER, aud="app-client", token_use="id", email="c@x.test")
    response = call(h, "/prod/me", id_token, scheme="")
    assert response.status == 200
    assert lookup(echo.seen[-1], "authorizer.claims.email") == "c@x.test"
    access = mint(iss=POOL_ISSUER, aud=None, client_id="app-client", token_use="access",
                  scope="orders/read")
    assert call(h, "/prod/orders", access, scheme="").status == 200
    # REST answers a plain 401 (no www-authenticate) for every refusal.
    for token, path in ((access, "/prod/me"), (id_token, "/prod/orders"),
                        (mint(iss=POOL_ISSUER, token_use="access", scope="x"), "/prod/orders"),
                        (mint(token_use="id"), "/prod/me"),
                        (mint(iss=POOL_ISSUER, token_use="id", exp=1), "/prod/me")):
        response = call(h, path, token, scheme="")
        assert (response.status, response.body) == (401, UNAUTHORIZED)
        assert response.headers.get("www-authenticate") is None
    assert call(h, "/prod/me", None).status == 401


# -- end to end ----------------------------------------------------------------------------


class JwksServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, keys: KeySet) -> None:
        super().__init__(("127.0.0.1", 0), JwksHandler)
        self.keyset = keys
        self.hits = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class JwksHandler(BaseHTTPRequestHandler):
    server: JwksServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits += 1
        if self.path == "/.well-known/openid-configuration":
            body = json.dumps({"issuer": self.server.url,
                               "jwks_uri": self.server.url + "/jwks.json"}).encode()
        elif self.path == "/jwks.json":
            body = json.dumps(self.server.keyset.doc()).encode()
        elif self.path == "/slow.json":
            time.sleep(3)
            body = json.dumps(self.server.keyset.doc()).encode()
        elif self.path == "/huge.json":
            body = json.dumps({"keys": [], "pad": "x" * 200_000}).encode()
        else:
            self.send_error(404)
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError:
            pass  # the gateway gave up (timeout, size cap): what the test wants


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway,
                                                                    JwksServer]]:
    server = JwksServer(KeySet())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    folder = tmp_path_factory.mktemp("auth-e2e")
    ok = {"x-amazon-apigateway-integration": {
        "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
        "responses": {"default": {"statusCode": "200", "responseTemplates": {
            "application/json": '{"sub": "$context.authorizer.claims.sub"}'}}}},
        "responses": {"200": {"description": "ok"}}}

    def scheme(issuer: str) -> dict[str, Any]:
        return {"type": "apiKey", "name": "Authorization", "in": "header",
                "x-amazon-apigateway-authorizer": {
                    "type": "jwt", "identitySource": "$request.header.Authorization",
                    "jwtConfiguration": {"issuer": issuer, "audience": [AUDIENCE]}}}

    definition = {
        "openapi": "3.0.1", "info": {"title": "jwt", "version": "1"},
        "components": {"securitySchemes": {
            "configured": scheme(ISSUER), "discovered": scheme(server.url),
            "huge": scheme("https://huge.example.test"),
            "slow": scheme("https://slow.example.test")}},
        "paths": {"/pets": {"get": {**ok, "security": [{"configured": []}]}},
                  "/disc": {"get": {**ok, "security": [{"discovered": []}]}},
                  "/huge": {"get": {**ok, "security": [{"huge": []}]}},
                  "/slow": {"get": {**ok, "security": [{"slow": []}]}}},
    }
    config = write_config(folder, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "jwtapi", "type": "REST", "definition": "jwt.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping", "auth"], "settings": {"auth": {"jwt": {
            "refetch_interval": 60,
            "issuers": [{"issuer": ISSUER, "jwks_uri": server.url + "/jwks.json"},
                        {"issuer": "https://huge.example.test",
                         "jwks_uri": server.url + "/huge.json"},
                        {"issuer": "https://slow.example.test",
                         "jwks_uri": server.url + "/slow.json"}]}}}},
        "access_log": False,
    }, {"jwt.yaml": definition})
    try:
        with RunningGateway(config) as running:
            yield running, server
    finally:
        server.shutdown()
        server.server_close()


def get(gw: RunningGateway, path: str, token: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": token} if token else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_e2e_jwks_fetched_over_http_and_refetched_for_a_new_kid(
        e2e: tuple[RunningGateway, JwksServer]) -> None:
    gw, server = e2e
    assert get(gw, "/prod/pets", None) == (401, UNAUTHORIZED)
    assert get(gw, "/prod/pets", mint(sub="e2e-user")) == (200, b'{"sub": "e2e-user"}')
    assert get(gw, "/prod/pets", mint(EC_KEY, "ec1", "ES256"))[0] == 200
    hits = server.hits
    assert hits == 1
    server.keyset.keys.append(jwk(RSA_KEY_2, "rsa2"))
    assert get(gw, "/prod/pets", mint(RSA_KEY_2, "rsa2"))[0] == 200
    assert server.hits == hits + 1
    for i in range(3):
        assert get(gw, "/prod/pets", mint(kid=f"unknown{i}"))[0] == 401
    assert server.hits == hits + 1  # rate-limited: no refetch within the interval


def test_e2e_oidc_discovery_and_size_cap(e2e: tuple[RunningGateway, JwksServer]) -> None:
    gw, server = e2e
    token = mint(iss=server.url)
    assert get(gw, "/prod/disc", token)[0] == 200
    # A key set over 150,000 bytes is not used: every token for that issuer is refused.
    assert get(gw, "/prod/huge", mint(iss="https://huge.example.test"))[0] == 401


def test_e2e_jwks_fetch_times_out_after_1_5_s(e2e: tuple[RunningGateway, JwksServer]) -> None:
    gw, _ = e2e
    started = time.monotonic()
    assert get(gw, "/prod/slow", mint(iss="https://slow.example.test"))[0] == 401
    assert 1.2 < time.monotonic() - started < 2.9


# -- the JWKS cache on its own -------------------------------------------------------------


class FakeIdp:
    """A fetcher whose answers the test releases, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pending: list[Deferred[Any]] = []
        self.calls = 0

    def fetch(self, url: str, timeout: float, max_bytes: int) -> Deferred[Any]:
        self.calls += 1
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d

    def cache(self) -> JwksCache:
        return JwksCache(ISSUER, "https://idp.test/jwks", ttl=600, refetch_interval=30,
                         fetch=self.fetch, now=lambda: self.now)


def run(coro: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(coro)


def test_concurrent_lookups_share_one_fetch() -> None:
    idp = FakeIdp()
    cache = idp.cache()
    first, second = run(cache.key("rsa1")), run(cache.key("ec1"))
    assert idp.calls == 1 and not first.called and not second.called
    idp.pending.pop().callback(KeySet().doc())
    assert first.result.key_id == "rsa1" and second.result.key_id == "ec1"


def test_idp_failure_keeps_the_last_good_keys_and_retries_later() -> None:
    from twistgw_auth.jwks import JwksError

    idp = FakeIdp()
    cache = idp.cache()
    d = run(cache.key("rsa1"))
    idp.pending.pop().callback(KeySet().doc())
    assert d.result is not None
    idp.now += 601  # stale: refetched, and the IdP is down
    d = run(cache.key("rsa1"))
    idp.pending.pop().errback(JwksError("down"))
    assert d.result is not None and d.result.key_id == "rsa1"
    assert idp.calls == 2
    assert run(cache.key("rsa1")).result is not None  # no new attempt within 5 s
    assert idp.calls == 2
    idp.now += 5
    d = run(cache.key("rsa1"))
    assert idp.calls == 3
    idp.pending.pop().callback(KeySet().doc())
    assert d.result is not None


def test_unusable_jwks_entries_are_skipped() -> None:
    from twistgw_auth.jwks import parse_jwks

    oct_key = {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
    enc = {**jwk(RSA_KEY, "enc"), "use": "enc"}
    wrong = {**jwk(RSA_KEY, "wrong"), "alg": "ES256"}
    p384 = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(
        ec.generate_private_key(ec.SECP384R1()).public_key()))
    keys = parse_jwks({"keys": [oct_key, enc, wrong, {**p384, "kid": "p384"},
                                jwk(RSA_KEY, "ok"), "junk", {"kty": "RSA", "kid": "bad"}]})
    assert list(keys) == ["ok"]


def test_claims_reach_the_lambda_events(make_harness: HarnessFactory, b: Builders,
                                        keys: KeySet) -> None:
    from twistgw_lambda.events import http_v2_event, rest_event

    from twistgw.models import IntegrationRequest

    h, echo = harness(make_harness, b, keys)
    assert call(h, "/admin", mint(scope="admin read", n=7)).status == 200
    ctx = echo.seen[-1]
    event = http_v2_event(ctx, IntegrationRequest(method="GET", uri="x"))
    jwt_part = event["requestContext"]["authorizer"]["jwt"]
    assert jwt_part["claims"]["sub"] == "user-1"
    assert jwt_part["claims"]["n"] == "7"
    assert jwt_part["scopes"] == ["admin", "read"]
    h, echo = harness(make_harness, b, keys, definition=cognito_api(b), api_type="REST",
                      issuer=POOL_ISSUER)
    token = mint(iss=POOL_ISSUER, token_use="id", email="c@x.test")
    assert call(h, "/prod/me", token, scheme="").status == 200
    event = rest_event(echo.seen[-1], IntegrationRequest(method="GET", uri="x"))
    assert event["requestContext"]["authorizer"]["claims"]["email"] == "c@x.test"


# -- tokens remembered as verified -------------------------------------------------------------


class Clocked(KeySet):
    """A key set with its own clock (for the JWKS TTL) that counts signature checks."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.checks = 0

    def cache(self) -> JwksCache:
        return JwksCache(ISSUER, "https://unused.invalid/jwks", ttl=600, refetch_interval=30,
                         fetch=self.fetch, now=lambda: self.now)

    def counting(self, key: Any) -> None:
        """Count calls of ``key``'s signature check (the one cost the cache saves)."""
        keyset, algorithm = self, key.Algorithm

        class Counting:
            def verify(self, msg: bytes, public: Any, sig: bytes) -> bool:
                keyset.checks += 1
                return bool(algorithm.verify(msg, public, sig))

        key.Algorithm = Counting()


def check(token: str, keyset: Clocked, cache: JwksCache, verified: Any, *,
          audience: str = AUDIENCE, now: float | None = None) -> dict[str, Any]:
    from twistgw_auth.jwt_auth import JwtAuthorizer, verify

    authorizer = JwtAuthorizer(name="j", kind="jwt", issuers=(ISSUER,),
                               audiences=(audience,), source=("header", "Authorization"))
    d = run(verify(token, authorizer, {ISSUER: cache}, leeway=30, max_bytes=16384, now=now,
                   verified=verified))
    outcome = []
    d.addBoth(outcome.append)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    result: dict[str, Any] = outcome[0]
    return result


def test_a_verified_token_skips_only_the_signature_check() -> None:
    from twistgw_auth.jwt_auth import TokenRefused, VerifiedTokens

    keyset, verified = Clocked(), VerifiedTokens(size=2)
    cache = keyset.cache()
    token = mint(sub="cached")
    run(cache.key("rsa1"))
    keyset.counting(cache.keys["rsa1"])
    claims = check(token, keyset, cache, verified)
    assert claims["sub"] == "cached" and keyset.checks == 1
    claims["sub"] = "tampered by a plugin"
    assert check(token, keyset, cache, verified)["sub"] == "cached"  # a copy each time
    assert keyset.checks == 1
    # Claims are checked on every request: the audience of this authorizer, the time.
    with pytest.raises(TokenRefused, match="valid audience"):
        check(token, keyset, cache, verified, audience="other")
    with pytest.raises(TokenRefused, match="expired"):
        check(token, keyset, cache, verified, now=time.time() + 3600)
    # Any change to the string misses; refused tokens are not remembered.
    head, payload, sig = token.split(".")
    # Change a character in the middle: it carries six bits of the signature, whereas the
    # last one's spare bits may not (and "...AA" may already be the ending).
    swapped = "B" if sig[10] != "B" else "C"
    with pytest.raises(TokenRefused, match="signature"):
        check(f"{head}.{payload}.{sig[:10]}{swapped}{sig[11:]}", keyset, cache, verified)
    assert list(verified.entries) == [token]
    # Bounded: least recently used first out; long tokens are never remembered.
    others = [mint(sub=f"u{i}") for i in range(2)] + [mint(pad="x" * 4000)]
    for other in others:
        check(other, keyset, cache, verified)
    assert list(verified.entries) == others[:2]


def test_a_rotated_key_set_verifies_remembered_tokens_again() -> None:
    from twistgw_auth.jwt_auth import TokenRefused, VerifiedTokens

    keyset, verified = Clocked(), VerifiedTokens()
    cache = keyset.cache()
    token = mint()
    check(token, keyset, cache, verified)
    assert len(verified.entries) == 1
    # The IdP drops rsa1; once the set is refetched (TTL), the remembered token is refused.
    keyset.keys = [jwk(RSA_KEY_2, "rsa2")]
    keyset.now += 601
    with pytest.raises(TokenRefused, match="not in the issuer's key set"):
        check(token, keyset, cache, verified)
    # Same kid, new key object after a refetch: verified again (and found wrong here).
    keyset.keys = [jwk(RSA_KEY_2, "rsa1")]
    keyset.now += 601
    with pytest.raises(TokenRefused, match="invalid signature"):
        check(token, keyset, cache, verified)
