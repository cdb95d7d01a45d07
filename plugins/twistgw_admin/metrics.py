"""Prometheus metrics of one gateway, in a private :class:`CollectorRegistry`.

Request metrics are fed by ``request_finished``: per request, one dictionary lookup of
the (route, stage, status) series and a few integer additions (two ``bisect`` calls pick
the histogram buckets); no string is formatted and no lock is taken.  Counters and
histograms are built from those numbers when Prometheus scrapes.  Labels are the
API id, the stage, the route (the resource template ``GET /pets/{id}`` or ``$default``,
never the raw path) and the status, all bounded by the config; the cache is bounded too.
Gauges (listener refusals, plugins' pools) are read at scrape time only.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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
#: Series kept per route object at most (a route x stage x status product far beyond any
#: config); past it, series are shared per label set.
MAX_CACHED = 20_000


def route_label(ctx: Context) -> str:
    """The route's template: ``GET /pets/{petId}``, ``ANY /{proxy+}`` or ``$default``."""
    route = ctx.route
    return route.operation.route_key if route is not None else ""


class _Series:
    """Counts of one (API, stage, route, status): plain numbers the request path bumps.

    No ``prometheus_client`` metric object is touched per request (each would take a lock
    per increment); the collector turns these into counters and histograms at scrape
    time.  Everything runs on the reactor thread.
    """

    __slots__ = ("code", "integration", "integration_sum", "labels", "latency",
                 "latency_sum", "requests", "route")

    def __init__(self, ctx: Context, status: int) -> None:
        self.route = ctx.route  # keeps the route alive while its id() is a cache key
        api = ctx.deployment_api.id if ctx.deployment_api is not None else ""
        stage = ctx.stage.name if ctx.stage is not None else ""
        self.labels = (api, stage, route_label(ctx))
        self.code = status
        self.requests = 0
        #: Observations per bucket (not cumulative); the last slot is +Inf.
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.integration = [0] * (len(LATENCY_BUCKETS) + 1)
        self.integration_sum = 0.0


class GatewayMetrics:
    """Every metric of one gateway; :meth:`observe` is the request-path entry."""

    def __init__(self, gateway: Gateway | None = None) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry(auto_describe=False)
        self._series: dict[tuple[int, str, int], _Series] = {}
        #: Series that did not fit the cache (only past MAX_CACHED), merged at scrape.
        self._overflow: dict[tuple[str, str, str, int], _Series] = {}
        self.registry.register(_RequestCollector(self))
        if gateway is not None:
            self.registry.register(_ScrapeTimeCollector(gateway))

    def observe(self, ctx: Context, status: int, finish: Finish) -> None:
        """Count one finished request (the ``request_finished`` hot path)."""
        stage = ctx.stage
        key = (id(ctx.route), stage.name if stage is not None else "", status)
        series = self._series.get(key)
        if series is None:
            series = self._new_series(key, ctx, status)
        series.requests += 1
        ms = finish.response_latency_ms
        if ms is not None:
            series.latency[bisect_left(_BOUNDS_MS, ms)] += 1
            series.latency_sum += ms
        ms = finish.integration_latency_ms
        if ms is not None:
            series.integration[bisect_left(_BOUNDS_MS, ms)] += 1
            series.integration_sum += ms

    def _new_series(self, key: tuple[int, str, int], ctx: Context, status: int) -> _Series:
        series = _Series(ctx, status)
        if len(self._series) < MAX_CACHED:
            self._series[key] = series
            return series
        # Past the cap (a config with that many routes x stages x statuses): share one
        # series per label set instead of one per route object.
        wide = (*series.labels, status)
        return self._overflow.setdefault(wide, series)

    def series(self) -> list[_Series]:
        """Every series counted so far."""
        return [*self._series.values(), *self._overflow.values()]


#: Bucket bounds in milliseconds, as ``Finish`` reports latencies.
_BOUNDS_MS = tuple(b * 1000 for b in LATENCY_BUCKETS)


def _histogram(family: HistogramMetricFamily, labels: list[str], counts: list[int],
               total_ms: float) -> None:
    cumulative = list(accumulate(counts))
    buckets = [(str(b), float(c)) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=False)]
    buckets.append(("+Inf", float(cumulative[-1])))
    family.add_metric(labels, buckets, total_ms / 1000.0)


class _RequestCollector(Collector):
    """The request counters and histograms, built from the series at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        names = [*LABELS, "status"]
        requests = CounterMetricFamily("twistgw_requests", "Requests answered, by API, "
                                       "stage, route and status", labels=names)
        latency = HistogramMetricFamily(
            "twistgw_latency_seconds", "Time from the request's arrival to its response "
            "(CloudWatch's Latency)", labels=names)
        integration = HistogramMetricFamily(
            "twistgw_integration_latency_seconds", "Time the integration took "
            "(CloudWatch's IntegrationLatency)", labels=names)
        errors: dict[str, dict[tuple[str, str, str], int]] = {
            "4xx": {}, "5xx": {}, "throttled": {}}
        for s in self.metrics.series():
            labels = [*s.labels, str(s.code)]
            requests.add_metric(labels, float(s.requests))
            if any(s.latency):
                _histogram(latency, labels, s.latency, s.latency_sum)
            if any(s.integration):
                _histogram(integration, labels, s.integration, s.integration_sum)
            kind = "4xx" if 400 <= s.code < 500 else "5xx" if s.code >= 500 else None
            if kind is not None:
                errors[kind][s.labels] = errors[kind].get(s.labels, 0) + s.requests
            if s.code == 429:
                errors["throttled"][s.labels] = (errors["throttled"].get(s.labels, 0)
                                                 + s.requests)
        yield requests
        yield latency
        yield integration
        for kind, name, help_text in (
                ("4xx", "twistgw_4xx_errors", "Requests answered with a 4XX status "
                 "(CloudWatch's 4XXError)"),
                ("5xx", "twistgw_5xx_errors", "Requests answered with a 5XX status "
                 "(CloudWatch's 5XXError)"),
                ("throttled", "twistgw_throttled_requests", "Requests answered 429 "
                 "(throttles, quotas, Lambda concurrency)")):
            family = CounterMetricFamily(name, help_text, labels=list(LABELS))
            for labels3, count in sorted(errors[kind].items()):
                family.add_metric(list(labels3), float(count))
            yield family


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
