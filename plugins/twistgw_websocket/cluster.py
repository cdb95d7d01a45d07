"""Several gateways, one set of connections: the registry and relay in Redis.

Each gateway process is a node with an id (``node_id``, random by default).  A connection
is registered as the hash ``<prefix>conn:<id>`` (node, connectedAt, sourceIp, userAgent,
lastActiveAt), expiring a minute after the maximum connection lifetime, so the entries of
a node that died go away by themselves.  A node subscribes to ``<prefix>node:<node>``;
an ``@connections`` POST or DELETE that reaches another node looks the connection up and
``PUBLISH``es the operation to its node's channel.  No entry, or no subscriber on that
channel (the node is gone), is AWS's 410 GoneException.

Commands go through the access plugin's pipelined RESP client
(:class:`twistgw_access.redis_store.RespClient`: bounded pending commands, timeouts,
reconnects); the subscription uses its own connection (a subscribed Redis connection
accepts no other commands), parsed with the same RESP reader.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from twisted.internet import protocol
from twisted.internet.defer import TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twistgw_access.redis_store import (
    IncompleteReply,
    RedisError,
    RespClient,
    encode,
    parse_reply,
    parse_url,
)

from .connection import Throttled

if TYPE_CHECKING:
    from .connection import Connection, Hub
    from .settings import RedisConfig

__all__ = ["Cluster", "ClusterUnavailable"]

log = Logger()

#: Seconds between two lastActiveAt writes of one connection.
_TOUCH_EVERY = 10.0
#: Seconds between two warnings about Redis failures.
_LOG_EVERY = 60.0
#: Connections registered again per reactor turn after Redis comes back.
_BATCH = 200
#: Bytes a subscriber buffers for one incomplete reply before dropping the connection.
_MAX_BUFFER = 8 * 1024 * 1024


class ClusterUnavailable(Exception):
    """Redis could not answer where a connection lives (the call answers 500)."""


class _Subscriber(protocol.Protocol):
    """A Redis connection in subscribe mode: ``message`` pushes go to the hub."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.buffer = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        client = self.cluster.client
        setup: list[bytes] = []
        if client.password is not None:
            setup.append(encode(["AUTH", client.password] if client.user is None else
                                ["AUTH", client.user, client.password]))
        setup.append(encode(["SUBSCRIBE", self.cluster.channel]))
        self.transport.write(b"".join(setup))
        self.cluster.subscribed(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        pos = 0
        while True:
            try:
                value, pos = parse_reply(self.buffer, pos)
            except IncompleteReply:
                break
            except ValueError:
                assert self.transport is not None
                self.transport.loseConnection()
                return
            if isinstance(value, list) and len(value) == 3 and value[0] == b"message":
                self.cluster.received(value[2])
        self.buffer = self.buffer[pos:]
        if len(self.buffer) > _MAX_BUFFER:
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.cluster.unsubscribed(self)


class _SubscriberFactory(protocol.ReconnectingClientFactory):
    maxDelay = 2
    initialDelay = 0.05

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def buildProtocol(self, addr: Any) -> _Subscriber:
        self.resetDelay()
        return _Subscriber(self.cluster)


class Cluster:
    """This node's membership: registering connections and relaying operations."""

    def __init__(self, hub: Hub, config: RedisConfig) -> None:
        self.hub = hub
        self.config = config
        self.node = hub.settings.node_id
        self.prefix = config.prefix
        self.channel = f"{self.prefix}node:{self.node}"
        self.ttl = int(hub.settings.max_lifetime) + 60
        self.client = RespClient(hub.reactor, config.url, timeout=config.timeout_ms / 1000,
                                 max_pending=config.max_pending,
                                 on_connect=self._connected)
        self.factory = _SubscriberFactory(self)
        self.subscriber: _Subscriber | None = None
        self._touched: dict[str, float] = {}
        self._connector: Any = None
        self._connections_made = 0
        self._log_failure = Throttled(hub.reactor, _LOG_EVERY)
        self._reregistering: Any = None
        self._stale = False

    def start(self) -> None:
        self.client.start()
        host, port, _password, _db, _user = parse_url(self.config.url)
        self._connector = self.hub.reactor.connectTCP(host, port, self.factory)

    def stop(self) -> None:
        if self._reregistering is not None and self._reregistering.active():
            self._reregistering.cancel()
        self.factory.stopTrying()
        if self._connector is not None:
            self._connector.disconnect()
        self.client.stop()

    def subscribed(self, sub: _Subscriber) -> None:
        self.subscriber = sub
        self._register_again_when_ready()

    def unsubscribed(self, sub: _Subscriber) -> None:
        if self.subscriber is sub:
            self.subscriber = None
            # Meanwhile a relay finds nobody listening, answers 410 and drops the entry.
            self._stale = True

    @property
    def ready(self) -> bool:
        """Connected for commands and subscribed for relayed operations."""
        return self.client.proto is not None and self.subscriber is not None

    def _key(self, connection_id: str) -> str:
        return f"{self.prefix}conn:{connection_id}"

    def _failed(self, error: str) -> None:
        """Log a Redis failure at most once a minute, with how many there were."""
        self._log_failure(lambda skipped: log.warn(
            "websocket registry: {count} Redis command(s) failed, last: {error}",
            count=skipped + 1, error=error))

    def _run(self, command: str, *args: str | bytes | int | float) -> None:
        def failed(failure: Failure) -> None:
            self._failed(f"{command}: {failure.getErrorMessage()}")

        self.client.execute(command, *args).addErrback(failed)

    def _connected(self) -> None:
        self._connections_made += 1
        if self._connections_made > 1:
            self._stale = True  # writes failed while it was away; a restart lost all
        self._register_again_when_ready()

    def _register_again_when_ready(self) -> None:
        """Once commands and the subscription both work again, write every open
        connection again, a batch at a time (commands in flight are bounded): only then
        can other nodes both find and reach them."""
        if not self._stale or self.client.proto is None or self.subscriber is None \
                or self._reregistering is not None:
            return
        self._stale = False
        log.info("websocket registry: Redis reachable again; registering {count} "
                 "connection(s)", count=len(self.hub.connections))
        self._reregister(list(self.hub.connections))

    def _reregister(self, ids: list[str]) -> None:
        self._reregistering = None
        batch, rest = ids[:_BATCH], ids[_BATCH:]
        for connection_id in batch:
            conn = self.hub.connections.get(connection_id)
            if conn is not None:
                self.register(conn)
        if rest:
            self._reregistering = self.hub.reactor.callLater(0.05, self._reregister, rest)

    def register(self, conn: Connection) -> None:
        key = self._key(conn.id)
        self._run("HSET", key, "node", self.node, "api", conn.api_id, "stage", conn.stage,
                  "connectedAt", conn.connected_at_ms,
                  "lastActiveAt", conn.last_active_ms, "sourceIp", conn.identity["sourceIp"],
                  "userAgent", conn.identity["userAgent"])
        self._run("EXPIRE", key, self.ttl)

    def unregister(self, conn: Connection) -> None:
        self._touched.pop(conn.id, None)
        self._run("DEL", self._key(conn.id))

    def touched(self, conn: Connection) -> None:
        now = float(self.hub.reactor.seconds())
        last = self._touched.get(conn.id)
        if last is not None and now - last < _TOUCH_EVERY:
            return
        self._touched[conn.id] = now
        self._run("HSET", self._key(conn.id), "lastActiveAt", conn.last_active_ms)

    async def _lookup(self, connection_id: str, where: tuple[str, str]
                      ) -> dict[bytes, bytes] | None:
        """The connection's entry, if it exists and belongs to ``where`` (api, stage)."""
        try:
            raw = await self.client.execute("HGETALL", self._key(connection_id))
        except (RedisError, TimeoutError) as e:
            self._failed(f"{type(e).__name__}: {e}")
            raise ClusterUnavailable(str(e)) from None
        if not isinstance(raw, list) or not raw:
            return None
        found = {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}
        if (found.get(b"api", b"").decode(), found.get(b"stage", b"").decode()) != where:
            return None
        return found

    async def info(self, connection_id: str, where: tuple[str, str]
                   ) -> dict[str, Any] | None:
        from .connection import iso_time

        found = await self._lookup(connection_id, where)
        if found is None:
            return None
        return {"connectedAt": iso_time(int(found.get(b"connectedAt", b"0"))),
                "identity": {"sourceIp": found.get(b"sourceIp", b"").decode(),
                             "userAgent": found.get(b"userAgent", b"").decode()},
                "lastActiveAt": iso_time(int(found.get(b"lastActiveAt", b"0")))}

    async def relay(self, connection_id: str, op: str, data: bytes,
                    where: tuple[str, str]) -> str:
        """Send ``op`` to the node holding the connection: ``"ok"`` or ``"gone"``."""
        found = await self._lookup(connection_id, where)
        if found is None:
            return "gone"
        node = found.get(b"node", b"").decode()
        if node == self.node:
            return "gone"  # registered here but not open here: a stale entry
        message = json.dumps({"op": op, "id": connection_id,
                              "data": base64.b64encode(data).decode("ascii")})
        try:
            receivers = await self.client.execute("PUBLISH", f"{self.prefix}node:{node}",
                                                  message)
        except (RedisError, TimeoutError) as e:
            self._failed(f"{type(e).__name__}: {e}")
            raise ClusterUnavailable(str(e)) from None
        if receivers == 0:
            # The stale entry is gone before the caller's 410 leaves, so a client that
            # saw GoneException never finds the connection again (GET, a second POST).
            try:
                await self.client.execute("DEL", self._key(connection_id))
            except (RedisError, TimeoutError) as e:
                self._failed(f"DEL: {type(e).__name__}: {e}")
            return "gone"
        return "ok"

    def received(self, raw: bytes) -> None:
        try:
            doc = json.loads(raw)
            op, connection_id = str(doc["op"]), str(doc["id"])
            data = base64.b64decode(doc.get("data", ""))
        except (ValueError, KeyError, TypeError):
            log.warn("ignoring a malformed relayed operation")
            return
        self.hub.deliver(op, connection_id, data)
