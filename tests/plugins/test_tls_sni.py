"""SNI: several custom domains on one TLS listener, each with its own certificate (and
truststore) and base path mappings; unknown names get the listener's default certificate.
Clients: Python's ``ssl`` module and curl, over real sockets against a real ``twistd``."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from test_tls import DAY, NOW, Key, _name, key_pem, make_cert, pem

from twistgw.testing import RunningGateway, write_config


def server_cert(names: list[str], key: Key, issuer: tuple[x509.Certificate, Key],
                serial: int) -> x509.Certificate:
    """A server certificate for DNS ``names`` (and 127.0.0.1), CN the first name."""
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    return (x509.CertificateBuilder().subject_name(_name(names[0]))
            .issuer_name(issuer[0].subject).public_key(key.public_key())
            .serial_number(serial).not_valid_before(NOW - DAY)
            .not_valid_after(NOW + 200 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(issuer[1], hashes.SHA256()))


class SniPki:
    """A CA; a default certificate (localhost) and three domain certificates; a client."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = make_cert("SNI CA", ca_key, ca=True)
        issuer = (self.ca, ca_key)
        files: dict[str, bytes] = {"ca.pem": pem(self.ca)}
        for stem, names, serial in (("default", ["localhost"], 100),
                                    ("api", ["api.example.com"], 101),
                                    ("org", ["*.example.org"], 102),
                                    ("secure", ["secure.example.com"], 103)):
            key = ec.generate_private_key(ec.SECP256R1())
            files[f"{stem}.pem"] = pem(server_cert(names, key, issuer, serial))
            files[f"{stem}.key"] = key_pem(key)
        client_key = ec.generate_private_key(ec.SECP256R1())
        files["client.pem"] = pem(make_cert("sni client", client_key, issuer, serial=7))
        files["client.key"] = key_pem(client_key)
        for name, data in files.items():
            (directory / name).write_bytes(data)

    def path(self, name: str) -> str:
        return str(self.dir / name)


def api_doc(title: str) -> dict[str, Any]:
    return {"openapi": "3.0.1", "info": {"title": title, "version": "1"},
            "paths": {"/who": {"get": {
                "responses": {"200": {"description": "ok"}},
                "x-amazon-apigateway-integration": {
                    "type": "mock",
                    "requestTemplates": {"application/json": '{"statusCode": 200}'},
                    "responses": {"default": {"statusCode": "200", "responseTemplates": {
                        "application/json": title + " $context.domainName"}}}}}}}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SniPki:
    return SniPki(tmp_path_factory.mktemp("sni-pki"))


@pytest.fixture(scope="module")
def gw(pki: SniPki) -> Iterator[RunningGateway]:
    path = write_config(pki.dir, {
        "listeners": [{"name": "main", "endpoint": "tcp:0:interface=127.0.0.1", "tls": {
            "certificate": "default.pem", "key": "default.key",
            "sni": {"api.example.com": {"certificate": "api.pem", "key": "api.key"},
                    "*.example.org": {"certificate": "org.pem", "key": "org.key"},
                    "secure.example.com": {"certificate": "secure.pem", "key": "secure.key",
                                           "client_ca": "ca.pem"}}}}],
        "apis": [{"id": "one", "type": "REST", "definition": "one.yaml",
                  "stages": [{"name": "prod"}]},
                 {"id": "two", "type": "REST", "definition": "two.yaml",
                  "stages": [{"name": "prod"}]}],
        "domains": [{"name": "api.example.com", "mappings": [
                        {"base_path": "v1", "api": "one", "stage": "prod"},
                        {"base_path": "v2", "api": "two", "stage": "prod"}]},
                    {"name": "shop.example.org", "mappings": [
                        {"base_path": "", "api": "two", "stage": "prod"}]},
                    {"name": "secure.example.com", "mappings": [
                        {"base_path": "", "api": "one", "stage": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping", "tls"]},
        "access_log": False,
    }, {"one.yaml": api_doc("one"), "two.yaml": api_doc("two")})
    with RunningGateway(path, timeout=30) as running:
        yield running


def fetch(port: int, ctx: ssl.SSLContext, server_name: str | None, path: str,
          host: str, extra: str = "") -> tuple[x509.Certificate, int, bytes]:
    """One request over a new TLS connection; the server's certificate, status and body."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=server_name) as sock:
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close"
                     "\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return x509.load_der_x509_certificate(der), int(head.split(b" ", 2)[1]), body


def verifying(pki: SniPki, client: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    if client:
        ctx.load_cert_chain(pki.path("client.pem"), pki.path("client.key"))
    return ctx


@pytest.mark.parametrize(("name", "serial", "path", "body"), [
    ("api.example.com", 101, "/v1/who", b"one api.example.com"),
    ("api.example.com", 101, "/v2/who", b"two api.example.com"),
    ("shop.example.org", 102, "/who", b"two shop.example.org"),
])
def test_each_domain_gets_its_certificate_and_its_base_path_mappings(
        pki: SniPki, gw: RunningGateway, name: str, serial: int, path: str,
        body: bytes) -> None:
    cert, status, got = fetch(gw.port, verifying(pki), name, path, name)
    assert (cert.serial_number, status, got) == (serial, 200, body)


@pytest.mark.parametrize("name", ["unknown.example.net", "example.org", "a.b.example.org",
                                  None])
def test_unknown_or_absent_server_name_gets_the_default_certificate(
        pki: SniPki, gw: RunningGateway, name: str | None) -> None:
    ctx = verifying(pki)
    ctx.check_hostname = False  # the default certificate names localhost only
    cert, status, body = fetch(gw.port, ctx, name, "/prod/who", "localhost",
                               "x-apigw-api-id: two\r\n")
    assert (cert.serial_number, status, body) == (100, 200, b"two localhost")


def test_a_domain_with_its_own_truststore_requires_a_client_certificate(
        pki: SniPki, gw: RunningGateway) -> None:
    cert, status, body = fetch(gw.port, verifying(pki, client=True), "secure.example.com",
                               "/who", "secure.example.com")
    assert (cert.serial_number, status, body) == (103, 200, b"one secure.example.com")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        fetch(gw.port, verifying(pki), "secure.example.com", "/who", "secure.example.com")
    # the listener's default and the other domains still take clients without one
    assert fetch(gw.port, verifying(pki), "api.example.com", "/v1/who",
                 "api.example.com")[1] == 200


CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize(("name", "path", "cn"), [
    ("api.example.com", "/v1/who", "api.example.com"),
    ("shop.example.org", "/who", "*.example.org"),
    ("localhost", "/prod/who", "localhost"),
])
def test_curl_verifies_each_domain_certificate(pki: SniPki, gw: RunningGateway, name: str,
                                               path: str, cn: str) -> None:
    assert CURL is not None
    out = subprocess.run(
        [CURL, "-sS", "-v", "--cacert", pki.path("ca.pem"), "-H", "x-apigw-api-id: one",
         "--resolve", f"{name}:{gw.port}:127.0.0.1", f"https://{name}:{gw.port}{path}"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(("one ", "two "))
    assert f"CN={cn}" in out.stderr  # curl's "subject:" line: the certificate served
    assert "ALPN: server accepted http/1.1" in out.stderr


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_with_and_without_a_client_certificate(pki: SniPki, gw: RunningGateway) -> None:
    assert CURL is not None
    base = [CURL, "-sS", "--cacert", pki.path("ca.pem"), "--resolve",
            f"secure.example.com:{gw.port}:127.0.0.1",
            f"https://secure.example.com:{gw.port}/who"]
    ok = subprocess.run([*base, "--cert", pki.path("client.pem"), "--key",
                         pki.path("client.key")], capture_output=True, text=True, timeout=30)
    assert (ok.returncode, ok.stdout) == (0, "one secure.example.com")
    refused = subprocess.run(base, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and refused.stdout == ""
