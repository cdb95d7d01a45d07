"""Binary/text conversion for non-proxy integrations (aws-apigw-spec.md §3.5).

A payload is binary when its media type matches the API's ``binaryMediaTypes``: the
request's ``Content-Type`` for the request; the integration response's ``Content-Type``
for what the backend returned, and the client's *first* ``Accept`` type for what the
client wants.  ``contentHandling`` (``CONVERT_TO_TEXT`` / ``CONVERT_TO_BINARY``) on the
integration converts the request, on the integration response the response.
"""

from __future__ import annotations

import base64
import binascii
import enum

from twistgw.definition import matches_media_type

__all__ = ["matches_media_type", "first_type", "decode", "encode", "ResponseAction",
           "response_action", "request_is_passed_as_binary"]

CONVERT_TO_TEXT = "CONVERT_TO_TEXT"
CONVERT_TO_BINARY = "CONVERT_TO_BINARY"


def first_type(value: str | None) -> str:
    """The first media type of a header value, lower-case, without parameters."""
    return (value or "").split(",", 1)[0].split(";", 1)[0].strip().lower()


def decode(body: bytes) -> bytes:
    """Base64-decode ``body``; ``ValueError`` when it is not base64 (AWS: 500)."""
    try:
        return base64.b64decode(body.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(str(e)) from None


def encode(body: bytes) -> bytes:
    """Base64-encode ``body``."""
    return base64.b64encode(body)


def request_is_passed_as_binary(is_binary: bool, handling: str | None) -> bool:
    """A binary request body goes to the integration untouched (no template) unless
    ``CONVERT_TO_TEXT`` asks for it base64-encoded (§3.5 request table)."""
    return is_binary and handling != CONVERT_TO_TEXT


class ResponseAction(enum.Enum):
    """What becomes of the integration response payload (§3.5 response table)."""

    KEEP = "keep"          #: as it is (text stays text, binary stays binary)
    DECODE = "decode"      #: base64-decoded into a blob
    ENCODE = "encode"      #: base64-encoded into a string


def response_action(*, payload_binary: bool, accept_binary: bool, types_set: bool,
                    handling: str | None) -> ResponseAction:
    """The §3.5 response matrix, row by row."""
    if not types_set:
        return ResponseAction.DECODE if handling == CONVERT_TO_BINARY else ResponseAction.KEEP
    if not payload_binary:
        if handling == CONVERT_TO_BINARY:
            return ResponseAction.DECODE
        if handling == CONVERT_TO_TEXT:
            return ResponseAction.KEEP
        return ResponseAction.DECODE if accept_binary else ResponseAction.KEEP
    if handling == CONVERT_TO_TEXT:
        return ResponseAction.ENCODE
    if handling == CONVERT_TO_BINARY:
        return ResponseAction.KEEP
    return ResponseAction.KEEP if accept_binary else ResponseAction.ENCODE
