"""OpenTelemetry traces over OTLP/HTTP: a span per request, per authorizer run, per integration.

Off unless ``plugins.settings.otel.endpoint`` names a collector (docs/deployment.rst lists
the keys).  The dependencies are the ``otel`` extra (``pip install 'twistgw[otel]'``:
``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-http``); they are imported
only when a config turns tracing on, so an installation without them loads this plugin
as a no-op and a config that needs them is refused with the command to install them.

Spans are built in ``request_finished`` from what the pipeline measured (the request's
arrival, ``Finish.phases`` for ``authorize`` and ``integrate``), so the request path
itself does no tracing work.  The trace is the request's ``X-Amzn-Trace-Id``
(:mod:`twistgw.tracing`): its ``Root`` ``1-5e9f0c65-1de4d666d4dd26aced652b6c`` is the
OpenTelemetry trace id ``5e9f0c651de4d666d4dd26aced652b6c``, a client's ``Parent`` is the
request span's remote parent, and when the client named no Parent, the integration span's
id is the ``Parent`` the gateway generated and passed to the Lambda function or HTTP
backend, so their spans hang under it.  A client's ``Sampled=0``/``1`` is obeyed; otherwise
``sample_ratio`` decides by trace id.  Spans leave through the SDK's batch processor: a
bounded queue (``max_queue``; when full, spans are dropped, never the request) exported by
its own thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
from twisted.internet import defer, threads
from twisted.logger import Logger

from twistgw import ConfigError, hookimpl
from twistgw.tracing import client_trace_fields, parse_trace_header, trace_header

if TYPE_CHECKING:
    from twistgw import Context, Response
    from twistgw.config import GatewayConfig
    from twistgw.gateway import Gateway
    from twistgw.pipeline import Outcome

__all__ = ["OtelSettings", "parse_settings", "request_finished", "configure", "shutdown",
           "otel_trace_id"]

log = Logger()

PREFIX = "plugins.settings.otel"
_KEYS = ("endpoint", "service_name", "headers", "timeout_ms", "batch_delay_ms", "max_queue",
         "sample_ratio")
_MISSING = ("tracing needs opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http: "
            "pip install 'twistgw[otel]' (or remove plugins.settings.otel.endpoint)")
#: Distinct exporter configurations kept at once (each has a thread); reloads that change
#: the settings retire the oldest.
_KEEP = 4


@attrs.frozen
class OtelSettings:
    """``plugins.settings.otel``, checked."""

    endpoint: str
    service_name: str = "twistgw"
    headers: tuple[tuple[str, str], ...] = ()
    timeout_ms: int = 10000
    batch_delay_ms: int = 1000
    max_queue: int = 2048
    sample_ratio: float = 1.0


def _number(raw: Mapping[str, Any], source: str, key: str, default: float, low: float,
            high: float, integer: bool = True) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not isinstance(value, int)) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ConfigError(source, f"{PREFIX}.{key}",
                          f"must be {kind} from {low:g} to {high:g}, not {value!r}")
    return value


def parse_settings(config: GatewayConfig) -> OtelSettings | None:
    """The checked settings, or ``None`` when tracing is off (no ``endpoint``)."""
    raw = config.plugin_settings("otel")
    if not raw:
        return None
    source = config.source
    for key in raw:
        if key not in _KEYS:
            raise ConfigError(source, f"{PREFIX}.{key}",
                              f"unknown key; known: {', '.join(_KEYS)}")
    endpoint = raw.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(source, f"{PREFIX}.endpoint",
                          f"must be the collector's OTLP/HTTP traces URL, such as "
                          f"http://127.0.0.1:4318/v1/traces, not {endpoint!r}")
    name = raw.get("service_name", "twistgw")
    if not isinstance(name, str) or not name:
        raise ConfigError(source, f"{PREFIX}.service_name", "must be a non-empty string")
    headers = raw.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigError(source, f"{PREFIX}.headers",
                          "must map header names to strings (use {$env: NAME} for tokens)")
    settings = OtelSettings(
        endpoint=str(endpoint), service_name=name,
        headers=tuple((str(k), str(v)) for k, v in headers.items()),
        timeout_ms=_number(raw, source, "timeout_ms", 10000, 1, 600000),
        batch_delay_ms=_number(raw, source, "batch_delay_ms", 1000, 1, 600000),
        max_queue=_number(raw, source, "max_queue", 2048, 1, 1000000),
        sample_ratio=float(_number(raw, source, "sample_ratio", 1.0, 0.0, 1.0, integer=False)),
    )
    try:
        from opentelemetry.exporter.otlp.proto.http import trace_exporter
        from opentelemetry.sdk import trace as sdk_trace
    except ImportError:
        raise ConfigError(source, f"{PREFIX}.endpoint", _MISSING) from None
    del trace_exporter, sdk_trace
    return settings


class _State:
    """Parsed settings per config and one batch processor per distinct settings."""

    def __init__(self) -> None:
        self.settings: dict[int, tuple[GatewayConfig, OtelSettings | None]] = {}
        self.processors: dict[OtelSettings, Any] = {}

    def settings_for(self, config: GatewayConfig) -> OtelSettings | None:
        found = self.settings.get(id(config))
        if found is None or found[0] is not config:
            found = (config, parse_settings(config))
            self.settings[id(config)] = found
            while len(self.settings) > 64:
                self.settings.pop(next(iter(self.settings)))
        return found[1]

    def processor_for(self, settings: OtelSettings) -> Any:
        found = self.processors.get(settings)
        if found is not None:
            return found
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers),
                                    timeout=settings.timeout_ms / 1000)
        processor = BatchSpanProcessor(exporter, max_queue_size=settings.max_queue,
                                       schedule_delay_millis=settings.batch_delay_ms,
                                       export_timeout_millis=settings.timeout_ms)
        self.processors[settings] = processor
        while len(self.processors) > _KEEP:
            oldest = next(iter(self.processors))
            self.processors.pop(oldest).shutdown()
        log.info("tracing: exporting spans to {endpoint} as service {service}",
                 endpoint=settings.endpoint, service=settings.service_name)
        return processor


_state = _State()


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Check ``plugins.settings.otel`` (and that the SDK is installed when it is used)."""
    _state.settings_for(config)


@hookimpl
def startup(gateway: Gateway) -> None:
    """Start the exporter now, so its first span does not pay for it."""
    settings = _state.settings_for(gateway.config)
    if settings is not None:
        _state.processor_for(settings)


@hookimpl
def shutdown(gateway: Gateway) -> Any:
    """Flush what is queued and stop the exporters (in a thread: it blocks on HTTP)."""
    processors = list(_state.processors.values())
    _state.processors.clear()
    if not processors:
        return None

    def stop() -> None:
        for processor in processors:
            processor.shutdown()

    reactor: Any = gateway.reactor
    if hasattr(reactor, "getThreadPool"):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), stop)
    stop()
    return defer.succeed(None)


def otel_trace_id(root: str) -> int | None:
    """The OpenTelemetry trace id of an X-Ray ``Root`` (``1-{8 hex}-{24 hex}``)."""
    version, _sep, rest = root.partition("-")
    epoch, _sep, unique = rest.partition("-")
    if version != "1" or len(epoch) != 8 or len(unique) != 24:
        return None
    try:
        value = int(epoch + unique, 16)
    except ValueError:
        return None
    return value or None


def _span_id(text: str | None) -> int | None:
    if text is None or len(text) != 16:
        return None
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return value or None


def _new_span_id() -> int:
    return int.from_bytes(os.urandom(8), "big") or 1


@hookimpl
def request_finished(ctx: Context, response: Response, outcome: Outcome) -> None:
    """Export the request's spans (when tracing is on and the trace is sampled)."""
    settings = _state.settings_for(outcome.deployment.config)
    if settings is None:
        return
    client = client_trace_fields(ctx)
    full = parse_trace_header(trace_header(ctx))
    trace_id = otel_trace_id(full.get("Root", "")) or int.from_bytes(os.urandom(16), "big")
    if "Sampled" in client:
        sampled = client["Sampled"] == "1"
    else:
        sampled = (trace_id & 0xFFFFFFFFFFFFFFFF) < settings.sample_ratio * 2 ** 64
    if not sampled:
        return
    _export(settings, ctx, response, outcome, trace_id, client, full)


def _export(settings: OtelSettings, ctx: Context, response: Response, outcome: Outcome,
            trace_id: int, client: Mapping[str, str], full: Mapping[str, str]) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    flags = TraceFlags(TraceFlags.SAMPLED)
    resource = Resource.create({"service.name": settings.service_name})
    scope = InstrumentationScope("twistgw_otel")
    client_parent = _span_id(client.get("Parent"))
    parent = SpanContext(trace_id, client_parent, True, flags) if client_parent else None
    request_ctx = SpanContext(trace_id, _new_span_id(), False, flags)
    fin = outcome.finish
    route = ctx.route.operation.route_key if ctx.route is not None else None
    attributes: dict[str, Any] = {
        "http.request.method": ctx.method or ctx.request.method,
        "url.path": ctx.request.raw_path,
        "http.response.status_code": response.status,
        "apigw.request_id": ctx.request_id,
        "aws.xray.trace_id": full.get("Root", ""),
    }
    if route:
        attributes["http.route"] = route
    if ctx.deployment_api is not None:
        attributes["apigw.api_id"] = ctx.deployment_api.config.id
    if ctx.stage is not None:
        attributes["apigw.stage"] = ctx.stage.name
    if fin.error is not None:
        attributes["apigw.error.response_type"] = fin.error.response_type
    now = time.time_ns()
    spans = [ReadableSpan(
        name=route or attributes["http.request.method"],  # bounded: never the raw path
        context=request_ctx, parent=parent, resource=resource, attributes=attributes,
        kind=SpanKind.SERVER, instrumentation_scope=scope,
        status=Status(StatusCode.ERROR) if response.status >= 500 else Status(StatusCode.UNSET),
        start_time=int(ctx.received_at * 1e9), end_time=now)]
    for phase, started, ended in fin.phases:
        attrs_: dict[str, Any] = {"apigw.request_id": ctx.request_id}
        if phase == "authorize":
            name, kind = "authorize", SpanKind.INTERNAL
            span_id = _new_span_id()
            if ctx.principal is not None:
                attrs_["apigw.principal.kind"] = ctx.principal.kind
            denied = fin.error is not None and fin.error.status in (401, 403)
            status = Status(StatusCode.ERROR) if denied else Status(StatusCode.UNSET)
        else:
            integration = ctx.integration
            kind_name = integration.type if integration is not None else "?"
            name, kind = f"integration {kind_name}", SpanKind.CLIENT
            attrs_["apigw.integration.type"] = kind_name
            if fin.integration_status is not None:
                attrs_["http.response.status_code"] = fin.integration_status
            # The Parent the backend was told about, when the gateway chose it.
            span_id = (None if client_parent else _span_id(full.get("Parent"))) \
                or _new_span_id()
            failed = fin.integration_status is None or fin.integration_status >= 500
            status = Status(StatusCode.ERROR) if failed else Status(StatusCode.UNSET)
        spans.append(ReadableSpan(
            name=name, context=SpanContext(trace_id, span_id, False, flags),
            parent=request_ctx, resource=resource, attributes=attrs_, kind=kind,
            instrumentation_scope=scope, status=status,
            start_time=int(started * 1e9), end_time=int(ended * 1e9)))
    processor = _state.processor_for(settings)
    for span in spans:
        processor.on_end(span)
