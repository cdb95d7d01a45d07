"""Where ``remote:`` functions get their signing credentials, botocore's way.

In order: ``remote.credentials`` (config secrets); the ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` environment variables (skipped when
``remote.profile`` names a profile); then the profile ``remote.profile``, ``AWS_PROFILE``
or ``default``, read from the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE`` or
``~/.aws/credentials``) and the config file (``AWS_CONFIG_FILE`` or ``~/.aws/config``,
sections ``[profile NAME]`` and ``[default]``):

* static keys (``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``),
  the credentials file first;
* a role: ``role_arn`` with ``source_profile`` (a profile with keys, or itself a role:
  chains up to 5 deep) or ``credential_source = Environment``; optional
  ``role_session_name``, ``external_id``, ``duration_seconds`` (900..43200, default
  3600) and ``region``.  The role is assumed with STS ``AssumeRole`` (a SigV4-signed
  form POST, service ``sts``) at ``AWS_ENDPOINT_URL_STS``, else ``AWS_ENDPOINT_URL``,
  else ``https://sts.{region}.amazonaws.com``; the temporary credentials are cached
  until 5 minutes before their ``Expiration``.  ``mfa_serial`` needs a person to type a
  code and is refused; SSO, ``credential_process``, web identity and instance metadata
  are not read.
"""

from __future__ import annotations

import configparser
import os
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs

from .sigv4 import Credentials, sign

__all__ = ["NoCredentials", "AssumeRole", "resolve_credentials", "assume_role_request",
           "parse_assume_role_response", "sts_endpoint", "STS_REFRESH_MARGIN"]

#: Temporary credentials are renewed this many seconds before they expire.
STS_REFRESH_MARGIN = 300.0
_MAX_CHAIN = 5
_STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


class NoCredentials(Exception):
    """No usable credentials (the message says where we looked and what to set)."""


@attrs.frozen(repr=False)
class AssumeRole:
    """A role to assume with ``source`` credentials (static keys or another role)."""

    role_arn: str
    source: Credentials | AssumeRole
    profile: str
    session_name: str = "twistgw"
    duration: int = 3600
    external_id: str | None = None
    region: str | None = None

    def __repr__(self) -> str:
        return f"AssumeRole({self.role_arn!r}, profile={self.profile!r})"


def _read(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, configparser.Error):
        pass
    return parser


def _files() -> tuple[Path, configparser.RawConfigParser, Path, configparser.RawConfigParser]:
    creds = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
                 or Path.home() / ".aws" / "credentials").expanduser()
    config = Path(os.environ.get("AWS_CONFIG_FILE")
                  or Path.home() / ".aws" / "config").expanduser()
    return creds, _read(creds), config, _read(config)


def _section(parser: configparser.RawConfigParser, name: str, config_file: bool
             ) -> dict[str, str] | None:
    """A profile's keys: ``[name]`` in the credentials file, ``[profile name]`` (or
    ``[default]``) in the config file."""
    candidates = [name] if not config_file else (
        [f"profile {name}", name] if name == "default" else [f"profile {name}"])
    for section in candidates:
        if parser.has_section(section):
            return {k: v.strip() for k, v in parser[section].items()}
    return None


def _profile(name: str, depth: int = 0) -> Credentials | AssumeRole | None:
    """What profile ``name`` resolves to, or ``None`` if it holds nothing usable."""
    if depth > _MAX_CHAIN:
        raise NoCredentials(f"profile [{name}]: source_profile chains more than "
                            f"{_MAX_CHAIN} roles deep (or loops); shorten the chain")
    creds_path, creds, config_path, config = _files()
    from_creds = _section(creds, name, False) or {}
    from_config = _section(config, name, True) or {}
    merged = {**from_config, **from_creds}
    key, secret = merged.get("aws_access_key_id"), merged.get("aws_secret_access_key")
    role_arn = merged.get("role_arn")
    if role_arn:
        where = f"profile [{name}] in {config_path}"
        if merged.get("mfa_serial"):
            raise NoCredentials(f"{where} needs an MFA code (mfa_serial), which a gateway "
                                "cannot type; use a role without MFA or static keys")
        source: Credentials | AssumeRole | None
        if merged.get("source_profile"):
            source_name = merged["source_profile"]
            source = (_static(merged, f"{creds_path} [{name}]") if source_name == name
                      else _profile(source_name, depth + 1))
            if source is None:
                raise NoCredentials(f"{where}: source_profile [{source_name}] has no "
                                    "aws_access_key_id/aws_secret_access_key; add them")
        elif merged.get("credential_source") == "Environment":
            source = _environment()
            if source is None:
                raise NoCredentials(f"{where}: credential_source = Environment but "
                                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set")
        else:
            raise NoCredentials(f"{where}: role_arn needs source_profile or "
                                "credential_source = Environment (EcsContainer and "
                                "Ec2InstanceMetadata are not supported)")
        try:
            duration = int(merged.get("duration_seconds", "3600"))
        except ValueError:
            duration = -1
        if not 900 <= duration <= 43200:
            raise NoCredentials(f"{where}: duration_seconds must be 900..43200")
        return AssumeRole(role_arn=role_arn, source=source, profile=name,
                          session_name=merged.get("role_session_name")
                          or f"twistgw-{os.getpid()}",
                          duration=duration, external_id=merged.get("external_id"),
                          region=merged.get("region"))
    if key and secret:
        return _static(merged, f"{creds_path if from_creds else config_path} [{name}]")
    return None


def _static(section: dict[str, str], source: str) -> Credentials | None:
    key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if not key or not secret:
        return None
    token = section.get("aws_session_token") or section.get("aws_security_token")
    return Credentials(key, secret, token or None, source=source)


def _environment() -> Credentials | None:
    key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None,
                           source="environment")
    return None


def resolve_credentials(configured: Credentials | None, profile: str | None
                        ) -> Credentials | AssumeRole:
    """Config, then the environment, then the profile (keys or a role to assume).

    Reads files but never calls STS, so it is safe at load time."""
    if configured is not None:
        return configured
    if profile is None:  # a named profile wins over the environment, as in botocore
        env = _environment()
        if env is not None:
            return env
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    found = _profile(name)
    if found is None:
        raise NoCredentials(
            f"no AWS credentials: set remote.credentials (access_key_id, "
            f"secret_access_key), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile "
            f"[{name}] (keys, or role_arn with source_profile) in the shared credentials "
            f"or config file")
    return found


def sts_endpoint(region: str) -> str:
    """Where AssumeRole goes (botocore's service-specific endpoint variables first)."""
    url = os.environ.get("AWS_ENDPOINT_URL_STS") or os.environ.get("AWS_ENDPOINT_URL")
    return (url or f"https://sts.{region}.amazonaws.com").rstrip("/") + "/"


def assume_role_request(role: AssumeRole, source: Credentials, region: str,
                        now: datetime | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
    """``(url, headers, body)`` of the signed STS ``AssumeRole`` call."""
    params = {"Action": "AssumeRole", "Version": "2011-06-15", "RoleArn": role.role_arn,
              "RoleSessionName": role.session_name, "DurationSeconds": str(role.duration)}
    if role.external_id:
        params["ExternalId"] = role.external_id
    body = urlencode(params).encode("ascii")
    url = sts_endpoint(role.region or region)
    headers = sign("POST", url, [
        ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
        ("User-Agent", "twistgw"),
    ], body, credentials=source, region=role.region or region, service="sts",
        now=now or datetime.now(UTC))
    return url, headers, body


def parse_assume_role_response(status: int, body: bytes, role: AssumeRole
                               ) -> tuple[Credentials, datetime]:
    """The temporary credentials and their expiry; :class:`NoCredentials` with STS's
    error code and message otherwise."""
    try:
        root: Any = ET.fromstring(body)
    except ET.ParseError:
        root = None
    if status != 200 or root is None:
        code = message = ""
        if root is not None:
            code = root.findtext(f".//{_STS_NS}Code") or root.findtext(".//Code") or ""
            message = (root.findtext(f".//{_STS_NS}Message") or root.findtext(".//Message")
                       or "")
        raise NoCredentials(f"AssumeRole {role.role_arn} (profile [{role.profile}]) failed "
                            f"with status {status}: {code} {message}".rstrip())
    found = root.find(f".//{_STS_NS}Credentials")
    if found is None:
        found = root.find(".//Credentials")

    def text(name: str) -> str:
        value: str | None = None
        if found is not None:
            value = found.findtext(f"{_STS_NS}{name}") or found.findtext(name)
        if not value:
            raise NoCredentials(f"AssumeRole {role.role_arn}: the answer has no {name}")
        return value.strip()

    expiration = datetime.fromisoformat(text("Expiration").replace("Z", "+00:00"))
    return (Credentials(text("AccessKeyId"), text("SecretAccessKey"), text("SessionToken"),
                        source=f"role {role.role_arn} (profile [{role.profile}])"),
            expiration)
