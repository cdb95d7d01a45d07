"""JWT (HTTP API) and Cognito user-pool (REST) authorizers (aws-apigw-spec.md §5.6, §5.8).

The token's header only ever chooses a ``kid`` inside the issuer's own JWKS and one of
RS256/ES256 (which must match the key's type); ``jku``, ``x5u`` and ``jwk`` are never
followed.  Claims: ``iss`` equal to the configured issuer, ``aud`` or ``client_id`` in the
configured audiences (JWT authorizers), ``exp`` required, ``nbf`` and ``iat`` not in the
future, all with the configured leeway; then route scopes.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from twistgw.errors import AccessDenied, GatewayError, Unauthorized
from twistgw.models import Context, Principal

from .jwks import KEY_ALGORITHMS, JwksCache

__all__ = ["JwtAuthorizer", "TokenRefused", "VerifiedTokens", "scopes_of"]

_COGNITO_ARN_PREFIX = "arn:aws:cognito-idp:"


class TokenRefused(Exception):
    """A token failed validation; ``reason`` is the ``error_description`` AWS would give."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cognito_issuer(arn: str) -> str | None:
    """``https://cognito-idp.{region}.amazonaws.com/{poolId}`` for a user pool ARN."""
    if not arn.startswith(_COGNITO_ARN_PREFIX):
        return None
    parts = arn.split(":", 5)
    if len(parts) != 6 or not parts[5].startswith("userpool/"):
        return None
    return f"https://cognito-idp.{parts[3]}.amazonaws.com/{parts[5][len('userpool/'):]}"


def scopes_of(claims: Mapping[str, Any]) -> list[str]:
    """The token's scopes: ``scope`` (space-separated) or ``scp`` (list or string)."""
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str)]
    return []


@attrs.frozen
class JwtAuthorizer:
    """One JWT or Cognito authorizer as a definition declares it."""

    name: str
    kind: str  # "jwt" | "cognito_user_pools"
    issuers: tuple[str, ...]
    audiences: tuple[str, ...]
    source: tuple[str, str]  # ("header" | "querystring", name)


def from_scheme(name: str, kind: str, raw: Mapping[str, Any]) -> JwtAuthorizer:
    """Read a security scheme's ``x-amazon-apigateway-authorizer`` (or Swagger's form)."""
    auth = raw.get("x-amazon-apigateway-authorizer") or {}
    source: tuple[str, str] = ("header", "Authorization")
    if kind == "jwt":
        conf = auth.get("jwtConfiguration") or {}
        issuer = conf.get("issuer")
        issuers = (str(issuer),) if issuer else ()
        aud = conf.get("audience") or []
        audiences = tuple(str(a) for a in (aud if isinstance(aud, list) else [aud]))
        ident = auth.get("identitySource") or "$request.header.Authorization"
        if isinstance(ident, list):
            ident = ident[0] if ident else "$request.header.Authorization"
        ident = str(ident).strip()
        for prefix, where in (("$request.header.", "header"),
                              ("$request.querystring.", "querystring")):
            if ident.startswith(prefix):
                source = (where, ident[len(prefix):])
        return JwtAuthorizer(name=name, kind=kind, issuers=issuers, audiences=audiences,
                             source=source)
    arns = auth.get("providerARNs") or []
    found = tuple(i for i in (cognito_issuer(str(a)) for a in arns) if i)
    ident = str(auth.get("identitySource") or "")
    if ident.startswith("method.request.header."):
        source = ("header", ident[len("method.request.header."):])
    elif raw.get("in") == "header" and raw.get("name"):
        source = ("header", str(raw["name"]))
    return JwtAuthorizer(name=name, kind=kind, issuers=found, audiences=(), source=source)


def _unauthorized(is_http: bool, reason: str | None) -> GatewayError:
    if is_http and reason is not None:
        desc = reason.replace("\\", "").replace('"', "'")
        return Unauthorized(headers=[("www-authenticate", f'Bearer scope="" '
                                      f'error="invalid_token" error_description="{desc}"')])
    return Unauthorized()


def token_from(ctx: Context, authorizer: JwtAuthorizer) -> str | None:
    """The token from the identity source (``Bearer `` prefix optional), or ``None``."""
    where, name = authorizer.source
    if where == "header":
        value = ctx.request.headers.get(name)
    else:
        value = next((v for k, v in reversed(ctx.request.query) if k == name), None)
    if value is None:
        return None
    value = value.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_-]*$")


def _segment(text: str) -> bytes:
    """One base64url segment, canonical and unpadded (a trailing ``=`` or two, as some
    issuers send, is accepted); anything else refuses the token."""
    stripped = text.rstrip("=")
    if len(text) - len(stripped) > 2 or len(stripped) % 4 == 1 \
            or not _SEGMENT_RE.match(stripped):
        raise TokenRefused("the token is malformed")
    data = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != stripped.encode():
        raise TokenRefused("the token is malformed")  # non-canonical trailing bits
    return data


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise TokenRefused("the token is malformed") from None
    if not isinstance(doc, dict):
        raise TokenRefused("the token is malformed")
    return doc


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRefused(f"the token's {name} claim is not a number")
    return float(value)


#: Tokens remembered as verified, per gateway config (least recently used evicted first).
VERIFIED_SIZE = 4096
#: Longer tokens are verified every time rather than remembered (bounds the memory).
VERIFIED_MAX_CHARS = 4096


class VerifiedTokens:
    """Tokens whose signature verified, with the key that verified them and their claims.

    Verifying an RS256 signature is most of a JWT request's cost (about 50 us), and a
    client sends the same token for many requests.  A token found here skips only the
    signature check, and only while its issuer's key set still holds the very key object
    that verified it (a refetched, rotated or expired set makes new objects, so the token
    is verified again); the issuer, time and audience checks run on every request.  The
    exact token string is the key, so any change to it misses.
    """

    def __init__(self, size: int = VERIFIED_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[str, tuple[Any, dict[str, Any]]] = OrderedDict()

    def get(self, token: str) -> tuple[Any, dict[str, Any]] | None:
        found = self.entries.get(token)
        if found is not None:
            self.entries.move_to_end(token)
        return found

    def put(self, token: str, key: Any, claims: dict[str, Any]) -> None:
        if len(token) > VERIFIED_MAX_CHARS:
            return
        self.entries[token] = (key, claims)
        self.entries.move_to_end(token)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


async def verify(token: str, authorizer: JwtAuthorizer, caches: Mapping[str, JwksCache], *,
                 leeway: float, max_bytes: int, now: float | None = None,
                 verified: VerifiedTokens | None = None) -> dict[str, Any]:
    """The verified claims of ``token``, or raise :class:`TokenRefused`.

    The token is split and decoded once here (strict base64url, JSON objects); only the
    signature check itself is the key's algorithm from PyJWT (``PyJWK.Algorithm``), so a
    request pays one parse and one verification, or none for a token in ``verified``.
    """
    if len(token) > max_bytes:
        raise TokenRefused("the token is too large")
    if verified is not None:
        found = verified.get(token)
        if found is not None:
            key, claims = found
            issuer = claims.get("iss")
            if isinstance(issuer, str) and issuer in authorizer.issuers and \
                    await caches[issuer].key(key.key_id) is key:
                # A copy: the principal's claims are the caller's to read, not our cache.
                return _check_claims(dict(claims), authorizer, leeway, now)
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRefused("the token is malformed")
    header = _json_object(_segment(parts[0]))
    alg = header.get("alg")
    if alg not in KEY_ALGORITHMS:
        raise TokenRefused(f"signing method {str(alg)[:20]} is invalid")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise TokenRefused("the token has no valid kid")
    claims = _json_object(_segment(parts[1]))
    signature = _segment(parts[2])
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in authorizer.issuers:
        raise TokenRefused("the token has an invalid issuer")
    cache = caches[issuer]
    key = await cache.key(kid)
    if key is None:
        raise TokenRefused("the token's kid is not in the issuer's key set")
    if key.algorithm_name != alg:
        raise TokenRefused(f"signing method {alg} is invalid for the key")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not signature or not key.Algorithm.verify(signing_input, key.key, signature):
        raise TokenRefused("the token has an invalid signature")
    if verified is not None and key.key_id == kid:
        verified.put(token, key, dict(claims))
    return _check_claims(claims, authorizer, leeway, now)


def _check_claims(claims: dict[str, Any], authorizer: JwtAuthorizer, leeway: float,
                  now: float | None) -> dict[str, Any]:
    """Time and audience checks of signature-verified claims (every request)."""
    current = time.time() if now is None else now
    exp = _number(claims, "exp")
    if exp is None:
        raise TokenRefused("the token has no exp claim")
    if exp <= current - leeway:
        raise TokenRefused("the token has expired")
    for name in ("nbf", "iat"):
        value = _number(claims, name)
        if value is not None and value > current + leeway:
            raise TokenRefused("the token is not valid yet")
    if authorizer.kind == "jwt":
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud] if aud is not None else []
        client_id = claims.get("client_id")
        candidates = [a for a in auds if isinstance(a, str)]
        if isinstance(client_id, str):
            candidates.append(client_id)
        if not any(a in authorizer.audiences for a in candidates):
            raise TokenRefused("the token does not have a valid audience")
    return claims


async def authorize(ctx: Context, authorizer: JwtAuthorizer, scopes: Sequence[str],
                    caches: Mapping[str, JwksCache], *, leeway: float,
                    max_bytes: int, verified: VerifiedTokens | None = None) -> Principal:
    """Check the request's token; the principal, or raise the gateway error AWS answers."""
    api = ctx.deployment_api
    is_http = api is not None and api.is_http
    token = token_from(ctx, authorizer)
    if token is None:
        raise Unauthorized()
    try:
        claims = await verify(token, authorizer, caches, leeway=leeway, max_bytes=max_bytes,
                              verified=verified)
    except TokenRefused as e:
        raise _unauthorized(is_http, e.reason) from None
    token_scopes = scopes_of(claims)
    if authorizer.kind == "cognito_user_pools":
        want = "access" if scopes else "id"
        if claims.get("token_use") != want:
            raise Unauthorized()
    if scopes and not any(s in token_scopes for s in scopes):
        if is_http:
            raise AccessDenied("Forbidden", headers=[(
                "www-authenticate", 'Bearer scope="{}" error="insufficient_scope" '
                'error_description="the token does not have the required scopes"'.format(
                    " ".join(scopes).replace('"', "'")))])
        raise Unauthorized()
    kind = "jwt" if authorizer.kind == "jwt" else "cognito_user_pools"
    sub = claims.get("sub")
    return Principal(id=str(sub) if sub is not None else "", kind=kind, claims=claims,
                     context={"scopes": token_scopes or None})
