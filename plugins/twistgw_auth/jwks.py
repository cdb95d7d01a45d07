"""JWKS fetched with treq (never blocking the reactor), cached per issuer.

One :class:`JwksCache` per issuer named by a definition or the gateway config, so the
number of caches is bounded by the config; tokens only choose a ``kid`` *inside* it.  A
fetch is bounded by AWS's limits (1.5 s, 150,000 bytes); an unknown ``kid`` refetches at
most once per ``refetch_interval`` seconds for the whole issuer (no amplification), and the
last good key set is kept when the identity provider is down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from twisted.internet.defer import Deferred
from twisted.logger import Logger

__all__ = ["JwksCache", "JwksError", "fetch_json", "KEY_ALGORITHMS"]

log = Logger(namespace="twistgw.auth")

#: The algorithms accepted, with the key type each needs (RSA for RS256, P-256 for ES256).
KEY_ALGORITHMS = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}


class JwksError(Exception):
    """The JWKS (or discovery document) could not be fetched or read."""


class _TooBig(Exception):
    pass


async def fetch_json(url: str, timeout: float, max_bytes: int) -> Any:
    """GET ``url`` and parse the JSON body; raise :class:`JwksError` on any failure."""
    import treq
    from twisted.internet import reactor

    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > max_bytes:
            raise _TooBig()
        chunks.append(data)

    accept: dict[bytes | str, bytes | str] = {"Accept": "application/json"}

    async def run() -> Any:
        response = await treq.get(url, timeout=timeout, headers=accept)
        if response.code != 200:
            raise JwksError(f"{url} answered {response.code}")
        length = response.length
        if isinstance(length, int) and length > max_bytes:
            raise JwksError(f"{url} answered more than {max_bytes} bytes")
        await treq.collect(response, collect)
        return json.loads(b"".join(chunks))

    d: Deferred[Any] = Deferred.fromCoroutine(run())
    d.addTimeout(timeout, reactor)
    try:
        return await d
    except JwksError:
        raise
    except _TooBig:
        raise JwksError(f"{url} answered more than {max_bytes} bytes") from None
    except Exception as e:  # timeouts, refused connections, bad JSON
        raise JwksError(f"{url}: {type(e).__name__}: {e}") from None


Fetcher = Callable[[str, float, int], Awaitable[Any]]


class JwksCache:
    """The signing keys of one issuer, by ``kid``.

    ``jwks_uri`` is the configured key-set URL, or ``None`` to discover it from
    ``{issuer}/.well-known/openid-configuration`` (as AWS does).
    """

    #: Seconds between attempts to load a key set that is missing or stale.
    RETRY = 5.0

    def __init__(self, issuer: str, jwks_uri: str | None, *, ttl: float,
                 refetch_interval: float, timeout: float = 1.5, max_bytes: int = 150_000,
                 fetch: Fetcher = fetch_json,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._fetch = fetch
        self._now = now
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at: float | None = None
        self.last_attempt: float | None = None
        self.last_miss: float | None = None
        self.fetches = 0
        self._loading = False
        self._waiters: list[Deferred[None]] = []

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key named ``kid``, refreshing the set when stale or (rate-limited) unknown.

        A missing or stale set is (re)loaded, retried at most every ``RETRY`` seconds while
        the IdP fails; an unknown ``kid`` in a good set refetches at most once per
        ``refetch_interval`` for the whole issuer.
        """
        if self._loading:
            await self.refresh()
        now = self._now()
        if self.fetched_at is None or now - self.fetched_at >= self.ttl:
            if self.last_attempt is None or now - self.last_attempt >= \
                    min(self.RETRY, self.refetch_interval):
                await self.refresh()
        elif kid not in self.keys:
            if self.last_miss is None or now - self.last_miss >= self.refetch_interval:
                self.last_miss = now
                await self.refresh()
        return self.keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the key set once; callers arriving meanwhile wait for that one fetch."""
        if self._loading:
            waiter: Deferred[None] = Deferred()
            self._waiters.append(waiter)
            await waiter
            return
        self._loading = True
        self.last_attempt = self._now()
        try:
            await self._load()
        finally:
            self._loading = False
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.callback(None)

    async def _load(self) -> None:
        self.fetches += 1
        try:
            uri = self.jwks_uri
            if uri is None:
                doc = await self._fetch(self.issuer.rstrip("/")
                                        + "/.well-known/openid-configuration",
                                        self.timeout, self.max_bytes)
                uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
                if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                    raise JwksError("the discovery document has no jwks_uri")
            doc = await self._fetch(uri, self.timeout, self.max_bytes)
            self.keys = parse_jwks(doc)
            self.fetched_at = self._now()
        except JwksError as e:
            log.warn("JWKS of {issuer} not refreshed (keeping {n} known keys): {error}",
                     issuer=self.issuer, n=len(self.keys), error=str(e))


def parse_jwks(doc: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document, by ``kid``; others are skipped."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError("not a JWKS document (no keys list)")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in doc["keys"][:100]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
            continue
        kty = entry.get("kty")
        alg = entry.get("alg")
        if kty == "RSA":
            alg = alg or "RS256"
        elif kty == "EC" and entry.get("crv") == "P-256":
            alg = alg or "ES256"
        else:
            continue
        if alg not in KEY_ALGORITHMS or KEY_ALGORITHMS[alg][0] != kty:
            continue
        try:
            keys[kid] = jwt.PyJWK({**entry, "alg": alg})
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
    return keys
