"""The MOCK integration: API Gateway answering without a backend.

A shipped plugin, registered through the ``twistgw`` entry-point group like any
third-party plugin.  As on AWS (aws-apigw-spec.md §3.7), the integration request body
(the rendered request template) must be JSON holding an integer ``statusCode``; CDK's
relaxed ``{statusCode: 200}`` is accepted too.  That status is what integration-response
selection matches; the body comes only from the integration response's template.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from twisted.logger import Logger

from twistgw import ApiConfigurationError, IntegrationResponse, hookimpl

if TYPE_CHECKING:
    from twistgw import Context, IntegrationRequest, Registry

__all__ = ["register", "integrate", "parse_status_code"]

log = Logger()

_RELAXED = re.compile(r"""^\s*\{\s*["']?statusCode["']?\s*:\s*(\d{3})\s*[,}]""")
#: The same over the bytes, ASCII blanks and digits only: where it matches, ``_RELAXED``
#: matches the decoded text the same way (ASCII bytes decode to themselves).
#: A key opened with ``"`` must close with it: ``{"statusCode': 200, ": 1}`` is JSON with
#: no ``statusCode`` key (the text path answers ``None`` there); the other spellings
#: are not JSON, so the relaxed form decides as here.
_RELAXED_ASCII = re.compile(
    rb"""^[ \t\n\r\f\v]*\{[ \t\n\r\f\v]*(?:"statusCode"|'?statusCode["']?)"""
    rb"""[ \t\n\r\f\v]*:[ \t\n\r\f\v]*([0-9]{3})[ \t\n\r\f\v]*[,}]""")


def parse_status_code(body: bytes) -> int | None:
    """The ``statusCode`` a MOCK request template produced, or ``None`` if there is none.

    Short bodies (literal templates, a status and little else) are remembered; a longer
    one is usually rendered with request data (a request id) and would only churn the
    cache, hashing its whole body first.
    """
    if len(body) <= _CACHED_BODY:
        return _cached_status_code(body)
    return _status_code(body)


#: The longest body :func:`parse_status_code` remembers.
_CACHED_BODY = 256


def _status_code(body: bytes) -> int | None:
    lead, status = _lead[0]
    if not body.startswith(lead):  # (else this body matches as the last one did)
        fast = _RELAXED_ASCII.match(body)
        status = int(fast.group(1)) if fast is not None else 0
        lead = body[:fast.end()] if fast is not None and 100 <= status <= 599 else b""
        if lead:
            _lead[0] = (lead, status)
    if lead and body.find(b"statusCode", len(lead)) < 0 \
            and body.find(b"\\u00", len(lead)) < 0:
        # The leading key is the only statusCode (no duplicate, not even one spelled
        # with \u escapes: each of its letters is \u00XX), so a JSON parse would find
        # this same value: skip decoding the body and building the document (and, for
        # templates that are not strict JSON, the exception).  The lead holds neither
        # a backslash nor another statusCode, so the rest is all to search (with
        # bytes.find: 3.11's ``in`` costs more per call).
        return status
    text = body.decode("utf-8", "replace")
    m = _RELAXED.match(text)
    try:
        doc = json.loads(text)
    except ValueError:
        return int(m.group(1)) if m else None
    if isinstance(doc, dict):
        value = doc.get("statusCode")
        if isinstance(value, bool):
            return None
        # An integer, not a string: {"statusCode": "200"} fails on AWS too (§3.7; the
        # EMU's unit test "It needs to be an integer").
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    return None


_cached_status_code = lru_cache(maxsize=1024)(_status_code)

#: The leading bytes ``_RELAXED_ASCII`` last matched (up to the match's end) and the
#: status in them.  A body starting with them matches the same way (the match never
#: reads past its end), so the regex is skipped: a route's template renders every body
#: with the same lead.  Starts as a real match's.
_lead = [(b'{"statusCode":200,', 200)]


@hookimpl
def register(registry: Registry) -> None:
    """Claim the MOCK integration type; stay out of every other route's plan."""
    registry.add_integration_type("MOCK")
    registry.add_route_filter(
        lambda route: route.integration is not None and route.integration.type == "MOCK")


@hookimpl
def integrate(ctx: Context, request: IntegrationRequest) -> IntegrationResponse | None:
    """Answer a MOCK integration with the status its request template names."""
    integration = ctx.integration
    if integration is None or integration.type != "MOCK":
        return None
    body = request.body
    # parse_status_code's two paths, without its own call
    status = _cached_status_code(body) if len(body) <= _CACHED_BODY else _status_code(body)
    if status is None:
        log.error("({request_id}) Execution failed due to configuration error: Unable to "
                  "parse statusCode. It should be an integer that is defined in the request "
                  "template.", request_id=ctx.request_id)
        raise ApiConfigurationError()
    return _answer(status)


@lru_cache(maxsize=512)
def _answer(status: int) -> IntegrationResponse:
    """The (immutable) endpoint response for ``status``, built once per status."""
    return IntegrationResponse(status=status, body=b"")
