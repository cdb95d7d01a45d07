"""``remote:`` functions: the Lambda Invoke API against a configured endpoint.

``POST {endpoint}/2015-03-31/functions/{name}/invocations[?Qualifier=q]``, SigV4-signed
(service ``lambda``, the configured region), ``X-Amz-Invocation-Type`` (``RequestResponse``
unless the integration maps ``Event`` or ``DryRun``: then the answer is 202 or 204 with no
body) and the qualifier of the integration URI's function ARN (else the configured one),
and ``X-Amz-Log-Type`` as configured.  A 200 answer is the function's output, a function
error when ``X-Amz-Function-Error`` is set; any other status is an Invoke API error
(:class:`InvokeFailed`: throttling, missing function, bad signature...).  A failure to talk
to the endpoint is :class:`EndpointUnreachable`.  The wait is bounded by the connect
timeout and by the integration timeout (the core cancels the invoke, which aborts the
connection); the answer's body is read up to Lambda's 6 MB limit.

Credentials, in order: ``remote.credentials`` (values usually ``{"$env": NAME}``
secrets), the ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``
environment variables (skipped when ``remote.profile`` names a profile, as botocore does),
the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE`` or ``~/.aws/credentials``,
profile ``remote.profile``, ``AWS_PROFILE`` or ``default``).
Environment and file are read again at most once a minute, so rotated temporary
credentials are picked up without a restart.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers as TwistedHeaders

from twistgw.outbound import BodyTooLarge, BoundedBody, BytesProducer

from .functions import RemoteConfig
from .runtime import MAX_PAYLOAD_BYTES, InvokeResult
from .sigv4 import Credentials, sign

__all__ = ["RemoteConfig", "RemoteFunction", "InvokeFailed", "EndpointUnreachable",
           "NoCredentials", "resolve_credentials", "invoke_path"]

log = Logger()

#: How long credentials read from the environment or the shared file are reused.
CREDENTIALS_TTL = 60.0


class NoCredentials(Exception):
    """No credentials in config, environment or the shared credentials file."""


class InvokeFailed(Exception):
    """The Invoke API answered something other than 200 (the function did not run)."""

    def __init__(self, status: int, error_type: str, message: str,
                 request_id: str = "-") -> None:
        super().__init__(f"{status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message
        #: The Invoke API's ``x-amzn-RequestId`` for the failed call.
        self.request_id = request_id


class EndpointUnreachable(Exception):
    """Refused, reset, DNS or TLS failure, or a connection dropped mid-answer."""


def _shared_file_credentials(profile: str) -> Credentials | None:
    path = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
                or Path.home() / ".aws" / "credentials").expanduser()
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, configparser.Error):
        return None
    if not parser.has_section(profile):
        return None
    section = parser[profile]
    key = section.get("aws_access_key_id")
    secret = section.get("aws_secret_access_key")
    if not key or not secret:
        return None
    token = section.get("aws_session_token") or section.get("aws_security_token")
    return Credentials(key.strip(), secret.strip(), token.strip() if token else None,
                       source=f"{path} [{profile}]")


def resolve_credentials(configured: Credentials | None, profile: str | None
                        ) -> Credentials:
    """Config, then the environment, then the shared credentials file."""
    if configured is not None:
        return configured
    key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret and profile is None:  # a named profile wins, as in botocore
        return Credentials(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None,
                           source="environment")
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    found = _shared_file_credentials(name)
    if found is None:
        raise NoCredentials(
            f"no AWS credentials: set remote.credentials (access_key_id, "
            f"secret_access_key), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile "
            f"[{name}] in the shared credentials file")
    return found


def invoke_path(function: str, qualifier: str | None) -> str:
    """The Invoke API path (and query) for a function name, ARN or partial ARN."""
    path = f"/2015-03-31/functions/{quote(function, safe='')}/invocations"
    if qualifier:
        path += f"?Qualifier={quote(qualifier, safe='')}"
    return path


class RemoteFunction:
    """Invokes one function through the Invoke API; quacks like a worker pool."""

    def __init__(self, name: str, config: RemoteConfig, reactor: Any,
                 pool: HTTPConnectionPool | None = None) -> None:
        self.name = name
        self.config = config
        self.reactor = reactor
        self.pool = pool or HTTPConnectionPool(reactor, persistent=True)
        self.agent = Agent(reactor, connectTimeout=config.connect_timeout, pool=self.pool)
        self._credentials: Credentials | None = None
        self._read_at = 0.0

    def credentials(self) -> Credentials:
        """The signing credentials (environment and file re-read once a minute)."""
        cfg = self.config
        if cfg.credentials is not None:
            return cfg.credentials
        now = time.monotonic()
        if self._credentials is None or now - self._read_at > CREDENTIALS_TTL:
            self._credentials = resolve_credentials(None, cfg.profile)
            self._read_at = now
        return self._credentials

    def invoke(self, payload: bytes, function_arn: str, trace_id: str,
               invocation_type: str = "RequestResponse") -> defer.Deferred[InvokeResult]:
        """One invoke; cancelling the Deferred aborts the request."""
        _, _, rest = function_arn.partition(":function:")
        _, _, qualifier = rest.partition(":")
        return defer.Deferred.fromCoroutine(
            self._invoke(payload, trace_id, qualifier or self.config.qualifier,
                         invocation_type))

    async def _invoke(self, payload: bytes, trace_id: str, qualifier: str | None,
                      invocation_type: str = "RequestResponse") -> InvokeResult:
        cfg = self.config
        url = cfg.endpoint.rstrip("/") + invoke_path(cfg.function, qualifier)
        try:
            credentials = self.credentials()
        except NoCredentials as e:
            raise InvokeFailed(403, "MissingAuthenticationTokenException", str(e)) from None
        headers = sign("POST", url, [
            ("X-Amz-Invocation-Type", invocation_type),
            ("X-Amz-Log-Type", cfg.log_type),
            ("Content-Type", "application/json"),
            ("User-Agent", "twistgw"),
            ("X-Amzn-Trace-Id", trace_id),
        ], payload, credentials=credentials, region=cfg.region, service="lambda",
            now=datetime.now(UTC))
        raw = TwistedHeaders()
        for name, value in headers:
            raw.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        try:
            response = await self.agent.request(b"POST", url.encode("ascii"), raw,
                                                BytesProducer(payload))
            reader = BoundedBody(MAX_PAYLOAD_BYTES + 65536)
            response.deliverBody(reader)
            body = await reader.finished
        except defer.CancelledError:
            raise
        except BodyTooLarge:
            return InvokeResult("-", json.dumps({
                "errorMessage": f"Response payload size exceeded maximum allowed payload "
                                f"size ({MAX_PAYLOAD_BYTES} bytes).",
                "errorType": "Function.ResponseSizeTooLarge"}).encode(), "Unhandled")
        except Exception as e:
            if _is_cancel(e):
                raise defer.CancelledError() from e
            raise EndpointUnreachable(f"{url}: {e}") from e

        def header(name: bytes) -> str | None:
            values = response.headers.getRawHeaders(name)
            return values[-1].decode("latin-1") if values else None

        request_id = header(b"x-amzn-requestid") or "-"
        logs = header(b"x-amz-log-result")
        if logs:
            text = base64.b64decode(logs + "=" * (-len(logs) % 4)).decode("utf-8", "replace")
            for line in text.splitlines():
                log.info("lambda {function} [{request_id}] {line}", function=self.name,
                         request_id=request_id, line=line)
        expected = {"Event": 202, "DryRun": 204}.get(invocation_type, 200)
        if response.code != expected:
            raise InvokeFailed(response.code, *_service_error(
                header(b"x-amzn-errortype"), body), request_id=request_id)
        return InvokeResult(request_id, body, header(b"x-amz-function-error"),
                            header(b"x-amz-executed-version") or "$LATEST",
                            status=response.code)

    def keep_warm(self) -> list[defer.Deferred[None]]:
        return []

    def stop(self) -> defer.Deferred[None]:
        return self.pool.closeCachedConnections()  # type: ignore[no-any-return]


def _service_error(error_type: str | None, body: bytes) -> tuple[str, str]:
    """The error type and message of an Invoke API error answer."""
    message = ""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, Mapping):
        message = str(doc.get("message") or doc.get("Message") or "")
        error_type = error_type or str(doc.get("__type") or doc.get("Type") or "")
    if not message:
        message = body[:512].decode("utf-8", "replace")
    return (error_type or "ServiceException").split(":", 1)[0], message


def _is_cancel(e: BaseException) -> bool:
    if isinstance(e, defer.CancelledError):
        return True
    reasons = getattr(e, "reasons", None)
    return bool(reasons) and any(r.check(defer.CancelledError) is not None
                                 for r in reasons or ())
