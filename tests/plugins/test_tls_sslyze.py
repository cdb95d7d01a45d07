"""sslyze confirms that a default TLS listener complies with Mozilla's "intermediate"
configuration (its ``--mozilla_config`` checker: protocols, suites, groups, certificate).

sslyze pins an older ``cryptography`` than the gateway's own dependencies allow, so it runs
from an environment of its own: ``TWISTGW_SSLYZE`` names its executable (tox sets it up in
``commands_pre``), else ``sslyze`` on PATH is used.  The certificates follow the Web PKI
profile sslyze validates against (key identifiers, key usage, serverAuth, SANs).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_tls import Key, definition, gateway_config, key_pem, pem

from twistgw.testing import RunningGateway, write_config

SSLYZE = os.environ.get("TWISTGW_SSLYZE") or shutil.which("sslyze")
pytestmark = pytest.mark.skipif(SSLYZE is None, reason="sslyze is not installed (tox "
                                "installs it and sets TWISTGW_SSLYZE)")
NOW = datetime.datetime.now(datetime.UTC)


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def web_pki(directory: Path, server_key: Key) -> None:
    """``ca.pem``, ``server.pem`` (chain) and ``server.key``, as a public CA would issue."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "twistgw sslyze CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(NOW - datetime.timedelta(days=1))
          .not_valid_after(NOW + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(_usage(ca=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(pem(ca))
    (directory / "server.pem").write_bytes(pem(leaf) + pem(ca))
    (directory / "server.key").write_bytes(key_pem(server_key))


@pytest.fixture(params=["rsa2048", "ecdsa-p256"], scope="module")
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[tuple[RunningGateway, Path]]:
    directory = tmp_path_factory.mktemp(f"sslyze-{request.param}")
    key: Key = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                if request.param == "rsa2048" else ec.generate_private_key(ec.SECP256R1()))
    web_pki(directory, key)
    path = write_config(directory, gateway_config(
        {"tls": {"certificate": "server.pem", "key": "server.key"}}),  # no policy: default
        {"api.yaml": definition()})
    with RunningGateway(path, timeout=30) as running:
        yield running, directory


def test_default_listener_is_mozilla_intermediate_compliant(
        gw: tuple[RunningGateway, Path]) -> None:
    running, directory = gw
    assert SSLYZE is not None
    out = subprocess.run(
        [SSLYZE, "--mozilla_config=intermediate", f"--certinfo_ca_file={directory / 'ca.pem'}",
         f"localhost:{running.port}"], capture_output=True, text=True, timeout=300)
    report = out.stdout
    assert "COMPLIANCE AGAINST TLS CONFIGURATION" in report, report + out.stderr
    assert f"localhost:{running.port}: OK - Compliant." in report, report
    assert out.returncode == 0, report
    # what the checker looked at, as sslyze saw it
    assert "TLS 1.1 Cipher Suites:\n     Attempted to connect using" in report
    assert "Supported curves:                  X25519, secp256r1, secp384r1" in report
