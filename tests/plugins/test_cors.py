"""HTTP API CORS (§6.6): preflights answered by the gateway, configured headers on
integration responses, disallowed origins without CORS headers (open question 5)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from twistgw_cors import parse_cors

from twistgw.errors import ConfigError

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw.testing import GatewayHarness

PLUGINS = {"enabled": ["mock", "mapping", "cors"]}

CORS = {"allowOrigins": ["https://app.example.com"], "allowCredentials": True,
        "exposeHeaders": ["x-total", "x-page"], "maxAge": 300,
        "allowMethods": ["GET", "POST"], "allowHeaders": ["content-type", "x-api-key"]}

PREFLIGHT = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}


def harness(make_harness: HarnessFactory, b: Builders, cors: Any = CORS,
            api_type: str = "HTTP", **paths: Any) -> GatewayHarness:
    echo = b.echo()
    doc = b.openapi(paths or {"/pets": {"get": b.proxy_op(), "post": b.proxy_op()}},
                    **{"x-amazon-apigateway-cors": cors})
    return make_harness(doc, plugins=[("echo", echo)],
                        config=b.gateway_config(api_type=api_type, plugins=PLUGINS))


def cors_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items if k.lower().startswith("access-control-")}


def test_preflight_is_answered_without_a_route(make_harness: HarnessFactory,
                                               b: Builders) -> None:
    h = harness(make_harness, b)
    response = h.request("OPTIONS", "/pets", headers=PREFLIGHT)
    assert (response.status, response.body) == (204, b"")
    assert cors_headers(response.headers) == {
        "Access-Control-Allow-Origin": "https://app.example.com",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "GET,POST",
        "Access-Control-Allow-Headers": "content-type,x-api-key",
        "Access-Control-Max-Age": "300",
    }
    assert response.headers.get("apigw-requestid")


def test_preflight_for_an_unknown_path_too(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b)
    assert h.request("OPTIONS", "/nowhere", headers=PREFLIGHT).status == 204


def test_disallowed_origin_gets_no_cors_headers(make_harness: HarnessFactory,
                                                b: Builders) -> None:
    h = harness(make_harness, b)
    preflight = h.request("OPTIONS", "/pets",
                          headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert preflight.status == 204
    assert cors_headers(preflight.headers) == {}
    actual = h.request("GET", "/pets", headers={"Origin": "https://evil.example"})
    assert actual.status == 200
    assert cors_headers(actual.headers) == {}


def test_actual_response_gets_the_configured_headers(make_harness: HarnessFactory,
                                                     b: Builders) -> None:
    h = harness(make_harness, b)
    response = h.request("GET", "/pets", headers={"Origin": "https://APP.example.com"})
    assert response.status == 200
    assert json.loads(response.body)["route"] == "GET /pets"  # the integration ran
    assert cors_headers(response.headers) == {
        "Access-Control-Allow-Origin": "https://APP.example.com",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "x-total,x-page",
    }


def test_backend_cors_headers_are_ignored(make_harness: HarnessFactory, b: Builders) -> None:
    from twistgw import IntegrationResponse, hookimpl
    from twistgw.models import Context, Headers, IntegrationRequest

    class Backend:
        @hookimpl(tryfirst=True)
        def integrate(self, ctx: Context, request: IntegrationRequest
                      ) -> IntegrationResponse:
            return IntegrationResponse(status=200, headers=Headers.of({
                "Access-Control-Allow-Origin": "*", "X-Other": "kept"}), body=b"{}")

    doc = b.openapi({"/pets": {"get": b.proxy_op()}},
                    **{"x-amazon-apigateway-cors": CORS})
    h = make_harness(doc, plugins=[("echo", b.echo()), ("backend", Backend())],
                     config=b.gateway_config(api_type="HTTP", plugins=PLUGINS))
    bare = h.request("GET", "/pets")
    assert cors_headers(bare.headers) == {}
    assert bare.headers.get("x-other") == "kept"
    allowed = h.request("GET", "/pets", headers={"Origin": "https://app.example.com"})
    assert allowed.headers.get("access-control-allow-origin") == "https://app.example.com"
    assert len([k for k, _ in allowed.headers.items
                if k.lower() == "access-control-allow-origin"]) == 1


def test_wildcard_origin(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, {"allowOrigins": ["*"], "allowMethods": ["*"]})
    response = h.request("OPTIONS", "/pets", headers=PREFLIGHT)
    assert cors_headers(response.headers) == {"Access-Control-Allow-Origin": "*",
                                              "Access-Control-Allow-Methods": "*"}
    actual = h.request("GET", "/pets", headers={"Origin": "https://any.test"})
    assert cors_headers(actual.headers) == {"Access-Control-Allow-Origin": "*"}


def test_a_matching_options_route_is_served_by_its_integration(
        make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, CORS, **{"/pets": {"options": b.proxy_op()}})
    response = h.request("OPTIONS", "/pets", headers=PREFLIGHT)
    assert response.status == 200
    assert json.loads(response.body)["route"] == "OPTIONS /pets"
    assert response.headers.get("access-control-allow-origin") == "https://app.example.com"


def test_not_a_preflight_stays_404(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b)
    assert h.request("OPTIONS", "/pets").status == 404
    assert h.request("OPTIONS", "/pets", headers={"Origin": "https://app.example.com"}
                     ).status == 404
    assert h.request("DELETE", "/pets", headers=PREFLIGHT).status == 404


def test_no_configuration_no_preflight(make_harness: HarnessFactory, b: Builders) -> None:
    doc = b.openapi({"/pets": {"get": b.proxy_op()}})
    h = make_harness(doc, plugins=[("echo", b.echo())],
                     config=b.gateway_config(api_type="HTTP", plugins=PLUGINS))
    assert h.request("OPTIONS", "/pets", headers=PREFLIGHT).status == 404
    assert cors_headers(h.request("GET", "/pets", headers=PREFLIGHT).headers) == {}


def test_rest_apis_ignore_it(make_harness: HarnessFactory, b: Builders) -> None:
    h = harness(make_harness, b, api_type="REST")
    assert h.request("OPTIONS", "/prod/pets", headers=PREFLIGHT).status == 403


def test_refused_without_the_plugin(make_harness: HarnessFactory, b: Builders) -> None:
    doc = b.openapi({"/pets": {"get": b.proxy_op()}}, **{"x-amazon-apigateway-cors": CORS})
    with pytest.raises(ConfigError) as info:
        make_harness(doc, plugins=[("echo", b.echo())], api_type="HTTP")
    assert "x-amazon-apigateway-cors" in str(info.value)


@pytest.mark.parametrize(("raw", "key", "fix"), [
    ([], "", "write a mapping"),
    ({"allowOrigin": ["*"]}, "allowOrigin", "unknown key; use one of"),
    ({"allowOrigins": "*"}, "allowOrigins", "is not a list of non-empty strings"),
    ({"allowHeaders": ["content-type", 7]}, "allowHeaders", "allowHeaders: [content-type"),
    ({"allowMethods": [""]}, "allowMethods", "allowMethods: [GET, POST]"),
    ({"allowCredentials": "yes"}, "allowCredentials", "write true or false"),
    ({"allowOrigins": ["https://a.test", "*"], "allowCredentials": True},
     "allowCredentials", "AWS refuses allowCredentials: true with the wildcard origin"),
    ({"maxAge": "10"}, "maxAge", "-1..86400"),
    ({"maxAge": 86401}, "maxAge", "-1..86400"),
    ({"maxAge": -2}, "maxAge", "-1..86400"),
    ({"maxAge": True}, "maxAge", "-1..86400"),
])
def test_a_malformed_configuration_is_refused_at_load(
        make_harness: HarnessFactory, b: Builders, raw: Any, key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        harness(make_harness, b, raw)
    assert info.value.path == (f"x-amazon-apigateway-cors.{key}" if key
                               else "x-amazon-apigateway-cors")
    assert fix in str(info.value)
    assert ".yaml" in str(info.value) or ".json" in str(info.value)  # the definition file


def test_the_edges_of_a_valid_configuration_load(make_harness: HarnessFactory,
                                                 b: Builders) -> None:
    for raw in ({"maxAge": -1}, {"maxAge": 86400}, {"allowOrigins": ["*"]},
                {"allowOrigins": ["*"], "allowCredentials": False},
                {"allowOrigins": ["https://a.test"], "allowCredentials": True}, {}):
        parse_cors(raw)
        harness(make_harness, b, raw)
