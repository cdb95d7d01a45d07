"""``remote:`` credentials from profiles: static keys in the credentials or config file,
and roles (``role_arn`` + ``source_profile`` / ``credential_source``) assumed through an
STS endpoint the tests start, which checks each AssumeRole signature with botocore; the
temporary credentials then sign Invoke API calls the fake Lambda checks the same way.
"""

from __future__ import annotations

import http.client
import itertools
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from test_lambda_remote import REGION, SECRETS, FakeLambda, botocore_signature, serving
from test_lambda_remote import fake_lambda as fake_lambda  # the module-scoped fixture
from twistgw_lambda.credentials import (
    AssumeRole,
    NoCredentials,
    assume_role_request,
    parse_assume_role_response,
    resolve_credentials,
)
from twistgw_lambda.sigv4 import Credentials

from twistgw.testing import RunningGateway, write_config

ROLE = "arn:aws:iam::123456789012:role/{name}"
SECRETS["AKIDBASE"] = "base/secret+key"

CREDENTIALS_FILE = """
[base]
aws_access_key_id = AKIDBASE
aws_secret_access_key = base/secret+key
"""

CONFIG_FILE = f"""
[profile invoker]
role_arn = {ROLE.format(name="invoker")}
source_profile = base
role_session_name = gw-test

[profile chained]
role_arn = {ROLE.format(name="second")}
source_profile = invoker

[profile short]
role_arn = {ROLE.format(name="short")}
source_profile = base

[profile denied]
role_arn = {ROLE.format(name="denied")}
source_profile = base

[profile from-env]
role_arn = {ROLE.format(name="invoker")}
credential_source = Environment
external_id = ext-42
duration_seconds = 900

[profile keys-in-config]
aws_access_key_id = AKIDCFG
aws_secret_access_key = cfg/secret

[profile mfa]
role_arn = {ROLE.format(name="invoker")}
source_profile = base
mfa_serial = arn:aws:iam::123456789012:mfa/me

[profile no-source]
role_arn = {ROLE.format(name="invoker")}

[profile empty-source]
role_arn = {ROLE.format(name="invoker")}
source_profile = nothing-here

[profile too-long]
role_arn = {ROLE.format(name="invoker")}
source_profile = base
duration_seconds = 50000

[profile loop-a]
role_arn = {ROLE.format(name="a")}
source_profile = loop-b

[profile loop-b]
role_arn = {ROLE.format(name="b")}
source_profile = loop-a
"""


@pytest.fixture
def aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "credentials").write_text(CREDENTIALS_FILE)
    (tmp_path / "config").write_text(CONFIG_FILE)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


# -- resolving profiles ----------------------------------------------------------------------

def test_a_role_profile_resolves_to_the_role_and_its_source(aws_files: Path) -> None:
    found = resolve_credentials(None, "invoker")
    assert isinstance(found, AssumeRole)
    assert (found.role_arn, found.session_name, found.duration) == (
        ROLE.format(name="invoker"), "gw-test", 3600)
    assert isinstance(found.source, Credentials) and found.source.access_key == "AKIDBASE"
    chained = resolve_credentials(None, "chained")
    assert isinstance(chained, AssumeRole) and isinstance(chained.source, AssumeRole)
    assert chained.source.role_arn == ROLE.format(name="invoker")


def test_aws_profile_and_config_file_keys(aws_files: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    found = resolve_credentials(None, "keys-in-config")
    assert isinstance(found, Credentials) and found.access_key == "AKIDCFG"
    monkeypatch.setenv("AWS_PROFILE", "invoker")
    assert isinstance(resolve_credentials(None, None), AssumeRole)


def test_credential_source_environment(aws_files: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NoCredentials, match="credential_source = Environment"):
        resolve_credentials(None, "from-env")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env/secret")
    found = resolve_credentials(None, "from-env")
    assert isinstance(found, AssumeRole)
    assert (found.external_id, found.duration) == ("ext-42", 900)
    assert isinstance(found.source, Credentials) and found.source.access_key == "AKIDENV"


@pytest.mark.parametrize(("profile", "problem"), [
    ("mfa", "MFA code"),
    ("no-source", "needs source_profile or credential_source"),
    ("empty-source", "source_profile [nothing-here] has no aws_access_key_id"),
    ("too-long", "duration_seconds must be 900..43200"),
    ("loop-a", "chains more than 5 roles deep"),
    ("absent", "no AWS credentials"),
])
def test_unusable_profiles_say_why(aws_files: Path, profile: str, problem: str) -> None:
    with pytest.raises(NoCredentials, match=re.escape(problem)):
        resolve_credentials(None, profile)


def test_the_assume_role_call_is_signed_as_botocore_signs_it(
        aws_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:4566")
    role = resolve_credentials(None, "invoker")
    assert isinstance(role, AssumeRole) and isinstance(role.source, Credentials)
    source = Credentials("AKIDBASE", "base/secret+key", "tok/en==")
    url, headers, body = assume_role_request(role, source, REGION)
    assert url == "http://127.0.0.1:4566/"
    assert parse_qs(body.decode()) == {
        "Action": ["AssumeRole"], "Version": ["2011-06-15"],
        "RoleArn": [ROLE.format(name="invoker")], "RoleSessionName": ["gw-test"],
        "DurationSeconds": ["3600"]}
    signature, region, service = botocore_signature("POST", url, headers, body,
                                                    "base/secret+key", "tok/en==")
    assert (region, service) == (REGION, "sts")
    assert dict(headers)["Authorization"].endswith("Signature=" + signature)


def test_sts_answers_are_parsed(aws_files: Path) -> None:
    role = resolve_credentials(None, "invoker")
    assert isinstance(role, AssumeRole)
    creds, expires = parse_assume_role_response(200, _sts_ok("ASIAX", 3600), role)
    assert (creds.access_key, creds.secret_key, creds.token) == (
        "ASIAX", "secret-ASIAX", "token-ASIAX")
    assert expires > datetime.now(UTC) + timedelta(minutes=59)
    with pytest.raises(NoCredentials, match="status 403: AccessDenied not allowed"):
        parse_assume_role_response(403, STS_DENIED, role)
    with pytest.raises(NoCredentials, match="status 200"):
        parse_assume_role_response(200, b"<not xml", role)


# -- end to end: a fake STS and the fake Lambda ------------------------------------------------

STS_DENIED = (b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
              b'<Type>Sender</Type><Code>AccessDenied</Code><Message>not allowed</Message>'
              b'</Error><RequestId>r</RequestId></ErrorResponse>')


def _sts_ok(key: str, seconds: int) -> bytes:
    expires = (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f'<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<AssumeRoleResult><Credentials><AccessKeyId>{key}</AccessKeyId>"
            f"<SecretAccessKey>secret-{key}</SecretAccessKey>"
            f"<SessionToken>token-{key}</SessionToken><Expiration>{expires}</Expiration>"
            f"</Credentials><AssumedRoleUser><Arn>x</Arn><AssumedRoleId>y</AssumedRoleId>"
            f"</AssumedRoleUser></AssumeRoleResult></AssumeRoleResponse>").encode()


class FakeSts(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StsHandler)
        self.calls: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.numbers = itertools.count(1)


class _StsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeSts

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = list(self.headers.items())
        lowered = {k.lower(): v for k, v in headers}
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        access_key = lowered["authorization"].split("Credential=")[1].split("/")[0]
        secret = SECRETS.get(access_key)
        signature, region, service = botocore_signature(
            "POST", f"http://{lowered['host']}{self.path}", headers, body, secret or "?",
            lowered.get("x-amz-security-token"))
        ok = secret is not None and (region, service) == (REGION, "sts") and \
            lowered["authorization"].endswith("Signature=" + signature)
        with self.server.lock:
            self.server.calls.append({"role": form.get("RoleArn", ""), "key": access_key,
                                      "token": lowered.get("x-amz-security-token", "")})
            number = next(self.server.numbers)
        if not ok or form.get("Action") != "AssumeRole" or form["RoleArn"].endswith("denied"):
            self._answer(403, STS_DENIED)
            return
        key = f"ASIATEMP{number:04d}"
        SECRETS[key] = f"secret-{key}"
        self._answer(200, _sts_ok(key, 120 if form["RoleArn"].endswith("short") else 3600))


@pytest.fixture(scope="module")
def fake_sts() -> Iterator[FakeSts]:
    yield from serving(FakeSts())


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake_lambda: FakeLambda, fake_sts: FakeSts
       ) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("lambda-roles")
    (root / "credentials").write_text(CREDENTIALS_FILE)
    (root / "config").write_text(CONFIG_FILE)
    endpoint = f"http://127.0.0.1:{fake_lambda.server_address[1]}"
    names = ("invoker", "chained", "short", "denied")
    paths = {f"/{name}": {"get": {
        "responses": {"200": {"description": "ok"}},
        "x-amazon-apigateway-integration": {
            "type": "aws_proxy", "httpMethod": "POST",
            "uri": f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/"
                   f"arn:aws:lambda:{REGION}:123456789012:function:{name}/invocations"}}}
        for name in names}
    path = write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "restapi", "type": "REST", "definition": "rest.yaml",
                  "stages": [{"name": "prod"}]}],
        "functions": {name: {"remote": {"endpoint": endpoint, "region": REGION,
                                        "function": "Ok", "profile": name}}
                      for name in names},
        "plugins": {"enabled": ["mock", "mapping", "lambda"]},
        "access_log": False,
    }, {"rest.yaml": {"openapi": "3.0.1", "info": {"title": "roles", "version": "1"},
                      "paths": paths}})
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") or k in ("AWS_REGION",)}
    env.update({"AWS_SHARED_CREDENTIALS_FILE": str(root / "credentials"),
                "AWS_CONFIG_FILE": str(root / "config"),
                "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{fake_sts.server_address[1]}"})
    with RunningGateway(path, timeout=30, env=env) as running:
        yield running


def _key_used(gw: RunningGateway, name: str) -> tuple[int, Any]:
    import json

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request("GET", f"/prod/{name}", headers={"x-apigw-api-id": "restapi"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        return response.status, body
    return 200, json.loads(body)["key"]


def _calls(fake_sts: FakeSts, role: str) -> list[dict[str, str]]:
    with fake_sts.lock:
        return [c for c in fake_sts.calls if c["role"] == ROLE.format(name=role)]


def test_a_role_is_assumed_once_and_its_credentials_sign_the_invokes(
        gw: RunningGateway, fake_sts: FakeSts) -> None:
    first = _key_used(gw, "invoker")
    second = _key_used(gw, "invoker")
    assert first[0] == 200 and str(first[1]).startswith("ASIATEMP")
    assert second == first  # cached until shortly before Expiration
    calls = _calls(fake_sts, "invoker")
    assert [(c["key"], c["token"]) for c in calls] == [("AKIDBASE", "")]
    assert "assumed arn:aws:iam::123456789012:role/invoker (profile [invoker])" in gw.log_text


def test_a_role_chain_assumes_each_role_with_the_previous_ones_credentials(
        gw: RunningGateway, fake_sts: FakeSts) -> None:
    status, key = _key_used(gw, "chained")
    assert status == 200 and str(key).startswith("ASIATEMP")
    second = _calls(fake_sts, "second")
    assert len(second) == 1
    assert second[0]["key"].startswith("ASIATEMP")  # signed with the first role's keys
    assert second[0]["token"].startswith("token-ASIATEMP")


def test_credentials_expiring_within_the_margin_are_renewed(
        gw: RunningGateway, fake_sts: FakeSts) -> None:
    first = _key_used(gw, "short")  # STS grants 2 minutes: inside the 5-minute margin
    second = _key_used(gw, "short")
    assert first[0] == second[0] == 200 and first[1] != second[1]
    assert len(_calls(fake_sts, "short")) == 2


def test_a_refused_assume_role_is_a_500_and_logged(gw: RunningGateway) -> None:
    status, body = _key_used(gw, "denied")
    assert (status, body) == (500, b'{"message": "Internal server error"}')
    assert "AssumeRole arn:aws:iam::123456789012:role/denied (profile [denied]) failed " \
           "with status 403: AccessDenied not allowed" in gw.log_text
