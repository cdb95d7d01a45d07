"""Shared fixtures: API definition builders, an in-process gateway factory, log capture.

The builders are handed out as fixtures (``tests/`` has no ``__init__.py``, so test
modules cannot import from here).  Every gateway a test builds names its plugin allowlist
(``mock`` and ``mapping``), so a plugin package installed into the test environment by
someone else never changes what these tests observe.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import provider

from twistgw import IntegrationResponse, Registry, hookimpl
from twistgw.models import Context, IntegrationRequest
from twistgw.testing import GatewayHarness, write_config

#: The shipped plugins the in-process gateways of these tests run with.
SHIPPED = ["mock", "mapping"]


def mock_integration(
    status: int | str = 200,
    body: str | None = None,
    *,
    template: str | None = None,
    responses: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An ``x-amazon-apigateway-integration`` of type ``mock``.

    ``template`` overrides the request template (default ``{"statusCode": <status>}``);
    ``responses`` overrides the integration responses (default: one ``default`` response
    with ``status``, ``headers`` mapped statically and ``body`` as its JSON template).
    """
    integration: dict[str, Any] = {
        "type": "mock",
        "requestTemplates": {
            "application/json": template if template is not None
            else json.dumps({"statusCode": int(status)}),
        },
    }
    if responses is None:
        default: dict[str, Any] = {"statusCode": str(status)}
        if body is not None:
            default["responseTemplates"] = {"application/json": body}
        if headers:
            default["responseParameters"] = {
                f"method.response.header.{k}": f"'{v}'" for k, v in headers.items()}
        responses = {"default": default}
    integration["responses"] = dict(responses)
    integration.update(extra)
    return integration


def mock_op(status: int | str = 200, body: str | None = None, **kw: Any) -> dict[str, Any]:
    """An operation answered by a MOCK integration (see :func:`mock_integration`)."""
    return {"responses": {str(status): {"description": "ok"}},
            "x-amazon-apigateway-integration": mock_integration(status, body, **kw)}


def proxy_op(uri: str = "http://backend.invalid/{proxy}", **extra: Any) -> dict[str, Any]:
    """An operation with an ``http_proxy`` integration (answered by a test plugin)."""
    integration: dict[str, Any] = {"type": "http_proxy", "httpMethod": "ANY", "uri": uri,
                                   "payloadFormatVersion": "1.0"}
    integration.update(extra)
    return {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": integration}


def openapi(paths: Mapping[str, Any], **root: Any) -> dict[str, Any]:
    """An OpenAPI 3 document with ``paths`` and extra root keys."""
    return {"openapi": "3.0.1", "info": {"title": "test api", "version": "1.0"},
            **root, "paths": dict(paths)}


def gateway_config(
    apis: Sequence[Mapping[str, Any]] | None = None,
    *,
    api_type: str = "REST",
    stages: Sequence[Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A gateway config with one loopback listener (never bound by the harness)."""
    if apis is None:
        api: dict[str, Any] = {"id": "testapi", "type": api_type, "definition": "api.yaml"}
        if stages is not None:
            api["stages"] = list(stages)
        elif api_type == "REST":
            api["stages"] = [{"name": "prod", "variables": {"backend": "backend.invalid"}}]
        apis = [api]
    config: dict[str, Any] = {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [dict(a) for a in apis],
        "plugins": {"enabled": list(SHIPPED)},
        "access_log": False,
    }
    config.update(top)
    return config


@attrs.define
class EchoProxy:
    """A test plugin answering ``http_proxy`` integrations with what the pipeline saw.

    The JSON body holds the API id, stage, ``ctx.path``, ``ctx.request_path``, the raw
    path parameters, the integration URI and the base path matched.
    """

    seen: list[Context] = attrs.field(factory=list)

    @hookimpl
    def register(self, registry: Registry) -> None:
        registry.add_integration_type("HTTP_PROXY")

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest
                  ) -> IntegrationResponse | None:
        integration = ctx.integration
        if integration is None or integration.type != "HTTP_PROXY":
            return None
        self.seen.append(ctx)
        doc = {
            "api": ctx.deployment_api.id if ctx.deployment_api else None,
            "stage": ctx.stage.name if ctx.stage else None,
            "route": ctx.route.operation.route_key if ctx.route else None,
            "path": ctx.path,
            "request_path": ctx.request_path,
            "params": dict(ctx.path_params),
            "uri": request.uri,
            "base_path": ctx.base_path_matched,
        }
        return IntegrationResponse(status=200, body=json.dumps(doc).encode())


HarnessFactory = Callable[..., GatewayHarness]


@pytest.fixture
def make_harness(tmp_path: Path) -> HarnessFactory:
    """Build a :class:`GatewayHarness` from definition documents written to ``tmp_path``.

    ``make_harness(definition, plugins=[...], config=gateway_config(...), definitions={})``;
    ``definition`` is written as ``api.yaml`` (the default config's definition file).
    """

    def build(definition: Mapping[str, Any] | str | None = None, *,
              plugins: Sequence[tuple[str, Any]] = (),
              config: Mapping[str, Any] | None = None,
              definitions: Mapping[str, Any] | None = None,
              **config_kw: Any) -> GatewayHarness:
        docs: dict[str, Any] = dict(definitions or {})
        if definition is not None:
            docs["api.yaml"] = definition
        cfg = config if config is not None else gateway_config(**config_kw)
        path = write_config(tmp_path, cfg, docs)
        return GatewayHarness(path, plugins=plugins)

    return build


@attrs.define
class LogCapture:
    """Events published to twisted.logger's global publisher while a test runs."""

    events: list[LogEvent] = attrs.field(factory=list)

    def texts(self) -> list[str]:
        """Every event formatted as text."""
        return [formatEvent(e) for e in self.events]

    def failures(self) -> list[LogEvent]:
        """Events that carry a ``log_failure``."""
        return [e for e in self.events if e.get("log_failure") is not None]

    def namespace(self, name: str) -> list[LogEvent]:
        """Events logged under ``log_namespace == name``."""
        return [e for e in self.events if e.get("log_namespace") == name]


@pytest.fixture
def log_events() -> Iterator[LogCapture]:
    """Capture log events (the global publisher; no reactor involved)."""
    capture = LogCapture()

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        capture.events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(observe)


@attrs.frozen
class Builders:
    """The document builders of this conftest, as one fixture."""

    openapi: Callable[..., dict[str, Any]] = openapi
    mock_op: Callable[..., dict[str, Any]] = mock_op
    mock_integration: Callable[..., dict[str, Any]] = mock_integration
    proxy_op: Callable[..., dict[str, Any]] = proxy_op
    gateway_config: Callable[..., dict[str, Any]] = gateway_config
    echo: Callable[[], EchoProxy] = EchoProxy


@pytest.fixture
def b() -> Builders:
    """Document builders: ``b.openapi``, ``b.mock_op``, ``b.proxy_op``, ``b.echo()``..."""
    return Builders()
