"""Certificate reload (file changes, :func:`twistgw_tls.reload_certificates`) without
dropping connections, daily expiry checks, and PRIVATE APIs only on private listeners."""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import twistgw_tls
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from test_tls import DAY, NOW, key_pem, make_cert, pem
from test_tls_sni import server_cert
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from twistgw import ConfigError
from twistgw.config import load_config
from twistgw.gateway import Gateway
from twistgw.testing import RunningGateway, write_config

API = {"openapi": "3.0.1", "info": {"title": "t", "version": "1"}, "paths": {"/x": {"get": {
    "responses": {"200": {"description": "ok"}},
    "x-amazon-apigateway-integration": {
        "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
        "responses": {"default": {"statusCode": "200"}}}}}}}


class Issuer:
    """A CA that writes server certificates for localhost with chosen serials."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = make_cert("Reload CA", self.key, ca=True)
        (directory / "ca.pem").write_bytes(pem(self.cert))

    def issue(self, stem: str, serial: int, *, days: int = 200) -> None:
        """Write ``stem.pem``/``stem.key`` atomically (rename), as deploy tools do."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = server_cert(["localhost"], key, (self.cert, self.key), serial)
        if days != 200:
            cert = make_cert("localhost", key, (self.cert, self.key), server=True,
                             serial=serial, not_before=NOW - 400 * DAY,
                             not_after=NOW + days * DAY)
        for name, data in ((f"{stem}.key", key_pem(key)), (f"{stem}.pem", pem(cert))):
            tmp = self.dir / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.dir / name)


def serial_of(sock: ssl.SSLSocket) -> int:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def connect(port: int, ca: Path) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def request(sock: ssl.SSLSocket) -> bytes:
    """One keep-alive request on an open connection; the status line."""
    sock.sendall(b"GET /prod/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head.split(b"\r\n", 1)[0]


def new_serial(port: int, ca: Path) -> int:
    with connect(port, ca) as sock:
        return serial_of(sock)


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    issuer = Issuer(tmp_path)
    issuer.issue("server", 1)
    return issuer


def serve_tls(issuer: Issuer, watch_interval: float) -> RunningGateway:
    """A daemon with one TLS listener on the issuer's ``server`` certificate
    (``watch_interval`` 0 turns the file watcher off)."""
    path = write_config(issuer.dir, {
        "listeners": [{"name": "main", "endpoint": "tcp:0:interface=127.0.0.1",
                       "tls": {"certificate": "server.pem", "key": "server.key"}}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "mapping", "tls"],
                    "settings": {"tls": {"watch_interval": watch_interval}}},
        "access_log": False,
    }, {"api.yaml": API})
    return RunningGateway(path, timeout=30)


@pytest.fixture
def gw(issuer: Issuer) -> Iterator[RunningGateway]:
    with serve_tls(issuer, 0.2) as running:
        yield running


def wait_for(predicate: Any, what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_changed_files_are_served_to_new_connections_and_old_ones_stay_open(
        issuer: Issuer, gw: RunningGateway) -> None:
    ca = issuer.dir / "ca.pem"
    old = connect(gw.port, ca)
    try:
        assert serial_of(old) == 1 and request(old) == b"HTTP/1.1 200 OK"
        issuer.issue("server", 2)
        wait_for(lambda: new_serial(gw.port, ca) == 2, "the new certificate")
        assert "listener main: certificates reloaded" in gw.log_text
        # the connection made before the reload still works, on its old session
        assert request(old) == b"HTTP/1.1 200 OK" and serial_of(old) == 1
    finally:
        old.close()


def test_a_bad_new_file_is_logged_and_the_old_certificate_stays(
        issuer: Issuer, gw: RunningGateway) -> None:
    ca = issuer.dir / "ca.pem"
    (issuer.dir / "server.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nbroken\n")
    wait_for(lambda: "were not loaded" in gw.log_text, "the error line")
    assert "listeners[0].tls.key" in gw.log_text
    assert new_serial(gw.port, ca) == 1
    issuer.issue("server", 3)  # the fixed files are picked up on the next change
    wait_for(lambda: new_serial(gw.port, ca) == 3, "the fixed certificate")


def _in_process(directory: Path, **tls: Any) -> Gateway:
    path = write_config(directory, {
        "listeners": [{"name": "main", "endpoint": "tcp:0:interface=127.0.0.1",
                       "tls": {"certificate": "server.pem", "key": "server.key", **tls}}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "tls"]}, "access_log": False,
    }, {"api.yaml": API})
    return Gateway(load_config(path), reactor=Clock())


def test_reload_certificates_swaps_all_or_raises_and_keeps_the_old(issuer: Issuer) -> None:
    gateway = _in_process(issuer.dir)
    listener = gateway.config.listeners[0]
    twistgw_tls.wrap_listener(listener, None, object(), gateway.reactor)  # as when bound
    tls = twistgw_tls._prepared[id(listener)].tls
    assert tls is not None and tls.current.default.leaf.serial_number == 1
    (issuer.dir / "server.key").write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    before = tls.current
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.tls\.key.*does not match"):
        twistgw_tls.reload_certificates()
    assert tls.current is before
    issuer.issue("server", 5)
    assert "main" in twistgw_tls.reload_certificates()
    assert tls.current.default.leaf.serial_number == 5


def _capture() -> tuple[list[tuple[LogLevel, str]], Any]:
    seen: list[tuple[LogLevel, str]] = []

    def observer(event: dict[str, Any]) -> None:
        if "certificate in" in event.get("log_format", ""):
            seen.append((event["log_level"], formatEvent(event)))

    globalLogPublisher.addObserver(observer)
    return seen, observer


def test_expiry_is_warned_at_startup_and_daily_and_expired_is_an_error(
        issuer: Issuer) -> None:
    issuer.issue("server", 9, days=10)
    seen, observer = _capture()
    try:
        gateway = _in_process(issuer.dir)
        assert [lvl for lvl, _ in seen] == [LogLevel.warn]
        assert "server.pem" in seen[0][1] and "expires on" in seen[0][1]
        twistgw_tls.startup(gateway=gateway)
        clock: Clock = gateway.reactor
        clock.advance(86400)
        assert [lvl for lvl, _ in seen] == [LogLevel.warn] * 2
        issuer.issue("server", 10, days=-1)
        tls = twistgw_tls._prepared[id(gateway.config.listeners[0])].tls
        assert tls is not None
        seen.clear()
        tls.reload()
        clock.advance(86400)
        assert [lvl for lvl, _ in seen] == [LogLevel.error] * 2  # at reload, then daily
        assert "EXPIRED" in seen[-1][1] and "server.pem" in seen[-1][1]
        twistgw_tls.shutdown(gateway=gateway)
        assert not clock.getDelayedCalls()
    finally:
        globalLogPublisher.removeObserver(observer)


def test_truststore_cas_expiring_or_expired_are_logged(issuer: Issuer) -> None:
    soon_key, old_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    soon = make_cert("Soon CA", soon_key, ca=True, not_after=NOW + 5 * DAY)
    gone = make_cert("Gone CA", old_key, ca=True, not_before=NOW - 400 * DAY,
                     not_after=NOW - DAY)
    (issuer.dir / "clients.pem").write_bytes(pem(issuer.cert) + pem(soon) + pem(gone))
    seen: list[tuple[LogLevel, str]] = []

    def observer(event: dict[str, Any]) -> None:
        if "CA certificate" in event.get("log_format", ""):
            seen.append((event["log_level"], formatEvent(event)))

    globalLogPublisher.addObserver(observer)
    try:
        _in_process(issuer.dir, client_ca="clients.pem")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert [lvl for lvl, _ in seen] == [LogLevel.warn, LogLevel.error]
    assert "listeners[0].tls.client_ca" in seen[0][1] and "Soon CA" in seen[0][1]
    assert "clients.pem" in seen[1][1] and "Gone CA" in seen[1][1] and "EXPIRED" in seen[1][1]


@pytest.mark.parametrize(("value", "words"), [
    ({"watch_interval": -1}, "watch_interval"), ({"expiry_warning_days": "x"}, "expiry"),
    ({"poll": 1}, "plugins.settings.tls.poll"),
])
def test_tls_settings_are_checked(issuer: Issuer, value: dict[str, Any], words: str) -> None:
    path = write_config(issuer.dir, {
        "listeners": [{"name": "main", "endpoint": "tcp:0"}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "tls"], "settings": {"tls": value}},
    }, {"api.yaml": API})
    with pytest.raises(ConfigError, match=words):
        Gateway(load_config(path))


# -- PRIVATE APIs ---------------------------------------------------------------------------


def _private_config(directory: Path, listener: dict[str, Any], *,
                    plugins: list[str] | None = None, **top: Any) -> Path:
    return write_config(directory, {
        "listeners": [{"name": "public", "endpoint": "tcp:0"},
                      {"name": "inside", "endpoint": "tcp:0:interface=127.0.0.1", **listener}],
        "apis": [{"id": "priv", "type": "REST", "definition": "api.yaml",
                  "endpoint_type": "PRIVATE", "stages": [{"name": "prod"}],
                  "listeners": ["inside"]},
                 {"id": "pub", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": plugins or ["mock", "tls"]}, **top,
    }, {"api.yaml": API})


@pytest.mark.parametrize("listener", [{"allow_sources": ["127.0.0.0/8"]}, {"private": True}])
def test_private_api_on_a_private_listener_loads(tmp_path: Path,
                                                 listener: dict[str, Any]) -> None:
    gateway = Gateway(load_config(_private_config(tmp_path, listener)))
    assert set(gateway.deployment.listeners["inside"].apis) == {"priv", "pub"}
    assert set(gateway.deployment.listeners["public"].apis) == {"pub"}


def test_private_api_on_a_public_listener_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        Gateway(load_config(_private_config(tmp_path, {"private": False})))
    assert "apis[0].listeners" in str(e.value) and "PRIVATE API 'priv'" in str(e.value)


def test_private_api_served_by_default_on_every_listener_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0"}],
        "apis": [{"id": "priv", "definition": "api.yaml", "endpoint_type": "PRIVATE",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "tls"]}}, {"api.yaml": API})
    with pytest.raises(ConfigError, match="listener 'public', which is public"):
        Gateway(load_config(path))


def test_domain_mapping_a_private_api_onto_a_public_listener_is_refused(
        tmp_path: Path) -> None:
    path = _private_config(tmp_path, {"private": True}, domains=[
        {"name": "api.example.com", "mappings": [{"api": "priv", "stage": "prod"}]}])
    with pytest.raises(ConfigError, match=r"domains\[0\]\.mappings\[0\]\.api"):
        Gateway(load_config(path))


def test_private_api_without_the_tls_plugin_is_refused(tmp_path: Path) -> None:
    path = _private_config(tmp_path, {}, plugins=["mock"])
    with pytest.raises(ConfigError, match=r"apis\[0\]\.endpoint_type.*private_apis"):
        Gateway(load_config(path))


def test_private_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"listeners\[1\]\.private"):
        Gateway(load_config(_private_config(tmp_path, {"private": "yes"})))


def test_certificate_expiry_is_a_gauge_on_the_admin_metrics(issuer: Issuer) -> None:
    import twistgw_admin
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    issuer.issue("api", 21)
    path = write_config(issuer.dir, {
        "listeners": [{"name": "main", "endpoint": "tcp:0", "tls": {
                           "certificate": "server.pem", "key": "server.key",
                           "sni": {"api.example.com": {"certificate": "api.pem",
                                                       "key": "api.key"}}}},
                      {"name": "ops", "endpoint": "tcp:0", "admin": True}],
        "apis": [{"id": "a", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        "plugins": {"enabled": ["mock", "tls", "admin"]}, "access_log": False,
    }, {"api.yaml": API})
    gateway = Gateway(load_config(path), reactor=Clock())
    text = generate_latest(twistgw_admin.metrics_for(gateway).metrics.registry).decode()
    got = {tuple(sorted(s.labels.items())): s.value
           for family in text_string_to_metric_families(text) for s in family.samples
           if s.name == "twistgw_tls_certificate_not_after_seconds"}
    expected = {}
    for name, stem in (("", "server"), ("api.example.com", "api")):
        cert = x509.load_pem_x509_certificate((issuer.dir / f"{stem}.pem").read_bytes())
        expected[(("listener", "main"), ("server_name", name))] = (
            cert.not_valid_after_utc.timestamp())
    assert got == expected
