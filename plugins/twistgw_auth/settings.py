"""``plugins.settings.auth``: JWT issuers, leeway and token caps, IAM access keys.

Checked at load time; every refusal is a :class:`~twistgw.errors.ConfigError` naming
``plugins.settings.auth.<path>`` and the fix.  Secret access keys are kept only as the
SigV4 secrets they are (needed to derive signing keys), inside :class:`IamKey` whose repr
hides them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from twistgw.errors import ConfigError

from .resource_policy import PolicyError, ResourcePolicy
from .resource_policy import parse as parse_policy

if TYPE_CHECKING:
    from twistgw.config import GatewayConfig

__all__ = ["AuthSettings", "IamKey", "Issuer", "parse_settings", "PREFIX"]

PREFIX = "plugins.settings.auth"

_AKID_RE = re.compile(r"^[A-Z0-9]{16,128}$")
_ACCOUNT_RE = re.compile(r"^[0-9]{12}$")


@attrs.frozen
class Issuer:
    """A JWT issuer the operator names, with where its JWKS is (else OIDC discovery)."""

    issuer: str
    jwks_uri: str | None = None


@attrs.frozen
class IamKey:
    """An access key accepted for SigV4: id, secret (hidden from repr) and identity."""

    access_key_id: str
    secret: str = attrs.field(repr=False)
    user: str
    account_id: str
    arn: str
    #: The identity's policies (the key's own and its user's): what it may invoke.
    policy: ResourcePolicy = attrs.field(factory=lambda: ResourcePolicy(statements=()))


@attrs.frozen
class AuthSettings:
    """The checked ``plugins.settings.auth`` section."""

    issuers: Mapping[str, Issuer] = attrs.field(factory=dict)
    leeway: float = 30.0
    max_token_bytes: int = 16384
    refetch_interval: float = 30.0
    jwks_ttl: float = 3600.0
    fetch_timeout: float = 1.5
    max_jwks_bytes: int = 150_000
    iam_keys: Mapping[str, IamKey] = attrs.field(factory=dict)
    iam_region: str | None = None
    max_skew: float = 900.0


def _fail(path: str, problem: str) -> ConfigError:
    return ConfigError("gateway config", f"{PREFIX}.{path}" if path else PREFIX, problem)


def _number(raw: Mapping[str, Any], key: str, path: str, default: float, low: float,
            high: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not low <= value <= high:
        raise _fail(f"{path}{key}", f"expected a number from {low:g} to {high:g}")
    return float(value)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, "expected a non-empty string")
    return value


def _policy(doc: Any, path: str, region: str | None) -> ResourcePolicy:
    """An identity policy: IAM statements on ``execute-api:Invoke``, no ``Principal``."""
    statements = doc.get("Statement") if isinstance(doc, Mapping) else None
    for i, st in enumerate(statements if isinstance(statements, list) else [statements]):
        if isinstance(st, Mapping) and ("Principal" in st or "NotPrincipal" in st):
            raise _fail(f"{path}.Statement[{i}].Principal", "identity policies name no "
                        "principal (the key or user they are attached to is it); remove it")
    try:
        return parse_policy(doc, region=region or "us-east-1", account="", api_id="")
    except PolicyError as e:
        raise _fail(path, f"{e}; write an IAM policy document {{Version, Statement: "
                    "[{Effect, Action: execute-api:Invoke, Resource: <method ARNs>}]}") \
            from None


def _users(raw: Any, region: str | None) -> dict[str, ResourcePolicy]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail("iam.users", "expected a mapping of user name to {policy: ...}")
    out: dict[str, ResourcePolicy] = {}
    for name, entry in raw.items():
        path = f"iam.users.{name}"
        if not isinstance(entry, Mapping) or set(entry) != {"policy"}:
            raise _fail(path, "expected {policy: <IAM policy document>}")
        out[str(name)] = _policy(entry["policy"], f"{path}.policy", region)
    return out


def parse_settings(config: GatewayConfig) -> AuthSettings:
    """Check ``plugins.settings.auth`` and return it, or raise ``ConfigError``."""
    raw = config.plugin_settings("auth")
    if not isinstance(raw, Mapping):
        raise _fail("", "expected a mapping")
    known = {"jwt", "iam"}
    for key in raw:
        if key not in known:
            raise _fail(str(key), f"unknown key; expected one of {', '.join(sorted(known))}")
    jwt_raw = raw.get("jwt") or {}
    if not isinstance(jwt_raw, Mapping):
        raise _fail("jwt", "expected a mapping")
    jwt_known = {"issuers", "leeway", "max_token_bytes", "refetch_interval", "jwks_ttl"}
    for key in jwt_raw:
        if key not in jwt_known:
            raise _fail(f"jwt.{key}", "unknown key; expected one of "
                        f"{', '.join(sorted(jwt_known))}")
    issuers: dict[str, Issuer] = {}
    raw_issuers = jwt_raw.get("issuers") or []
    if not isinstance(raw_issuers, list):
        raise _fail("jwt.issuers", "expected a list of {issuer, jwks_uri}")
    for i, entry in enumerate(raw_issuers):
        path = f"jwt.issuers[{i}]"
        if not isinstance(entry, Mapping):
            raise _fail(path, "expected a mapping {issuer, jwks_uri}")
        for key in entry:
            if key not in ("issuer", "jwks_uri"):
                raise _fail(f"{path}.{key}", "unknown key; expected issuer or jwks_uri")
        issuer = _string(entry.get("issuer"), f"{path}.issuer")
        jwks_uri = entry.get("jwks_uri")
        if jwks_uri is not None:
            jwks_uri = _string(jwks_uri, f"{path}.jwks_uri")
            if not jwks_uri.startswith(("https://", "http://")):
                raise _fail(f"{path}.jwks_uri", "expected an https:// (or http://) URL")
        if issuer in issuers:
            raise _fail(f"{path}.issuer", f"{issuer!r} is listed twice")
        issuers[issuer] = Issuer(issuer=issuer, jwks_uri=jwks_uri)
    iam_raw = raw.get("iam") or {}
    if not isinstance(iam_raw, Mapping):
        raise _fail("iam", "expected a mapping")
    for key in iam_raw:
        if key not in ("keys", "region", "users"):
            raise _fail(f"iam.{key}", "unknown key; expected keys, users or region")
    region = iam_raw.get("region")
    if region is not None:
        region = _string(region, "iam.region")
    users = _users(iam_raw.get("users"), region)
    used_users: set[str] = set()
    keys: dict[str, IamKey] = {}
    raw_keys = iam_raw.get("keys") or []
    if not isinstance(raw_keys, list):
        raise _fail("iam.keys", "expected a list of {access_key_id, secret_access_key}")
    for i, entry in enumerate(raw_keys):
        path = f"iam.keys[{i}]"
        if not isinstance(entry, Mapping):
            raise _fail(path, "expected a mapping")
        allowed = ("access_key_id", "secret_access_key", "user", "account_id", "arn",
                   "policy")
        for key in entry:
            if key not in allowed:
                raise _fail(f"{path}.{key}", f"unknown key; expected one of {', '.join(allowed)}")
        akid = _string(entry.get("access_key_id"), f"{path}.access_key_id")
        if not _AKID_RE.match(akid):
            raise _fail(f"{path}.access_key_id", "expected 16-128 upper-case letters or digits")
        if akid in keys:
            raise _fail(f"{path}.access_key_id", f"{akid} is listed twice")
        secret = _string(entry.get("secret_access_key"), f"{path}.secret_access_key")
        if len(secret) < 16:
            raise _fail(f"{path}.secret_access_key", "expected at least 16 characters "
                        "(write it as a secret: {$env: NAME} or {$file: path})")
        account = str(entry.get("account_id", "123456789012"))
        if not _ACCOUNT_RE.match(account):
            raise _fail(f"{path}.account_id", "expected 12 digits")
        user = _string(entry.get("user", akid), f"{path}.user")
        arn = _string(entry.get("arn", f"arn:aws:iam::{account}:user/{user}"), f"{path}.arn")
        own = _policy(entry["policy"], f"{path}.policy", region) if "policy" in entry \
            else ResourcePolicy(statements=())
        user_policy = users.get(user)
        if user_policy is not None:
            used_users.add(user)
            own = ResourcePolicy(statements=own.statements + user_policy.statements)
        keys[akid] = IamKey(access_key_id=akid, secret=secret, user=user,
                            account_id=account, arn=arn, policy=own)
    for name in users:
        if name not in used_users:
            raise _fail(f"iam.users.{name}", "no key in iam.keys has this user, so the "
                        "policy would never apply; set user: on the key or fix the name")
    return AuthSettings(
        issuers=issuers,
        leeway=_number(jwt_raw, "leeway", "jwt.", 30, 0, 60),
        max_token_bytes=int(_number(jwt_raw, "max_token_bytes", "jwt.", 16384, 1024, 65536)),
        refetch_interval=_number(jwt_raw, "refetch_interval", "jwt.", 30, 1, 3600),
        jwks_ttl=_number(jwt_raw, "jwks_ttl", "jwt.", 3600, 60, 86400),
        iam_keys=keys,
        iam_region=region,
    )
