"""The Lambda proxy events of WebSocket routes (aws-apigw-spec.md §7.3), exactly.

``CONNECT`` carries the handshake's headers and query string; ``MESSAGE`` only the body
and the ``requestContext`` (with ``messageId``); ``DISCONNECT`` the captured header set,
``disconnectStatusCode`` and ``disconnectReason``.  Once a ``$connect`` was authorized by
a Lambda authorizer, every event of the connection carries ``requestContext.authorizer``.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from twistgw.models import StashKey
from twistgw.variables import request_time

if TYPE_CHECKING:
    from twistgw.models import Context

__all__ = ["new_id", "connect_event", "message_event", "disconnect_event",
           "multi_value", "Handshake", "handshake", "authorizer_event"]


class ConnectionView(Protocol):
    """What the events read of a connection (a :class:`Handshake` or a Connection)."""

    id: str
    api_id: str
    stage: str
    stage_variables: Mapping[str, str]
    domain_name: str
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    identity: dict[str, Any]
    connected_at_ms: int
    authorizer: dict[str, Any] | None
    api_key: str | None


@attrs.define
class Handshake:
    """What ``$connect`` saw, fixed once per handshake: the authorizer's event and the
    ``$connect`` integration's name the same ``connectionId`` and ``connectedAt``."""

    id: str
    api_id: str
    stage: str
    stage_variables: Mapping[str, str]
    domain_name: str
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    identity: dict[str, Any]
    connected_at_ms: int
    authorizer: dict[str, Any] | None = None
    api_key: str | None = None


_HANDSHAKE: StashKey[Handshake | None] = StashKey("websocket.handshake")


def new_id() -> str:
    """An id in AWS's short form (``R1kmxc2VNjMCFIA=``), URL-safe alphabet."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode("ascii")


def multi_value(pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, str] | None,
                                                            dict[str, list[str]] | None]:
    """``(single, multi)`` maps of ``pairs`` (the last value wins in ``single``)."""
    if not pairs:
        return None, None
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def _context(conn: ConnectionView, route_key: str, event_type: str, request_id: str,
             now: float) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": request_time(now),
        "messageDirection": "IN",
        "stage": conn.stage,
        "connectedAt": conn.connected_at_ms,
        "requestTimeEpoch": int(now * 1000),
        "identity": dict(conn.identity),
        "requestId": request_id,
        "domainName": conn.domain_name,
        "connectionId": conn.id,
        "apiId": conn.api_id,
    }
    if conn.authorizer is not None:
        ctx["authorizer"] = dict(conn.authorizer)
    return ctx


def connect_event(conn: ConnectionView, request_id: str, now: float | None = None
                  ) -> dict[str, Any]:
    """The ``$connect`` event: the handshake's headers and query string."""
    now = time.time() if now is None else now
    headers, multi_headers = multi_value(conn.headers)
    query, multi_query = multi_value(conn.query)
    event: dict[str, Any] = {
        "headers": headers, "multiValueHeaders": multi_headers,
        "queryStringParameters": query, "multiValueQueryStringParameters": multi_query,
        "requestContext": _context(conn, "$connect", "CONNECT", request_id, now),
        "isBase64Encoded": False,
    }
    if conn.stage_variables:
        event["stageVariables"] = dict(conn.stage_variables)
    return event


def message_event(conn: ConnectionView, route_key: str, body: str, request_id: str,
                  message_id: str, now: float | None = None) -> dict[str, Any]:
    """A ``MESSAGE`` event: no headers, no query string, ``messageId`` in the context."""
    now = time.time() if now is None else now
    ctx = _context(conn, route_key, "MESSAGE", request_id, now)
    ctx = {"routeKey": route_key, "messageId": message_id,
           **{k: v for k, v in ctx.items() if k != "routeKey"}}
    event: dict[str, Any] = {"requestContext": ctx, "body": body, "isBase64Encoded": False}
    if conn.stage_variables:
        event["stageVariables"] = dict(conn.stage_variables)
    return event


def disconnect_event(conn: ConnectionView, code: int, reason: str, request_id: str,
                     now: float | None = None) -> dict[str, Any]:
    """The ``$disconnect`` event, with AWS's captured header set."""
    now = time.time() if now is None else now
    host = conn.domain_name
    headers: Mapping[str, str] = {"Host": host, "x-api-key": conn.api_key or "",
                                  "X-Forwarded-For": "", "x-restapi": ""}
    ctx = _context(conn, "$disconnect", "DISCONNECT", request_id, now)
    ctx = {"routeKey": "$disconnect", "disconnectStatusCode": code,
           **{k: v for k, v in ctx.items() if k != "routeKey"}}
    ctx["disconnectReason"] = reason
    event: dict[str, Any] = {
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": ctx,
        "isBase64Encoded": False,
    }
    if conn.stage_variables:
        event["stageVariables"] = dict(conn.stage_variables)
    return event


def handshake(ctx: Context) -> Handshake:
    """The handshake of this ``$connect`` request (made on first use, kept in the stash)."""
    found = ctx.stash.get(_HANDSHAKE, None)
    if found is not None:
        return found
    from twistgw_lambda.events import gateway_headers

    from twistgw.models import IntegrationRequest

    headers = ctx.request.headers
    api = ctx.deployment_api
    stage = ctx.stage
    # The client's headers plus what API Gateway adds (X-Forwarded-*, X-Amzn-Trace-Id).
    lines = gateway_headers(ctx, IntegrationRequest(
        method="GET", uri="", headers=headers, query=ctx.request.query, body=b""))
    found = Handshake(
        id=new_id(), api_id=api.id if api is not None else "",
        stage=stage.name if stage is not None else "",
        stage_variables=ctx.stage_variables,
        domain_name=ctx.domain_name or (headers.get("host") or "").split(":")[0],
        headers=tuple(lines), query=tuple(ctx.request.query),
        identity={"userAgent": headers.get("user-agent") or "",
                  "sourceIp": ctx.request.client_ip},
        connected_at_ms=int(time.time() * 1000))
    ctx.stash[_HANDSHAKE] = found
    return found


def authorizer_event(ctx: Context) -> dict[str, Any]:
    """A Lambda ``REQUEST`` authorizer's event on ``$connect`` (without ``type`` and
    ``methodArn``, which the auth plugin adds): the ``CONNECT`` event's headers, query
    string, stage variables and ``requestContext``."""
    event = connect_event(handshake(ctx), ctx.extended_request_id)
    event.pop("isBase64Encoded", None)
    event.setdefault("stageVariables", {})
    return event
