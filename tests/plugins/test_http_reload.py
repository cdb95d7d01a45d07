"""A reload (SIGHUP) keeps the http plugin's backend pools when its settings are unchanged.

The real ``twistd -n apigw`` in front of the echo backend of test_http_proxy (which
records each request's peer port): the connection the gateway pooled before the reload
carries the first request after it; after a reload that changes ``plugins.settings.http``
the gateway opens a new one.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from test_http_proxy import Backend, backend, call, echoed, proxy

from twistgw.testing import RunningGateway, write_config

__all__ = ["backend"]  # the echo backend fixture, imported for the test below

CLIENTS = ["fast", "agent"]


def _config(folder: Path, backend: Backend, client: str, connect_timeout: float) -> Path:
    doc = {"openapi": "3.0.1", "info": {"title": "reload", "version": "1"},
           "paths": {"/echo": {"get": proxy(f"http://127.0.0.1:{backend.port}/echo/r")}}}
    return write_config(folder, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "reload", "type": "REST", "definition": "api.yaml",
                  "stages": [{"name": "prod"}]}],
        # Idle pooled connections live long enough for a slow machine's reload.
        "plugins": {"enabled": ["mock", "mapping", "http"],
                    "settings": {"http": {"client": client, "idle_timeout": 120,
                                          "connect_timeout": connect_timeout}}},
        "access_log": False,
    }, {"api.yaml": doc})


def _peer_port(gw: RunningGateway) -> int:
    status, _h, body = call(gw, "GET", "/prod/echo")
    assert status == 200, body
    port: Any = echoed(body)["peer_port"]
    return int(port)


def _sighup(gw: RunningGateway, number: int) -> None:
    assert gw.process is not None
    os.kill(gw.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while f"reload {number} applied" not in gw.log_text:
        assert f"reload {number} rejected" not in gw.log_text, gw.log_text
        assert time.monotonic() < deadline, gw.log_text
        time.sleep(0.05)


@pytest.mark.parametrize("client", CLIENTS)
def test_prepare_reload_keeps_pooled_backend_connections(
        backend: Backend, tmp_path: Path, client: str) -> None:
    config = _config(tmp_path, backend, client, 5)
    with RunningGateway(config, timeout=60) as gw:
        first = _peer_port(gw)
        assert _peer_port(gw) == first  # pooled
        _sighup(gw, 1)  # the same settings: the pool carries over
        assert _peer_port(gw) == first
        _config(tmp_path, backend, client, 6)
        _sighup(gw, 2)  # changed settings: a new client, so a new connection
        second = _peer_port(gw)
        assert second != first
        assert _peer_port(gw) == second
