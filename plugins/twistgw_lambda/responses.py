"""Lambda proxy output -> method response, with AWS's validation (aws-apigw-spec.md §2).

REST (§2.1) is strict: anything but an object with the five known keys, a numeric
statusCode, string/bool header values and list multiValueHeaders is a *malformed Lambda
proxy response* (502, logged in AWS's execution-log words).  HTTP API 1.0 output (§2.2)
follows the same rules but answers 500.  HTTP API 2.0 (§2.3) infers a response when there
is no ``statusCode`` and sends each cookie as its own ``Set-Cookie``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from twistgw import Headers, IntegrationResponse

from .events import matches_media_type

__all__ = ["MalformedResponse", "BadBase64", "parse_v1", "parse_v2", "V1_KEYS",
           "MALFORMED_LOG", "first_accept_is_binary"]

V1_KEYS = frozenset({"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"})

#: The first line AWS's execution log writes for a malformed proxy response (§2.1).
MALFORMED_LOG = ('Lambda output should follow the next JSON format: { "isBase64Encoded": '
                 'true|false, "statusCode": httpStatusCode, "headers": { "headerName": '
                 '"headerValue", ... },"body": "..."} but was: {payload}')


class MalformedResponse(Exception):
    """The function's output is not a valid proxy response; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadBase64(Exception):
    """``isBase64Encoded`` was true, decoding was due, and the body is not base64."""


def _status(value: Any) -> int:
    if value is None:
        return 200
    if isinstance(value, bool):
        raise MalformedResponse("statusCode is a boolean")
    if isinstance(value, int):
        status = value
    elif isinstance(value, str) and value.strip().isdigit():
        status = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        status = int(value)
    else:
        raise MalformedResponse(f"statusCode {value!r} is not an integer")
    if not 100 <= status <= 599:
        raise MalformedResponse(f"statusCode {status} is not an HTTP status")
    return status


def _header_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    raise MalformedResponse(f"header {name!r} has a {type(value).__name__} value")


def _decode(body: str) -> bytes:
    try:
        return base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as e:
        raise BadBase64(str(e)) from None


_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads's C scanner


def _loads(payload: bytes) -> Any:
    """``json.loads(payload)``, or :class:`MalformedResponse` if it is not JSON.

    A function's output is UTF-8 JSON text with nothing around it, so the C scanner is
    called on it directly (``json.loads`` spends four Python calls on encoding detection
    and framing first); anything it does not take whole (a BOM, another encoding,
    surrounding whitespace, an error) goes through ``json.loads``, which decides."""
    try:
        text = payload.decode("utf-8")
        doc, end = _scan(text, 0)
        if end == len(text):
            return doc
    except (StopIteration, ValueError, RecursionError):
        pass
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise MalformedResponse("the output is not JSON") from None


def first_accept_is_binary(accept: str | None, binary_media_types: tuple[str, ...]) -> bool:
    """§2.1: only the *first* Accept type decides whether a base64 body is decoded."""
    if not accept:
        return False
    first = accept.split(",", 1)[0].split(";", 1)[0].strip().lower()
    return matches_media_type(first, binary_media_types)



def _merged_lines(headers: dict[str, Any] | None, multi: dict[str, Any] | None
                  ) -> list[tuple[str, str]]:
    """The response header lines of payload-1.0 output: ``multiValueHeaders`` and
    ``headers`` merged by case-insensitive name, a value repeated across the two sent
    once, several values joined by ", " (:func:`parse_v1` skips this when there are no
    multiValueHeaders and no name repeats)."""
    # lower-cased name -> (first spelling, values); one loop per map, no generators:
    # this runs on every REST Lambda response.
    merged: dict[str, tuple[str, list[str]]] = {}
    if multi:
        for name, values in multi.items():
            if type(values) is not list:
                raise MalformedResponse(f"multiValueHeaders.{name} is not a list")
            entry = merged.setdefault(name.lower(), (name, []))
            entry[1].extend([_header_value(name, v) for v in values if v is not None])
    if headers:
        for name, value in headers.items():
            if value is None:
                continue
            text = value if type(value) is str else _header_value(name, value)
            lname = name.lower()
            found = merged.get(lname)
            if found is None:
                merged[lname] = (name, [text])
            elif text not in found[1]:
                found[1].append(text)
    lines: list[tuple[str, str]] = []
    for name, values in merged.values():
        if values:
            lines.append((name, values[0] if len(values) == 1 else ", ".join(values)))
    return lines


def parse_v1(payload: bytes, *, decode_base64: bool, trailer: tuple[tuple[str, str], ...] = (),
             metadata: Mapping[str, Any] | None = None) -> IntegrationResponse:
    """Validate and map payload-1.0 output (§2.1, §2.2).

    :param decode_base64: whether ``isBase64Encoded: true`` bodies are decoded (REST: the
        request's first Accept type is binary; HTTP API 1.0: always).
    :param trailer: header lines the gateway adds after the function's.
    :param metadata: the integration response's ``metadata``.
    :raises MalformedResponse: AWS would log "Malformed Lambda proxy response".
    :raises BadBase64: a body due for decoding is not base64 (AWS answers 500).
    """
    doc = _loads(payload)
    if type(doc) is not dict:
        raise MalformedResponse("the output is not a JSON object")
    if not V1_KEYS.issuperset(doc):
        raise MalformedResponse(f"unexpected keys {sorted(set(doc) - V1_KEYS)}")
    get = doc.get
    status = get("statusCode")
    if type(status) is not int or not 100 <= status <= 599:
        status = _status(status)
    headers = get("headers")
    multi = get("multiValueHeaders")
    if headers is not None and type(headers) is not dict:
        raise MalformedResponse("headers is not an object")
    if multi is not None and type(multi) is not dict:
        raise MalformedResponse("multiValueHeaders is not an object")
    if not multi:
        # Most functions send only ``headers``, names distinct: the lines are those
        # pairs as they are (what the merge gives them), and the merge is skipped.
        lines: list[tuple[str, str]] = []
        if headers:
            for name, value in headers.items():
                if value is not None:
                    lines.append((name, value if type(value) is str
                                  else _header_value(name, value)))
            if len(lines) > 1 and len({name.lower() for name, _ in lines}) != len(lines):
                lines = _merged_lines(headers, multi)
    else:
        lines = _merged_lines(headers, multi)
    body = get("body")
    if body is not None and type(body) is not str:
        raise MalformedResponse("body is not a string")
    is_b64 = get("isBase64Encoded", False)
    if is_b64 is not None and type(is_b64) is not bool:
        raise MalformedResponse("isBase64Encoded is not a boolean")
    raw = body.encode("utf-8") if body else b""
    if is_b64 and decode_base64 and body:
        raw = _decode(body)
    lines.extend(trailer)
    # Positional: the keyword call cost 60 % more, on every REST Lambda response.
    return IntegrationResponse(status, Headers(tuple(lines)), raw, metadata)


def parse_v2(payload: bytes, metadata: Mapping[str, Any] | None = None
             ) -> IntegrationResponse:
    """Map payload-2.0 output (§2.3), inferring a response when there is no statusCode.

    :param metadata: the integration response's ``metadata``.
    :raises MalformedResponse: not JSON, or a structured response with bad fields.
    :raises BadBase64: ``isBase64Encoded`` with a body that is not base64.
    """
    doc = _loads(payload)
    if not isinstance(doc, dict) or "statusCode" not in doc:
        inferred = doc.encode("utf-8") if isinstance(doc, str) else payload.strip()
        return IntegrationResponse(status=200, headers=Headers(
            (("content-type", "application/json"),)), body=inferred, metadata=metadata)
    status = _status(doc.get("statusCode"))
    lines: list[tuple[str, str]] = []
    headers = doc.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise MalformedResponse("headers is not an object")
        for name, value in headers.items():
            if value is None:
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            lines.append((name, _header_value(name, value)))
    cookies = doc.get("cookies")
    if cookies is not None:
        if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
            raise MalformedResponse("cookies is not a list of strings")
        lines.extend(("Set-Cookie", c) for c in cookies)
    value = doc.get("body")
    text = value if isinstance(value, str) or value is None else json.dumps(value)
    is_b64 = doc.get("isBase64Encoded", False)
    if is_b64 is not None and not isinstance(is_b64, bool):
        raise MalformedResponse("isBase64Encoded is not a boolean")
    raw = (text or "").encode("utf-8")
    if is_b64 and text:
        raw = _decode(text)
    return IntegrationResponse(status, Headers(tuple(lines)), raw, metadata)
