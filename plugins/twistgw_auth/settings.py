"""``plugins.settings.auth``: JWT issuers, leeway and token caps, IAM access keys.

Checked at load time with the core's :class:`~twistgw.config.SettingsReader`: every
refusal is a :class:`~twistgw.errors.ConfigError` naming the config file,
``plugins.settings.auth.<path>`` and the fix.  Secret access keys are kept only as the
SigV4 secrets they are (needed to derive signing keys), inside :class:`IamKey` whose repr
hides them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from twistgw.config import SettingsReader

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


def _policy(r: SettingsReader, doc: Any, path: str, region: str | None) -> ResourcePolicy:
    """An identity policy: IAM statements on ``execute-api:Invoke``, no ``Principal``."""
    statements = doc.get("Statement") if isinstance(doc, Mapping) else None
    for i, st in enumerate(statements if isinstance(statements, list) else [statements]):
        if isinstance(st, Mapping) and ("Principal" in st or "NotPrincipal" in st):
            raise r.fail(f"{path}.Statement[{i}].Principal", "identity policies name no "
                         "principal (the key or user they are attached to is it); remove it")
    try:
        return parse_policy(doc, region=region or "us-east-1", account="", api_id="")
    except PolicyError as e:
        raise r.fail(path, f"{e}; write an IAM policy document {{Version, Statement: "
                     "[{Effect, Action: execute-api:Invoke, Resource: <method ARNs>}]}") \
            from None


def _users(r: SettingsReader, raw: Any, region: str | None) -> dict[str, ResourcePolicy]:
    out: dict[str, ResourcePolicy] = {}
    for name, entry in r.mapping(raw, "iam.users").items():
        path = f"iam.users.{name}"
        entry = r.mapping(entry, path, allowed=("policy",), required=("policy",))
        out[str(name)] = _policy(r, entry["policy"], f"{path}.policy", region)
    return out


def _issuers(r: SettingsReader, raw: Any) -> dict[str, Issuer]:
    issuers: dict[str, Issuer] = {}
    for i, entry in enumerate(r.seq(raw, "jwt.issuers")):
        path = f"jwt.issuers[{i}]"
        entry = r.mapping(entry, path, allowed=("issuer", "jwks_uri"), required=("issuer",))
        issuer = r.string(entry["issuer"], f"{path}.issuer")
        jwks_uri = entry.get("jwks_uri")
        if jwks_uri is not None:
            jwks_uri = r.string(jwks_uri, f"{path}.jwks_uri")
            if not jwks_uri.startswith(("https://", "http://")):
                raise r.fail(f"{path}.jwks_uri", "expected an https:// (or http://) URL")
        if issuer in issuers:
            raise r.fail(f"{path}.issuer", f"{issuer!r} is listed twice")
        issuers[issuer] = Issuer(issuer=issuer, jwks_uri=jwks_uri)
    return issuers


def _keys(r: SettingsReader, raw: Any, region: str | None,
          users: Mapping[str, ResourcePolicy]) -> dict[str, IamKey]:
    keys: dict[str, IamKey] = {}
    used_users: set[str] = set()
    for i, entry in enumerate(r.seq(raw, "iam.keys")):
        path = f"iam.keys[{i}]"
        entry = r.mapping(entry, path, allowed=(
            "access_key_id", "secret_access_key", "user", "account_id", "arn", "policy"),
            required=("access_key_id", "secret_access_key"))
        akid = r.string(entry["access_key_id"], f"{path}.access_key_id")
        if not _AKID_RE.match(akid):
            raise r.fail(f"{path}.access_key_id", "expected 16-128 upper-case letters or "
                         "digits")
        if akid in keys:
            raise r.fail(f"{path}.access_key_id", f"{akid} is listed twice")
        secret = r.string(entry["secret_access_key"], f"{path}.secret_access_key")
        if len(secret) < 16:
            raise r.fail(f"{path}.secret_access_key", "expected at least 16 characters "
                         "(write it as a secret: {$env: NAME} or {$file: path})")
        account = str(entry.get("account_id", "123456789012"))
        if not _ACCOUNT_RE.match(account):
            raise r.fail(f"{path}.account_id", "expected 12 digits")
        user = r.string(entry.get("user", akid), f"{path}.user")
        arn = r.string(entry.get("arn", f"arn:aws:iam::{account}:user/{user}"),
                       f"{path}.arn")
        own = _policy(r, entry["policy"], f"{path}.policy", region) if "policy" in entry \
            else ResourcePolicy(statements=())
        user_policy = users.get(user)
        if user_policy is not None:
            used_users.add(user)
            own = ResourcePolicy(statements=own.statements + user_policy.statements)
        keys[akid] = IamKey(access_key_id=akid, secret=secret, user=user,
                            account_id=account, arn=arn, policy=own)
    for name in users:
        if name not in used_users:
            raise r.fail(f"iam.users.{name}", "no key in iam.keys has this user, so the "
                         "policy would never apply; set user: on the key or fix the name")
    return keys


def parse_settings(config: GatewayConfig) -> AuthSettings:
    """Check ``plugins.settings.auth`` and return it, or raise ``ConfigError``."""
    r = SettingsReader.for_plugin(config, "auth")
    raw = r.mapping(config.plugin_settings("auth"), "", allowed=("jwt", "iam"))
    jwt_raw = r.mapping(raw.get("jwt"), "jwt", allowed=(
        "issuers", "leeway", "max_token_bytes", "refetch_interval", "jwks_ttl"))
    iam_raw = r.mapping(raw.get("iam"), "iam", allowed=("keys", "users", "region"))
    region = iam_raw.get("region")
    if region is not None:
        region = r.string(region, "iam.region")
    return AuthSettings(
        issuers=_issuers(r, jwt_raw.get("issuers")),
        leeway=r.number(jwt_raw.get("leeway", 30), "jwt.leeway", 0, 60),
        max_token_bytes=r.integer(jwt_raw.get("max_token_bytes", 16384),
                                  "jwt.max_token_bytes", 1024, 65536),
        refetch_interval=r.number(jwt_raw.get("refetch_interval", 30),
                                  "jwt.refetch_interval", 1, 3600),
        jwks_ttl=r.number(jwt_raw.get("jwks_ttl", 3600), "jwt.jwks_ttl", 60, 86400),
        iam_keys=_keys(r, iam_raw.get("keys"), region, _users(r, iam_raw.get("users"), region)),
        iam_region=region,
    )
