"""HTTPS backends: verified against ``plugins.settings.http.ca_file`` with hostname checks.

Certificates are made at test time with ``cryptography``: a test CA, a server certificate
it signed for ``localhost``, one it signed for another name, and a self-signed one.  Only
the first may answer; the others are AWS's network error (504), never a 200.
"""

from __future__ import annotations

import datetime
import http.client
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from twistgw.testing import RunningGateway, write_config

NETWORK_ERROR = b'{"message": "Network error communicating with endpoint"}'


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn: str, dns: str, issuer: tuple[x509.Certificate, Any] | None = None,
              ca: bool = False, expired: bool = False) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        now -= datetime.timedelta(days=3)
    issuer_cert, issuer_key = issuer if issuer is not None else (None, key)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn))
               .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(cn))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def write_pem(folder: Path, name: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path = folder / f"{name}.pem"
    key_path = folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"tls": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TlsBackend(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Hello)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # failed handshakes are the point of some tests

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


#: Insecure routes: (name, backend): insecureSkipVerification forgives an untrusted
#: chain, but not a wrong host name or an expired certificate (§3.7).
INSECURE = {"insecure-selfsigned": "selfsigned", "insecure-wronghost": "selfwronghost",
            "insecure-expired": "selfexpired"}


@pytest.fixture(scope="module", params=["fast", "agent"])
def gateway(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
            ) -> Iterator[RunningGateway]:
    folder: Path = tmp_path_factory.mktemp("http-tls")
    ca = make_cert("twistgw test CA", "", ca=True)
    ca_path, _ = write_pem(folder, "ca", *ca)
    backends = {
        "trusted": TlsBackend(*write_pem(folder, "good", *make_cert("localhost", "localhost",
                                                                     ca))),
        "wronghost": TlsBackend(*write_pem(folder, "wrong", *make_cert(
            "wrong.example", "wrong.example", ca))),
        "selfsigned": TlsBackend(*write_pem(folder, "self", *make_cert("localhost",
                                                                        "localhost"))),
        "selfwronghost": TlsBackend(*write_pem(folder, "selfwrong", *make_cert(
            "wrong.example", "wrong.example"))),
        "selfexpired": TlsBackend(*write_pem(folder, "selfexpired", *make_cert(
            "localhost", "localhost", expired=True))),
        # Asks for a client certificate signed by the test CA.
        "mtls": TlsBackend(*write_pem(folder, "good2", *make_cert("localhost", "localhost",
                                                                   ca)), client_ca=ca_path),
    }
    client_cert, client_key = write_pem(folder, "client", *make_cert("gateway", "gateway",
                                                                       ca))
    paths = {f"/{name}": {"get": {
        "responses": {"200": {"description": "ok"}},
        "x-amazon-apigateway-integration": {
            "type": "http_proxy", "httpMethod": "GET", "timeoutInMillis": 5000,
            "uri": f"https://localhost:{server.port}/hello"}}}
        for name, server in backends.items()}
    for name, target in INSECURE.items():
        paths[f"/{name}"] = {"get": {
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "GET", "timeoutInMillis": 5000,
                "tlsConfig": {"insecureSkipVerification": True},
                "uri": f"https://localhost:{backends[target].port}/hello"}}}
    config = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "tlsapi", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping", "http"],
                    "settings": {"http": {"ca_file": str(ca_path),
                                          "client_cert": str(client_cert),
                                          "client_key": str(client_key),
                                          "client": request.param}}},
        "access_log": False,
    }
    path = write_config(folder, config, {"api.yaml": {
        "openapi": "3.0.1", "info": {"title": "tls", "version": "1"}, "paths": paths}})
    try:
        with RunningGateway(path) as gw:
            yield gw
    finally:
        for server in backends.values():
            server.stop()


def get(gw: RunningGateway, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_backend_certificate_from_the_configured_ca_is_accepted(
        gateway: RunningGateway) -> None:
    assert get(gateway, "/prod/trusted") == (200, b'{"tls": "ok"}')


@pytest.mark.parametrize("route", ["/prod/selfsigned", "/prod/wronghost"])
def test_untrusted_or_wrong_host_certificate_is_a_network_error(
        gateway: RunningGateway, route: str) -> None:
    assert get(gateway, route) == (504, NETWORK_ERROR)


def test_client_certificate_is_presented_to_a_backend_that_asks(
        gateway: RunningGateway) -> None:
    assert get(gateway, "/prod/mtls") == (200, b'{"tls": "ok"}')


def test_insecure_skip_verification_accepts_an_untrusted_chain(
        gateway: RunningGateway) -> None:
    assert get(gateway, "/prod/insecure-selfsigned") == (200, b'{"tls": "ok"}')


@pytest.mark.parametrize("route", ["/prod/insecure-wronghost", "/prod/insecure-expired",
                                   "/prod/selfexpired"])
def test_insecure_skip_verification_still_checks_host_and_dates(
        gateway: RunningGateway, route: str) -> None:
    assert get(gateway, route) == (504, NETWORK_ERROR)
