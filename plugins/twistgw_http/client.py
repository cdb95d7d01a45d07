"""The outbound HTTP client: one pooled Agent per settings, bounded reads, AWS errors.

Built on Twisted's ``Agent`` directly rather than treq: the gateway needs exactly one
request shape (bytes in, bytes out, no redirects, no cookies, no decoding magic) and the
few things treq leaves open (reliability.md §2.4): a deadline over the *whole* exchange
(the core's ``addTimeout`` on the integrate Deferred, which this module lets cancel the
connection at any point, body included), a cap on the body read, a dedicated
``HTTPConnectionPool`` whose idle time stays below backends' keep-alive, and automatic
retries only for idempotent requests (the pool's own rule: no body, no response yet).

Every failure to talk to the backend (refused, reset, DNS, TLS verification, a connection
dropped mid-body) becomes AWS's INTEGRATION_FAILURE, ``504 {"message": "Network error
communicating with endpoint"}`` (aws-apigw-spec.md §3.7); a body over the cap is a 502.
Cancellation (integration timeout, client gone) is never turned into one of those: it
propagates as ``CancelledError`` so the core answers 504 ``Endpoint request timed out``.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import attrs
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet import error as inet_error
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.iweb import UNKNOWN_LENGTH, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from twistgw import ApiConfigurationError, ConfigError, IntegrationFailure
from twistgw.outbound import BodyTooLarge, BoundedBody, BytesProducer

from .fastclient import (
    BadResponse,
    Exchange,
    FastPool,
    HostPool,
    RawAnswer,
    StaleConnection,
    Target,
    parse_target,
    request_head,
)
from .guard import HostGuard, unavailable

__all__ = ["HttpSettings", "BackendClient", "BackendAnswer", "NETWORK_ERROR",
           "parse_settings"]

log = Logger()

_T = TypeVar("_T")

#: AWS's message for a backend it could not talk to (§3.7, recorded 56-byte body).
NETWORK_ERROR = "Network error communicating with endpoint"
#: API Gateway's payload limit, applied to what a backend may answer.
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
#: The outbound client used unless ``plugins.settings.http.client`` says otherwise.
DEFAULT_CLIENT = "fast"


@attrs.frozen
class HttpSettings:
    """``plugins.settings.http`` (documented in docs/config.rst)."""

    connect_timeout: float = 5.0
    max_idle_per_host: int = 20
    #: Idle pooled connections are closed after this many seconds: below Node's 5 s and
    #: nginx's 75 s keep-alive, so a reused connection is rarely one the backend just shut.
    idle_timeout: float = 4.0
    retry_idempotent: bool = True
    #: Retries after a failure to connect (no byte sent, so safe for any method).
    connect_retries: int = 1
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    ca_file: str | None = None
    #: PEM client certificate (and key, in the same file or ``client_key``) presented to
    #: https backends that ask for one.
    client_cert: str | None = None
    client_key: str | None = None
    max_concurrent_per_host: int = 1024
    max_pending_per_host: int = 1024
    #: Consecutive failures that open a backend's circuit; 0 turns the breaker off.
    breaker_failures: int = 5
    breaker_open_seconds: float = 30.0
    #: ``fast`` (the lean client of :mod:`.fastclient`) or ``agent`` (Twisted's Agent).
    client: str = DEFAULT_CLIENT
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def trusts(self, address: str) -> bool:
        """True when ``address`` is a configured trusted hop (its X-Forwarded-For is kept)."""
        if not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted_proxies)


_KNOWN = {"connect_timeout", "max_idle_per_host", "idle_timeout", "retry_idempotent",
          "max_response_bytes", "ca_file", "trusted_proxies", "max_concurrent_per_host",
          "max_pending_per_host", "breaker_failures", "breaker_open_seconds", "client_cert",
          "client_key", "connect_retries", "client"}


def parse_settings(raw: Mapping[str, Any], source: str, base_dir: Path | None = None
                   ) -> HttpSettings:
    """Check ``plugins.settings.http``; a ConfigError names the key and the fix."""
    where = "plugins.settings.http"
    for key in raw:
        if key not in _KNOWN:
            raise ConfigError(source, f"{where}.{key}",
                              f"unknown setting; known: {', '.join(sorted(_KNOWN))}")

    def number(key: str, default: float, minimum: float) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ConfigError(source, f"{where}.{key}",
                              f"expected a number of at least {minimum}, got {value!r}")
        return float(value)

    retry = raw.get("retry_idempotent", True)
    if not isinstance(retry, bool):
        raise ConfigError(source, f"{where}.retry_idempotent", "expected true or false")
    def pem_file(key: str, what: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(source, f"{where}.{key}", f"expected a path to {what}")
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(source, f"{where}.{key}",
                              f"{value} does not exist; give {what}")
        return str(path)

    ca_file = pem_file("ca_file", "a PEM file of CA certificates")
    client_cert = pem_file("client_cert", "a PEM file with the client certificate")
    client_key = pem_file("client_key", "a PEM file with the client certificate's key")
    if client_key is not None and client_cert is None:
        raise ConfigError(source, f"{where}.client_key",
                          "client_key needs client_cert; add it or remove client_key")
    if client_cert is not None:
        try:
            _TlsPolicy(HttpSettings(client_cert=client_cert, client_key=client_key))
        except Exception as e:
            raise ConfigError(source, f"{where}.client_cert",
                              f"cannot load the client certificate and key: {e}") from None
    client = raw.get("client", DEFAULT_CLIENT)
    if client not in ("fast", "agent"):
        raise ConfigError(source, f"{where}.client",
                          f"expected fast (the gateway's own HTTP/1.1 client) or agent "
                          f"(Twisted's Agent), got {client!r}")
    proxies = raw.get("trusted_proxies", [])
    if not isinstance(proxies, list):
        raise ConfigError(source, f"{where}.trusted_proxies",
                          "expected a list of addresses or networks (10.0.0.0/8)")
    nets = []
    for i, item in enumerate(proxies):
        try:
            nets.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ConfigError(source, f"{where}.trusted_proxies[{i}]",
                              f"{item!r} is not an address or network") from None
    return HttpSettings(
        connect_timeout=number("connect_timeout", 5.0, 0.001),
        max_idle_per_host=int(number("max_idle_per_host", 20, 0)),
        idle_timeout=number("idle_timeout", 4.0, 0),
        retry_idempotent=retry,
        connect_retries=_at_most_one(number("connect_retries", 1, 0), source,
                                     f"{where}.connect_retries"),
        max_response_bytes=int(number("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES, 1)),
        ca_file=ca_file,
        client_cert=client_cert,
        client_key=client_key,
        max_concurrent_per_host=int(number("max_concurrent_per_host", 1024, 1)),
        max_pending_per_host=int(number("max_pending_per_host", 1024, 0)),
        breaker_failures=int(number("breaker_failures", 5, 0)),
        breaker_open_seconds=number("breaker_open_seconds", 30.0, 0.001),
        client=client,
        trusted_proxies=tuple(nets),
    )


def _at_most_one(value: float, source: str, key: str) -> int:
    if value not in (0, 1):
        raise ConfigError(source, key, "0 (no retry) or 1 (one retry after a connect failure)")
    return int(value)


class BackendAnswer(NamedTuple):
    """What the backend said: status, headers (names as the backend spells them), body.

    A named tuple rather than an attrs class: one is made per proxied request, and
    a frozen attrs class's ``__init__`` costs several times a tuple's."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes
    #: The backend's Content-Length if it sent one (the parsers keep framing headers
    #: out of ``headers``).
    length: int | None


def _network_error(error: BaseException | None) -> IntegrationFailure:
    """AWS's network error for a failed exchange; unusual causes are logged (debug)."""
    if not isinstance(error, (BadResponse, StaleConnection, inet_error.ConnectError,
                              inet_error.DNSLookupError, inet_error.ConnectionLost,
                              inet_error.ConnectionDone)):
        log.debug("backend exchange failed: {error!r}", error=error)
    failure = IntegrationFailure(NETWORK_ERROR)
    failure.__cause__ = error
    return failure


def _is_cancel(failure: BaseException) -> bool:
    """True when ``failure`` is (or wraps) a cancellation, which must stay one."""
    if isinstance(failure, CancelledError):
        return True
    reasons = getattr(failure, "reasons", None)
    if reasons:
        return any(r.check(CancelledError) is not None for r in reasons)
    return False


def _decode(encoding: str, body: bytes, limit: int) -> bytes | None:
    """Undo gzip/deflate (bounded by ``limit``); ``None`` for encodings left as they are."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        return None
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(body, limit + 1)
    except zlib.error:
        if enc != "deflate":
            raise
        d = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send
        out = d.decompress(body, limit + 1)
    if len(out) > limit:
        raise BodyTooLarge()
    return out


@implementer(IPolicyForHTTPS)
class _TlsPolicy:
    """Verify backends against the platform or ``ca_file`` (host names always checked),
    presenting ``client_cert`` when configured (Twisted's browser-like policy cannot).

    ``insecure``: the integration's ``tlsConfig.insecureSkipVerification``; the chain
    need not lead to a trusted CA, but the host name and the validity dates are still
    checked, as on AWS (aws-apigw-spec.md §3.7).
    """

    def __init__(self, settings: HttpSettings, insecure: bool = False) -> None:
        self.trust_root: Any = None  # None: the platform's trust store
        if settings.ca_file is not None:
            pem = Path(settings.ca_file).read_bytes()
            certs = [Certificate.loadPEM(_BEGIN + block) for block in pem.split(_BEGIN)[1:]]
            self.trust_root = trustRootFromCertificates(certs)
        self.client_cert: PrivateCertificate | None = None
        if settings.client_cert is not None:
            cert = Path(settings.client_cert).read_bytes()
            key = Path(settings.client_key or settings.client_cert).read_bytes()
            self.client_cert = PrivateCertificate.loadPEM(cert + b"\n" + key)
        self.insecure = insecure

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        creator = optionsForClientTLS(hostname.decode("idna"), trustRoot=self.trust_root,
                                      clientCertificate=self.client_cert)
        if self.insecure:
            return _SkipChainVerification(creator)
        return creator


#: OpenSSL verification errors about the chain of trust, which insecureSkipVerification
#: ignores: unable to get issuer (2, 20), self-signed (18, 19), unable to verify the leaf
#: (21), invalid CA (24), untrusted (27).  Expiry (9, 10) and everything else still fail.
_CHAIN_ERRORS = frozenset((2, 18, 19, 20, 21, 24, 27))


@implementer(IOpenSSLClientConnectionCreator)
class _SkipChainVerification:
    """Twisted's client TLS options with the chain-of-trust errors forgiven."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def clientConnectionForTLS(self, tls_protocol: Any) -> Any:
        connection = self.inner.clientConnectionForTLS(tls_protocol)
        hostname: str = self.inner._hostnameASCII
        is_dns: bool = self.inner._hostnameIsDnsName
        ident: Any = DNS_ID(hostname) if is_dns else IPAddress_ID(hostname)
        protocol_ref: list[Any] = [tls_protocol]

        def verify(conn: Any, cert: Any, err: int, depth: int, ok: int) -> bool:
            if not ok and err not in _CHAIN_ERRORS:
                return False
            if depth != 0:
                return True
            try:
                verify_service_identity(extract_patterns(cert), [ident], [])
            except VerificationError:
                if protocol_ref:
                    protocol_ref.pop().failVerification(Failure())
                return False
            return True

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


Respond = Callable[[int, Sequence[tuple[str, str]], bytes, "int | None"], _T]
"""Makes what the caller wants of an answer from its ``(status, headers, body,
length)``, the fields of :class:`BackendAnswer`."""


def _as_answer(status: int, headers: Sequence[tuple[str, str]], body: bytes,
               length: int | None) -> BackendAnswer:
    return BackendAnswer(status, headers, body, length)


class _FastCall(Exchange):
    """One fast-client exchange with its bookkeeping, settled once by :meth:`finish`:
    the backend's slot and breaker verdict, the answer decoded and handed to
    ``respond``."""

    __slots__ = ("client", "decode", "guard", "respond", "started", "timeout")

    def __init__(self, pool: HostPool, method: str, data: bytes, client: BackendClient,
                 guard: HostGuard, started: float, timeout: float, decode: bool,
                 respond: Respond[Any]) -> None:
        super().__init__(pool, method, data)
        self.client = client
        self.guard = guard
        self.started = started
        self.timeout = timeout
        self.decode = decode
        self.respond = respond

    def finish(self, result: RawAnswer | BaseException) -> Any:
        """The answer (shaped), or raise the gateway error the failure maps to."""
        client, guard = self.client, self.guard
        client.in_flight -= 1
        if isinstance(result, BaseException):
            guard.release()
            if isinstance(result, CancelledError):
                error: BaseException = result
            elif isinstance(result, BodyTooLarge):
                error = IntegrationFailure(status=502)
            else:
                error = _network_error(result)
            client._judge(guard, error, self.started, self.timeout)
            raise error
        status, pairs, body, length, encoded = result
        headers: Sequence[tuple[str, str]] = pairs
        if encoded and self.decode:
            guard.release()
            try:
                status, headers, body, length = client._answer(status, pairs, body,
                                                               length, True)
            except IntegrationFailure as e:
                client._judge(guard, e, self.started, self.timeout)
                raise
            guard.succeeded()
        else:  # the usual answer: slot back and breaker closed in one call
            guard.answered()
        return self.respond(status, headers, body, length)


_BEGIN = b"-----BEGIN CERTIFICATE-----"
#: Methods whose request always carries a Content-Length, even for an empty body.
_BODY_ALWAYS = frozenset(("POST", "PUT", "PATCH"))
#: Backends tracked per client before idle ones are forgotten.
_MAX_GUARDS = 10_000


class BackendClient:
    """The outbound client for one set of :class:`HttpSettings`: the fast pools of
    :mod:`.fastclient` (``client: fast``) or a pooled Agent (``client: agent``), each in
    a verifying and an ``insecureSkipVerification`` flavour, made when first needed."""

    def __init__(self, reactor: Any, settings: HttpSettings) -> None:
        self.settings = settings
        self.reactor = reactor
        #: ``client: fast`` (the usual case), looked up on every request.
        self.fast_client = settings.client == "fast"
        self._fast: dict[bool, FastPool] = {}
        self._agents: dict[bool, tuple[Agent, HTTPConnectionPool]] = {}
        self.guards: dict[tuple[str, str, int | None], HostGuard] = {}
        self.in_flight = 0
        self.retrying = 0
        self._retries = 0

    @property
    def retries(self) -> int:
        """Retries made so far, by either client (for tests and metrics)."""
        return self._retries + sum(f.retries for f in self._fast.values())

    def fast(self, insecure: bool = False) -> FastPool:
        """The fast client's pools (one set per TLS flavour)."""
        found = self._fast.get(insecure)
        if found is None:
            s = self.settings
            policy = _TlsPolicy(s, insecure)
            found = self._fast[insecure] = FastPool(
                self.reactor, connect_timeout=s.connect_timeout,
                max_idle=s.max_idle_per_host, idle_timeout=s.idle_timeout,
                max_body=s.max_response_bytes, retry_idempotent=s.retry_idempotent,
                connect_retries=s.connect_retries, tls_creator=policy.creatorForNetloc,
                in_flight=lambda: self.in_flight)
        return found

    def agent(self, insecure: bool = False) -> Agent:
        """The pooled Agent (one per TLS flavour)."""
        found = self._agents.get(insecure)
        if found is None:
            s = self.settings
            pool = HTTPConnectionPool(self.reactor, persistent=True)
            pool.maxPersistentPerHost = s.max_idle_per_host
            pool.cachedConnectionTimeout = s.idle_timeout  # type: ignore[assignment]
            pool.retryAutomatically = s.retry_idempotent
            agent = Agent(self.reactor, contextFactory=_TlsPolicy(s, insecure),
                          connectTimeout=s.connect_timeout, pool=pool)
            found = self._agents[insecure] = (agent, pool)
        return found[0]

    def guard_for(self, url: str) -> HostGuard:
        """The :class:`HostGuard` of the backend ``url`` points at."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ApiConfigurationError() from None
        key = (parts.scheme.lower(), (parts.hostname or "").lower(), port)
        return self._guard(key)

    def _guard(self, key: tuple[str, str, int | None]) -> HostGuard:
        guard = self.guards.get(key)
        if guard is None:
            if len(self.guards) >= _MAX_GUARDS:
                self._forget_idle_guards()
            s = self.settings
            guard = HostGuard(self.reactor, max_concurrent=s.max_concurrent_per_host,
                              max_pending=s.max_pending_per_host,
                              failures=s.breaker_failures,
                              open_seconds=s.breaker_open_seconds)
            self.guards[key] = guard
        return guard

    def _forget_idle_guards(self) -> None:
        """Bound the guard table: a ``{host}`` placeholder filled from the request could
        otherwise grow it without limit.  Guards with work or an open circuit stay."""
        for key, guard in list(self.guards.items()):
            if guard.active == 0 and not guard.waiting and guard.state == "closed":
                del self.guards[key]

    def close(self) -> Deferred[None]:
        """Close the idle pooled connections (on shutdown or when settings change)."""
        for fast in self._fast.values():
            fast.close()
        closing = [pool.closeCachedConnections() for _agent, pool in self._agents.values()]
        return DeferredList(closing, consumeErrors=True).addCallback(lambda _: None)

    def send(self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes,
             *, timeout: float = 29.0, decode: bool = True, insecure: bool = False,
             shape: Callable[[BackendAnswer], _T] | None = None) -> Deferred[Any]:
        """:meth:`request` as a Deferred, without a coroutine on the common path.

        With the fast client and a free slot (the usual case) the exchange's Deferred
        fires once, with ``shape(answer)`` (the answer itself without ``shape``): the
        proxy benchmark's profile showed each coroutine resumption and each link of a
        callback chain as a visible share of a proxied request.  Anything else (a queue
        wait, the Agent) goes through :meth:`request`.  Errors about the request itself
        (a bad URL, a full backend) are raised at once.
        """
        if self.settings.client != "fast":
            return self._shaped(Deferred.fromCoroutine(self.request(
                method, url, headers, body, timeout=timeout, decode=decode,
                insecure=insecure)), shape)
        target, path = parse_target(url)
        send_body = body or method in _BODY_ALWAYS
        head = request_head(method, path, target.host_header, headers,
                            len(body) if send_body else None)
        return self.send_head(target, method, head, body, timeout=timeout, decode=decode,
                              insecure=insecure,
                              respond=_as_answer if shape is None else
                              lambda *answer: shape(BackendAnswer(*answer)))

    def send_head(self, target: Target, method: str, head: bytes, body: bytes, *,
                  timeout: float, decode: bool, insecure: bool, respond: Respond[_T]
                  ) -> Deferred[_T]:
        """:meth:`send` of a request whose head (:func:`.fastclient.request_head`) the
        caller built, on the fast client; the Deferred fires with ``respond(status,
        headers, body, length)``."""
        guard = self.guards.get(target.key) or self._guard(target.key)
        if guard.opened_at is not None and not guard.admit():  # (closed: admitted)
            raise unavailable()
        if guard.active >= guard.max_concurrent:
            guard.abandoned()  # :meth:`_fast_request` admits again
            queued = Deferred.fromCoroutine(self._fast_request(
                target, method, head, body, timeout=timeout, decode=decode,
                insecure=insecure))
            return queued.addCallback(lambda answer: respond(*answer))
        guard.active += 1  # a slot is free: taken at once (``guard.acquire()`` inline)
        self.in_flight += 1
        fast = self._fast.get(insecure) or self.fast(insecure)
        call = _FastCall(fast.host(target), method, head + body if body else head, self,
                         guard, self.reactor.seconds(), timeout, decode, respond)
        call.start()
        d: Deferred[_T] = call.deferred
        return d

    @staticmethod
    def _shaped(d: Deferred[BackendAnswer], shape: Callable[[BackendAnswer], _T] | None
                ) -> Deferred[Any]:
        return d if shape is None else d.addCallback(shape)

    def _judge(self, guard: HostGuard, error: BaseException | None, started: float,
               timeout: float) -> None:
        """Tell the backend's breaker how an exchange ended.

        Any answer (an error status, a body over the cap) means the backend is reachable;
        a network error, or a cancellation at the integration timeout, is a failure; a
        cancellation before it (the client left) or anything else gives no verdict.
        """
        if error is None:
            guard.succeeded()
        elif isinstance(error, CancelledError):
            if self.reactor.seconds() - started >= timeout * 0.95:
                guard.failed()
            else:
                guard.abandoned()
        elif isinstance(error, IntegrationFailure):
            if error.message == NETWORK_ERROR:
                guard.failed()
            else:
                guard.succeeded()
        else:
            guard.abandoned()

    async def request(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                      body: bytes, *, timeout: float = 29.0, decode: bool = True,
                      insecure: bool = False) -> BackendAnswer:
        """One exchange through the backend's guard (slots, queue, breaker).

        Raises AWS's gateway errors, or ``CancelledError`` when cancelled.  ``timeout`` is
        the integration timeout: a cancellation at or after it counts as a backend failure
        for the breaker, an earlier one (client gone) does not.  ``decode``: undo
        gzip/deflate so ``Content-Encoding`` can be dropped as AWS does.  ``insecure``:
        the integration's ``tlsConfig.insecureSkipVerification``.
        """
        if self.settings.client == "fast":
            target, path = parse_target(url)
            send_body = body or method in _BODY_ALWAYS
            head = request_head(method, path, target.host_header, headers,
                                len(body) if send_body else None)
            return await self._fast_request(target, method, head, body, timeout=timeout,
                                            decode=decode, insecure=insecure)
        guard = self.guard_for(url)
        started = await self._slot(guard)
        return await self._guarded(guard, started, timeout, self._exchange(
            method, url, headers, body, decode, insecure))

    async def _fast_request(self, target: Target, method: str, head: bytes, body: bytes,
                            *, timeout: float, decode: bool, insecure: bool
                            ) -> BackendAnswer:
        """:meth:`request` on the fast client, with the request head already built."""
        guard = self._guard(target.key)
        started = await self._slot(guard)
        return await self._guarded(guard, started, timeout, self._fast_exchange(
            method, target, head, body, decode, insecure))

    async def _slot(self, guard: HostGuard) -> float:
        """Pass the breaker and take a slot (waiting in the queue if need be); returns
        when the exchange started, for :meth:`_judge`."""
        if not guard.admit():
            raise unavailable()
        started: float = self.reactor.seconds()
        try:
            wait = guard.acquire()
        except IntegrationFailure:
            guard.abandoned()
            raise
        if wait is not None:
            try:
                await wait
            except CancelledError:
                guard.abandoned()
                raise
        return started

    async def _guarded(self, guard: HostGuard, started: float, timeout: float,
                       exchange: Coroutine[Any, Any, BackendAnswer]) -> BackendAnswer:
        """Run ``exchange`` in the slot already taken: counted in flight, the slot given
        back and the breaker told how it ended."""
        self.in_flight += 1
        try:
            answer = await exchange
        except BaseException as e:
            self._judge(guard, e, started, timeout)
            raise
        finally:
            self.in_flight -= 1
            guard.release()
        self._judge(guard, None, started, timeout)
        return answer

    async def _fast_exchange(self, method: str, target: Target, head: bytes, body: bytes,
                             decode: bool, insecure: bool) -> BackendAnswer:
        try:
            status, pairs, data, length, _encoded = await self.fast(insecure).request(
                target, method, head + body if body else head)
        except BodyTooLarge:
            raise IntegrationFailure(status=502) from None
        except CancelledError:
            raise
        except Exception as e:
            raise _network_error(e) from e
        return self._answer(status, pairs, data, length, decode)

    def _answer(self, status: int, pairs: Sequence[tuple[str, str]], data: bytes,
                length: int | None, decode: bool) -> BackendAnswer:
        """The answer, its body decoded (gzip, deflate) when ``decode`` asks for it."""
        if decode:
            for key, _value in pairs:
                if key.lower() == "content-encoding":
                    break
            else:  # the usual case: nothing to decode
                return BackendAnswer(status, pairs, data, length)
        else:
            return BackendAnswer(status, pairs, data, length)
        out: list[tuple[str, str]] = []
        encoding: list[str] = []
        for key, value in pairs:
            if decode and key.lower() == "content-encoding":
                encoding.append(value)
                continue
            out.append((key, value))
        if encoding:
            coding = ",".join(encoding)
            try:
                decoded = _decode(coding, data, self.settings.max_response_bytes)
            except BodyTooLarge:
                raise IntegrationFailure(status=502) from None
            except zlib.error:
                raise IntegrationFailure(NETWORK_ERROR) from None
            if decoded is None:
                out.append(("Content-Encoding", coding))
            else:
                data = decoded
        return BackendAnswer(status, out, data, length)

    async def _send(self, method: bytes, uri: bytes, headers: TwistedHeaders,
                    producer: BytesProducer | None, insecure: bool) -> IResponse:
        """Send the request, retrying once on a failure to *connect* within the budget.

        A connect failure means no byte reached the backend, so a retry is safe for any
        method, POST included.  (Twisted's pool separately retries idempotent requests
        once when a pooled connection turns out to be dead.)  The budget, at most 20 % of
        the requests in flight (at least 3) retrying at once, keeps a dead backend from
        doubling the load on everything else.
        """
        agent = self.agent(insecure)
        try:
            response: IResponse = await agent.request(method, uri, headers, producer)
            return response
        except (inet_error.ConnectError, inet_error.DNSLookupError):
            budget = max(3, self.in_flight // 5)
            if self.settings.connect_retries < 1 or self.retrying >= budget:
                raise
        self.retrying += 1
        self._retries += 1
        try:
            response = await agent.request(method, uri, headers, producer)
            return response
        finally:
            self.retrying -= 1

    async def _exchange(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                        body: bytes, decode: bool, insecure: bool) -> BackendAnswer:
        raw = TwistedHeaders()
        for name, value in headers:
            raw.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        send_body = body or method in ("POST", "PUT", "PATCH")
        producer = BytesProducer(body) if send_body else None
        try:
            uri = url.encode("latin-1")
        except UnicodeEncodeError:
            raise ApiConfigurationError() from None
        try:
            response = await self._send(method.encode("ascii"), uri, raw, producer, insecure)
            collector = BoundedBody(self.settings.max_response_bytes)
            response.deliverBody(collector)
            data = await collector.finished
        except BodyTooLarge:
            raise IntegrationFailure(status=502) from None
        except CancelledError:
            raise
        except (SchemeNotSupported, ValueError):
            log.error("Execution failed due to configuration error: Invalid endpoint "
                      "address {url}", url=url)
            raise ApiConfigurationError() from None
        except Exception as e:
            if _is_cancel(e):
                raise CancelledError() from e
            raise IntegrationFailure(NETWORK_ERROR) from e
        pairs = [(name.decode("latin-1"), v.decode("latin-1"))
                 for name, values in response.headers.getAllRawHeaders() for v in values]
        length = response.length if response.length is not UNKNOWN_LENGTH else None
        return self._answer(response.code, pairs, data,
                            length if isinstance(length, int) else None, decode)
