"""The pipeline: which API and stage a request addresses (§A.1, §6.13), and what it builds."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from twistgw import IntegrationResponse, Registry, hookimpl
from twistgw.models import Context, IntegrationRequest
from twistgw.pipeline import INGRESS_DROPPED_HEADERS, Exchange, substitute_stage_variables

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

    from twistgw.testing import GatewayHarness


def proxy_doc(b: Builders) -> dict[str, Any]:
    return b.openapi({"/{proxy+}": {"x-amazon-apigateway-any-method": b.proxy_op()},
                      "/": {"get": b.proxy_op()}})


def multi_api(make_harness: HarnessFactory, b: Builders, ids: list[str],
              **top: Any) -> GatewayHarness:
    """One REST API per id (stage ``prod``) on the one listener, answered by the echo."""
    apis = [{"id": i, "definition": f"{i}.yaml", "stages": [{"name": "prod"}]} for i in ids]
    return make_harness(None, definitions={f"{i}.yaml": proxy_doc(b) for i in ids},
                        plugins=[("echo", b.echo())],
                        config=b.gateway_config(apis, **top))


def echoed(h: GatewayHarness, method: str, path: str, **kw: Any) -> dict[str, Any]:
    response = h.request(method, path, **kw)
    assert response.status == 200, (response.status, response.body)
    doc: dict[str, Any] = json.loads(response.body)
    return doc


# -- API resolution ----------------------------------------------------------------------------


def test_the_listeners_only_api(make_harness: HarnessFactory, b: Builders) -> None:
    h = multi_api(make_harness, b, ["only"])
    doc = echoed(h, "GET", "/prod/a/b")
    assert (doc["api"], doc["stage"], doc["path"]) == ("only", "prod", "/a/b")


def test_api_id_header_selects_the_api(make_harness: HarnessFactory, b: Builders) -> None:
    h = multi_api(make_harness, b, ["one", "two"])
    assert echoed(h, "GET", "/prod/x", headers={"x-apigw-api-id": "two"})["api"] == "two"
    assert echoed(h, "GET", "/prod/x", headers={"X-Apigw-Api-Id": "one"})["api"] == "one"


def test_execute_api_host_selects_the_api(make_harness: HarnessFactory, b: Builders) -> None:
    h = multi_api(make_harness, b, ["one", "two"])
    doc = echoed(h, "GET", "/prod/x", headers={"Host": "two.execute-api.localhost"})
    assert doc["api"] == "two"
    doc = echoed(h, "GET", "/prod/x", headers={"Host": "one.execute-api.localhost:8080"})
    assert doc["api"] == "one"


def test_api_id_header_wins_over_the_host(make_harness: HarnessFactory, b: Builders) -> None:
    h = multi_api(make_harness, b, ["one", "two"])
    doc = echoed(h, "GET", "/prod/x", headers={"Host": "one.execute-api.localhost",
                                               "x-apigw-api-id": "two"})
    assert doc["api"] == "two"


def test_several_apis_without_a_selector_is_404(make_harness: HarnessFactory,
                                                b: Builders) -> None:
    h = multi_api(make_harness, b, ["one", "two"])
    response = h.request("GET", "/prod/x")
    assert (response.status, response.body) == (404, b'{"message":"Not Found"}')
    assert response.headers.get("x-amzn-RequestId")


def test_unknown_api_id(make_harness: HarnessFactory, b: Builders) -> None:
    h = multi_api(make_harness, b, ["one", "two"])
    response = h.request("GET", "/prod/x", headers={"x-apigw-api-id": "zzz"})
    assert response.status == 404
    assert response.body == (b'{"message":"The API id \'zzz\' does not correspond to a '
                             b'deployed API Gateway API"}')


def test_listener_serving_no_api(make_harness: HarnessFactory, b: Builders) -> None:
    listeners = [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"},
                 {"name": "spare", "endpoint": "tcp:0:interface=127.0.0.1"}]
    apis = [{"id": "one", "definition": "one.yaml", "stages": [{"name": "prod"}],
             "listeners": ["public"]}]
    h = make_harness(None, definitions={"one.yaml": proxy_doc(b)},
                     plugins=[("echo", b.echo())],
                     config=b.gateway_config(apis, listeners=listeners))
    assert echoed(h, "GET", "/prod/x")["api"] == "one"
    response = h.request("GET", "/prod/x", listener="spare")
    assert response.status == 404


def test_unknown_rest_stage_is_forbidden(make_harness: HarnessFactory, b: Builders) -> None:
    h = multi_api(make_harness, b, ["only"])
    for path in ("/api/convert", "/", "/Prod/x", "//prod/x"):
        response = h.request("GET", path)
        assert response.status == 403, path
        assert response.body == b'{"message":"Forbidden"}'
        assert response.headers.get("x-amzn-RequestId")


def test_unknown_stage_ignores_gateway_response_customisation(
        make_harness: HarnessFactory, b: Builders) -> None:
    """AWS answers an unknown stage before any API definition applies (§A.2 step 1)."""
    doc = b.openapi({"/x": {"get": b.mock_op()}}, **{
        "x-amazon-apigateway-gateway-responses": {
            "DEFAULT_4XX": {"statusCode": "418",
                            "responseTemplates": {"application/json": '"custom"'}},
            "MISSING_AUTHENTICATION_TOKEN": {"statusCode": "404"}}})
    response = make_harness(doc).request("GET", "/nostage/x")
    assert (response.status, response.body) == (403, b'{"message":"Forbidden"}')


# -- custom domains (§6.13) --------------------------------------------------------------------


@pytest.fixture
def domain_harness(make_harness: HarnessFactory, b: Builders) -> GatewayHarness:
    """The §6.13 example: (none)->API1, orders/v1/items->API2, orders/v2/items->API3,
    orders/v2/items/categories->API4."""
    mappings = [
        {"base_path": "(none)", "api": "API1", "stage": "prod"},
        {"base_path": "orders/v1/items", "api": "API2", "stage": "prod"},
        {"base_path": "orders/v2/items", "api": "API3", "stage": "prod"},
        {"base_path": "orders/v2/items/categories", "api": "API4", "stage": "prod"},
    ]
    return multi_api(make_harness, b, ["API1", "API2", "API3", "API4"],
                     domains=[{"name": "api.example.com", "mappings": mappings}])


@pytest.mark.parametrize(("path", "api", "resource_path", "base"), [
    ("/orders/v1/items/123", "API2", "/123", "orders/v1/items"),
    ("/orders/v2/items/categories/5", "API4", "/5", "orders/v2/items/categories"),
    ("/orders/v2/items/9", "API3", "/9", "orders/v2/items"),
    ("/orders/v2/itemsX/9", "API1", "/orders/v2/itemsX/9", "(none)"),
    ("/customers", "API1", "/customers", "(none)"),
    ("/orders/v3/items/1", "API1", "/orders/v3/items/1", "(none)"),
])
def test_base_path_mapping_longest_match(domain_harness: GatewayHarness, path: str, api: str,
                                         resource_path: str, base: str) -> None:
    echo = domain_harness.gateway.pm.get_plugin("echo")
    doc = echoed(domain_harness, "GET", path, headers={"Host": "api.example.com"})
    assert (doc["api"], doc["stage"], doc["base_path"]) == (api, "prod", base)
    ctx: Context = echo.seen[-1]
    assert ctx.domain_name == "api.example.com"
    assert ctx.request_path == path
    assert doc["params"] == {"proxy": resource_path.lstrip("/")}


def test_base_path_mapping_exact_base(domain_harness: GatewayHarness) -> None:
    doc = echoed(domain_harness, "GET", "/orders/v1/items",
                 headers={"Host": "API.Example.com:443"})
    assert doc["api"] == "API2"
    assert doc["route"] == "GET /"


def test_custom_domain_without_root_mapping(make_harness: HarnessFactory, b: Builders) -> None:
    mappings = [{"base_path": "v1", "api": "one", "stage": "prod"}]
    h = multi_api(make_harness, b, ["one"],
                  domains=[{"name": "api.example.com", "mappings": mappings}])
    assert echoed(h, "GET", "/v1/x", headers={"Host": "api.example.com"})["api"] == "one"
    response = h.request("GET", "/v2/x", headers={"Host": "api.example.com"})
    assert (response.status, response.body) == (403, b'{"message":"Forbidden"}')


def test_other_hosts_are_not_the_custom_domain(domain_harness: GatewayHarness) -> None:
    doc = echoed(domain_harness, "GET", "/prod/orders/v1/items/1",
                 headers={"x-apigw-api-id": "API3"})
    assert (doc["api"], doc["path"], doc["base_path"]) == ("API3", "/orders/v1/items/1", None)


# -- what the pipeline builds for the hooks ----------------------------------------------------


@attrs.define
class Recorder:
    """Answers ``http_proxy`` integrations and keeps the integration requests it saw."""

    requests: list[IntegrationRequest] = attrs.field(factory=list)

    @hookimpl
    def register(self, registry: Registry) -> None:
        registry.add_integration_type("HTTP_PROXY")

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse:
        self.requests.append(request)
        return IntegrationResponse(status=200, body=b"{}")


def test_ingress_dropped_headers(make_harness: HarnessFactory, b: Builders) -> None:
    recorder = Recorder()
    h = make_harness(b.openapi({"/x": {"post": b.proxy_op()}}),
                     plugins=[("recorder", recorder)])
    sent = {"Connection": "keep-alive", "Content-Length": "2", "Content-MD5": "x",
            "Expect": "100-continue", "Max-Forwards": "3", "Proxy-Authenticate": "x",
            "Server": "x", "TE": "trailers", "Transfer-Encoding": "chunked", "Trailer": "x",
            "Upgrade": "h2c", "WWW-Authenticate": "x", "X-Kept": "yes",
            "Authorization": "Bearer t"}
    assert h.request("POST", "/prod/x", headers=sent, body=b"{}").status == 200
    (request,) = recorder.requests
    names = {k.lower() for k, _ in request.headers}
    assert names == {"host", "x-kept", "authorization"}
    assert {n.lower() for n in sent} - names - {"x-kept", "authorization"} \
        <= INGRESS_DROPPED_HEADERS
    assert request.body == b"{}"


def test_integration_request_from_the_method_request(make_harness: HarnessFactory,
                                                     b: Builders) -> None:
    recorder = Recorder()
    op = b.proxy_op(uri="http://${stageVariables.backend}/pets/{id}?v=${stageVariables.none}",
                    httpMethod="POST", timeoutInMillis=1500)
    h = make_harness(b.openapi({"/pets/{id}": {"get": op}}), plugins=[("recorder", recorder)])
    assert h.request("GET", "/prod/pets/7?a=1&a=2").status == 200
    (request,) = recorder.requests
    assert request.method == "POST"
    assert request.uri == "http://backend.invalid/pets/{id}?v="
    assert dict(request.path_params) == {"id": "7"}
    assert request.query == (("a", "1"), ("a", "2"))
    assert request.timeout == 1.5


def test_integration_method_any_uses_the_client_method(make_harness: HarnessFactory,
                                                       b: Builders) -> None:
    recorder = Recorder()
    h = make_harness(b.openapi({"/x": {"x-amazon-apigateway-any-method": b.proxy_op()}}),
                     plugins=[("recorder", recorder)])
    h.request("PATCH", "/prod/x")
    assert recorder.requests[-1].method == "PATCH"


def test_substitute_stage_variables() -> None:
    assert substitute_stage_variables("plain", {"a": "1"}) == "plain"
    assert substitute_stage_variables("${stageVariables.a}/${stageVariables.b}",
                                      {"a": "1"}) == "1/"


def test_a_synchronous_route_completes_without_a_deferred(make_harness: HarnessFactory,
                                                          b: Builders) -> None:
    h = make_harness(b.openapi({"/x": {"get": b.mock_op(200, '"ok"')}}))
    result = h.exchange("GET", "/prod/x")
    assert isinstance(result, Exchange)
    assert result.response.body == b'"ok"'
    assert result.ctx.stage is not None and result.ctx.stage.name == "prod"
    assert result.ctx.route is not None
    assert result.ctx.route.operation.route_key == "GET /x"
    assert result.outcome.finish.status == 200
    assert result.outcome.finish.response_length == 4


def test_content_type_defaults_to_json(make_harness: HarnessFactory, b: Builders) -> None:
    h = make_harness(b.openapi({
        "/x": {"get": b.mock_op(200, "x")},
        "/y": {"get": b.mock_op(200, "y", headers={"Content-Type": "text/plain"})}}))
    assert h.request("GET", "/prod/x").headers.get_all("content-type") == ["application/json"]
    assert h.request("GET", "/prod/y").headers.get_all("content-type") == ["text/plain"]


def test_resolution_cache_keys_on_host_api_id_and_path(make_harness: HarnessFactory,
                                                      b: Builders) -> None:
    from twistgw import pipeline

    h = multi_api(make_harness, b, ["one", "two"])
    for _ in range(2):  # the second round is answered from the cache
        assert echoed(h, "GET", "/prod/x", headers={"x-apigw-api-id": "two"})["api"] == "two"
        assert echoed(h, "GET", "/prod/x", headers={"x-apigw-api-id": "one"})["api"] == "one"
        doc = echoed(h, "GET", "/prod/x", headers={"Host": "two.execute-api.localhost"})
        assert doc["api"] == "two"
        # Errors are never cached (an exception is raised, so never shared).
        assert h.request("GET", "/prod/x").status == 404
        assert h.request("GET", "/nostage/x", headers={"x-apigw-api-id": "one"}).status == 403
    targets = h.gateway.deployment.listeners[h.default_listener]
    assert len(targets.resolved) == 3
    assert all(t.error is None for t in targets.resolved.values())
    for i in range(pipeline._RESOLVE_CACHE_SIZE + 5):
        assert echoed(h, "GET", f"/prod/{i}", headers={"x-apigw-api-id": "one"})["api"] == "one"
    assert len(targets.resolved) <= pipeline._RESOLVE_CACHE_SIZE


def test_request_ids_stay_unique_and_well_formed_across_random_blocks() -> None:
    import re

    from twistgw import pipeline

    uuid_re = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    per_block = pipeline._Random.BLOCK // 27
    ids = [pipeline._new_ids() for _ in range(per_block * 2 + 3)]  # two refills at least
    assert len({e for e, _ in ids}) == len({u for _, u in ids}) == len(ids)
    assert all(len(e) == 16 and uuid_re.match(u) for e, u in ids)
