"""Credentials never reach a log line: the redaction of events, free text and access logs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent

from twistgw.jsonlog import format_json
from twistgw.redaction import (
    REDACTED,
    RedactedLineLogger,
    _redacting_observer,
    access_log_getter,
    redact_event,
    redact_text,
    redacted_line,
)

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(("text", "secret"), [
    ("Authorization: Bearer abcdef123456", "abcdef123456"),
    ("authorization=AWS4-HMAC-SHA256 Credential=AKIA/x", "Credential=AKIA"),
    ('{"x-api-key": "key0123456789abcdefghij"}', "key0123456789abcdefghij"),
    ('"multiValueHeaders": {"Cookie": ["a=1", "sid=cookievalue"]}', "cookievalue"),
    ("[('Proxy-Authorization', 'Basic dXNlcjpwYXNz')]", "dXNlcjpwYXNz"),
    ("GET /p?X-Amz-Signature=deadbeef01&X-Amz-Date=1", "deadbeef01"),
    (f"token is {JWT} here", JWT),
    ("client_secret=s3cr3t&grant_type=x", "s3cr3t"),
    ("password: hunter22", "hunter22"),
    ("X-Amz-Security-Token: FQoGZXIvYXdzEJr", "FQoGZXIvYXdzEJr"),
])
def test_free_text_loses_the_secret(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out


@pytest.mark.parametrize("text", [
    "GET /v1/pets 200 12 ms", "X-Amz-Date=20261127T000000Z", "keys=3 rate=10",
    "serving http://127.0.0.1:8080/v1/ -> REST API 'pets'",
])
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_event_fields_by_name_and_nested_values() -> None:
    event: dict[str, Any] = {
        "log_format": "request {headers} by {who}", "log_level": LogLevel.info,
        "headers": {"Authorization": "Bearer abcdefghij", "Host": "h"},
        "pairs": [("Cookie", "sid=1"), ("Accept", "*/*")],
        "api_key": "plainvalue", "who": f"jwt {JWT}", "count": 3,
    }
    redact_event(event)
    assert event["headers"] == {"Authorization": REDACTED, "Host": "h"}
    assert event["pairs"] == [("Cookie", REDACTED), ("Accept", "*/*")]
    assert event["api_key"] == REDACTED
    assert JWT not in event["who"] and event["count"] == 3
    assert "abcdefghij" not in formatEvent(event)


def test_json_line_is_one_redacted_object() -> None:
    line = format_json({"log_format": "{line}", "log_level": LogLevel.warn,
                        "log_namespace": "ns", "log_time": 0.0,
                        "line": "Authorization: Bearer abcdefghij", "n": 1,
                        "obj": object()})
    assert line.endswith("\n") and line.count("\n") == 1
    doc = json.loads(line)
    assert doc["level"] == "warn" and doc["namespace"] == "ns" and doc["n"] == 1
    assert doc["time"] == "1970-01-01T00:00:00.000Z"
    assert "abcdefghij" not in line and doc["message"] == f"Authorization: {REDACTED}"
    assert doc["obj"].startswith("<object object")


def test_access_log_masks_the_api_key_and_scans_authorizer_values() -> None:
    key = access_log_getter("identity.apiKey", lambda c, f: "key0123456789abcdefghij")
    none = access_log_getter("identity.apiKey", lambda c, f: None)
    claim = access_log_getter("authorizer.raw", lambda c, f: f"Bearer {JWT}")
    plain = access_log_getter("requestId", lambda c, f: "abc")
    assert key(None, None) == REDACTED and none(None, None) is None
    assert JWT not in claim(None, None)
    assert plain(None, None) == "abc"


@pytest.mark.parametrize(("name", "value", "secret"), [
    ("identity.userAgent", "curl/8 Authorization: Bearer abcdef123456", "abcdef123456"),
    ("path", f"/v1/login/{JWT}", JWT),
    ("error.message", "backend said password=hunter22", "hunter22"),
    ("integrationErrorMessage", "x-api-key: key0123456789abcdefghij", "key0123456789abcdefghij"),
])
def test_access_log_scans_free_text_values(name: str, value: str, secret: str) -> None:
    getter = access_log_getter(name, lambda c, f: value)
    assert secret not in getter(None, None) and REDACTED in getter(None, None)


def test_non_ascii_text_is_scanned_too() -> None:
    # The fast first pass lower-cases ASCII text only; other text takes the (?i) pattern.
    assert redact_text("naïve TOKEN=abc123def") == f"naïve TOKEN={REDACTED}"
    assert redact_text("naïve text") == "naïve text"


def test_redaction_observer_passes_prebuilt_lines_and_scans_everything_else() -> None:
    seen: list[dict[str, Any]] = []
    publisher = LogPublisher(_redacting_observer, seen.append)
    lines = RedactedLineLogger(namespace="twistgw.access", observer=publisher)
    lines.line("id=leaky status=200")
    lines.line("token=kept-as-built")  # redacted where it was built: not scanned again
    Logger(namespace="other", observer=publisher).info("{line}", line="token=abcdef1")
    lines.info("{line} {more}", line="x", more="password=hunter22")  # not a line event
    assert [redacted_line(e) for e in seen] == ["id=leaky status=200", "token=kept-as-built",
                                                None, None]
    assert seen[2]["line"] == f"token={REDACTED}" and seen[3]["more"] == f"password={REDACTED}"
    extra = {**seen[0], "log_system": "x"}  # a field added after publishing: not trusted
    assert redacted_line(extra) is None
