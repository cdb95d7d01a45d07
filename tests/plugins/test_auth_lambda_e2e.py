"""End to end: a REST TOKEN authorizer running in a real Lambda worker of the daemon.

The authorizer counts its invocations in a file, so the result cache (one invocation per
token within the TTL, shared by two gateway processes through a real redis-server) is
observed from outside; the integration echoes
``requestContext.authorizer`` as the function behind the API saw it.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest
from test_access_redis import RedisServer, redis, wait_for  # noqa: F401 (fixture)

from twistgw.testing import RunningGateway, write_config

HANDLERS = '''
import json, os


def authorizer(event, context):
    with open(os.environ["COUNT_FILE"], "a") as f:
        f.write(event["authorizationToken"] + "\\n")
    token = event["authorizationToken"]
    if token == "Bearer bad":
        raise Exception("Unauthorized")
    if token == "Bearer broken":
        raise ValueError("oops")
    effect = "Deny" if token == "Bearer deny" else "Allow"
    api = event["methodArn"].split("/", 1)[0]
    return {"principalId": "user-" + token[7:],
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": api + "/*"}]},
            "context": {"tier": "gold", "n": 3, "vip": True}}


def echo(event, context):
    return {"statusCode": 200, "body": json.dumps(event["requestContext"]["authorizer"])}
'''

ARN = ("arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
       "arn:aws:lambda:eu-west-1:123456789012:function:{name}/invocations")


def _get(gw: RunningGateway, path: str, token: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        headers = {"x-apigw-api-id": "restapi"}
        if token is not None:
            headers["Authorization"] = token
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def gateway_config(folder: Path, src: Path, count: Path, *, ttl: int,
                   validation: str | None = None, redis_url: str | None = None) -> Path:
    """A gateway whose TOKEN authorizer counts its calls in ``count``; with
    ``redis_url``, the access plugin's store (which the authorizer cache shares)."""
    op: dict[str, Any] = {
        "responses": {"200": {"description": "ok"}}, "security": [{"custom": []}],
        "x-amazon-apigateway-integration": {"type": "aws_proxy", "httpMethod": "POST",
                                            "uri": ARN.format(name="Echo")}}
    authorizer: dict[str, Any] = {"type": "token", "authorizerUri": ARN.format(name="Auth"),
                                  "authorizerResultTtlInSeconds": ttl}
    if validation is not None:
        authorizer["identityValidationExpression"] = validation
    definition = {
        "openapi": "3.0.1", "info": {"title": "t", "version": "1"},
        "paths": {"/pets/{id}": {"get": op}},
        "components": {"securitySchemes": {"custom": {
            "type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": authorizer}}}}
    fn = {"code": str(src), "runtime": "python", "timeout": 3,
          "environment": {"COUNT_FILE": str(count)}}
    plugins: dict[str, Any] = {"enabled": ["mock", "mapping", "lambda", "auth"]}
    if redis_url is not None:
        plugins = {"enabled": ["mock", "mapping", "lambda", "access", "auth"], "settings": {
            "access": {"store": {"url": redis_url, "timeout_ms": 500}}}}
    return write_config(folder, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "restapi", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {"Auth": {**fn, "handler": "app.authorizer"},
                      "Echo": {**fn, "handler": "app.echo"}},
        "plugins": plugins,
        "access_log": False,
    }, {"api.yaml": definition})


def test_token_authorizer_in_a_real_worker(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(HANDLERS, encoding="utf-8")
    count = tmp_path / "count.txt"
    count.write_text("")
    path = gateway_config(tmp_path, tmp_path / "src", count, ttl=300,
                          validation="^Bearer [a-z]+$")
    with RunningGateway(path, timeout=30) as gw:
        status, body = _get(gw, "/prod/pets/1", "Bearer alice")
        assert status == 200, body
        assert json.loads(body) == {"tier": "gold", "n": "3", "vip": "true",
                                    "principalId": "user-alice", "integrationLatency": 0}
        assert _get(gw, "/prod/pets/2", "Bearer alice")[0] == 200
        assert count.read_text().splitlines() == ["Bearer alice"]  # cached
        assert _get(gw, "/prod/pets/1", None) == (401, b'{"message":"Unauthorized"}')
        assert _get(gw, "/prod/pets/1", "Basic x")[0] == 401  # validation expression
        assert _get(gw, "/prod/pets/1", "Bearer bad") == (401, b'{"message":"Unauthorized"}')
        status, body = _get(gw, "/prod/pets/1", "Bearer broken")
        assert (status, json.loads(body)) == (500, {"message": None})
        status, body = _get(gw, "/prod/pets/1", "Bearer deny")
        assert (status, json.loads(body)) == (403, {
            "message": "User is not authorized to access this resource with an explicit "
                       "deny"})
        assert count.read_text().splitlines() == [
            "Bearer alice", "Bearer bad", "Bearer broken", "Bearer deny"]


def test_two_gateways_share_authorizer_results_through_redis(
        tmp_path_factory: pytest.TempPathFactory,
        redis: RedisServer) -> None:  # noqa: F811 (the imported fixture)
    src = tmp_path_factory.mktemp("src")
    (src / "app.py").write_text(HANDLERS, encoding="utf-8")
    count = src / "count.txt"
    count.write_text("")
    configs = [gateway_config(tmp_path_factory.mktemp(f"gw{i}"), src, count, ttl=120,
                              redis_url=redis.url) for i in range(2)]
    with RunningGateway(configs[0], timeout=30) as one, \
            RunningGateway(configs[1], timeout=30) as two:
        assert wait_for(lambda: b"+PONG" in redis.command("PING"))
        status, body = _get(one, "/prod/pets/1", "Bearer alice")
        assert status == 200, body
        # The second process finds the first one's result in Redis: no second call.
        status, body = _get(two, "/prod/pets/2", "Bearer alice")
        assert status == 200, body
        assert json.loads(body)["principalId"] == "user-alice"
        assert json.loads(body)["tier"] == "gold"
        assert count.read_text().splitlines() == ["Bearer alice"]
        # A Deny is cached and shared too; a different token is a different key.
        assert _get(one, "/prod/pets/1", "Bearer deny")[0] == 403
        assert _get(two, "/prod/pets/1", "Bearer deny")[0] == 403
        assert _get(two, "/prod/pets/1", "Bearer bob")[0] == 200
        assert count.read_text().splitlines() == ["Bearer alice", "Bearer deny",
                                                  "Bearer bob"]
        # Errors are never cached: each gateway calls the function again.
        assert _get(one, "/prod/pets/1", "Bearer broken")[0] == 500
        assert _get(two, "/prod/pets/1", "Bearer broken")[0] == 500
        assert _get(one, "/prod/pets/1", "Bearer bad")[0] == 401
        assert _get(two, "/prod/pets/1", "Bearer bad")[0] == 401
        assert count.read_text().splitlines()[3:] == [
            "Bearer broken", "Bearer broken", "Bearer bad", "Bearer bad"]
        # Three results in Redis, under hashed names (no token in a key), with the TTL.
        keys = redis.command("KEYS", "twistgw:access:c:*").decode()
        names = [line for line in keys.split("\r\n") if line.startswith("twistgw:")]
        assert len(names) == 3 and not any("alice" in n for n in names), keys
        for name in names:
            ttl = int(redis.command("PTTL", name)[1:-2])
            assert 100_000 < ttl <= 120_000
