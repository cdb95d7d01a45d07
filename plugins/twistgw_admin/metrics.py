"""Prometheus metrics of one gateway, in a private :class:`CollectorRegistry`.

Request metrics are fed by ``request_finished``: one counter increment and one or two
histogram observations per request, on label children cached per (route, stage,
status), so the hot path does no string formatting and no label lookup.  Labels are the
API id, the stage, the route (the resource template ``GET /pets/{id}`` or ``$default``,
never the raw path) and the status, all bounded by the config; the cache is bounded too.
Gauges (listener refusals, plugins' pools) are read at scrape time only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.logger import Logger

if TYPE_CHECKING:
    from twistgw import Context
    from twistgw.gateway import Gateway
    from twistgw.variables import Finish

__all__ = ["GatewayMetrics", "LATENCY_BUCKETS", "route_label"]

log = Logger()

#: Seconds; AWS's integration timeout is 29 s, so the last finite bucket is 30 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
LABELS = ("api", "stage", "route")
#: Throttling answers, by the gateway response type that produced them.
THROTTLE_TYPES = frozenset({"THROTTLED", "QUOTA_EXCEEDED"})
#: Cached label children at most (a route x stage x status product far beyond any config).
MAX_CACHED = 20_000


def route_label(ctx: Context) -> str:
    """The route's template: ``GET /pets/{petId}``, ``ANY /{proxy+}`` or ``$default``."""
    route = ctx.route
    return route.operation.route_key if route is not None else ""


class _Series:
    """The label children one (route, stage, status) feeds; built once, reused."""

    __slots__ = ("errors", "integration", "latency", "requests", "route", "throttled")

    def __init__(self, metrics: GatewayMetrics, ctx: Context, status: int) -> None:
        self.route = ctx.route  # keeps the route alive while its id() is a cache key
        api = ctx.deployment_api.id if ctx.deployment_api is not None else ""
        stage = ctx.stage.name if ctx.stage is not None else ""
        labels = (api, stage, route_label(ctx))
        code = str(status)
        self.requests = metrics.requests.labels(*labels, code)
        self.latency = metrics.latency.labels(*labels, code)
        self.integration = metrics.integration_latency.labels(*labels, code)
        self.errors: Any = None
        if 400 <= status < 500:
            self.errors = metrics.errors_4xx.labels(*labels)
        elif status >= 500:
            self.errors = metrics.errors_5xx.labels(*labels)
        self.throttled: Any = None
        if status == 429:
            self.throttled = metrics.throttled.labels(*labels)


class GatewayMetrics:
    """Every metric of one gateway; :meth:`observe` is the request-path entry."""

    def __init__(self, gateway: Gateway | None = None) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("twistgw_requests", "Requests answered, by API, stage, "
                                "route and status", (*LABELS, "status"), registry=reg)
        self.errors_4xx = Counter("twistgw_4xx_errors", "Requests answered with a 4XX "
                                  "status (CloudWatch's 4XXError)", LABELS, registry=reg)
        self.errors_5xx = Counter("twistgw_5xx_errors", "Requests answered with a 5XX "
                                  "status (CloudWatch's 5XXError)", LABELS, registry=reg)
        self.throttled = Counter("twistgw_throttled_requests", "Requests answered 429 "
                                 "(throttles, quotas, Lambda concurrency)", LABELS,
                                 registry=reg)
        self.latency = Histogram("twistgw_latency_seconds", "Time from the request's "
                                 "arrival to its response (CloudWatch's Latency)",
                                 (*LABELS, "status"), buckets=LATENCY_BUCKETS, registry=reg)
        self.integration_latency = Histogram(
            "twistgw_integration_latency_seconds", "Time the integration took (CloudWatch's "
            "IntegrationLatency)", (*LABELS, "status"), buckets=LATENCY_BUCKETS,
            registry=reg)
        self._series: dict[tuple[int, str, int], _Series] = {}
        if gateway is not None:
            reg.register(_ScrapeTimeCollector(gateway))

    def observe(self, ctx: Context, status: int, finish: Finish) -> None:
        """Count one finished request (the ``request_finished`` hot path)."""
        stage = ctx.stage
        key = (id(ctx.route), stage.name if stage is not None else "", status)
        series = self._series.get(key)
        if series is None:
            series = _Series(self, ctx, status)
            if len(self._series) < MAX_CACHED:
                self._series[key] = series
        series.requests.inc()
        if finish.response_latency_ms is not None:
            series.latency.observe(finish.response_latency_ms / 1000.0)
        if finish.integration_latency_ms is not None:
            series.integration.observe(finish.integration_latency_ms / 1000.0)
        if series.errors is not None:
            series.errors.inc()
            if series.throttled is not None:
                series.throttled.inc()


class _ScrapeTimeCollector(Collector):
    """Listener counters and plugins' gauges, read when Prometheus scrapes."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def describe(self) -> list[Metric]:
        return []  # dynamic: what plugins report is only known at scrape time

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        ready = GaugeMetricFamily("twistgw_ready", "1 when /ready would answer 200")
        from . import readiness

        ready.add_metric([], 1.0 if readiness(gw)[0] else 0.0)
        yield ready
        refused = CounterMetricFamily(
            "twistgw_listener_refused_connections", "Connections closed at accept time "
            "because the listener was at max_connections", labels=["listener"])
        rejected = CounterMetricFamily(
            "twistgw_listener_rejected_requests", "Requests the hardened HTTP channel "
            "refused before routing (400/408/413/414/431)", labels=["listener", "status"])
        for name, site in gw.sites.items():
            refused.add_metric([name], float(site.refused_connections))
            for status, count in sorted(site.rejected_requests.items()):
                rejected.add_metric([name, str(status)], float(count))
        yield refused
        yield rejected
        families: dict[str, tuple[GaugeMetricFamily, list[str]]] = {}
        for plugin, collect in gw.pm.registry.gauge_sources:
            try:
                samples = list(collect(gw))
            except Exception:
                log.failure("plugin {plugin}: its gauge source failed", plugin=plugin)
                continue
            for name, help_text, labels, value in samples:
                entry = families.get(name)
                if entry is None:
                    entry = families[name] = (GaugeMetricFamily(
                        f"twistgw_{name}", help_text, labels=list(labels)), list(labels))
                entry[0].add_metric([str(labels.get(k, "")) for k in entry[1]], value)
        yield from (family for family, _ in families.values())
