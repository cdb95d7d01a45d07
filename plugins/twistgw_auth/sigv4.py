"""IAM authorization: SigV4 verification of requests signed with configured access keys.

The canonical request is rebuilt from what was received (aws-apigw-spec.md §5.7,
reliability.md §4.2): method; the path as sent with dot segments and repeated slashes
removed, then URI-encoded again (execute-api is not S3, so paths are double-encoded);
query pairs decoded, re-encoded and sorted; the signed headers, lower-cased, values
trimmed and joined with commas; the payload's SHA-256 (an ``x-amz-content-sha256`` header
must equal it).  ``host`` and ``x-amz-date`` must be signed, the time must be within 15
minutes of ours and the credential scope must name the request's date, ``execute-api``
and (when configured) the region.  Signatures are compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from urllib.parse import quote, unquote

from twistgw.errors import (
    AccessDenied,
    GatewayError,
    InvalidSignature,
    MissingAuthenticationToken,
)
from twistgw.models import Context, Principal

from .settings import IamKey

__all__ = ["authorize", "canonical_request", "signing_key"]

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "execute-api"
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,"
    r"\s*Signature=([0-9a-f]{64})\s*$")
_DATE_RE = re.compile(r"^(\d{8})T(\d{6})Z$")
_MISMATCH = ("The request signature we calculated does not match the signature you "
             "provided. Check your AWS Secret Access Key and signing method. Consult the "
             "service documentation for details.")
_INVALID_TOKEN = "The security token included in the request is invalid."


def _normalize_path(path: str) -> str:
    if not path:
        return "/"
    out: list[str] = []
    for seg in path.split("/"):
        if not seg or seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    result = "/" + "/".join(out)
    if path.endswith("/") and result != "/":
        result += "/"
    return result


def _canonical_query(raw: str) -> str:
    pairs = []
    for part in raw.split("&") if raw else ():
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(method: str, raw_path: str, raw_query: str,
                      headers: Mapping[str, list[str]], signed: list[str],
                      payload_hash: str) -> str:
    """The SigV4 canonical request for execute-api."""
    lines = [f"{name}:{','.join(' '.join(v.split()) for v in headers.get(name, []))}"
             for name in signed]
    return "\n".join([method, quote(_normalize_path(raw_path), safe="/~"),
                      _canonical_query(raw_query), *lines, "", ";".join(signed),
                      payload_hash])


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The SigV4 signing key for a date, region and service."""
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _fmt(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _refuse(is_http: bool, error: GatewayError, error_type: str | None = None
            ) -> GatewayError:
    if is_http:
        return AccessDenied("Forbidden")
    if error_type is not None:
        error.error_type = error_type
    return error


def authorize(ctx: Context, keys: Mapping[str, IamKey], *, region: str | None,
              max_skew: float = 900.0, now: float | None = None) -> Principal:
    """The IAM principal of a correctly signed request, or raise AWS's 403."""
    api = ctx.deployment_api
    is_http = api is not None and api.is_http
    request = ctx.request
    auth = request.headers.get("authorization")
    if auth is None:
        raise _refuse(is_http, MissingAuthenticationToken())
    m = _AUTH_RE.match(auth.strip())
    if m is None:
        raise _refuse(is_http, InvalidSignature(
            "Authorization header requires 'Credential' parameter. Authorization header "
            "requires 'Signature' parameter. Authorization header requires "
            "'SignedHeaders' parameter. Authorization header requires existence of either "
            "a 'X-Amz-Date' or a 'Date' header."), "IncompleteSignatureException")
    credential, signed_raw, signature = m.groups()
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise _refuse(is_http, InvalidSignature(
            "Credential should be scoped to a valid region."), "IncompleteSignatureException")
    akid, date, scope_region, service, _ = scope
    signed = signed_raw.split(";")
    if signed != sorted(set(signed)) or any(s != s.lower() for s in signed):
        raise _refuse(is_http, InvalidSignature(_MISMATCH))
    if "host" not in signed or "x-amz-date" not in signed:
        raise _refuse(is_http, InvalidSignature(
            "'Host' and 'X-Amz-Date' must be signed headers."), "IncompleteSignatureException")
    amz_date = request.headers.get("x-amz-date") or ""
    dm = _DATE_RE.match(amz_date)
    if dm is None:
        raise _refuse(is_http, InvalidSignature(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
            "header."), "IncompleteSignatureException")
    try:
        signed_at = float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise _refuse(is_http, InvalidSignature(_MISMATCH)) from None
    current = time.time() if now is None else now
    minutes = int(max_skew // 60)
    if signed_at < current - max_skew:
        raise _refuse(is_http, InvalidSignature(
            f"Signature expired: {amz_date} is now earlier than {_fmt(current - max_skew)} "
            f"({_fmt(current)} - {minutes} min.)"))
    if signed_at > current + max_skew:
        raise _refuse(is_http, InvalidSignature(
            f"Signature not yet current: {amz_date} is still later than "
            f"{_fmt(current + max_skew)} ({_fmt(current)} + {minutes} min.)"))
    if date != dm.group(1):
        raise _refuse(is_http, InvalidSignature(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{date}' != '{dm.group(1)}', from '{amz_date}'."))
    if service != SERVICE:
        raise _refuse(is_http, InvalidSignature(
            f"Credential should be scoped to correct service: '{SERVICE}'."))
    if region is not None and scope_region != region:
        raise _refuse(is_http, InvalidSignature(
            f"Credential should be scoped to a valid region, not '{scope_region}'."))
    key = keys.get(akid)
    if key is None:
        raise _refuse(is_http, InvalidSignature(_INVALID_TOKEN), "UnrecognizedClientException")
    body_hash = hashlib.sha256(request.body).hexdigest()
    claimed = request.headers.get("x-amz-content-sha256")
    if claimed is not None and not hmac.compare_digest(claimed.encode(), body_hash.encode()):
        raise _refuse(is_http, InvalidSignature(
            "The provided 'x-amz-content-sha256' header does not match what was computed."))
    headers: dict[str, list[str]] = {}
    wanted = set(signed)
    for name, value in request.headers:
        lname = name.lower()
        if lname in wanted:
            headers.setdefault(lname, []).append(value)
    if any(name not in headers for name in signed):
        raise _refuse(is_http, InvalidSignature(_MISMATCH))
    creq = canonical_request(request.method, request.raw_path or "/", request.raw_query,
                             headers, signed, body_hash)
    string_to_sign = "\n".join([
        ALGORITHM, amz_date, f"{date}/{scope_region}/{service}/aws4_request",
        hashlib.sha256(creq.encode("utf-8", "surrogateescape")).hexdigest()])
    expected = hmac.new(signing_key(key.secret, date, scope_region), string_to_sign.encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise _refuse(is_http, InvalidSignature(_MISMATCH))
    return Principal(id=key.arn, kind="iam", context={
        "accessKey": key.access_key_id, "accountId": key.account_id, "caller": key.user,
        "user": key.user, "userArn": key.arn})
