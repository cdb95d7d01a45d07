"""WebSocket APIs end to end (issue #9, §7): real twistd, real WebSocket clients, boto3.

The gateway runs as ``twistd apigw`` with Lambda functions (python handlers written to a
temporary folder) behind a WebSocket API; the client is the ``websockets`` package, the
backend pushes with boto3's ApiGatewayManagementApi pointed at the gateway.  Handlers
record the events they get in a folder so the tests can check §7.3's shapes exactly.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from twistgw.testing import RunningGateway, write_config

AKID = "AKIDWEBSOCKET12345"
SECRET = "websocket-secret-0123456789"
HANDLERS = '''
import json, os, time

def _record(kind, event):
    folder = os.environ["EVENTS_DIR"]
    cid = event["requestContext"]["connectionId"]
    final = os.path.join(folder, f"{kind}-{cid}-{time.time_ns()}.json")
    # Written aside and renamed: the test polls for the name and must never read a file
    # that is still empty (the $disconnect event is recorded while the test looks).
    with open(final + ".part", "w") as f:
        json.dump(event, f)
    os.replace(final + ".part", final)

def connect(event, context):
    _record("connect", event)
    query = event.get("queryStringParameters") or {}
    if query.get("refuse"):
        return {"statusCode": int(query["refuse"]), "body": "go away"}
    if query.get("protocol"):
        return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": query["protocol"]}}
    return {"statusCode": 200}

def disconnect(event, context):
    _record("disconnect", event)
    return {"statusCode": 200}

def echo(event, context):
    _record("message", event)
    body = json.loads(event["body"])
    return {"statusCode": 200, "body": json.dumps({
        "echo": body.get("data"), "routeKey": event["requestContext"]["routeKey"],
        "connectionId": event["requestContext"]["connectionId"]})}

def fail(event, context):
    raise RuntimeError("boom")

def authorize(event, context):
    _record("authorizer", event)
    token = (event.get("queryStringParameters") or {}).get("token")
    effect = "Allow" if token == "good" else "Deny"
    return {"principalId": "user-" + str(token),
            "policyDocument": {"Version": "2012-10-17", "Statement": [{
                "Action": "execute-api:Invoke", "Effect": effect,
                "Resource": event["methodArn"]}]},
            "context": {"tenant": "acme", "level": 3}}
'''
LAMBDA = "arn:aws:lambda:us-east-1:123456789012:function:"


def websocket_definition(*, authorized: bool = False, backend: str | None = None
                         ) -> dict[str, Any]:
    connect_route: dict[str, Any] = {
        "integration": {"type": "AWS_PROXY", "uri": LAMBDA + "Connect"}}
    doc: dict[str, Any] = {
        "title": "chat",
        "route_selection_expression": "$request.body.action",
        "routes": {
            "$connect": connect_route,
            "$disconnect": {"integration": {"type": "AWS_PROXY", "uri": LAMBDA + "Disconnect"}},
            "echo": {"integration": {"type": "AWS_PROXY", "uri": LAMBDA + "Echo"},
                     "route_response_selection_expression": "$default"},
            "quiet": {"integration": {"type": "AWS_PROXY", "uri": LAMBDA + "Echo"}},
            "broken": {"integration": {"type": "AWS_PROXY", "uri": LAMBDA + "Fail"},
                       "route_response_selection_expression": "$default"},
            "$default": {"integration": {"type": "MOCK", "response": "default route"},
                         "route_response_selection_expression": "$default"},
        },
    }
    if backend is not None:
        doc["routes"]["ping"] = {
            "integration": {"type": "HTTP_PROXY", "uri": backend + "/ping?from=ws",
                            "timeout_ms": 5000, "request_parameters": {
                                "integration.request.header.X-Connection": "context.connectionId",
                                "integration.request.querystring.route": "context.routeKey",
                                "integration.request.header.X-Static": "'fixed'"}},
            "route_response_selection_expression": "$default"}
    if authorized:
        doc["authorizers"] = {"ByToken": {
            "uri": LAMBDA + "Authorize", "ttl": 300,
            "identity_source": ["route.request.querystring.token"]}}
        connect_route.update(authorization_type="CUSTOM", authorizer="ByToken",
                             api_key_required=True)
    return doc


def gateway_config(folder: Path, *, settings: dict[str, Any] | None = None,
                   authorized: bool = False, backend: str | None = None) -> Path:
    code = folder / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "handlers.py").write_text(HANDLERS, encoding="utf-8")
    events = folder / "events"
    events.mkdir(exist_ok=True)
    env = {"EVENTS_DIR": str(events)}
    functions = {name: {"handler": f"handlers.{handler}", "code": str(code),
                        "runtime": "python", "environment": env}
                 for name, handler in (("Connect", "connect"), ("Disconnect", "disconnect"),
                                       ("Echo", "echo"), ("Fail", "fail"),
                                       ("Authorize", "authorize"))}
    plugin_settings: dict[str, Any] = {
        "auth": {"iam": {"keys": [{
            "access_key_id": AKID, "secret_access_key": SECRET,
            "policy": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "execute-api:ManageConnections",
                "Resource": "arn:aws:execute-api:*:*:chat/*/*/@connections/*"}]}}]}},
        "websocket": settings or {},
    }
    if authorized:
        plugin_settings["access"] = {
            "api_keys": [{"id": "partner", "value": "partner-key-0123456789abcdef"}],
            "usage_plans": [{"id": "gold", "apis": [{"api": "chat", "stage": "prod"}],
                             "keys": ["partner"]}]}
    return Path(write_config(folder, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "chat", "type": "WEBSOCKET", "definition": "chat.yaml",
                  "stages": [{"name": "prod"}, {"name": "dev"}]}],
        "functions": functions,
        "plugins": {"enabled": ["lambda", "auth", "access", "websocket"],
                    "settings": plugin_settings},
    }, {"chat.yaml": websocket_definition(authorized=authorized, backend=backend)}))


class _Backend(BaseHTTPRequestHandler):
    """Answers what it got: path, the mapped headers and the body."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        answer = json.dumps({"path": self.path, "connection": self.headers["X-Connection"],
                             "static": self.headers["X-Static"],
                             "body": body.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path]]:
    folder = tmp_path_factory.mktemp("ws")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    backend = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with RunningGateway(gateway_config(folder, backend=backend)) as gw:
            yield gw, folder / "events"
    finally:
        server.shutdown()
        server.server_close()


def ws_url(gw: RunningGateway, query: str = "") -> str:
    return gw.base_urls[0].replace("http://", "ws://") + "/prod" + query


def management(gw: RunningGateway, secret: str = SECRET, stage: str = "prod") -> Any:
    return boto3.client("apigatewaymanagementapi",
                        endpoint_url=gw.base_urls[0] + "/" + stage,
                        region_name="us-east-1", aws_access_key_id=AKID,
                        aws_secret_access_key=secret)


def recv_json(ws: ClientConnection) -> Any:
    return json.loads(ws.recv(timeout=10))


def connection_id(ws: ClientConnection) -> str:
    ws.send(json.dumps({"action": "echo", "data": "who am i"}))
    return str(recv_json(ws)["connectionId"])


def events(folder: Path, kind: str, cid: str, wait: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + wait
    while True:
        found = sorted(folder.glob(f"{kind}-{cid}-*.json"))
        if found or time.monotonic() > deadline:
            return [json.loads(p.read_text()) for p in found]
        time.sleep(0.05)


def closed_code(ws: ClientConnection, wait: float = 10.0) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=wait)
    rcvd = info.value.rcvd
    return rcvd.code if rcvd is not None else None


CONTEXT_KEYS = {"routeKey", "eventType", "extendedRequestId", "requestTime",
                "messageDirection", "stage", "connectedAt", "requestTimeEpoch", "identity",
                "requestId", "domainName", "connectionId", "apiId"}


def test_connect_routes_by_action_and_echoes_through_lambda(gateway: Any) -> None:
    gw, _events = gateway
    with connect(ws_url(gw)) as ws:
        ws.send(json.dumps({"action": "echo", "data": "hi"}))
        answer = recv_json(ws)
        assert answer["echo"] == "hi" and answer["routeKey"] == "echo"
        # Not JSON, JSON without the path, an unknown action: all go to $default.
        for message in ("plain text", json.dumps({"data": 1}),
                        json.dumps({"action": "nope"})):
            ws.send(message)
            assert ws.recv(timeout=10) == "default route"
        # A route without a route response answers nothing; the next echo proves order.
        ws.send(json.dumps({"action": "quiet", "data": "x"}))
        ws.send(json.dumps({"action": "echo", "data": "after"}))
        assert recv_json(ws)["echo"] == "after"


def test_http_integration_gets_the_message_and_mapped_parameters(gateway: Any) -> None:
    gw, _events = gateway
    with connect(ws_url(gw)) as ws:
        cid = connection_id(ws)
        ws.send(json.dumps({"action": "ping", "n": 1}))
        answer = recv_json(ws)
    assert answer["path"] == "/ping?from=ws&route=ping"
    assert (answer["connection"], answer["static"]) == (cid, "fixed")
    assert json.loads(answer["body"]) == {"action": "ping", "n": 1}


def test_push_to_a_client_that_does_not_read_is_bounded(gateway: Any) -> None:
    gw, _events = gateway
    client = management(gw)
    chunk = b"p" * (100 * 1024)
    with connect(ws_url(gw), max_queue=1) as ws:
        cid = connection_id(ws)
        accepted = 0
        with pytest.raises(client.exceptions.LimitExceededException):
            for _ in range(2000):  # 200 MB: far beyond socket buffers plus the send buffer
                client.post_to_connection(ConnectionId=cid, Data=chunk)
                accepted += 1
        assert accepted > 0
        # Once the client reads, what was accepted arrives, in order and whole.
        for _ in range(accepted):
            assert ws.recv(timeout=30) == chunk.decode()


def test_failing_integration_sends_aws_error_frame(gateway: Any) -> None:
    gw, _events = gateway
    with connect(ws_url(gw)) as ws:
        cid = connection_id(ws)
        ws.send(json.dumps({"action": "broken"}))
        frame = recv_json(ws)
        assert frame["message"] == "Internal server error"
        assert frame["connectionId"] == cid and frame["requestId"]


def test_lambda_events_have_the_aws_shapes(gateway: Any) -> None:
    gw, folder = gateway
    with connect(ws_url(gw, "?room=blue&room=red"),
                 additional_headers={"X-Custom": "yes"}) as ws:
        cid = connection_id(ws)
    (con,) = events(folder, "connect", cid)
    assert set(con) == {"headers", "multiValueHeaders", "queryStringParameters",
                        "multiValueQueryStringParameters", "requestContext",
                        "isBase64Encoded"}
    assert con["queryStringParameters"] == {"room": "red"}
    assert con["multiValueQueryStringParameters"] == {"room": ["blue", "red"]}
    assert con["headers"]["X-Custom"] == "yes"
    assert con["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert con["headers"]["X-Forwarded-Proto"] == "http"
    assert con["headers"]["X-Forwarded-Port"] == str(gw.port)
    assert con["headers"]["X-Amzn-Trace-Id"].startswith("Root=1-")
    assert con["headers"]["Sec-WebSocket-Version"] == "13"
    ctx = con["requestContext"]
    assert set(ctx) == CONTEXT_KEYS
    assert (ctx["routeKey"], ctx["eventType"], ctx["messageDirection"]) == (
        "$connect", "CONNECT", "IN")
    assert (ctx["stage"], ctx["apiId"], ctx["connectionId"]) == ("prod", "chat", cid)
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert ctx["identity"]["userAgent"].startswith("Python/")
    assert ctx["requestTimeEpoch"] >= ctx["connectedAt"] > 1.7e12
    (msg,) = events(folder, "message", cid)
    assert set(msg) == {"requestContext", "body", "isBase64Encoded"}
    assert json.loads(msg["body"]) == {"action": "echo", "data": "who am i"}
    mctx = msg["requestContext"]
    assert set(mctx) == CONTEXT_KEYS | {"messageId"}
    assert (mctx["eventType"], mctx["routeKey"]) == ("MESSAGE", "echo")
    assert mctx["connectedAt"] == ctx["connectedAt"]
    assert mctx["messageId"] != mctx["requestId"]
    (dis,) = events(folder, "disconnect", cid)
    dctx = dis["requestContext"]
    assert set(dctx) == CONTEXT_KEYS | {"disconnectStatusCode", "disconnectReason"}
    assert (dctx["eventType"], dctx["routeKey"], dctx["disconnectStatusCode"]) == (
        "DISCONNECT", "$disconnect", 1000)
    assert set(dis["headers"]) == {"Host", "x-api-key", "X-Forwarded-For", "x-restapi"}


def test_connect_lambda_refuses_or_picks_a_subprotocol(gateway: Any) -> None:
    gw, _events = gateway
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(gw, "?refuse=403"))
    assert info.value.response.status_code == 403
    with connect(ws_url(gw, "?protocol=chat.v2"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"


def test_plain_http_on_the_stage_is_426(gateway: Any) -> None:
    gw, _events = gateway
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", "/prod")
    response = conn.getresponse()
    assert response.status == 426
    assert response.getheader("Upgrade") == "websocket"


def test_push_info_and_delete_through_boto3(gateway: Any) -> None:
    gw, folder = gateway
    client = management(gw)
    with connect(ws_url(gw)) as ws:
        cid = connection_id(ws)
        client.post_to_connection(ConnectionId=cid, Data=b'{"pushed": true}')
        assert recv_json(ws) == {"pushed": True}
        info = client.get_connection(ConnectionId=cid)
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        assert info["LastActiveAt"] >= info["ConnectedAt"]
        client.delete_connection(ConnectionId=cid)
        assert closed_code(ws) == 1000
    (dis,) = events(folder, "disconnect", cid)
    assert dis["requestContext"]["disconnectStatusCode"] == 1000
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId=cid, Data=b"late")
    with pytest.raises(client.exceptions.GoneException):
        client.get_connection(ConnectionId=cid)
    with pytest.raises(client.exceptions.GoneException):
        client.delete_connection(ConnectionId=cid)


def test_a_stage_manages_only_its_own_connections(gateway: Any) -> None:
    gw, _events = gateway
    dev = management(gw, stage="dev")
    with connect(ws_url(gw)) as ws:  # a prod connection
        cid = connection_id(ws)
        with pytest.raises(dev.exceptions.GoneException):
            dev.post_to_connection(ConnectionId=cid, Data=b"wrong stage")
        with pytest.raises(dev.exceptions.GoneException):
            dev.delete_connection(ConnectionId=cid)
        ws.send(json.dumps({"action": "echo", "data": "still open"}))
        assert recv_json(ws)["echo"] == "still open"


def test_connections_api_needs_a_valid_signature(gateway: Any) -> None:
    gw, _events = gateway
    with connect(ws_url(gw)) as ws:
        cid = connection_id(ws)
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request("POST", f"/prod/@connections/{cid}", body=b"unsigned")
        assert conn.getresponse().status == 403
        bad = management(gw, secret="not-the-secret-0123456789")
        with pytest.raises(bad.exceptions.ClientError) as info:
            bad.post_to_connection(ConnectionId=cid, Data=b"forged")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        ws.send(json.dumps({"action": "echo", "data": "still here"}))
        assert recv_json(ws)["echo"] == "still here"  # nothing forged arrived first


def test_oversize_frame_and_message_close_1009(gateway: Any) -> None:
    gw, _events = gateway
    with connect(ws_url(gw), max_size=None) as ws:
        ws.send("x" * (33 * 1024))  # one frame over 32 KB
        assert closed_code(ws) == 1009
    with connect(ws_url(gw), max_size=None) as ws:
        ws.send(["y" * (30 * 1024)] * 5)  # 30 KB frames, 150 KB message
        assert closed_code(ws) == 1009
    with connect(ws_url(gw)) as ws:  # 128 KB is the last size allowed... in 32 KB frames
        ws.send([json.dumps({"action": "echo", "data": "z" * 1000})])
        assert recv_json(ws)["echo"] == "z" * 1000


def test_binary_frames_close_1003(gateway: Any) -> None:
    gw, _events = gateway
    with connect(ws_url(gw)) as ws:
        ws.send(b"\x00\x01binary")
        assert closed_code(ws) == 1003


def test_push_too_large_is_413(gateway: Any) -> None:
    gw, _events = gateway
    client = management(gw)
    with connect(ws_url(gw)) as ws:
        cid = connection_id(ws)
        with pytest.raises(client.exceptions.PayloadTooLargeException):
            client.post_to_connection(ConnectionId=cid, Data=b"x" * (128 * 1024 + 1))


def test_idle_connection_is_closed(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, settings={"idle_timeout": 1.0, "max_lifetime": 60})
    with RunningGateway(config) as gw, connect(ws_url(gw)) as ws:
        cid = connection_id(ws)
        assert closed_code(ws, wait=20) == 1001
        (dis,) = events(tmp_path / "events", "disconnect", cid)
        assert dis["requestContext"]["disconnectStatusCode"] == 1001


def test_connection_lifetime_is_bounded(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, settings={"idle_timeout": 60, "max_lifetime": 1.5})
    with RunningGateway(config) as gw, connect(ws_url(gw)) as ws:
        connection_id(ws)
        # Activity does not extend the lifetime: keep talking until the gateway closes.
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(200):
                ws.send(json.dumps({"action": "echo", "data": "busy"}))
                ws.recv(timeout=10)
                time.sleep(0.05)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001


# -- $connect authorization: a Lambda REQUEST authorizer and an API key --------------------

PARTNER_KEY = "partner-key-0123456789abcdef"


@pytest.fixture(scope="module")
def authorized(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[RunningGateway, Path]]:
    folder = tmp_path_factory.mktemp("wsauth")
    with RunningGateway(gateway_config(folder, authorized=True)) as gw:
        yield gw, folder / "events"


def refused_status(url: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(InvalidStatus) as info:
        connect(url, additional_headers=headers or {})
    return int(info.value.response.status_code)


def test_connect_authorizer_and_api_key_refuse_before_the_upgrade(authorized: Any) -> None:
    gw, folder = authorized
    key = {"x-api-key": PARTNER_KEY}
    assert refused_status(ws_url(gw, "?token=bad"), key) == 403  # the authorizer denies
    assert refused_status(ws_url(gw), key) == 401  # no identity source: not even asked
    assert refused_status(ws_url(gw, "?token=good")) == 403  # no API key
    assert refused_status(ws_url(gw, "?token=good"), {"x-api-key": "wrong-key-0123456789"}) \
        == 403
    # Nothing reached the $connect integration for any refusal; the authorizer ran once
    # for "bad" and once for "good" (its result is cached for 300 s).
    assert not list(folder.glob("connect-*.json"))
    found = [json.loads(p.read_text()) for p in folder.glob("authorizer-*.json")]
    assert sorted(a["queryStringParameters"]["token"] for a in found) == ["bad", "good"]
    # The authorizer gets the CONNECT event's shape (the connection's id and time).
    for auth in found:
        assert set(auth) == {"type", "methodArn", "headers", "multiValueHeaders",
                             "queryStringParameters", "multiValueQueryStringParameters",
                             "stageVariables", "requestContext"}
        assert auth["type"] == "REQUEST"
        assert auth["methodArn"] == \
            "arn:aws:execute-api:us-east-1:000000000000:chat/prod/$connect"
        assert set(auth["requestContext"]) == CONTEXT_KEYS
        assert auth["requestContext"]["eventType"] == "CONNECT"
    assert {a["headers"].get("x-api-key") for a in found} == {PARTNER_KEY, None}


def test_authorized_connection_carries_the_authorizer_context(authorized: Any) -> None:
    gw, folder = authorized
    with connect(ws_url(gw, "?token=good"),
                 additional_headers={"x-api-key": PARTNER_KEY}) as ws:
        cid = connection_id(ws)
    (con,) = events(folder, "connect", cid)
    (msg,) = events(folder, "message", cid)
    (dis,) = events(folder, "disconnect", cid)
    for event in (con, msg, dis):
        ctx = event["requestContext"]
        assert ctx["authorizer"] == {"principalId": "user-good", "tenant": "acme",
                                     "level": "3"}
        assert ctx["identity"]["apiKey"] == PARTNER_KEY
        assert ctx["identity"]["apiKeyId"] == "partner"


def test_a_reload_gives_open_connections_the_new_routes(tmp_path: Path) -> None:
    config = gateway_config(tmp_path)
    with RunningGateway(config) as gw, connect(ws_url(gw)) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "default route"
        definition = websocket_definition()
        definition["routes"]["$default"]["integration"]["response"] = "new default"
        write_config(tmp_path, yaml.safe_load(config.read_text()),
                     {"chat.yaml": definition})
        assert gw.process is not None
        os.kill(gw.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reload 1 applied" not in gw.log_text:
            assert "reload 1 rejected" not in gw.log_text, gw.log_text
            assert time.monotonic() < deadline, gw.log_text
            time.sleep(0.05)
        ws.send("hello again")
        assert ws.recv(timeout=10) == "new default"


def test_open_connections_are_a_metrics_gauge(tmp_path: Path) -> None:
    config = gateway_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["listeners"].append({"name": "ops", "endpoint": "tcp:0", "admin": True})
    doc["plugins"]["enabled"].append("admin")
    config.write_text(yaml.safe_dump(doc))
    with RunningGateway(config) as gw:
        found = re.search(r"admin listener ops on (http://[0-9.]+:\d+)", gw.log_text)
        assert found, gw.log_text

        def gauge() -> dict[str, float]:
            with urllib.request.urlopen(found.group(1) + "/metrics", timeout=10) as r:
                text = r.read().decode()
            return {m.group(1): float(m.group(2)) for m in re.finditer(
                r'^twistgw_websocket_connections\{api="chat",stage="(\w+)"\} (\S+)$', text,
                re.MULTILINE)}

        assert gauge() == {"prod": 0.0, "dev": 0.0}
        with connect(ws_url(gw)) as one, connect(ws_url(gw)) as two:
            connection_id(one)
            connection_id(two)
            assert gauge() == {"prod": 2.0, "dev": 0.0}


def test_connections_over_the_cap_are_throttled_before_any_integration(
        tmp_path: Path) -> None:
    config = gateway_config(tmp_path, settings={"max_connections": 1})
    with RunningGateway(config) as gw:
        with connect(ws_url(gw)) as ws:
            connection_id(ws)
            assert refused_status(ws_url(gw, "?attempt=2")) == 429
        # The second handshake reached no integration: one $connect event only.
        assert len(list((tmp_path / "events").glob("connect-*.json"))) == 1
        deadline = time.monotonic() + 20
        while True:  # the slot frees once the gateway has seen the close
            try:
                with connect(ws_url(gw)) as ws:
                    assert connection_id(ws)
                break
            except InvalidStatus as e:
                assert e.response.status_code == 429
                assert time.monotonic() < deadline
                time.sleep(0.1)


def test_connect_with_iam_needs_a_sigv4_signed_handshake(tmp_path: Path) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    config = gateway_config(tmp_path)
    definition = yaml.safe_load((tmp_path / "chat.yaml").read_text())
    definition["routes"]["$connect"]["authorization_type"] = "AWS_IAM"
    (tmp_path / "chat.yaml").write_text(yaml.safe_dump(definition))
    doc = yaml.safe_load(config.read_text())
    policy = doc["plugins"]["settings"]["auth"]["iam"]["keys"][0]["policy"]
    policy["Statement"].append({"Effect": "Allow", "Action": "execute-api:Invoke",
                                "Resource": "arn:aws:execute-api:*:*:chat/prod/$connect"})
    config.write_text(yaml.safe_dump(doc))

    def signed(url: str, secret: str) -> dict[str, str]:
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(Credentials(AKID, secret), "execute-api", "us-east-1").add_auth(request)
        return {k: v for k, v in request.headers.items() if k.lower() != "host"}

    with RunningGateway(config) as gw:
        http_url = gw.base_urls[0] + "/prod"
        assert refused_status(ws_url(gw)) == 403  # unsigned
        assert refused_status(ws_url(gw), signed(http_url, "wrong-secret-0123456789")) == 403
        with connect(ws_url(gw), additional_headers=signed(http_url, SECRET)) as ws:
            assert connection_id(ws)
        # The policy allows $connect of prod only: dev's handshake is refused.
        dev_url = gw.base_urls[0] + "/dev"
        assert refused_status(ws_url(gw).replace("/prod", "/dev"),
                              signed(dev_url, SECRET)) == 403
