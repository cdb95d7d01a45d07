"""Unit tests of the Lambda plugin's pure parts: trace ids (§A.8), media types, output parsing."""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twistgw_lambda.events import event_trace_header, matches_media_type, trace_header
from twistgw_lambda.responses import BadBase64, MalformedResponse, parse_v1, parse_v2
from twistgw_lambda.runtime import new_request_id

from twistgw.testing import make_context

ROOT = "1-5759e988-bd862e3fe1be46a994272793"


@pytest.mark.parametrize(("given", "expected"), [
    (f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0",
     f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0"),
    (f"Root={ROOT};Parent=53995c3f42cd8ad8", f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1"),
    (f"Root={ROOT}", rf"Root={ROOT};Parent=[0-9a-f]{{16}};Sampled=0"),
    ("Parent=53995c3f42cd8ad8", r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=53995c3f42cd8ad8;"
                                r"Sampled=1"),
    (None, r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0"),
    ("garbage", r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0"),
])
def test_trace_header_rules(given: str | None, expected: str) -> None:
    ctx = make_context(trace_id=given)
    value = trace_header(ctx)
    assert re.fullmatch(expected, value), value
    assert trace_header(ctx) == value  # stable within one request


def test_event_trace_header_keeps_the_clients_or_sends_only_root() -> None:
    given = f"Root={ROOT};Lineage=a:1"
    assert event_trace_header(make_context(trace_id=given)) == given
    generated = event_trace_header(make_context())
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}", generated)


def test_generated_root_carries_the_request_epoch() -> None:
    ctx = make_context(received_at=0x67E2A3B4 + 0.5)
    assert trace_header(ctx).startswith("Root=1-67e2a3b4-")


@pytest.mark.parametrize(("media_type", "types", "expected"), [
    ("image/png", ("image/png",), True),
    ("image/png", ("image/*",), True),
    ("image/png", ("*/*",), True),
    ("image/png", ("*/png",), False),
    ("image/png", ("application/*",), False),
    ("application/*", ("application/*",), True),
    ("IMAGE/PNG", ("image/png",), True),
    ("", ("*/*",), False),
])
def test_binary_media_type_matching(media_type: str, types: tuple[str, ...],
                                    expected: bool) -> None:
    assert matches_media_type(media_type, types) is expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12)
KEYS = st.sampled_from(["statusCode", "headers", "multiValueHeaders", "body",
                        "isBase64Encoded", "cookies", "other"])


@given(st.dictionaries(KEYS, JSON, max_size=5) | JSON, st.booleans())
def test_any_json_output_is_a_response_or_a_known_refusal(output: Any, decode: bool) -> None:
    payload = json.dumps(output).encode()
    for parse in (lambda p: parse_v1(p, decode_base64=decode), parse_v2):
        try:
            response = parse(payload)
        except (MalformedResponse, BadBase64):
            continue
        assert 100 <= response.status <= 599
        assert isinstance(response.body, bytes)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in response.headers)


def test_v1_duplicate_identical_header_values_are_kept_once() -> None:
    response = parse_v1(json.dumps({"headers": {"a": "1"}, "multiValueHeaders": {
        "A": ["1", "2"]}}).encode(), decode_base64=False)
    assert response.headers.items == (("A", "1, 2"),)


def test_v1_trailer_lines_follow_the_functions_and_metadata_is_kept() -> None:
    response = parse_v1(json.dumps({"statusCode": 201, "headers": {"X-A": "1"}}).encode(),
                        decode_base64=False, trailer=(("X-Amzn-Trace-Id", "Root=1"),),
                        metadata={"lambda_request_id": "r"})
    assert response.status == 201
    assert response.headers.items == (("X-A", "1"), ("X-Amzn-Trace-Id", "Root=1"))
    assert dict(response.metadata) == {"lambda_request_id": "r"}


def test_a_forked_process_hands_out_other_invocation_ids() -> None:
    """Ids come from a block of random bytes; a fork (``twistd apigw --workers``) must
    not leave parent and child with the same block."""
    new_request_id()  # the parent's block is started
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    theirs = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    ours = {new_request_id() for _ in range(300)}
    assert uuid.UUID(theirs).version == 4 and theirs not in ours


def test_invocation_ids_are_random_version_4_uuids() -> None:
    seen = set()
    for _ in range(500):
        text = new_request_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 500
    # the variant digit is random too (each of the four is missed with p = 0.75 ** 500)
    assert {text[19] for text in seen} == set("89ab")
