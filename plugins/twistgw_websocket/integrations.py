"""Calling a route's integration with an event: Lambda (AWS_PROXY), HTTP backend or MOCK.

Lambda functions run on the Lambda plugin's warm pools through its public
:func:`twistgw_lambda.plugin.invoke`.  HTTP integrations POST the message (an empty body
for ``$connect`` / ``$disconnect``) with the route's ``request_parameters`` and read at
most one message's worth of answer.  The result is an :class:`Outcome`: the status
(``$connect`` refuses on non-2xx), the body a route response sends back, the headers
(``Sec-WebSocket-Protocol`` selects a subprotocol).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers as TwistedHeaders

from twistgw.outbound import BoundedBody, BytesProducer

if TYPE_CHECKING:
    from twistgw.config import GatewayConfig

    from .connection import Connection
    from .definition import WsIntegration

__all__ = ["Outcome", "call_integration", "HttpClient"]

log = Logger()


@attrs.frozen
class Outcome:
    """What an integration answered; ``error`` when it failed (AWS's 500)."""

    status: int = 200
    body: bytes | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    error: str | None = None


class HttpClient:
    """One pooled Agent for the plugin's HTTP integrations."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.agent = Agent(reactor, pool=self.pool)

    def close(self) -> Any:
        return self.pool.closeCachedConnections()


def _parameters(integration: WsIntegration, conn: Connection, extra: Mapping[str, str]
                ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    headers: list[tuple[str, str]] = []
    query: list[tuple[str, str]] = []
    for target, source in integration.request_parameters.items():
        if source.startswith("'"):
            value: str | None = source[1:-1]
        elif source.startswith("context."):
            value = extra.get(source[len("context."):])
        elif source.startswith("route.request.header."):
            name = source[len("route.request.header."):].lower()
            value = next((v for k, v in reversed(conn.headers) if k.lower() == name), None)
        else:
            name = source[len("route.request.querystring."):]
            value = next((v for k, v in reversed(conn.query) if k == name), None)
        if value is None:
            continue
        kind, _, name = target[len("integration.request."):].partition(".")
        (headers if kind == "header" else query).append((name, value))
    return headers, query


async def _http(integration: WsIntegration, conn: Connection, body: bytes,
                context: Mapping[str, str], client: HttpClient, limit: int) -> Outcome:
    headers, query = _parameters(integration, conn, context)
    url = integration.uri
    if query:
        url += ("&" if "?" in url else "?") + urlencode(query)
    theaders = TwistedHeaders()
    theaders.addRawHeader(b"content-type", b"application/json")
    for name, value in headers:
        theaders.addRawHeader(name.encode("latin-1"), value.encode("latin-1", "replace"))
    d = client.agent.request(b"POST", url.encode("ascii"), theaders, BytesProducer(body))
    d.addTimeout(integration.timeout, client.reactor)
    try:
        response = await d
        collector = BoundedBody(limit)
        response.deliverBody(collector)
        collector.finished.addTimeout(integration.timeout, client.reactor)
        data = await collector.finished
    except Exception as e:
        return Outcome(status=500, error=f"HTTP integration {integration.uri} failed: {e!r}")
    out_headers = {k.decode("latin-1"): v[-1].decode("latin-1")
                   for k, v in response.headers.getAllRawHeaders()}
    return Outcome(status=int(response.code), body=data, headers=out_headers)


def _lambda_output(payload: bytes) -> Outcome:
    """A Lambda proxy output: ``statusCode`` / ``headers`` / ``body``, or any JSON."""
    try:
        doc = json.loads(payload) if payload.strip() else None
    except (ValueError, UnicodeDecodeError):
        return Outcome(status=500, error="the function returned something that is not JSON")
    if isinstance(doc, dict) and ("statusCode" in doc or "body" in doc):
        status = doc.get("statusCode", 200)
        if isinstance(status, bool) or not isinstance(status, int):
            try:
                status = int(str(status))
            except ValueError:
                return Outcome(status=500, error=f"invalid statusCode {status!r}")
        headers = doc.get("headers") or {}
        if not isinstance(headers, dict):
            headers = {}
        body = doc.get("body")
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
        return Outcome(status=status, body=data,
                       headers={str(k): str(v) for k, v in headers.items()})
    if doc is None:
        return Outcome(status=200, body=None)
    return Outcome(status=200, body=payload)


async def call_integration(config: GatewayConfig, integration: WsIntegration,
                           conn: Connection, event: dict[str, Any], body: bytes,
                           client: HttpClient, limit: int) -> Outcome:
    """Run ``integration`` for one event; failures are an :class:`Outcome` with ``error``."""
    if integration.type == "MOCK":
        text = integration.response
        return Outcome(status=200, body=text.encode("utf-8") if text is not None else None)
    if integration.type in ("HTTP", "HTTP_PROXY"):
        ctx = event["requestContext"]
        context = {k: str(v) for k, v in ctx.items() if isinstance(v, str | int)}
        return await _http(integration, conn, body, context, client, limit)
    from twistgw_lambda import plugin as lambda_plugin

    assert integration.function is not None
    payload = json.dumps(event, separators=(",", ":")).encode("utf-8")
    try:
        result = await lambda_plugin.invoke(config, integration.function, payload,
                                            arn=integration.function_arn,
                                            timeout=integration.timeout)
    except defer.TimeoutError:
        return Outcome(status=504, error=f"{integration.function} timed out")
    except Exception as e:
        return Outcome(status=500, error=f"{integration.function} could not be invoked: "
                       f"{e!r}")
    if result.function_error is not None:
        return Outcome(status=500, error=f"{integration.function} failed: "
                       f"{result.error_message}")
    return _lambda_output(result.payload)
