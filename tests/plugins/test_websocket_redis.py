"""Two gateways, one Redis: @connections reaches a connection wherever it lives (issue #9).

A real ``redis-server`` (started by the fixture of test_access_redis) and two real twistd
gateways with the same WebSocket API: the client connects to one, the backend calls the
management API on the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_access_redis import RedisServer, redis, wait_for  # noqa: F401 (fixture)
from test_websocket import (
    closed_code,
    connection_id,
    events,
    gateway_config,
    management,
    recv_json,
    ws_url,
)
from websockets.sync.client import connect

from twistgw.testing import RunningGateway


def test_push_through_another_gateway(redis: RedisServer,  # noqa: F811 (fixture)
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    configs = _two_nodes(tmp_path_factory, redis, "node", timeout_ms=2000)
    with RunningGateway(configs[0]) as one, RunningGateway(configs[1]) as two:
        other = management(two)
        with connect(ws_url(one)) as ws:
            cid = connection_id(ws)
            # Registration is asynchronous: wait until the other node can see it.
            assert wait_for(lambda: _known(other, cid))
            other.post_to_connection(ConnectionId=cid, Data=b'{"from": "node-1"}')
            assert recv_json(ws) == {"from": "node-1"}
            info = other.get_connection(ConnectionId=cid)
            assert info["Identity"]["SourceIp"] == "127.0.0.1"
            keys = redis.command("KEYS", "twistgw:ws:conn:*")
            assert cid.encode() in keys
            # Another stage's callback URL does not reach it, through Redis either.
            with pytest.raises(other.exceptions.GoneException):
                management(two, stage="dev").post_to_connection(ConnectionId=cid,
                                                                Data=b"wrong stage")
            other.delete_connection(ConnectionId=cid)
            assert closed_code(ws) == 1000
        (dis,) = events(configs[0].parent / "events", "disconnect", cid)
        assert dis["requestContext"]["disconnectStatusCode"] == 1000
        assert wait_for(lambda: not _known(other, cid))
        with pytest.raises(other.exceptions.GoneException):
            other.post_to_connection(ConnectionId=cid, Data=b"late")


def test_connection_of_a_dead_gateway_is_gone(redis: RedisServer,  # noqa: F811
                                              tmp_path_factory: pytest.TempPathFactory
                                              ) -> None:
    configs = _two_nodes(tmp_path_factory, redis, "dead", timeout_ms=2000)
    with RunningGateway(configs[1]) as two:
        other = management(two)
        one = RunningGateway(configs[0]).start()
        try:
            with connect(ws_url(one), close_timeout=1) as ws:
                cid = connection_id(ws)
                assert wait_for(lambda: _known(other, cid))
                assert one.process is not None
                one.process.kill()  # no shutdown hook: its Redis entry stays behind
                one.process.wait()
        finally:
            one.stop()
        # The entry is still there, but nobody listens on the dead node's channel.
        assert redis.command("EXISTS", f"twistgw:ws:conn:{cid}") == b":1\r\n"
        with pytest.raises(other.exceptions.GoneException):
            other.post_to_connection(ConnectionId=cid, Data=b"to nobody")
        assert redis.command("EXISTS", f"twistgw:ws:conn:{cid}") == b":0\r\n"


def _two_nodes(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer,  # noqa: F811
               name: str, *, timeout_ms: int) -> list[Path]:
    """Configs of two gateways (node ids ``NAME-0`` and ``NAME-1``) sharing ``redis``."""
    return [gateway_config(tmp_path_factory.mktemp(f"{name}{i}"), settings={
        "node_id": f"{name}-{i}", "redis": {"url": redis.url, "timeout_ms": timeout_ms}})
        for i in range(2)]


def _known(client: Any, cid: str) -> bool:
    try:
        client.get_connection(ConnectionId=cid)
    except client.exceptions.GoneException:
        return False
    return True


def test_connections_are_registered_again_after_redis_restarts(
        redis: RedisServer,  # noqa: F811 (fixture)
        tmp_path_factory: pytest.TempPathFactory) -> None:
    configs = _two_nodes(tmp_path_factory, redis, "flap", timeout_ms=500)
    with RunningGateway(configs[0]) as one, RunningGateway(configs[1]) as two:
        other = management(two)
        with connect(ws_url(one)) as ws:
            cid = connection_id(ws)
            assert wait_for(lambda: _known(other, cid))
            redis.stop()  # no persistence: the registry is gone with it
            with pytest.raises(other.exceptions.ClientError) as info:
                other.post_to_connection(ConnectionId=cid, Data=b"nowhere")
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
            redis.start()
            # Both nodes reconnect; the holder writes its connections again.  Until a
            # node is back on Redis it answers 500 (bounded waits, generous for a busy box).
            assert wait_for(lambda: _reconnected(other, _known, cid), timeout=60)
            assert wait_for(lambda: _reconnected(other, _pushed, cid), timeout=60)
            assert recv_json(ws) == {"again": True}
        assert "Redis reachable again; registering 1 connection(s)" in one.log_text


def _reconnected(client: Any, probe: Any, cid: str) -> bool:
    """``probe(client, cid)``, a 500 (the node still away from Redis) counting as False."""
    try:
        return bool(probe(client, cid))
    except client.exceptions.ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 500:
            return False
        raise


def _pushed(client: Any, cid: str) -> bool:
    """Push once the other node's subscription is back (a push nobody hears is 410)."""
    try:
        client.post_to_connection(ConnectionId=cid, Data=b'{"again": true}')
    except client.exceptions.GoneException:
        return False
    return True
