"""WebSocket over a TLS listener (``wss://``): the upgrade hands the TLS connection over."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.config import Config
from test_tls import Pki
from test_websocket import AKID, SECRET, connection_id, gateway_config, recv_json
from websockets.sync.client import connect

from twistgw.testing import RunningGateway


def test_wss_echo_and_push_over_tls(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    path = gateway_config(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["listeners"][0]["tls"] = {"certificate": pki.path("rsa.pem"), "key": pki.path("rsa.key")}
    doc["plugins"]["enabled"].append("tls")
    path.write_text(yaml.safe_dump(doc))
    context = ssl.create_default_context(cafile=pki.path("ca.pem"))
    with RunningGateway(path, timeout=30) as gw:
        base = gw.base_urls[0]
        assert base.startswith("https://")
        port = base.rsplit(":", 1)[1]
        with connect(f"wss://localhost:{port}/prod", ssl=context) as ws:
            ws.send(json.dumps({"action": "echo", "data": "secret"}))
            assert recv_json(ws)["echo"] == "secret"
            cid = connection_id(ws)
            client = boto3.client(
                "apigatewaymanagementapi", endpoint_url=f"https://localhost:{port}/prod",
                region_name="us-east-1", aws_access_key_id=AKID,
                aws_secret_access_key=SECRET, verify=pki.path("ca.pem"),
                config=Config(retries={"max_attempts": 1}))
            client.post_to_connection(ConnectionId=cid, Data=b"over tls")
            assert ws.recv(timeout=10) == "over tls"
            with pytest.raises(client.exceptions.GoneException):
                client.get_connection(ConnectionId=cid + "x")
