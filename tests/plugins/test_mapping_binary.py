"""contentHandling with binaryMediaTypes for non-proxy integrations: §3.5's request and
response tables, row by row, end to end."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from twistgw_mapping.binary import ResponseAction, response_action

from twistgw import IntegrationResponse, Registry, hookimpl
from twistgw.errors import ConfigError
from twistgw.models import Context, Headers, IntegrationRequest

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw.testing import GatewayHarness

RAW = b"\x89PNG\r\n\x1a\n\x00\xff"
B64 = base64.b64encode(RAW)
TEXT = b'{"a": 1}'


@attrs.define
class Backend:
    """An ``HTTP`` integration answering with a set body and Content-Type; records the
    integration request body."""

    body: bytes = b""
    content_type: str = "application/json"
    seen: list[bytes] = attrs.field(factory=list)

    @hookimpl
    def register(self, registry: Registry) -> None:
        registry.add_integration_type("HTTP")

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse:
        self.seen.append(request.body)
        return IntegrationResponse(status=200, body=self.body,
                                   headers=Headers.of({"Content-Type": self.content_type}))


def harness(make_harness: HarnessFactory, b: Builders, backend: Backend, *,
            request_handling: str | None = None, response_handling: str | None = None,
            binary_types: list[str] | None = None, request_template: str | None = None,
            response_template: str | None = None) -> GatewayHarness:
    response: dict[str, Any] = {"statusCode": "200"}
    if response_handling:
        response["contentHandling"] = response_handling
    if response_template is not None:
        response["responseTemplates"] = {"application/json": response_template}
    integration: dict[str, Any] = {"type": "http", "httpMethod": "POST",
                                   "uri": "http://backend.invalid/x",
                                   "responses": {"default": response}}
    if request_handling:
        integration["contentHandling"] = request_handling
    if request_template is not None:
        integration["requestTemplates"] = {"application/json": request_template}
    root: dict[str, Any] = {}
    if binary_types is not None:
        root["x-amazon-apigateway-binary-media-types"] = binary_types
    doc = b.openapi({"/x": {"post": {"responses": {"200": {"description": "ok"}},
                                     "x-amazon-apigateway-integration": integration}}},
                    **root)
    return make_harness(doc, plugins=[("backend", backend)])


# -- request side (§3.5 first table) -------------------------------------------------------------

REQUEST_TABLE = [
    # request body, Content-Type, binaryMediaTypes, contentHandling, integration body
    (TEXT, "application/json", None, None, TEXT),
    (B64, "application/json", None, "CONVERT_TO_BINARY", RAW),
    (TEXT, "application/json", None, "CONVERT_TO_TEXT", TEXT),
    (TEXT, "application/json", ["image/png"], None, TEXT),
    (B64, "application/json", ["image/png"], "CONVERT_TO_BINARY", RAW),
    (TEXT, "application/json", ["image/png"], "CONVERT_TO_TEXT", TEXT),
    (RAW, "image/png", ["image/png"], None, RAW),
    (RAW, "image/png", ["image/*"], "CONVERT_TO_BINARY", RAW),
    (RAW, "image/png", ["image/png"], "CONVERT_TO_TEXT", B64),
]


@pytest.mark.parametrize(("body", "ctype", "types", "handling", "expected"), REQUEST_TABLE)
def test_request_table(make_harness: HarnessFactory, b: Builders, body: bytes, ctype: str,
                       types: list[str] | None, handling: str | None, expected: bytes) -> None:
    backend = Backend(body=b"{}")
    h = harness(make_harness, b, backend, request_handling=handling, binary_types=types)
    response = h.request("POST", "/prod/x", body=body, headers={"Content-Type": ctype})
    assert response.status == 200
    assert backend.seen == [expected]


def test_convert_to_text_template_sees_base64(make_harness: HarnessFactory,
                                              b: Builders) -> None:
    backend = Backend(body=b"{}")
    h = harness(make_harness, b, backend, request_handling="CONVERT_TO_TEXT",
                binary_types=["application/json"],
                request_template='{"data": "$input.body"}')
    h.request("POST", "/prod/x", body=RAW, headers={"Content-Type": "application/json"})
    assert backend.seen == [b'{"data": "' + B64 + b'"}']


def test_request_decode_failure_is_500(make_harness: HarnessFactory, b: Builders) -> None:
    backend = Backend(body=b"{}")
    h = harness(make_harness, b, backend, request_handling="CONVERT_TO_BINARY")
    response = h.request("POST", "/prod/x", body=b"not base64!",
                         headers={"Content-Type": "application/json"})
    assert response.status == 500
    assert backend.seen == []


# -- response side (§3.5 second table) -----------------------------------------------------------

K, D, E = ResponseAction.KEEP, ResponseAction.DECODE, ResponseAction.ENCODE

RESPONSE_TABLE = [
    # payload binary, Accept binary, binaryMediaTypes set, contentHandling, action
    (False, False, False, None, K),
    (True, False, False, None, K),
    (False, False, False, "CONVERT_TO_BINARY", D),
    (True, False, False, "CONVERT_TO_BINARY", D),
    (False, False, False, "CONVERT_TO_TEXT", K),
    (False, False, True, None, K),
    (False, False, True, "CONVERT_TO_BINARY", D),
    (False, False, True, "CONVERT_TO_TEXT", K),
    (False, True, True, None, D),
    (False, True, True, "CONVERT_TO_BINARY", D),
    (False, True, True, "CONVERT_TO_TEXT", K),
    (True, False, True, None, E),
    (True, False, True, "CONVERT_TO_BINARY", K),
    (True, False, True, "CONVERT_TO_TEXT", E),
    (True, True, True, None, K),
    (True, True, True, "CONVERT_TO_BINARY", K),
    (True, True, True, "CONVERT_TO_TEXT", E),
]


@pytest.mark.parametrize(("payload", "accept", "types", "handling", "action"),
                         RESPONSE_TABLE)
def test_response_matrix(payload: bool, accept: bool, types: bool, handling: str | None,
                         action: ResponseAction) -> None:
    assert response_action(payload_binary=payload, accept_binary=accept, types_set=types,
                           handling=handling) is action


@pytest.mark.parametrize(("payload", "accept", "types", "handling", "action"),
                         RESPONSE_TABLE)
def test_response_table_end_to_end(make_harness: HarnessFactory, b: Builders,
                                   payload: bool, accept: bool, types: bool,
                                   handling: str | None, action: ResponseAction) -> None:
    # A text payload is base64 text (so DECODE has something to decode); binary is raw.
    # Without binaryMediaTypes nothing is binary: the "text or binary" rows are one case.
    payload = payload and types
    backend = Backend(body=RAW if payload else B64,
                      content_type="image/png" if payload else "text/plain")
    h = harness(make_harness, b, backend, response_handling=handling,
                binary_types=["image/png"] if types else None)
    response = h.request("POST", "/prod/x", body=b"{}", headers={
        "Content-Type": "application/json",
        "Accept": "image/png" if accept else "text/plain"})
    assert response.status == 200
    sent = backend.body
    expected = {K: sent, D: base64.b64decode(sent) if not payload else RAW,
                E: base64.b64encode(sent)}[action]
    assert response.body == expected


def test_response_template_on_binary_is_500(make_harness: HarnessFactory,
                                            b: Builders) -> None:
    backend = Backend(body=RAW, content_type="image/png")
    h = harness(make_harness, b, backend, binary_types=["image/png"],
                response_template='{"x": 1}')
    assert h.request("POST", "/prod/x", body=b"{}",
                     headers={"Accept": "image/png"}).status == 500


def test_encoded_binary_reaches_the_response_template(make_harness: HarnessFactory,
                                                      b: Builders) -> None:
    backend = Backend(body=RAW, content_type="image/png")
    h = harness(make_harness, b, backend, binary_types=["image/png"],
                response_handling="CONVERT_TO_TEXT",
                response_template='{"data": "$input.body"}')
    response = h.request("POST", "/prod/x", body=b"{}")
    assert response.body == b'{"data": "' + B64 + b'"}'


def test_response_decode_failure_is_500(make_harness: HarnessFactory, b: Builders) -> None:
    backend = Backend(body=b"not base64!", content_type="text/plain")
    h = harness(make_harness, b, backend, response_handling="CONVERT_TO_BINARY")
    assert h.request("POST", "/prod/x", body=b"{}").status == 500


def test_proxy_integrations_refuse_content_handling(make_harness: HarnessFactory,
                                                   b: Builders) -> None:
    doc = b.openapi({"/x": {"get": b.proxy_op(contentHandling="CONVERT_TO_TEXT")}})
    with pytest.raises(ConfigError) as info:
        make_harness(doc, plugins=[("echo", b.echo())])
    assert "non-proxy" in str(info.value)
