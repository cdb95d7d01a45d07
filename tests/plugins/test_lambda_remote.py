"""``remote:`` functions: the Lambda Invoke API, SigV4-signed, against a fake Lambda.

The fake is a Lambda-compatible Invoke endpoint (``http.server`` in a thread on
127.0.0.1) that verifies every request's SigV4 signature with **botocore** (SigV4Auth on
a reconstructed AWSRequest, the way AWS recomputes it from the signed headers) and
answers with canned results.  The gateway runs as the real daemon, so the Agent, the
integration timeout and the connection handling are the production ones.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from twistgw_lambda.functions import parse_function
from twistgw_lambda.remote import invoke_path, resolve_credentials
from twistgw_lambda.sigv4 import Credentials, sign

from twistgw import ConfigError
from twistgw.testing import GatewayHarness, RunningGateway, write_config

REGION = "eu-west-1"
SECRETS = {
    "AKIDCONFIG": "config/secret+key",
    "AKIDENV": "env/secret+key",
    "AKIDFILE": "file/secret+key",
}
UNHANDLED = {"errorMessage": "kaboom", "errorType": "ValueError",
             "requestId": "req-1", "stackTrace": ["  File \"app.py\", line 1"]}
FOUR_HUNDRED = {"errorMessage": "Error: Raising four hundred from within the Lambda function",
                "errorType": "Exception", "requestId": "req-2",
                "stackTrace": ["  File \"/var/task/lambda_function.py\", line 5"]}


# -- SigV4 against botocore -----------------------------------------------------------------

def botocore_signature(method: str, url: str, headers: list[tuple[str, str]], body: bytes,
                       secret: str, token: str | None = None) -> tuple[str, str, str]:
    """Recompute a request's signature with botocore from the headers it says it signed.

    Returns (signature, region, service) of the scope; raises KeyError on a bad header.
    """
    auth = dict((k.lower(), v) for k, v in headers)["authorization"]
    algorithm, _, rest = auth.partition(" ")
    assert algorithm == "AWS4-HMAC-SHA256"
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    access_key, day, region, service, terminal = fields["Credential"].split("/")
    assert terminal == "aws4_request"
    signed = fields["SignedHeaders"].split(";")
    kept = {k: v for k, v in headers if k.lower() in signed}
    assert sorted(k.lower() for k in kept) == signed, "a signed header was not sent"
    request = AWSRequest(method=method, url=url, headers=kept, data=body)
    amz_date = dict((k.lower(), v) for k, v in headers)["x-amz-date"]
    assert amz_date[:8] == day
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(BotoCredentials(access_key, secret, token), service, region)
    canonical = signer.canonical_request(request)
    assert signer.signed_headers(signer.headers_to_sign(request)) == ";".join(signed)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    return expected, region, service


@pytest.mark.parametrize(("function", "qualifier", "token"), [
    ("Fn", None, None),
    ("arn:aws:lambda:eu-west-1:123456789012:function:Fn", "live", "session/token=="),
    ("123456789012:function:my-fn", "7", None),
    ("weird name~", "$LATEST", "t"),
])
def test_sigv4_matches_botocore(function: str, qualifier: str | None, token: str | None
                                ) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    url = "https://lambda.eu-west-1.amazonaws.com" + invoke_path(function, qualifier)
    body = json.dumps({"k": "välue", "n": [1, 2]}).encode()
    headers = sign("POST", url, [("X-Amz-Invocation-Type", "RequestResponse"),
                                 ("X-Amz-Log-Type", "Tail"),
                                 ("Content-Type", "application/json"),
                                 ("X-Custom", "  spaced   out  value "),
                                 ("User-Agent", "twistgw"),
                                 ("X-Amzn-Trace-Id", "Root=1-abc")], body,
                   credentials=creds, region=REGION, service="lambda",
                   now=datetime(2026, 11, 27, 9, 30, 0, tzinfo=UTC))
    names = [k.lower() for k, _ in headers]
    assert ("x-amz-security-token" in names) == bool(token)
    signature, region, service = botocore_signature("POST", url, headers, body,
                                                    creds.secret_key, token)
    assert (region, service) == (REGION, "lambda")
    assert dict(headers)["Authorization"].endswith("Signature=" + signature)
    auth = dict(headers)["Authorization"]
    assert "user-agent" not in auth and "x-amzn-trace-id" not in auth
    assert "/20261127/eu-west-1/lambda/aws4_request" in auth


def test_sigv4_host_leaves_out_default_ports() -> None:
    creds = Credentials("AK", "SK")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for url, host in (("https://h.example:443/p", "h.example"),
                      ("http://127.0.0.1:9001/p", "127.0.0.1:9001")):
        headers = sign("POST", url, [], b"", credentials=creds, region=REGION,
                       service="lambda", now=now)
        assert dict(headers)["Host"] == host


# -- credentials ------------------------------------------------------------------------------

def test_credentials_config_then_env_then_shared_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "credentials"
    shared.write_text("[default]\naws_access_key_id = AKIDFILE\n"
                      "aws_secret_access_key = file/secret+key\n"
                      "[other]\naws_access_key_id = AKIDOTHER\n"
                      "aws_secret_access_key = other\naws_session_token = tok\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env/secret+key")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    configured = Credentials("AKIDCONFIG", "x")
    assert resolve_credentials(configured, None) is configured
    assert resolve_credentials(None, None).access_key == "AKIDENV"
    other = resolve_credentials(None, "other")  # a named profile wins over the env
    assert (other.access_key, other.token) == ("AKIDOTHER", "tok")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert resolve_credentials(None, None).access_key == "AKIDFILE"
    monkeypatch.setenv("AWS_PROFILE", "other")
    assert resolve_credentials(None, None).access_key == "AKIDOTHER"
    assert "AKIDOTHER" not in repr(other) and "other" not in repr(other).split("source")[0]


# -- config -----------------------------------------------------------------------------------

def _fn(**remote: Any) -> dict[str, Any]:
    return {"remote": {"region": REGION, **remote}}


@pytest.mark.parametrize(("spec", "where", "fix"), [
    ({"remote": "https://x"}, "functions.Fn.remote", "write a mapping"),
    ({"remote": {"endpoint": "https://x"}}, "functions.Fn.remote.region", "not an AWS region"),
    (_fn(endpoint="ftp://x"), "functions.Fn.remote.endpoint", "https://host[:port]"),
    (_fn(endpoint="https://x/path"), "functions.Fn.remote.endpoint", "no path"),
    (_fn(log_type="All"), "functions.Fn.remote.log_type", "None or Tail"),
    (_fn(bogus=1), "functions.Fn.remote.bogus", "unknown key"),
    (_fn(credentials={"access_key_id": "AK"}), "functions.Fn.remote.credentials",
     "both access_key_id and secret_access_key"),
    (_fn(credentials={"access_key_id": "AK", "secret_access_key": "S", "x": "y"}),
     "functions.Fn.remote.credentials.x", "unknown key"),
    (_fn(connect_timeout=0), "functions.Fn.remote.connect_timeout", "more than 0"),
    ({**_fn(), "handler": "app.handler"}, "functions.Fn.handler", "runs elsewhere"),
    ({**_fn(), "max_workers": 2}, "functions.Fn.max_workers", "runs elsewhere"),
])
def test_remote_keys_are_checked(spec: dict[str, Any], where: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_function("Fn", spec, "gw.yaml", Path("."))
    assert info.value.path == where
    assert fix in str(info.value)


def test_remote_defaults() -> None:
    fn = parse_function("Fn", {"remote": {"region": REGION, "credentials": {
        "access_key_id": "AK", "secret_access_key": "SK"}}}, "gw.yaml", Path("."))
    assert fn.remote is not None
    assert fn.remote.endpoint == "https://lambda.eu-west-1.amazonaws.com"
    assert (fn.remote.function, fn.remote.qualifier, fn.remote.log_type) == ("Fn", None,
                                                                             "None")


def test_remote_without_any_credentials_is_refused_at_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError) as info:
        GatewayHarness({
            "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
            "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                      "stages": [{"name": "prod"}]}],
            "functions": {"Fn": _fn()},
            "plugins": {"enabled": ["mock", "mapping", "lambda"]}, "access_log": False},
            definitions={"api.yaml": {"openapi": "3.0.1", "info": {"title": "t",
                                                                   "version": "1"},
                                      "paths": {"/x": {"get": _op("Fn")}}}})
    assert info.value.path == "functions.Fn.remote.credentials"
    assert "AWS_ACCESS_KEY_ID" in str(info.value)


# -- the fake Lambda ---------------------------------------------------------------------------

class FakeLambda(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []
        self.aborted: list[str] = []  # functions whose caller hung up before the answer
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeLambda

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "remote-req-id")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = list(self.headers.items())
        parts = urlsplit(self.path)
        prefix, suffix = "/2015-03-31/functions/", "/invocations"
        if not (parts.path.startswith(prefix) and parts.path.endswith(suffix)):
            self._answer(404, {"message": "no such API"})
            return
        function = unquote(parts.path[len(prefix):-len(suffix)])
        lowered = {k.lower(): v for k, v in headers}
        try:
            access_key = lowered["authorization"].split("Credential=")[1].split("/")[0]
            secret = SECRETS.get(access_key)
            if secret is None:
                self._answer(403, {"message": "The security token included in the request "
                                   "is invalid."},
                             {"x-amzn-ErrorType": "UnrecognizedClientException"})
                return
            signature, region, service = botocore_signature(
                "POST", f"http://{lowered['host']}{self.path}", headers, body, secret,
                lowered.get("x-amz-security-token"))
        except (KeyError, IndexError, AssertionError, ValueError):
            self._answer(403, {"message": "Missing Authentication Token"},
                         {"x-amzn-ErrorType": "MissingAuthenticationTokenException"})
            return
        if not lowered["authorization"].endswith("Signature=" + signature) or \
                (region, service) != (REGION, "lambda"):
            self._answer(403, {"message": "The request signature we calculated does not "
                                          "match the signature you provided."},
                         {"x-amzn-ErrorType": "InvalidSignatureException"})
            return
        qualifier = parse_qs(parts.query).get("Qualifier", [None])[0]
        with self.server.lock:
            self.server.seen.append({
                "function": function, "qualifier": qualifier, "access_key": access_key,
                "log_type": lowered.get("x-amz-log-type"),
                "invocation_type": lowered.get("x-amz-invocation-type"),
                "event": json.loads(body)})
        name = function.rsplit(":function:", 1)[-1].split(":")[0]
        if name == "Ok":
            self._answer(200, {"statusCode": 200, "headers": {"content-type":
                                                                "application/json"},
                               "body": json.dumps({"key": access_key,
                                                   "qualifier": qualifier})},
                         {"X-Amz-Executed-Version": "7", "X-Amz-Log-Result":
                          base64.b64encode(b"START RequestId: remote-req-id\n"
                                           b"hello from the remote function\n").decode()})
        elif name == "Unhandled":
            self._answer(200, UNHANDLED, {"X-Amz-Function-Error": "Unhandled"})
        elif name == "Throttled":
            self._answer(429, {"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                               "Type": "User", "message": "Rate Exceeded."},
                         {"x-amzn-ErrorType": "TooManyRequestsException"})
        elif name == "Queued":
            if lowered.get("x-amz-invocation-type") == "Event":
                self._answer(202, b"")
            else:
                self._answer(200, {"ran": "now"})
        elif name == "Slow":
            time.sleep(2.0)
            try:
                self._answer(200, {"statusCode": 200, "body": "late"})
                self.wfile.flush()
                time.sleep(0.1)
                self._answer(200, {"statusCode": 200, "body": "late"})  # the reset shows
            except OSError:
                with self.server.lock:
                    self.server.aborted.append(name)
                self.close_connection = True
        elif name == "Custom":
            event = json.loads(body)
            if "four" in json.dumps(event):
                self._answer(200, FOUR_HUNDRED, {"X-Amz-Function-Error": "Unhandled"})
            else:
                self._answer(200, "Pass", {"X-Amz-Executed-Version": "7"})
        else:
            self._answer(404, {"Type": "User", "message": f"Function not found: {function}"},
                         {"x-amzn-ErrorType": "ResourceNotFoundException"})


def serving(server: ThreadingHTTPServer) -> Iterator[Any]:
    """Serve ``server`` on a thread for a fixture's lifetime (yields the server)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def fake_lambda() -> Iterator[FakeLambda]:
    yield from serving(FakeLambda())


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def _op(name: str, kind: str = "aws_proxy", qualifier: str = "", **extra: Any
        ) -> dict[str, Any]:
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": kind, "httpMethod": "POST",
                "uri": f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/"
                       f"arn:aws:lambda:{REGION}:123456789012:function:{name}{qualifier}"
                       f"/invocations",
                **extra}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake_lambda: FakeLambda
       ) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("lambda-remote")
    (root / "credentials").write_text("[testing]\naws_access_key_id = AKIDFILE\n"
                                      "aws_secret_access_key = file/secret+key\n")
    endpoint = f"http://127.0.0.1:{fake_lambda.server_address[1]}"
    config_creds = {"access_key_id": {"$env": "TEST_LAMBDA_KEY"},
                    "secret_access_key": {"$env": "TEST_LAMBDA_SECRET"}}

    def remote(function: str, **kw: Any) -> dict[str, Any]:
        return {"remote": {"endpoint": endpoint, "region": REGION, "function": function,
                           **kw}}

    custom = _op("Custom", "aws", responses={
        "default": {"statusCode": "200", "responseParameters": {
            "method.response.header.X-Version":
                "integration.response.header.X-Amz-Executed-Version"}},
        ".*four hundred.*": {"statusCode": "405"},
        ".+": {"statusCode": "502"},
        "200": {"statusCode": "504"}})
    custom["responses"] = {s: {"description": s} for s in ("200", "405", "502", "504")}
    rest = {"openapi": "3.0.1", "info": {"title": "remote", "version": "1"}, "paths": {
        "/ok": {"get": _op("Ok")},
        "/ok-env": {"get": _op("OkEnv")},
        "/ok-file": {"get": _op("OkFile")},
        "/ok-live": {"get": _op("OkLive")},
        "/ok-blue": {"get": _op("OkLive", qualifier=":${stageVariables.alias}")},
        "/unhandled": {"get": _op("Unhandled")},
        "/throttled": {"get": _op("Throttled")},
        "/slow": {"get": _op("Slow", timeoutInMillis=500)},
        "/missing": {"get": _op("Missing")},
        "/badsig": {"get": _op("BadSig")},
        "/down": {"get": _op("Down")},
        "/custom": {"post": custom},
        "/queued": {"post": _op("Queued", "aws", requestParameters={
            "integration.request.header.X-Amz-Invocation-Type": "'Event'"},
            responses={"default": {"statusCode": "202"}})},
    }}
    http_api = {"openapi": "3.0.1", "info": {"title": "v2", "version": "1"}, "paths": {
        "/ok": {"get": _op("Ok", payloadFormatVersion="2.0")},
        "/slow": {"get": _op("Slow", payloadFormatVersion="2.0", timeoutInMillis=500)},
    }}
    path = write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "restapi", "type": "REST", "definition": "rest.yaml",
                  "stages": [{"name": "prod", "variables": {"alias": "blue"}}]},
                 {"id": "httpapi", "type": "HTTP", "definition": "http.yaml",
                  "stages": [{"name": "$default"}]}],
        "functions": {
            "Ok": remote("Ok", credentials=config_creds, log_type="Tail"),
            "OkEnv": remote("Ok"),
            "OkFile": remote("Ok", profile="testing"),
            "OkLive": remote(f"arn:aws:lambda:{REGION}:123456789012:function:Ok",
                             qualifier="live", credentials=config_creds),
            "Unhandled": remote("Unhandled", credentials=config_creds),
            "Throttled": remote("Throttled", credentials=config_creds),
            "Slow": remote("Slow", credentials=config_creds),
            "Missing": remote("Missing", credentials=config_creds),
            "BadSig": remote("Ok", credentials={"access_key_id": "AKIDCONFIG",
                                                "secret_access_key": "wrong"}),
            "Down": {"remote": {"endpoint": f"http://127.0.0.1:{_closed_port()}",
                                "region": REGION, "credentials": config_creds}},
            "Custom": remote("Custom", credentials=config_creds),
            "Queued": remote("Queued", credentials=config_creds),
        },
        "plugins": {"enabled": ["mock", "mapping", "lambda"]},
        "access_log": False,
    }, {"rest.yaml": rest, "http.yaml": http_api})
    import os

    env = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    env.update({"TEST_LAMBDA_KEY": "AKIDCONFIG", "TEST_LAMBDA_SECRET": SECRETS["AKIDCONFIG"],
                "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": SECRETS["AKIDENV"],
                "AWS_SHARED_CREDENTIALS_FILE": str(root / "credentials")})
    with RunningGateway(path, timeout=30, env=env) as running:
        yield running


def _call(gw: RunningGateway, path: str, method: str = "GET", body: bytes | None = None,
          api: str = "restapi") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json",
                                                       "x-apigw-api-id": api})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _last(fake: FakeLambda) -> dict[str, Any]:
    with fake.lock:
        return fake.seen[-1]


@pytest.mark.parametrize(("path", "key"), [
    ("/prod/ok", "AKIDCONFIG"),   # config secrets ({"$env": ...})
    ("/prod/ok-env", "AKIDENV"),  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    ("/prod/ok-file", "AKIDFILE"),  # the shared credentials file, profile "testing"
])
def test_signed_invoke_with_each_credential_source(gw: RunningGateway,
                                                   fake_lambda: FakeLambda, path: str,
                                                   key: str) -> None:
    status, headers, body = _call(gw, path)
    assert status == 200, body
    assert json.loads(body) == {"key": key, "qualifier": None}
    seen = _last(fake_lambda)
    assert seen["access_key"] == key
    assert seen["invocation_type"] == "RequestResponse"
    assert seen["event"]["path"] == path[len("/prod"):]
    assert seen["event"]["requestContext"]["stage"] == "prod"
    assert headers["x-amzn-trace-id"].startswith("Root=1-")


def test_qualifier_and_function_arn(gw: RunningGateway, fake_lambda: FakeLambda) -> None:
    status, _, body = _call(gw, "/prod/ok-live")
    assert (status, json.loads(body)) == (200, {"key": "AKIDCONFIG", "qualifier": "live"})
    seen = _last(fake_lambda)
    assert seen["function"] == f"arn:aws:lambda:{REGION}:123456789012:function:Ok"
    assert seen["qualifier"] == "live"


def test_the_uri_qualifier_wins_over_the_configured_one(gw: RunningGateway,
                                                        fake_lambda: FakeLambda) -> None:
    status, _, body = _call(gw, "/prod/ok-blue")  # function:OkLive:${stageVariables.alias}
    assert (status, json.loads(body)["qualifier"]) == (200, "blue")
    assert _last(fake_lambda)["qualifier"] == "blue"


def test_log_type_tail_logs_reach_the_gateway_log(gw: RunningGateway,
                                                  fake_lambda: FakeLambda) -> None:
    assert _call(gw, "/prod/ok")[0] == 200
    assert _last(fake_lambda)["log_type"] == "Tail"
    deadline = time.monotonic() + 5
    while "hello from the remote function" not in gw.log_text and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert "lambda Ok [remote-req-id] hello from the remote function" in gw.log_text
    _call(gw, "/prod/ok-env")
    assert _last(fake_lambda)["log_type"] == "None"


def test_function_error_unhandled_is_502(gw: RunningGateway) -> None:
    status, headers, body = _call(gw, "/prod/unhandled")
    assert (status, body) == (502, b'{"message": "Internal server error"}')
    assert headers["x-amzn-errortype"] == "InternalServerErrorException"
    assert "customer function error: kaboom. Lambda request id: remote-req-id" in gw.log_text


def test_throttled_429_is_aws_500(gw: RunningGateway) -> None:
    status, _, body = _call(gw, "/prod/throttled")
    assert (status, body) == (500, b'{"message": "Internal server error"}')
    assert "Lambda invocation failed with status: 429. Lambda request id: " in gw.log_text
    assert "Execution failed due to configuration error: Rate Exceeded." in gw.log_text


def test_event_invocation_type_reaches_the_invoke_api(gw: RunningGateway,
                                                      fake_lambda: FakeLambda) -> None:
    status, _headers, body = _call(gw, "/prod/queued", "POST", b'{"job": 7}')
    assert (status, body) == (202, b"")
    with fake_lambda.lock:
        seen = [s for s in fake_lambda.seen if s["event"] == {"job": 7}]
    assert [s["invocation_type"] for s in seen] == ["Event"]


def test_slow_function_is_504_after_the_integration_timeout(gw: RunningGateway) -> None:
    started = time.monotonic()
    status, _, body = _call(gw, "/prod/slow")
    elapsed = time.monotonic() - started
    assert (status, body) == (504, b'{"message": "Endpoint request timed out"}')
    assert elapsed < 1.8, elapsed  # the 500 ms timeout, not the function's 2 s


def test_the_timeout_aborts_the_invoke_connection(gw: RunningGateway,
                                                  fake_lambda: FakeLambda) -> None:
    _call(gw, "/prod/slow")
    deadline = time.monotonic() + 5
    while not fake_lambda.aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Slow" in fake_lambda.aborted


@pytest.mark.parametrize(("path", "logged"), [
    ("/prod/missing", "Lambda invocation failed with status: 404. Function not found"),
    ("/prod/badsig", "Lambda invocation failed with status: 403. The request signature"),
])
def test_missing_function_and_bad_signature_are_500(gw: RunningGateway, path: str,
                                                    logged: str) -> None:
    status, _, body = _call(gw, path)
    assert (status, body) == (500, b'{"message": "Internal server error"}')
    assert logged in gw.log_text
    assert "Invalid permissions on Lambda function" in gw.log_text


def test_unreachable_endpoint_is_504_network_error(gw: RunningGateway) -> None:
    status, _, body = _call(gw, "/prod/down")
    assert (status, body) == (504, b'{"message": "Network error communicating with endpoint"}')


@pytest.mark.parametrize(("event", "status", "body"), [
    ({"test": "pass"}, 200, b'"Pass"'),
    ({"test": "four"}, 405, json.dumps(FOUR_HUNDRED).encode()),
])
def test_non_proxy_integration_through_the_invoke_api(
        gw: RunningGateway, fake_lambda: FakeLambda, event: dict[str, str], status: int,
        body: bytes) -> None:
    got = _call(gw, "/prod/custom", "POST", json.dumps(event).encode())
    assert (got[0], got[2]) == (status, body)
    if status == 200:  # the Invoke API's headers are the integration response's
        assert got[1]["x-version"] == "7"
    assert _last(fake_lambda)["event"] == event  # the body passed through is the event


def test_http_api_payload_2_through_the_invoke_api(gw: RunningGateway,
                                                   fake_lambda: FakeLambda) -> None:
    status, _, body = _call(gw, "/ok", api="httpapi")
    assert (status, json.loads(body)) == (200, {"key": "AKIDCONFIG", "qualifier": None})
    event = _last(fake_lambda)["event"]
    assert (event["version"], event["rawPath"]) == ("2.0", "/ok")
    status, _, body = _call(gw, "/slow", api="httpapi")
    assert (status, body) == (503, b'{"message":"Service Unavailable"}')
