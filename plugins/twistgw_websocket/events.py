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
from typing import TYPE_CHECKING, Any

from twistgw.variables import request_time

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["new_id", "connect_event", "message_event", "disconnect_event",
           "multi_value"]


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


def _context(conn: Connection, route_key: str, event_type: str, request_id: str,
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


def connect_event(conn: Connection, request_id: str, now: float | None = None
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


def message_event(conn: Connection, route_key: str, body: str, request_id: str,
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


def disconnect_event(conn: Connection, code: int, reason: str, request_id: str,
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
