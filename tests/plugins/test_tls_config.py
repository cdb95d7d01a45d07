"""The tls plugin: load-time errors and warnings, IPv6 allow-lists, and the client
certificate in Lambda events (REST 1.0 and HTTP API 2.0) over a real mutual-TLS listener."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from test_tls import DAY, NOW, Pki, client_context, key_pem, make_cert, pem
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twistgw_tls import AllowListFactory, parse_sources

from twistgw import ConfigError
from twistgw.config import load_config
from twistgw.gateway import Gateway
from twistgw.testing import RunningGateway, write_config

API = {"openapi": "3.0.1", "info": {"title": "t", "version": "1"}, "paths": {"/x": {"get": {
    "responses": {"200": {"description": "ok"}},
    "x-amazon-apigateway-integration": {
        "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
        "responses": {"default": {"statusCode": "200"}}}}}}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def load(tmp_path: Path, listener: dict[str, Any], plugins: list[str] | None = None
         ) -> Gateway:
    path = write_config(tmp_path, {
        "listeners": [{"name": "main", "endpoint": "tcp:0:interface=127.0.0.1", **listener}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": plugins or ["mock", "tls"]}, "access_log": False,
    }, {"api.yaml": API})
    return Gateway(load_config(path))


@pytest.mark.parametrize(("tls", "where", "words"), [
    ({"certificate": "nope.pem", "key": "rsa.key"}, "listeners[0].tls.certificate",
     "cannot read"),
    ({"certificate": "rsa.pem", "key": "nope.key"}, "listeners[0].tls.key", "cannot read"),
    ({"certificate": "rsa.pem", "key": "ec.key"}, "listeners[0].tls.key", "does not match"),
    ({"certificate": "rsa.key", "key": "rsa.key"}, "listeners[0].tls.certificate",
     "no readable PEM certificate"),
    ({"certificate": "rsa.pem", "key": "rsa.pem"}, "listeners[0].tls.key",
     "no readable unencrypted"),
    ({"certificate": "rsa.pem", "key": "rsa.key", "client_ca": "none.pem"},
     "listeners[0].tls.client_ca", "cannot read"),
    ({"certificate": "rsa.pem", "key": "rsa.key", "policy": "TLS_1_0"},
     "listeners[0].tls.policy", "never serves"),
    ({"certificate": "rsa.pem", "key": "rsa.key", "policy": "SSLv3"},
     "listeners[0].tls.policy", "unknown TLS policy"),
    ({"certificate": "rsa.pem", "key": "rsa.key", "ciphers": "ALL"},
     "listeners[0].tls.ciphers", "unknown key"),
    ({"key": "rsa.key"}, "listeners[0].tls.certificate", "path of a PEM file"),
])
def test_tls_config_errors_name_the_key_and_file(pki: Pki, tls: dict[str, Any], where: str,
                                                 words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(pki.dir, {"tls": tls})
    message = str(info.value)
    assert where in message and words in message and "gateway.yaml" in message


def test_bad_cidr_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"allow_sources\[1\].*not an IPv4 or IPv6 CIDR"):
        load(tmp_path, {"allow_sources": ["10.0.0.0/8", "10.0.0.300/32"]})


def test_tls_without_the_plugin_is_refused(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="listener option 'tls' is not implemented"):
        load(pki.dir, {"tls": {"certificate": "rsa.pem", "key": "rsa.key"}}, ["mock"])


def test_expired_server_certificate_is_a_warning_not_an_error(tmp_path: Path) -> None:
    from twisted.logger import globalLogPublisher

    key = ec.generate_private_key(ec.SECP256R1())
    old = make_cert("localhost", key, not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    (tmp_path / "old.pem").write_bytes(pem(old))
    (tmp_path / "old.key").write_bytes(key_pem(key))
    seen: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        from twisted.logger import formatEvent
        seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        load(tmp_path, {"tls": {"certificate": "old.pem", "key": "old.key"}})
    finally:
        globalLogPublisher.removeObserver(observer)
    assert any("EXPIRED" in line and "old.pem" in line for line in seen), seen


def test_policies_map_to_tls12_or_tls13_minimum(pki: Pki) -> None:
    from twisted.internet.ssl import TLSVersion
    from twistgw_tls import POLICIES

    assert POLICIES["TLS_1_2"] == TLSVersion.TLSv1_2
    assert POLICIES["SecurityPolicy_TLS13_1_2_2021_06"] == TLSVersion.TLSv1_2
    assert POLICIES["SecurityPolicy_TLS13_1_3_2025_09"] == TLSVersion.TLSv1_3
    assert POLICIES["TLS_1_0"] is None


class _Marker(Protocol):
    pass


def test_allow_list_ipv4_ipv6_and_mapped_addresses() -> None:
    inner = Factory.forProtocol(_Marker)
    nets = parse_sources(("192.168.0.0/16", "2001:db8::/32", "::1"), "<t>", "listeners[0]")
    factory = AllowListFactory(inner, nets, "main")
    assert isinstance(factory.buildProtocol(IPv4Address("TCP", "192.168.4.5", 1)), _Marker)
    assert factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1)) is None
    assert isinstance(factory.buildProtocol(IPv6Address("TCP", "2001:db8::7", 1)), _Marker)
    assert isinstance(factory.buildProtocol(IPv6Address("TCP", "::1", 1)), _Marker)
    assert factory.buildProtocol(IPv6Address("TCP", "2001:db9::7", 1)) is None
    assert isinstance(factory.buildProtocol(IPv6Address("TCP", "::ffff:192.168.1.1", 1)),
                      _Marker)
    assert factory.buildProtocol(IPv6Address("TCP", "::ffff:10.1.1.1", 1)) is None
    assert factory.refused == 3


def test_allow_list_refusals_are_logged_at_most_once_per_interval() -> None:
    from twisted.internet.task import Clock
    from twisted.logger import formatEvent, globalLogPublisher

    clock = Clock()
    factory = AllowListFactory(Factory.forProtocol(_Marker),
                               parse_sources(("10.0.0.0/8",), "<t>", "l"), "main", clock)
    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if "allow_sources" in event.get("log_format", ""):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        for _ in range(5):
            factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
        clock.advance(61)
        factory.buildProtocol(IPv4Address("TCP", "192.0.2.2", 1))
    finally:
        globalLogPublisher.removeObserver(observer)
    assert factory.refused == 6
    assert len(lines) == 2
    assert "192.0.2.1" in lines[0] and "1 refused" in lines[0]
    assert "192.0.2.2" in lines[1] and "5 refused" in lines[1]


HANDLER = """
import json

def handler(event, context):
    rc = event["requestContext"]
    cert = rc.get("identity", {}).get("clientCert") or rc.get("authentication", {}).get(
        "clientCert")
    return {"statusCode": 200, "body": json.dumps(cert)}
"""


def _lambda(http_api: bool) -> dict[str, Any]:
    integration: dict[str, Any] = {
        "type": "aws_proxy", "httpMethod": "POST",
        "uri": "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/"
               "arn:aws:lambda:eu-west-1:123456789012:function:Cert/invocations"}
    if http_api:
        integration["payloadFormatVersion"] = "2.0"
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": integration}


@pytest.fixture(scope="module")
def lambda_gw(pki: Pki, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("tls-lambda")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text(HANDLER, encoding="utf-8")
    path = write_config(root, {
        "listeners": [{"name": "main", "endpoint": "tcp:0:interface=127.0.0.1", "tls": {
            "certificate": pki.path("ec.pem"), "key": pki.path("ec.key"),
            "client_ca": pki.path("ca.pem")}}],
        "apis": [{"id": "rest", "type": "REST", "definition": "rest.yaml",
                  "stages": [{"name": "prod"}]},
                 {"id": "http", "type": "HTTP", "definition": "http.yaml",
                  "stages": [{"name": "$default"}]}],
        "functions": {"Cert": {"handler": "app.handler", "code": "src", "runtime": "python",
                               "timeout": 5, "memory": 256}},
        "plugins": {"enabled": ["mock", "mapping", "lambda", "tls"]},
        "access_log": False,
    }, {"rest.yaml": {"openapi": "3.0.1", "info": {"title": "r", "version": "1"},
                      "paths": {"/cert": {"get": _lambda(False)}}},
        "http.yaml": {"openapi": "3.0.1", "info": {"title": "h", "version": "1"},
                      "paths": {"/cert": {"get": _lambda(True)}}}})
    gw = RunningGateway(path, timeout=30)
    try:
        try:
            gw.start()
        except RuntimeError as e:
            pytest.fail(f"the gateway did not start: {e}")
        yield gw
    finally:
        gw.__exit__(None, None, None)


def _get(port: int, ctx: ssl.SSLContext, path: str, api: str) -> tuple[int, Any]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=15)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nx-apigw-api-id: {api}\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize(("path", "api"), [("/prod/cert", "rest"), ("/cert", "http")])
def test_client_certificate_reaches_the_lambda_event(pki: Pki, lambda_gw: RunningGateway,
                                                     path: str, api: str) -> None:
    status, cert = _get(lambda_gw.port, client_context(pki, cert="client.pem"), path, api)
    assert status == 200, cert
    assert cert["subjectDN"] == "CN=client one,O=twistgw tests"
    assert cert["issuerDN"] == "CN=Test CA,O=twistgw tests"
    assert cert["serialNumber"] == "4242"
    assert cert["clientCertPem"] == pem(pki.client).decode()
    assert cert["validity"]["notAfter"].endswith(" GMT")
