"""SIGHUP re-reads TLS certificates through the TLS plugin's ``prepare_reload`` (issue 8).

File polling is off here (``watch_interval: 0``), so only the reload can change what new
connections are served; a bad key rejects the whole reload and the old certificate stays.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_tls_reload import Issuer, connect, new_serial, request, serial_of, serve_tls, wait_for

from twistgw.testing import RunningGateway


@pytest.fixture
def gw(issuer: Issuer) -> Iterator[RunningGateway]:
    with serve_tls(issuer, 0) as running:  # no watcher: only SIGHUP can reload
        yield running


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    issuer = Issuer(tmp_path)
    issuer.issue("server", 1)
    return issuer


def _sighup(gw: RunningGateway, number: int) -> str:
    assert gw.process is not None
    os.kill(gw.process.pid, signal.SIGHUP)
    wait_for(lambda: f"reload {number} applied" in gw.log_text
             or f"reload {number} rejected" in gw.log_text, f"reload {number}")
    return gw.log_text


def test_sighup_serves_new_certificates_to_new_connections(issuer: Issuer,
                                                           gw: RunningGateway) -> None:
    ca = issuer.dir / "ca.pem"
    old = connect(gw.port, ca)
    try:
        assert serial_of(old) == 1 and request(old) == b"HTTP/1.1 200 OK"
        issuer.issue("server", 2)
        assert new_serial(gw.port, ca) == 1  # no polling: nothing changes by itself
        assert "reload 1 applied" in _sighup(gw, 1)
        assert new_serial(gw.port, ca) == 2
        # the connection made before the reload keeps its session and its keep-alive
        assert request(old) == b"HTTP/1.1 200 OK" and serial_of(old) == 1

        (issuer.dir / "server.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nbroken\n")
        log = _sighup(gw, 2)
        assert "reload 2 rejected, still serving the previous config" in log
        assert "listeners[0].tls.key" in log
        assert new_serial(gw.port, ca) == 2
    finally:
        old.close()
