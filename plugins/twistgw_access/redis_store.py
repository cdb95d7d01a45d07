"""A Redis :class:`~.store.AccessStore`: buckets and quotas shared by gateway processes.

All of one request's steps (its buckets and its quota, :meth:`RedisStore.run`) are one
Lua script run atomically by Redis (``EVALSHA``, falling back to ``EVAL`` when the server
answers ``NOSCRIPT``): one round trip per request, and concurrent gateways never lose a
count.
Token buckets read the time from the Redis server (``TIME`` inside the script), so gateways
whose clocks disagree still refill one bucket consistently; quota periods are computed by
the plugin from :meth:`RedisStore.seconds`, the local clock corrected by the offset to the
server's ``TIME`` measured on each connection.

Keys are ``<prefix>b:<bucket>`` (a hash: tokens and last refill),
``<prefix>q:<counter>:<period start>`` (an integer) and ``<prefix>c:<key>`` (a cached
value, Lambda authorizer results: :meth:`RedisStore.cache_get`).  A bucket key expires
once it would have refilled completely (so the expiry loses nothing); a quota key expires
at the end of its period; a cached value when its TTL ends.

The client is a small RESP2 client over one Twisted TCP connection: commands are
pipelined, at most ``max_pending`` wait for a reply (more fail at once), each has a
timeout, and the connection is re-established with backoff after it drops.  A failure
(unreachable, timeout, too many pending, an error reply) follows ``failure``: ``open``
allows the request, ``closed`` raises :class:`StoreUnavailable`, which the plugin answers
with THROTTLED.  Either way it is logged at most once a minute, and the return of Redis is
logged once.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
from twisted.internet import protocol
from twisted.internet.defer import Deferred, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure

from .store import Bucket, Counter, Outcome, QuotaCount

__all__ = ["RedisSettings", "RedisStore", "RespClient", "RedisError", "StoreUnavailable",
           "parse_url", "encode", "parse_reply", "IncompleteReply"]

log = Logger(namespace="twistgw_access")

_LOG_EVERY = 60.0


class StoreUnavailable(Exception):
    """The shared store could not answer and the policy is fail-closed."""


class RedisError(Exception):
    """Redis answered an error reply (``-ERR ...``) or the connection failed."""


@attrs.frozen
class RedisSettings:
    """``plugins.settings.access.store`` for Redis (see docs/config.rst)."""

    url: str
    failure: str = "open"
    timeout_ms: int = 50
    prefix: str = "twistgw:access:"
    max_pending: int = 1000


def parse_url(url: str) -> tuple[str, int, str | None, int, str | None]:
    """``redis://[[user]:password@]host[:port][/db]`` → ``(host, port, password, db, user)``.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError("expected redis://host:port/db")
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"database {db_text!r} is not a number")
    password = unquote(parts.password) if parts.password else None
    user = unquote(parts.username) if parts.username else None
    return parts.hostname, parts.port or 6379, password, int(db_text), user


# -- RESP2 ----------------------------------------------------------------------------------


def encode(args: Sequence[str | bytes | int | float]) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Incomplete(Exception):
    pass


def parse_reply(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP reply from ``buf`` at ``pos``: ``(value, next pos)``; error replies are
    :class:`RedisError` values.  Raises ``ValueError`` on a malformed reply and
    :class:`IncompleteReply` when ``buf`` ends before the reply does (read more first).
    For other RESP consumers (the websocket plugin's pub/sub subscriber)."""
    return _parse(buf, pos)


IncompleteReply = _Incomplete


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP reply from ``buf`` at ``pos``: ``(value, next pos)``; errors are values."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos:pos + 1], buf[pos + 1:end]
    pos = end + 2
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return RedisError(line.decode(errors="replace")), pos
    if kind == b":":
        return int(line), pos
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return buf[pos:pos + size], pos + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    raise ValueError(f"bad RESP reply type {kind!r}")


class _RespProtocol(protocol.Protocol):
    def __init__(self, client: RespClient) -> None:
        self.client = client
        self.buffer = b""
        self.waiting: deque[Deferred[Any] | None] = deque()

    def connectionMade(self) -> None:
        # Small pipelined commands must not wait for the previous one's ACK (Nagle).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.client._connected(self)

    def send(self, args: Sequence[str | bytes | int | float]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append(d)
        assert self.transport is not None
        self.transport.write(encode(args))
        return d

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        pos = 0
        while True:
            try:
                value, pos = _parse(self.buffer, pos)
            except _Incomplete:
                break
            except ValueError:
                assert self.transport is not None
                self.transport.loseConnection()
                break
            d = self.waiting.popleft() if self.waiting else None
            if d is not None and not d.called:
                if isinstance(value, RedisError):
                    d.errback(value)
                else:
                    d.callback(value)
        self.buffer = self.buffer[pos:]

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        waiting, self.waiting = self.waiting, deque()
        for d in waiting:
            if d is not None and not d.called:
                d.errback(RedisError("connection lost"))
        self.client._lost(self)


class RespClient:
    """A pipelined RESP2 client on one TCP connection, reconnecting with backoff.

    :meth:`execute` fails at once (:class:`RedisError`) while disconnected or when
    ``max_pending`` commands already wait; a command without a reply within ``timeout``
    seconds fails with :class:`~twisted.internet.defer.TimeoutError` (its late reply is
    read and dropped).
    """

    def __init__(self, reactor: Any, url: str, *, timeout: float, max_pending: int,
                 on_connect: Any = None) -> None:
        self.reactor = reactor
        self.host, self.port, self.password, self.db, self.user = parse_url(url)
        self.timeout = timeout
        self.max_pending = max_pending
        self.on_connect = on_connect
        self.proto: _RespProtocol | None = None
        self.delay = 0.05
        self.stopped = False
        self._retry: Any = None
        self._connecting = False

    def start(self) -> None:
        self._connect()

    def stop(self) -> None:
        self.stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.loseConnection()

    def _connect(self) -> None:
        if self.stopped or self._connecting:
            return
        self._connecting = True
        creator = protocol.ClientCreator(self.reactor, _RespProtocol, self)
        d = creator.connectTCP(self.host, self.port, timeout=max(self.timeout * 20, 1.0))
        d.addErrback(self._failed)

    def _failed(self, _: Failure) -> None:
        self._connecting = False
        self._schedule()

    def _schedule(self) -> None:
        if self.stopped:
            return
        self._retry = self.reactor.callLater(self.delay, self._reconnect)
        self.delay = min(self.delay * 2, 2.0)

    def _reconnect(self) -> None:
        self._retry = None
        self._connect()

    def _connected(self, proto: _RespProtocol) -> None:
        self._connecting = False
        self.delay = 0.05
        if self.password is not None:
            auth = ["AUTH", self.password] if self.user is None else [
                "AUTH", self.user, self.password]
            proto.send(auth).addErrback(self._setup_failed, proto)
        if self.db:
            proto.send(["SELECT", self.db]).addErrback(self._setup_failed, proto)
        self.proto = proto
        if self.on_connect is not None:
            self.on_connect()

    def _setup_failed(self, failure: Failure, proto: _RespProtocol) -> None:
        log.error("Redis at {host}:{port} refused the connection setup: {error}",
                  host=self.host, port=self.port, error=failure.getErrorMessage())
        if proto.transport is not None:
            proto.transport.loseConnection()

    def _lost(self, proto: _RespProtocol) -> None:
        if self.proto is proto:
            self.proto = None
        self._schedule()

    def execute(self, *args: str | bytes | int | float) -> Deferred[Any]:
        proto = self.proto
        if proto is None:
            return _failed_deferred(RedisError("not connected"))
        if len(proto.waiting) >= self.max_pending:
            return _failed_deferred(RedisError(f"{self.max_pending} commands pending"))
        d = proto.send(args)
        call = self.reactor.callLater(self.timeout, _expire, d, proto)

        def done(result: Any) -> Any:
            if call.active():
                call.cancel()
            return result

        return d.addBoth(done)


def _failed_deferred(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d


def _expire(d: Deferred[Any], proto: _RespProtocol) -> None:
    if d.called:
        return
    # Keep the reply slot (the reply may still come) but stop waiting for it.
    for i, waiting in enumerate(proto.waiting):
        if waiting is d:
            proto.waiting[i] = None
            break
    d.errback(TimeoutError("Redis did not answer in time"))


# -- scripts --------------------------------------------------------------------------------

_PRELUDE = "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"

#: The one script: KEYS one per step; ARGV four per step, ``b`` rate burst idle-ms (take
#: a token: a hash of tokens and last refill, refilled by Redis's ``TIME``, expiring once
#: it would be full again; 0: never) or ``q`` limit expireat - (count the request unless
#: the counter is at its limit; the key expires at the end of its period).  The steps run
#: in order and stop at the first refusal → {refused step (1-based; 0: none), quota used
#: (-1: no quota step ran)}: one request's checks in one round trip.
RUN_STEPS = _PRELUDE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local used = -1
for i = 1, #KEYS do
  local a = 4 * i - 3
  if ARGV[a] == 'b' then
    local rate = tonumber(ARGV[a + 1])
    local burst = tonumber(ARGV[a + 2])
    local idle = tonumber(ARGV[a + 3])
    local s = redis.call('HMGET', KEYS[i], 'tokens', 'last')
    local tokens = tonumber(s[1])
    local last = tonumber(s[2])
    if tokens == nil or last == nil then
      tokens = burst
      last = now
    end
    if now > last then
      tokens = tokens + (now - last) * rate
      last = now
    end
    if tokens > burst then tokens = burst end
    local taken = 0
    if tokens >= 1 then
      tokens = tokens - 1
      taken = 1
    end
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.6f', tokens),
               'last', string.format('%.6f', last))
    if idle > 0 then
      redis.call('PEXPIRE', KEYS[i], idle)
    else
      redis.call('PERSIST', KEYS[i])
    end
    if taken == 0 then return {i, used} end
  else
    local limit = tonumber(ARGV[a + 1])
    local u = tonumber(redis.call('GET', KEYS[i]) or '0')
    if u >= limit then return {i, u} end
    u = redis.call('INCR', KEYS[i])
    if u == 1 then
      redis.call('EXPIREAT', KEYS[i], ARGV[a + 2])
    end
    used = u
  end
end
return {0, used}
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


#: The scripts' SHA-1 digests (``EVALSHA``), computed once.
_SHAS = {RUN_STEPS: _sha(RUN_STEPS)}


def _idle_ms(rate: float, burst: int) -> int:
    """A bucket key's expiry: once it would have refilled completely (0: never)."""
    return math.ceil(burst / rate * 1000) + 1000 if rate > 0 else 0


class RedisStore:
    """:class:`~.store.AccessStore` in Redis, shared by every gateway using the same URL.

    ``now`` passed to :meth:`take_token` is ignored: the script reads Redis's ``TIME``.
    """

    def __init__(self, settings: RedisSettings, reactor: Any) -> None:
        self.settings = settings
        self.reactor = reactor
        self.prefix = settings.prefix
        self.offset = 0.0
        self.healthy = True
        self._last_warning: float | None = None
        self.client = RespClient(reactor, settings.url, timeout=settings.timeout_ms / 1000,
                                 max_pending=settings.max_pending,
                                 on_connect=self._measure_offset)

    def start(self) -> None:
        self.client.start()

    def stop(self) -> None:
        self.client.stop()

    def seconds(self) -> float:
        """The local clock corrected to the Redis server's (for quota periods)."""
        return float(self.reactor.seconds()) + self.offset

    def _measure_offset(self) -> None:
        sent = float(self.reactor.seconds())

        def got(reply: Any) -> None:
            received = float(self.reactor.seconds())
            server = int(reply[0]) + int(reply[1]) / 1e6
            self.offset = server - (sent + received) / 2

        self.client.execute("TIME").addCallbacks(got, lambda _: None)

    # -- failure policy --------------------------------------------------------------------

    def _failed(self, error: BaseException, *, enforce: bool = True) -> None:
        """Log (at most once a minute), then raise when fail-closed and ``enforce``
        (cache reads and writes never refuse a request: a miss only costs a call)."""
        now = float(self.reactor.seconds())
        self.healthy = False
        if self._last_warning is None or now - self._last_warning >= _LOG_EVERY:
            self._last_warning = now
            action = ("allowing requests (failure: open)" if self.settings.failure == "open"
                      else "refusing requests with THROTTLED (failure: closed)")
            log.warn("access store Redis at {host}:{port} unavailable ({error}); {action}",
                     host=self.client.host, port=self.client.port, error=str(error) or
                     type(error).__name__, action=action)
        if enforce and self.settings.failure != "open":
            raise StoreUnavailable(str(error))

    def _ok(self) -> None:
        if not self.healthy:
            self.healthy = True
            self._last_warning = None
            log.info("access store Redis at {host}:{port} is reachable again",
                     host=self.client.host, port=self.client.port)

    async def _script(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        sha = _SHAS.get(script) or _sha(script)
        try:
            return await self.client.execute("EVALSHA", sha, len(keys), *keys, *args)
        except RedisError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.client.execute("EVAL", script, len(keys), *keys, *args)

    # -- AccessStore ---------------------------------------------------------------------

    async def run(self, steps: Sequence[Bucket | Counter], now: float) -> Outcome:
        """Every step in one ``RUN_STEPS`` script: one round trip per request."""
        keys: list[str] = []
        args: list[Any] = []
        for step in steps:
            if isinstance(step, Bucket):
                keys.append(f"{self.prefix}b:{step.name}")
                args += ["b", repr(float(step.rate)), step.burst,
                         _idle_ms(step.rate, step.burst)]
            else:
                keys.append(self._quota_key(step.name, step.period_start))
                args += ["q", step.limit, math.ceil(step.period_end) + 60, 0]
        try:
            refused, used = await self._script(RUN_STEPS, keys, args)
        except (RedisError, TimeoutError) as e:
            self._failed(e)
            return Outcome(refused=None)
        self._ok()
        index = int(refused) - 1 if refused else None
        quota = None
        if int(used) >= 0:
            quota = QuotaCount(allowed=index is None or not isinstance(steps[index], Counter),
                               used=int(used))
        return Outcome(refused=index, quota=quota)

    async def take_token(self, bucket: str, rate: float, burst: int, now: float) -> bool:
        return (await self.run([Bucket(bucket, rate, burst)], now)).refused is None

    async def count_request(self, counter: str, period_start: float, limit: int,
                            period_end: float | None = None) -> QuotaCount:
        end = period_end if period_end is not None else period_start + 32 * 86400
        outcome = await self.run([Counter(counter, period_start, end, limit)], 0.0)
        return outcome.quota or QuotaCount(allowed=True, used=0)

    async def quota_used(self, counter: str, period_start: float) -> int:
        try:
            value = await self.client.execute("GET", self._quota_key(counter, period_start))
        except (RedisError, TimeoutError) as e:
            self._failed(e)
            return 0
        self._ok()
        return int(value) if value is not None else 0

    def _quota_key(self, counter: str, period_start: float) -> str:
        return f"{self.prefix}q:{counter}:{int(period_start)}"

    # -- shared result cache (the auth plugin's Lambda authorizer results) ----------------

    async def cache_get(self, key: str) -> tuple[bytes, int] | None:
        """``(value, milliseconds left)`` of ``<prefix>c:<key>``, or ``None`` on a miss.

        ``GET`` and ``PTTL`` are pipelined (one round trip).  An unreachable Redis is a
        miss, whatever ``failure`` says: the caller then computes the value itself.
        """
        name = f"{self.prefix}c:{key}"
        value_d = self.client.execute("GET", name)
        ttl_d = self.client.execute("PTTL", name)
        try:
            value = await value_d
            ttl = await ttl_d
        except (RedisError, TimeoutError) as e:
            for d in (value_d, ttl_d):
                d.addErrback(lambda _: None)
            self._failed(e, enforce=False)
            return None
        self._ok()
        if not isinstance(value, bytes) or not isinstance(ttl, int) or ttl <= 0:
            return None
        return value, ttl

    async def cache_put(self, key: str, value: bytes, ttl_ms: int) -> None:
        """Store ``value`` under ``<prefix>c:<key>`` for ``ttl_ms`` (``SET ... PX``)."""
        try:
            await self.client.execute("SET", f"{self.prefix}c:{key}", value, "PX", ttl_ms)
        except (RedisError, TimeoutError) as e:
            self._failed(e, enforce=False)
            return
        self._ok()
