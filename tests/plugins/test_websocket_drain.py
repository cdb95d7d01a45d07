"""WebSocket clients across SIGHUP and SIGTERM (issue 8).

A reload keeps open connections and their ``@connections`` address.  On SIGTERM the
drain does not wait for them (they are not HTTP requests in flight); the websocket
plugin's ``shutdown`` hook closes them with 1001 and the daemon exits 0 without waiting
out ``shutdown_grace``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import yaml
from test_websocket import (
    closed_code,
    connection_id,
    gateway_config,
    management,
    recv_json,
    ws_url,
)
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


def test_a_reload_keeps_open_connections_reachable(tmp_path: Path) -> None:
    path = gateway_config(tmp_path, backend="http://127.0.0.1:9")
    with RunningGateway(path, timeout=30) as gw:
        assert gw.process is not None
        with connect(ws_url(gw), open_timeout=10) as ws:
            cid = connection_id(ws)
            os.kill(gw.process.pid, signal.SIGHUP)
            deadline = time.monotonic() + 30
            while "reload 1 applied" not in gw.log_text:
                assert "reload 1 rejected" not in gw.log_text, gw.log_text
                assert time.monotonic() < deadline, gw.log_text
                time.sleep(0.05)
            # pushed through the new deployment to a connection of the old one
            management(gw).post_to_connection(ConnectionId=cid, Data=b'{"pushed": 1}')
            assert recv_json(ws) == {"pushed": 1}
            ws.send('{"action": "echo", "data": "still here"}')
            assert recv_json(ws)["connectionId"] == cid
