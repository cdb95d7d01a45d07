"""End to end: a REST TOKEN authorizer running in a real Lambda worker of the daemon.

The authorizer counts its invocations in a file, so the result cache (one invocation per
token within the TTL) is observed from outside; the integration echoes
``requestContext.authorizer`` as the function behind the API saw it.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

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


def test_token_authorizer_in_a_real_worker(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(HANDLERS, encoding="utf-8")
    count = tmp_path / "count.txt"
    count.write_text("")
    op: dict[str, Any] = {
        "responses": {"200": {"description": "ok"}}, "security": [{"custom": []}],
        "x-amazon-apigateway-integration": {"type": "aws_proxy", "httpMethod": "POST",
                                            "uri": ARN.format(name="Echo")}}
    definition = {
        "openapi": "3.0.1", "info": {"title": "t", "version": "1"},
        "paths": {"/pets/{id}": {"get": op}},
        "components": {"securitySchemes": {"custom": {
            "type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {
                "type": "token", "authorizerUri": ARN.format(name="Auth"),
                "identityValidationExpression": "^Bearer [a-z]+$",
                "authorizerResultTtlInSeconds": 300}}}}}
    fn = {"code": "src", "runtime": "python", "timeout": 3,
          "environment": {"COUNT_FILE": str(count)}}
    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "restapi", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {"Auth": {**fn, "handler": "app.authorizer"},
                      "Echo": {**fn, "handler": "app.echo"}},
        "plugins": {"enabled": ["mock", "mapping", "lambda", "auth"]},
        "access_log": False,
    }, {"api.yaml": definition})
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
