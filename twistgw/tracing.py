"""``X-Amzn-Trace-Id``: one trace per request, shared by every integration and exporter.

API Gateway parses the client's ``X-Amzn-Trace-Id``, generates a ``Root`` when there is
none and a ``Parent`` when there is none, defaults ``Sampled`` to 1 when the client named a
Parent and to 0 otherwise, and passes the trace on to Lambda and HTTP integrations even
when tracing is off (aws-apigw-spec.md §A.8).  :func:`trace_header` computes that once per
request, lazily (a MOCK route that nobody traces pays nothing) and caches it in the
request's stash, so the Lambda event, the runtime's trace header, an HTTP backend's
header, ``$context.xrayTraceId`` and an OpenTelemetry exporter all see the same trace.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .models import StashKey
from .randomhex import RandomHex

if TYPE_CHECKING:
    from .models import Context

__all__ = ["trace_header", "parse_trace_header", "trace_root", "client_trace_fields"]

_TRACE_KEY: StashKey[str | None] = StashKey("twistgw.trace")


#: Root's 24 and Parent's 16 hex digits of a generated trace, one read per trace.
_random = RandomHex(40)


def parse_trace_header(value: str | None) -> dict[str, str]:
    """``Root=..;Parent=..;Sampled=..`` as a dict (unparseable parts are ignored)."""
    fields: dict[str, str] = {}
    for part in (value or "").split(";"):
        key, sep, item = part.strip().partition("=")
        if sep and key:
            fields[key] = item
    return fields


def client_trace_fields(ctx: Context) -> dict[str, str]:
    """What the client itself sent in ``X-Amzn-Trace-Id`` (empty when nothing)."""
    return parse_trace_header(ctx.trace_id)


def trace_header(ctx: Context) -> str:
    """The full trace id of this request: ``Root=..;Parent=..;Sampled=..`` (§A.7, §A.8).

    The client's ``Root`` is kept; a missing ``Root`` or ``Parent`` is generated;
    ``Sampled`` defaults to 1 when the client named a Parent, else 0; other fields the
    client sent follow in their order.  Stable within one request.
    """
    cached = ctx.stash.get(_TRACE_KEY, None)
    if cached is not None:
        return cached
    if not ctx.trace_id:
        # The usual case, and on every proxied request: nothing to keep from the client,
        # so one random read gives Root and Parent (about half the general path's cost).
        random = _random.take()
        value = f"Root=1-{int(ctx.received_at):08x}-{random[:24]};Parent={random[24:]};Sampled=0"
        ctx.stash[_TRACE_KEY] = value
        return value
    fields = parse_trace_header(ctx.trace_id)
    given_parent = "Parent" in fields
    if "Root" not in fields:
        fields["Root"] = f"1-{int(ctx.received_at):08x}-{os.urandom(12).hex()}"
    if "Parent" not in fields:
        fields["Parent"] = os.urandom(8).hex()
    if "Sampled" not in fields:
        fields["Sampled"] = "1" if given_parent else "0"
    ordered = [f"Root={fields.pop('Root')}", f"Parent={fields.pop('Parent')}",
               f"Sampled={fields.pop('Sampled')}"] + [f"{k}={v}" for k, v in fields.items()]
    value = ";".join(ordered)
    ctx.stash[_TRACE_KEY] = value
    return value


def trace_root(ctx: Context) -> str:
    """The ``Root`` of :func:`trace_header` (``$context.xrayTraceId``)."""
    return trace_header(ctx).split(";", 1)[0][len("Root="):]
