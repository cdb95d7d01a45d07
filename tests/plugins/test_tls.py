"""The tls plugin: TLS listeners, mutual TLS and allow-lists against a real ``twistd``.

Certificates are made at test time with ``cryptography``: a CA, a server certificate for
127.0.0.1/localhost (RSA, and ECDSA on the mTLS listener), a client certificate, an
expired client certificate and one from another CA.  Clients are Python's ``ssl`` module
over real sockets.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from twistgw.testing import RunningGateway, write_config

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "twistgw tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn: str, key: Key, issuer: tuple[x509.Certificate, Key] | None = None, *,
              ca: bool = False, server: bool = False, not_before: datetime.datetime = NOW - DAY,
              not_after: datetime.datetime = NOW + 365 * DAY, serial: int | None = None
              ) -> x509.Certificate:
    issuer_name = issuer[0].subject if issuer else _name(cn)
    signer = issuer[1] if issuer else key
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
               .public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        import ipaddress
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    return builder.sign(signer, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Pki:
    """Everything the tests need, written as PEM files into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = make_cert("Test CA", ca_key, ca=True)
        other_key = ec.generate_private_key(ec.SECP256R1())
        other_ca = make_cert("Other CA", other_key, ca=True)
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # expires in 20 days: the startup warning about expiry is checked too
        self.rsa_server = make_cert("localhost", rsa_key, (self.ca, ca_key), server=True,
                                    not_after=NOW + 20 * DAY)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ec_server = make_cert("localhost", ec_key, (self.ca, ca_key), server=True)
        client_key = ec.generate_private_key(ec.SECP256R1())
        self.client = make_cert("client one", client_key, (self.ca, ca_key), serial=4242)
        expired = make_cert("client expired", client_key, (self.ca, ca_key),
                            not_before=NOW - 30 * DAY, not_after=NOW - DAY)
        stranger = make_cert("client stranger", client_key, (other_ca, other_key))
        files = {
            "ca.pem": pem(self.ca),
            "rsa.pem": pem(self.rsa_server) + pem(self.ca), "rsa.key": key_pem(rsa_key),
            "ec.pem": pem(ec_server), "ec.key": key_pem(ec_key),
            "client.pem": pem(self.client), "client.key": key_pem(client_key),
            "expired.pem": pem(expired), "stranger.pem": pem(stranger),
        }
        for name, data in files.items():
            (directory / name).write_bytes(data)

    def path(self, name: str) -> str:
        return str(self.dir / name)


def definition() -> dict[str, Any]:
    template = ('{"subject": "$context.identity.clientCert.subjectDN", '
                '"issuer": "$context.identity.clientCert.issuerDN", '
                '"serial": "$context.identity.clientCert.serialNumber", '
                '"notAfter": "$context.identity.clientCert.validity.notAfter", '
                '"pemStart": "$context.identity.clientCert.clientCertPem.substring(0, 27)", '
                '"ip": "$context.identity.sourceIp"}')
    return {
        "openapi": "3.0.1", "info": {"title": "tls", "version": "1"},
        "paths": {"/who": {"get": {
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "mock",
                "requestTemplates": {"application/json": '{"statusCode": 200}'},
                "responses": {"default": {"statusCode": "200", "responseTemplates": {
                    "application/json": template}}}}}}},
    }


def gateway_config(listener: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "endpoint": "tcp:0:interface=127.0.0.1", **listener}],
        "apis": [{"id": "tlsapi", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping", "tls"]},
        "access_log": False,
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _running(directory: Path, listener: dict[str, Any]) -> Iterator[RunningGateway]:
    path = write_config(directory, gateway_config(listener), {"api.yaml": definition()})
    gw = RunningGateway(path, timeout=30)
    try:
        try:
            gw.start()
        except RuntimeError as e:
            pytest.fail(f"the gateway did not start: {e}")
        yield gw
    finally:
        gw.__exit__(None, None, None)


@pytest.fixture(scope="module")
def tls_gw(pki: Pki) -> Iterator[RunningGateway]:
    # relative paths resolve against the config's directory
    yield from _running(pki.dir, {"tls": {"certificate": "rsa.pem", "key": "rsa.key"}})


@pytest.fixture(scope="module")
def mtls_gw(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    yield from _running(tmp_path_factory.mktemp("mtls"), {"tls": {
        "certificate": pki.path("ec.pem"), "key": pki.path("ec.key"),
        "client_ca": pki.path("ca.pem"), "policy": "SecurityPolicy_TLS13_1_2_2021_06"}})


@pytest.fixture(scope="module")
def tls13_gw(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    yield from _running(tmp_path_factory.mktemp("tls13"), {"tls": {
        "certificate": pki.path("ec.pem"), "key": pki.path("ec.key"),
        "policy": "SecurityPolicy_TLS13_1_3_2025_09"}})


@pytest.fixture(scope="module")
def private_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    yield from _running(tmp_path_factory.mktemp("private"),
                        {"allow_sources": ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]})


def client_context(pki: Pki, *, cert: str | None = None, minimum: ssl.TLSVersion | None = None,
                   maximum: ssl.TLSVersion | None = None, ciphers: str | None = None
                   ) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if cert is not None:
        ctx.load_cert_chain(pki.path(cert), pki.path("client.key"))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def get(port: int, ctx: ssl.SSLContext, path: str = "/prod/who"
        ) -> tuple[ssl.SSLSocket, int, dict[str, Any]]:
    """A GET over a fresh TLS connection; the socket is returned for inspection."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                 .encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return sock, status, json.loads(body)


def refused(port: int, ctx: ssl.SSLContext) -> bool:
    """Whether the handshake (or the first read after it, for TLS 1.3 client certs) fails."""
    return handshake_error(port, ctx) is not None


def handshake_error(port: int, ctx: ssl.SSLContext) -> str | None:
    """The client's error when the server refuses the connection, else ``None``."""
    try:
        get(port, ctx)
    except (ssl.SSLError, ConnectionError) as e:
        return str(e)
    return None


# -- TLS listeners ------------------------------------------------------------------------


def test_serving_line_is_https_and_tls12_and_tls13_are_served(pki: Pki,
                                                              tls_gw: RunningGateway) -> None:
    assert tls_gw.url("/").startswith("https://127.0.0.1:")
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        sock, status, body = get(tls_gw.port, client_context(pki, minimum=version,
                                                             maximum=version))
        assert status == 200
        assert sock.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
        assert body["ip"] == "127.0.0.1"
        assert body["subject"] == ""  # no client certificate on a plain TLS listener
        assert sock.selected_alpn_protocol() == "http/1.1"  # h2 never advertised


def test_tls12_uses_ecdhe_aead_and_rsa_chain_verifies(pki: Pki, tls_gw: RunningGateway) -> None:
    sock, status, _ = get(tls_gw.port, client_context(pki, maximum=ssl.TLSVersion.TLSv1_2))
    cipher = sock.cipher()
    assert status == 200 and cipher is not None
    assert cipher[0] in {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                         "ECDHE-RSA-CHACHA20-POLY1305"}


def test_tls11_is_refused(pki: Pki, tls_gw: RunningGateway) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # this client speaks TLS 1.1 only (it does complete a TLS 1.1 handshake with a
        # server that allows it); the gateway answers with a protocol_version alert
        ctx = client_context(pki, minimum=ssl.TLSVersion.TLSv1_1,
                             maximum=ssl.TLSVersion.TLSv1_1, ciphers="ALL:@SECLEVEL=0")
    error = handshake_error(tls_gw.port, ctx)
    assert error is not None and "PROTOCOL_VERSION" in error.upper(), error


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA",
                                    "AES128-GCM-SHA256", "AES256-SHA256"])
def test_cbc_and_static_rsa_ciphers_are_refused(pki: Pki, tls_gw: RunningGateway,
                                                cipher: str) -> None:
    ctx = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
    error = handshake_error(tls_gw.port, ctx)
    assert error is not None and "HANDSHAKE_FAILURE" in error.upper(), error


def test_expiring_server_certificate_is_warned_about(tls_gw: RunningGateway) -> None:
    assert "expires on" in tls_gw.log_text and "rsa.pem" in tls_gw.log_text


def test_tls13_only_policy_refuses_tls12(pki: Pki, tls13_gw: RunningGateway) -> None:
    assert refused(tls13_gw.port, client_context(pki, maximum=ssl.TLSVersion.TLSv1_2))
    sock, status, _ = get(tls13_gw.port, client_context(pki))
    assert status == 200 and sock.version() == "TLSv1.3"


# -- mutual TLS ---------------------------------------------------------------------------


def test_mtls_client_certificate_reaches_context_identity_client_cert(
        pki: Pki, mtls_gw: RunningGateway) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        _, status, body = get(mtls_gw.port, client_context(pki, cert="client.pem",
                                                           minimum=version, maximum=version))
        assert status == 200
        assert body["subject"] == "CN=client one,O=twistgw tests"
        assert body["issuer"] == "CN=Test CA,O=twistgw tests"
        assert body["serial"] == "4242"
        not_after = pki.client.not_valid_after_utc
        assert body["notAfter"] == (f"{not_after:%b} {not_after.day:2d} "
                                    f"{not_after:%H:%M:%S %Y} GMT")
        assert body["pemStart"] == "-----BEGIN CERTIFICATE-----"


@pytest.mark.parametrize("cert", [None, "expired.pem", "stranger.pem"])
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_mtls_handshake_fails_without_or_with_a_bad_client_certificate(
        pki: Pki, mtls_gw: RunningGateway, cert: str | None, version: ssl.TLSVersion) -> None:
    ctx = client_context(pki, minimum=version, maximum=version)
    if cert is not None:
        ctx.load_cert_chain(pki.path(cert), pki.path("client.key"))
    assert refused(mtls_gw.port, ctx)


# -- allow-lists --------------------------------------------------------------------------


def _exchange_from(source: str, port: int) -> bytes:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    try:
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(b"GET /prod/who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        except OSError:
            return b""
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data
    finally:
        sock.close()


def test_allow_sources_admits_listed_peer_and_closes_others_before_http(
        private_gw: RunningGateway) -> None:
    port = private_gw.port
    assert _exchange_from("127.0.0.1", port).startswith(b"HTTP/1.1 200")
    assert _exchange_from("127.0.0.2", port) == b""
    assert "connection from 127.0.0.2 refused" in private_gw.log_text
