"""The MOCK integration plugin (aws-apigw-spec.md §3.7): statusCode from the request
template, body only from the integration response template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import twistgw_mock
from hypothesis import given, settings
from hypothesis import strategies as st
from twistgw_mock import parse_status_code

from twistgw import ApiConfigurationError
from twistgw.definition import Integration, Operation
from twistgw.deployment import Route
from twistgw.models import Context, IntegrationRequest
from twistgw.registry import Registry
from twistgw.testing import make_context, make_inbound

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory, LogCapture

UNPARSEABLE = ("Execution failed due to configuration error: Unable to parse statusCode. "
               "It should be an integer that is defined in the request template.")


@pytest.mark.parametrize(("body", "status"), [
    (b'{"statusCode": 200}', 200),
    (b'{"statusCode": 404, "extra": [1, 2]}', 404),
    (b'  {\n  "statusCode" : 201\n}\n', 201),
    (b"{statusCode: 200}", 200),  # CDK's CORS OPTIONS method
    (b"{ statusCode : 302, other: x }", 302),
    (b"{'statusCode': 500}", 500),
    (b'{"statusCode": 599}', 599),
    (b'{"statusCode": 100}', 100),
])
def test_parse_status_code(body: bytes, status: int) -> None:
    assert parse_status_code(body) == status


@pytest.mark.parametrize("body", [
    b"", b"{}", b"null", b"[200]", b"200", b'{"status": 200}', b'{"statusCode": null}',
    b'{"statusCode": true}', b'{"statusCode": 99}', b'{"statusCode": 600}',
    b'{"statusCode": 200.5}', b'{"statusCode": "abc"}', b"{statusCode: abc}",
    b'{"statusCode": "200"}', b"{statusCode: '200'}", b'{statusCode: "200"}',
    b"{statusCode: 200.5}",
    b"not json at all", b"\xff\xfe", b'{"nested": {"statusCode": 200}}',
])
def test_parse_status_code_refuses(body: bytes) -> None:
    assert parse_status_code(body) is None


def mock_ctx(integration: Integration | None) -> Context:
    route = None
    if integration is not None:
        route = Route(api_id="a", operation=Operation(path="/x", method="GET",
                                                      integration=integration),
                      resource_id="r", timeout=29.0)
    return make_context(make_inbound("GET", "/prod/x"), route=route)


def test_integrate_answers_only_mock() -> None:
    request = IntegrationRequest(method="GET", uri="", body=b'{"statusCode": 201}')
    response = twistgw_mock.integrate(mock_ctx(Integration(type="MOCK")), request)
    assert response is not None
    assert (response.status, response.body) == (201, b"")
    proxy = Integration(type="HTTP_PROXY", uri="http://x/")
    assert twistgw_mock.integrate(mock_ctx(proxy), request) is None
    assert twistgw_mock.integrate(mock_ctx(None), request) is None


def test_integrate_without_status_code(log_events: LogCapture) -> None:
    ctx = mock_ctx(Integration(type="MOCK"))
    with pytest.raises(ApiConfigurationError):
        twistgw_mock.integrate(ctx, IntegrationRequest(method="GET", uri="", body=b"{}"))
    assert log_events.texts() == [f"({ctx.request_id}) {UNPARSEABLE}"]


def test_register_claims_mock_and_filters_routes() -> None:
    registry = Registry()
    registry.plugin = "mock"
    twistgw_mock.register(registry)
    assert registry.integration_types == {"MOCK": "mock"}
    keep = registry.route_filters["mock"]

    def route(integration: Integration | None) -> Route:
        return Route(api_id="a", operation=Operation(path="/", method="GET",
                                                     integration=integration),
                     resource_id="r", timeout=1.0)

    assert keep(route(Integration(type="MOCK")))
    assert not keep(route(Integration(type="HTTP", uri="http://x/")))
    assert not keep(route(None))


# -- end to end ----------------------------------------------------------------------------------


def test_missing_status_code_is_500_with_awss_log(make_harness: HarnessFactory, b: Builders,
                                                  log_events: LogCapture) -> None:
    doc = b.openapi({"/x": {"get": b.mock_op(template='{"status": 200}')},
                     "/none": {"get": {"x-amazon-apigateway-integration": {
                         "type": "mock", "responses": {"default": {"statusCode": "200"}}}}}})
    h = make_harness(doc)
    for path in ("/prod/x", "/prod/none"):
        response = h.request("GET", path)
        assert response.status == 500
        assert response.body == b'{"message": "Internal server error"}'
        assert response.headers.get("x-amzn-ErrorType") == "InternalServerErrorException"
    assert sum(UNPARSEABLE in t for t in log_events.texts()) == 2


def test_status_code_selects_the_integration_response(make_harness: HarnessFactory,
                                                      b: Builders) -> None:
    responses: dict[str, Any] = {
        "default": {"statusCode": "200", "responseTemplates": {"application/json": '"ok"'}},
        "4\\d{2}": {"statusCode": "400",
                    "responseTemplates": {"application/json": '"client error"'}},
        "503": {"statusCode": "503"},
    }
    doc = b.openapi({
        "/ok": {"get": b.mock_op(template='{"statusCode": 200}', responses=responses)},
        "/bad": {"get": b.mock_op(template='{"statusCode": 404}', responses=responses)},
        "/down": {"get": b.mock_op(template="{statusCode: 503}", responses=responses)},
    })
    h = make_harness(doc)
    assert (h.request("GET", "/prod/ok").status, h.request("GET", "/prod/ok").body) \
        == (200, b'"ok"')
    bad = h.request("GET", "/prod/bad")
    assert (bad.status, bad.body) == (400, b'"client error"')
    down = h.request("GET", "/prod/down")
    assert (down.status, down.body) == (503, b"")


def test_body_comes_only_from_the_response_template(make_harness: HarnessFactory,
                                                    b: Builders) -> None:
    doc = b.openapi({"/empty": {"post": b.mock_op(201)},
                     "/body": {"post": b.mock_op(201, '{"created": true}')}})
    h = make_harness(doc)
    empty = h.request("POST", "/prod/empty", body=b'{"client": "data"}',
                      headers={"Content-Type": "application/json"})
    assert (empty.status, empty.body) == (201, b"")
    body = h.request("POST", "/prod/body", body=b"ignored")
    assert (body.status, body.body) == (201, b'{"created": true}')


def test_no_trace_id_on_mock_responses(make_harness: HarnessFactory, b: Builders) -> None:
    h = make_harness(b.openapi({"/x": {"get": b.mock_op(200, '"x"')}}))
    trace = "Root=1-5e1b4151-5ac6c58f5b5d5a8e8a4e6c36;Parent=53995c3f42cd8ad8;Sampled=1"
    response = h.request("GET", "/prod/x", headers={"X-Amzn-Trace-Id": trace})
    assert response.status == 200
    assert "x-amzn-trace-id" not in response.headers


def _reference_status_code(body: bytes) -> int | None:
    """parse_status_code as specified: a JSON parse first, the relaxed form only for
    templates that are not JSON (what the shortcut in the plugin must agree with)."""
    import json

    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        m = twistgw_mock._RELAXED.match(text)
        return int(m.group(1)) if m else None
    value = doc.get("statusCode") if isinstance(doc, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return None


@pytest.mark.parametrize("body", [
    b'{"statusCode": 200, "statusCode": 404}',  # duplicate keys: JSON keeps the last
    b'{"statusCode": 200, "status\\u0043ode": 404}',  # the same key spelled with escapes
    b'{"statusCode": 200, "note": "statusCode"}',
    b'{"statusCode": 020}', b'{"statusCode": 600, "x": 1}', b"{statusCode: 999}",
    b'{"statusCode": 200, "body": "it\\\'s"}',  # escapeJavaScript output: not JSON
    b'{"statusCode": 201, "id": "c0ffee", "items": [1, 2, {"a": null}]}',
    b'{"statusCode\': 200, ": 500}',  # JSON: one key, "statusCode': 200, "
    b'{"statusCode: 200, ": 500}',  # JSON too (no statusCode key)
    b'{"statusCode\': 200, "x": 500}',  # not JSON: the relaxed form's 200
    b'{"statusCode": 200, "\\u0073tatusCode": 404}',  # any letter escaped
    b'{"statusCode": 200, "x": "\\u2028 \\\\u0043"}',  # escapes no key is made of
])
def test_parse_status_code_agrees_with_a_json_parse_first(body: bytes) -> None:
    assert parse_status_code(body) == _reference_status_code(body)
    # the same answers for bodies too long to be remembered (a padding key first)
    padded = body.replace(b"{", b'{"pad": "' + b"x" * 300 + b'", ', 1)
    assert len(padded) > 300
    assert parse_status_code(padded) == _reference_status_code(padded)


_BODY_PIECES = st.sampled_from([
    b" ", b"\n", b"\x1c", "\u00a0".encode(), "\ufeff".encode(), b"{", b"}", b",", b":",
    b'"statusCode"', b"statusCode", b"'statusCode'", b'"status\\u0043ode"', b"200", b"404",
    b"600", b"20", "\u0662\u0660\u0660".encode(), b'"x"', b"\xff", b"\\'", b"null",
    b'"statusCode": 201', b"[", b"]", b'"statusCode\'', b'"statusCode', b"\\u0073",
    b"\\u0063", b"\\u2028", b"\\\\", b"'", b'"', b"tatusCode",
])


_BLANK = st.sampled_from([b"", b" ", b"\n", b"\x1c", "\u00a0".encode(), "\ufeff".encode()])
_PAIR = st.tuples(
    st.sampled_from([b'"statusCode"', b"statusCode", b"'statusCode'", b'"status\\u0043ode"',
                     b'"x"', b'"statusCode\'', b'"\\u0073tatusCode"', b'"statusCode',
                     b'"x\\u2028"']), _BLANK,
    st.sampled_from([b"200", b"404", b"600", b"20", "\u0662\u0660\u0660".encode(), b'"x"',
                     b"null", b"\xff", b"true", b"[1]"]),
).map(lambda t: t[0] + b":" + t[1] + t[2])
_OBJECTS = st.tuples(_BLANK, st.lists(_PAIR, max_size=3), _BLANK,
                     st.sampled_from([b"}", b"", b"} x", b",}"])
                     ).map(lambda t: t[0] + b"{" + t[2] + b", ".join(t[1]) + t[3])


@settings(max_examples=500, deadline=None)
@given(body=_OBJECTS | st.lists(_BODY_PIECES, max_size=12).map(b"".join), pad=st.booleans())
def test_parse_status_code_agrees_with_the_reference_on_any_body(body: bytes,
                                                                pad: bool) -> None:
    """The bytes shortcut, the text path and the cache answer what a JSON parse first
    (then the relaxed form) does, for bodies short and long, valid UTF-8 or not."""
    body += b" " * 300 if pad else b""
    assert parse_status_code(body) == _reference_status_code(body)


@settings(max_examples=300, deadline=None)
@given(bodies=st.lists(st.tuples(_OBJECTS | st.lists(_BODY_PIECES, max_size=12).map(b"".join),
                                 st.sampled_from([b"", b" ", b', "k": 1}'])),
                       min_size=1, max_size=6))
def test_long_bodies_in_a_row_agree_with_the_reference(
        bodies: list[tuple[bytes, bytes]]) -> None:
    """Long bodies one after the other (each may start as the one before did, and then
    differ: the lead the last match covered is reused) answer as the reference."""
    for body, tail in bodies:
        long = body + tail + b" " * 300
        assert parse_status_code(long) == _reference_status_code(long)
        same_lead = body[:20] + b'"statusCode": 404, ' + body[20:] + b" " * 300
        assert parse_status_code(same_lead) == _reference_status_code(same_lead)


@pytest.mark.parametrize("second", [
    b'{"statusCode": 2001, "a": 1}', b'{"statusCode": 200x, "a": 1}',
    b'{"statusCode": 200 , "a": 1}', b'{"statusCode": 200}', b'{"statusCode": 200,}',
    b'{"statusCode": 20, "a": 1}', b'{"statusCode": 200, "statusCode": 500}',
])
def test_a_body_sharing_part_of_the_last_lead(second: bytes) -> None:
    """After a body whose match ended at ``200,``, one that starts alike but differs
    at or before that point answers as the reference."""
    first = b'{"statusCode": 200, "a": 1}' + b" " * 300
    assert parse_status_code(first) == 200
    second += b" " * 300
    assert parse_status_code(second) == _reference_status_code(second)
