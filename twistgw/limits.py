"""Bounds on what one client may make the gateway hold: time, bytes, counts.

Every number here is a knob under the ``limits:`` key of the gateway config (globally) and
of a listener (per listener).  The defaults follow the "apigw target" column of the
reliability notes: tighter than stock Twisted, in line with nginx/Envoy/HAProxy edge advice
and with Amazon API Gateway's own quotas (10 MiB payloads).
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["LIMIT_FIELDS", "Limits"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value!r}")


@attrs.frozen
class Limits:
    """Per-listener limits enforced by the hardened HTTP channel.

    :ivar header_timeout: seconds a client has, from its first byte, to send the request line
        and all headers of a request (absolute, not reset by trickled bytes) -> 408.
    :ivar idle_timeout: seconds a keep-alive connection may sit idle between requests, and
        the longest pause allowed between two reads of a request body -> closed.
    :ivar max_headers: header lines per request -> 431 above it.
    :ivar max_header_bytes: bytes of all header lines together -> 431 above it.
    :ivar max_request_line: bytes of the request line -> 414 above it.
    :ivar max_body_bytes: request body size -> 413, refused before any body byte is read
        when Content-Length announces it, and as soon as a chunked body crosses it.
    :ivar max_connections: open connections per listener; further connections are closed
        at accept time.
    :ivar underscore_headers: what to do with header names containing ``_``: ``drop``
        (nginx's default: the header is ignored), ``reject`` (400, Envoy's edge advice) or
        ``allow``.
    """

    header_timeout: float = attrs.field(default=10.0, validator=_positive)
    idle_timeout: float = attrs.field(default=60.0, validator=_positive)
    max_headers: int = attrs.field(default=100, validator=_positive)
    max_header_bytes: int = attrs.field(default=16384, validator=_positive)
    max_request_line: int = attrs.field(default=8192, validator=_positive)
    max_body_bytes: int = attrs.field(default=10 * 1024 * 1024, validator=_positive)
    max_connections: int = attrs.field(default=10000, validator=_positive)
    underscore_headers: str = attrs.field(
        default="drop", validator=attrs.validators.in_(("drop", "reject", "allow"))
    )


LIMIT_FIELDS: dict[str, type] = {
    "header_timeout": float,
    "idle_timeout": float,
    "max_headers": int,
    "max_header_bytes": int,
    "max_request_line": int,
    "max_body_bytes": int,
    "max_connections": int,
    "underscore_headers": str,
}
