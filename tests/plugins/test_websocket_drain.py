"""SIGTERM with WebSocket clients connected (issue 8): the drain does not wait for them
(they are not HTTP requests in flight); the websocket plugin's ``shutdown`` hook closes
them with 1001 and the daemon exits 0 without waiting out ``shutdown_grace``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import yaml
from test_websocket import closed_code, connection_id, gateway_config, ws_url
from websockets.sync.client import connect

from twistgw.testing import RunningGateway


def test_sigterm_closes_websockets_with_1001_and_exits_0(tmp_path: Path) -> None:
    path = gateway_config(tmp_path, backend="http://127.0.0.1:9")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["shutdown_grace"] = 600  # waiting it out would fail the test's bound below
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with RunningGateway(path, timeout=30) as gw:
        assert gw.process is not None
        with connect(ws_url(gw), open_timeout=10) as ws:
            assert connection_id(ws)
            os.kill(gw.process.pid, signal.SIGTERM)
            assert closed_code(ws, wait=30) == 1001
        deadline = time.monotonic() + 60
        while gw.process.poll() is None:
            assert time.monotonic() < deadline, "the gateway waited for the WebSocket"
            time.sleep(0.05)
        assert gw.process.returncode == 0
