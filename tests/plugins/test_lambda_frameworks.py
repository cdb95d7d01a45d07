"""Handlers written for Powertools for AWS Lambda and for Mangum (FastAPI) run unchanged.

Both libraries parse the proxy events with real code (Powertools' data classes and
resolvers, Mangum's API Gateway handlers), so they check the event shapes from the
other side: routing, path and query parameters, JSON bodies, binary responses, cookies
and errors, behind a REST API (payload 1.0) and an HTTP API (payload 2.0).
The libraries come from requirements-test.txt; the workers run the gateway's interpreter,
so they import them from the same environment.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from twistgw.testing import RunningGateway, write_config

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))

POWERTOOLS_APP = '''
import base64, json
from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver, APIGatewayRestResolver, Response)
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, NotFoundError
from aws_lambda_powertools.shared.cookies import Cookie

PNG = base64.b64decode("__PNG__")


def routes(app):
    @app.get("/pt/pets/<pet_id>")
    def get_pet(pet_id):
        return {"id": pet_id,
                "verbose": app.current_event.get_query_string_value("verbose", "no"),
                "agent": app.current_event.get_header_value("user-agent")}

    @app.post("/pt/pets")
    def create_pet():
        body = app.current_event.json_body
        if "name" not in body:
            raise BadRequestError("name is required")
        return Response(status_code=201, content_type="application/json",
                        body=json.dumps({"created": body["name"]}),
                        cookies=[Cookie(name="session", value="s1", path="/")])

    @app.get("/pt/image")
    def image():
        return Response(status_code=200, content_type="image/png", body=PNG)

    @app.get("/pt/missing")
    def missing():
        raise NotFoundError("no such pet")

    return app


rest_app = routes(APIGatewayRestResolver())
http_app = routes(APIGatewayHttpResolver())


def rest_handler(event, context):
    return rest_app.resolve(event, context)


def http_handler(event, context):
    return http_app.resolve(event, context)
'''.replace("__PNG__", base64.b64encode(PNG).decode())

MANGUM_APP = '''
import base64
from fastapi import FastAPI, HTTPException, Response
from mangum import Mangum
from pydantic import BaseModel

PNG = base64.b64decode("__PNG__")
api = FastAPI()


class Item(BaseModel):
    name: str
    price: float


@api.get("/fa/items/{item_id}")
def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@api.post("/fa/items", status_code=201)
def create_item(item: Item, response: Response):
    response.set_cookie("last", item.name)
    return {"name": item.name, "price": item.price}


@api.get("/fa/image")
def image():
    return Response(content=PNG, media_type="image/png")


@api.get("/fa/teapot")
def teapot():
    raise HTTPException(status_code=418, detail="short and stout")


handler = Mangum(api, lifespan="off")
'''.replace("__PNG__", base64.b64encode(PNG).decode())


def _integration(name: str, fmt: str | None = None) -> dict[str, Any]:
    integration: dict[str, Any] = {
        "type": "aws_proxy", "httpMethod": "POST",
        "uri": f"arn:aws:lambda:us-east-1:123456789012:function:{name}"}
    if fmt:
        integration["payloadFormatVersion"] = fmt
    return {"x-amazon-apigateway-any-method": {
        "responses": {"200": {"description": "ok"}},
        "x-amazon-apigateway-integration": integration}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("frameworks")
    (root / "src").mkdir()
    (root / "src" / "pt_app.py").write_text(POWERTOOLS_APP, encoding="utf-8")
    (root / "src" / "fa_app.py").write_text(MANGUM_APP, encoding="utf-8")
    rest = {"openapi": "3.0.1", "info": {"title": "rest", "version": "1"},
            "x-amazon-apigateway-binary-media-types": ["image/png"],
            "paths": {"/pt/{proxy+}": _integration("PtRest"),
                      "/fa/{proxy+}": _integration("Fa")}}
    http_api = {"openapi": "3.0.1", "info": {"title": "http", "version": "1"},
                "paths": {"/pt/{proxy+}": _integration("PtHttp", "2.0"),
                          "/fa/{proxy+}": _integration("Fa", "2.0")}}
    fn = {"code": "src", "timeout": 10, "min_workers": 1, "max_workers": 1}
    path = write_config(root, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "restapi", "type": "REST", "definition": "rest.yaml",
                  "stages": [{"name": "prod"}]},
                 {"id": "httpapi", "type": "HTTP", "definition": "http.yaml",
                  "stages": [{"name": "$default"}]}],
        "functions": {"PtRest": {"handler": "pt_app.rest_handler", **fn},
                      "PtHttp": {"handler": "pt_app.http_handler", **fn},
                      "Fa": {"handler": "fa_app.handler", **fn}},
        "plugins": {"enabled": ["lambda"]},
        "access_log": False,
    }, {"rest.yaml": rest, "http.yaml": http_api})
    with RunningGateway(path, timeout=30) as running:
        yield running


def call(gw: RunningGateway, method: str, path: str, api: str, *,
         body: Any = None, headers: dict[str, str] | None = None
         ) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"x-apigw-api-id": api, "User-Agent": "frameworks-test", **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def header(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


APIS = [("restapi", "/prod"), ("httpapi", "")]


@pytest.mark.parametrize(("api", "prefix"), APIS, ids=["rest", "http"])
def test_powertools_routing_params_and_query(gw: RunningGateway, api: str,
                                             prefix: str) -> None:
    status, _h, body = call(gw, "GET", f"{prefix}/pt/pets/42?verbose=yes", api)
    assert status == 200, body
    assert json.loads(body) == {"id": "42", "verbose": "yes", "agent": "frameworks-test"}


@pytest.mark.parametrize(("api", "prefix"), APIS, ids=["rest", "http"])
def test_powertools_json_body_and_cookie(gw: RunningGateway, api: str, prefix: str) -> None:
    status, headers, body = call(gw, "POST", f"{prefix}/pt/pets", api, body={"name": "rex"})
    assert status == 201, body
    assert json.loads(body) == {"created": "rex"}
    assert header(headers, "set-cookie") == ["session=s1; Path=/; Secure"]
    status, _h, body = call(gw, "POST", f"{prefix}/pt/pets", api, body={"nope": 1})
    assert status == 400
    assert json.loads(body)["message"] == "name is required"


@pytest.mark.parametrize(("api", "prefix"), APIS, ids=["rest", "http"])
def test_powertools_errors(gw: RunningGateway, api: str, prefix: str) -> None:
    status, _h, body = call(gw, "GET", f"{prefix}/pt/missing", api)
    assert status == 404
    assert json.loads(body)["message"] == "no such pet"
    status, _h, _b = call(gw, "GET", f"{prefix}/pt/no/route/here", api)
    assert status == 404


def test_powertools_binary_response_rest_needs_binary_accept(gw: RunningGateway) -> None:
    status, headers, body = call(gw, "GET", "/prod/pt/image", "restapi",
                                 headers={"Accept": "image/png"})
    assert status == 200
    assert body == PNG
    assert header(headers, "content-type") == ["image/png"]
    _s, _h, body = call(gw, "GET", "/prod/pt/image", "restapi", headers={"Accept": "*/*"})
    assert body == base64.b64encode(PNG)  # AWS leaves it base64 for a non-binary Accept


def test_powertools_binary_response_http(gw: RunningGateway) -> None:
    status, _h, body = call(gw, "GET", "/pt/image", "httpapi")
    assert (status, body) == (200, PNG)


@pytest.mark.parametrize(("api", "prefix"), APIS, ids=["rest", "http"])
def test_mangum_fastapi_routing_and_validation(gw: RunningGateway, api: str,
                                               prefix: str) -> None:
    status, _h, body = call(gw, "GET", f"{prefix}/fa/items/5?q=hello%20world", api)
    assert status == 200, body
    assert json.loads(body) == {"item_id": 5, "q": "hello world"}
    status, _h, body = call(gw, "GET", f"{prefix}/fa/items/not-a-number", api)
    assert status == 422
    status, _h, body = call(gw, "GET", f"{prefix}/fa/teapot", api)
    assert (status, json.loads(body)) == (418, {"detail": "short and stout"})


@pytest.mark.parametrize(("api", "prefix"), APIS, ids=["rest", "http"])
def test_mangum_fastapi_json_body_and_cookie(gw: RunningGateway, api: str,
                                             prefix: str) -> None:
    status, headers, body = call(gw, "POST", f"{prefix}/fa/items", api,
                                 body={"name": "lamp", "price": 9.5})
    assert status == 201, body
    assert json.loads(body) == {"name": "lamp", "price": 9.5}
    cookies = header(headers, "set-cookie")
    assert len(cookies) == 1 and cookies[0].startswith("last=lamp")


def test_mangum_fastapi_binary(gw: RunningGateway) -> None:
    _s, _h, body = call(gw, "GET", "/prod/fa/image", "restapi",
                        headers={"Accept": "image/png"})
    assert body == PNG
    _s, _h, body = call(gw, "GET", "/fa/image", "httpapi")
    assert body == PNG
