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

Credentials come from :mod:`twistgw_lambda.credentials` (config secrets, the environment,
the shared credentials and config files, roles assumed through STS).  Environment and
files are read again at most once a minute, so rotated temporary credentials are picked
up without a restart; an assumed role's credentials are kept until shortly before they
expire, and concurrent invokes share one AssumeRole call.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers as TwistedHeaders

from twistgw.outbound import BodyTooLarge, BoundedBody, BytesProducer

from .credentials import (
    STS_REFRESH_MARGIN,
    AssumeRole,
    NoCredentials,
    assume_role_request,
    parse_assume_role_response,
    resolve_credentials,
)
from .functions import RemoteConfig
from .runtime import MAX_PAYLOAD_BYTES, InvokeResult
from .sigv4 import Credentials, sign

__all__ = ["RemoteConfig", "RemoteFunction", "InvokeFailed", "EndpointUnreachable",
           "NoCredentials", "resolve_credentials", "invoke_path"]

log = Logger()

#: How long credentials read from the environment or the shared file are reused.
CREDENTIALS_TTL = 60.0


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
        self._valid_until = 0.0
        #: Invokes waiting for the one refresh in progress (empty: none running).
        self._waiters: list[defer.Deferred[Credentials]] = []

    async def credentials(self) -> Credentials:
        """The signing credentials: environment and files re-read once a minute, an
        assumed role's kept until :data:`STS_REFRESH_MARGIN` before it expires."""
        cfg = self.config
        if cfg.credentials is not None:
            return cfg.credentials
        if self._credentials is not None and time.monotonic() < self._valid_until:
            return self._credentials
        waiting: defer.Deferred[Credentials] = defer.Deferred()
        self._waiters.append(waiting)
        if len(self._waiters) == 1:  # one refresh shared by concurrent invokes
            defer.Deferred.fromCoroutine(self._refresh()).addBoth(self._refreshed)
        return await waiting

    def _refreshed(self, result: Credentials | Failure) -> None:
        """Hand a refresh's outcome to every invoke that waited for it."""
        waiters, self._waiters = self._waiters, []
        for waiting in waiters:
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(result)

    async def _refresh(self) -> Credentials:
        found = resolve_credentials(None, self.config.profile)
        if isinstance(found, Credentials):
            self._credentials, self._valid_until = found, time.monotonic() + CREDENTIALS_TTL
            return found
        credentials, expiration = await self._assume(found)
        left = (expiration - datetime.now(UTC)).total_seconds()
        self._credentials = credentials
        self._valid_until = time.monotonic() + max(left - STS_REFRESH_MARGIN, 0.0)
        log.info("lambda {function}: assumed {role} (profile [{profile}]) until {until}",
                 function=self.name, role=found.role_arn, profile=found.profile,
                 until=expiration.isoformat())
        return credentials

    async def _assume(self, role: AssumeRole) -> tuple[Credentials, datetime]:
        """STS AssumeRole with the role's source credentials (a role chain first)."""
        source = role.source
        if isinstance(source, AssumeRole):
            source, _ = await self._assume(source)
        url, headers, body = assume_role_request(role, source, self.config.region)
        try:
            response, answer = await self._post(url, headers, body, 1024 * 1024)
        except defer.CancelledError:
            raise
        except Exception as e:
            raise NoCredentials(f"AssumeRole {role.role_arn}: cannot reach STS at {url}: "
                                f"{e}") from e
        return parse_assume_role_response(response.code, answer, role)

    async def _post(self, url: str, headers: list[tuple[str, str]], body: bytes, limit: int
                    ) -> tuple[Any, bytes]:
        """POST through the pooled agent; the answer and its body (at most ``limit``
        bytes, else :class:`BodyTooLarge`)."""
        raw = TwistedHeaders()
        for name, value in headers:
            raw.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        response = await self.agent.request(b"POST", url.encode("ascii"), raw,
                                            BytesProducer(body))
        reader = BoundedBody(limit)
        response.deliverBody(reader)
        answer: bytes = await reader.finished
        return response, answer

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
            credentials = await self.credentials()
        except NoCredentials as e:
            log.error("lambda {function}: {problem}", function=self.name, problem=str(e))
            raise InvokeFailed(403, "MissingAuthenticationTokenException", str(e)) from None
        headers = sign("POST", url, [
            ("X-Amz-Invocation-Type", invocation_type),
            ("X-Amz-Log-Type", cfg.log_type),
            ("Content-Type", "application/json"),
            ("User-Agent", "twistgw"),
            ("X-Amzn-Trace-Id", trace_id),
        ], payload, credentials=credentials, region=cfg.region, service="lambda",
            now=datetime.now(UTC))
        try:
            response, body = await self._post(url, headers, payload,
                                              MAX_PAYLOAD_BYTES + 65536)
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
