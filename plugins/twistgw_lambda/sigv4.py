"""AWS Signature Version 4 for the requests the gateway sends to the Lambda Invoke API.

Written by hand (hashlib/hmac) rather than taken from botocore, which is not a dependency
of twistgw; ``tests/plugins/test_lambda_remote.py`` checks it against botocore's signer.
It signs the way botocore does for Lambda (a REST-JSON service): the canonical URI is the
request path as sent, percent-encoded once more (every service but S3 double-encodes),
the query decoded, encoded again with only ``-_.~`` unreserved and sorted, every header given to
:func:`sign` signed except ``User-Agent``, ``Expect`` and ``X-Amzn-Trace-Id`` (botocore's
list), and ``X-Amz-Security-Token`` added and signed for temporary credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote, unquote, urlsplit

import attrs

__all__ = ["Credentials", "sign", "canonical_host"]

ALGORITHM = "AWS4-HMAC-SHA256"
#: Headers botocore never signs (proxies and clients may change them).
_UNSIGNED = frozenset(("user-agent", "expect", "x-amzn-trace-id", "authorization"))


@attrs.frozen(repr=False)
class Credentials:
    """An access key, its secret and the session token of temporary credentials."""

    access_key: str
    secret_key: str
    token: str | None = None
    #: Where they came from (for logs: never the values).
    source: str = "config"

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key[:4]}..., source={self.source!r})"


def canonical_host(url: str) -> str:
    """The ``Host`` a client sends for ``url``: the default port is left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return host if port is None or port == default else f"{host}:{port}"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _canonical_path(path: str) -> str:
    """botocore's ``_normalize_url_path``: dot segments removed, then encoded again."""
    if not path:
        path = "/"
    normalized = posixpath.normpath(path)
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return quote(normalized, safe="/~")


def _canonical_query(query: str) -> str:
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def sign(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes, *,
         credentials: Credentials, region: str, service: str, now: datetime
         ) -> list[tuple[str, str]]:
    """The headers to send: ``headers`` plus ``Host``, ``X-Amz-Date``, the session token
    and ``Authorization``.  ``url`` is what goes on the wire (its path already
    percent-encoded); ``now`` must be UTC.
    """
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    out = [(k, v) for k, v in headers if k.lower() not in ("host", "x-amz-date",
                                                              "authorization")]
    out.insert(0, ("Host", canonical_host(url)))
    out.append(("X-Amz-Date", amz_date))
    if credentials.token:
        out = [(k, v) for k, v in out if k.lower() != "x-amz-security-token"]
        out.append(("X-Amz-Security-Token", credentials.token))
    signed: dict[str, list[str]] = {}
    for name, value in out:
        lname = name.lower()
        if lname in _UNSIGNED:
            continue
        signed.setdefault(lname, []).append(" ".join(value.split()))
    names = sorted(signed)
    canonical_headers = "".join(f"{n}:{','.join(signed[n])}\n" for n in names)
    signed_headers = ";".join(names)
    canonical = "\n".join((
        method.upper(), _canonical_path(parts.path), _canonical_query(parts.query),
        canonical_headers, signed_headers, hashlib.sha256(body).hexdigest()))
    day = amz_date[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join((ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode("utf-8")).hexdigest()))
    key = _hmac(("AWS4" + credentials.secret_key).encode("utf-8"), day)
    key = _hmac(_hmac(_hmac(key, region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out.append(("Authorization", f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
                                 f"SignedHeaders={signed_headers}, Signature={signature}"))
    return out
