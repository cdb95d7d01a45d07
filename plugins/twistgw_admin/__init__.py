"""The admin listener: ``/health``, ``/ready``, ``/metrics`` and ``/usage`` (issue 7).

A shipped plugin that claims the listener option ``admin``.  A listener with
``admin: true`` serves no API; it answers operators and probes:

* ``GET /health``: 200 while the process runs (liveness).
* ``GET /ready``: 200 when the config is loaded, every API listener is bound and the
  ``startup`` hooks are done, and every readiness check plugins registered with
  :meth:`~twistgw.registry.Registry.add_readiness_check` passes (the Lambda plugin's:
  pools warm); else 503 with the reasons, as JSON either way.
* ``GET /metrics``: Prometheus text format from a private ``CollectorRegistry`` per
  gateway (see :mod:`twistgw_admin.metrics`).
* ``GET /usage[?key=ID...]``: the access plugin's usage report per API key and plan
  (quota used and remaining), as JSON; 404 when the access plugin is not enabled.

An admin endpoint ``tcp:PORT`` without ``interface=`` binds to 127.0.0.1 (loopback by
default); write ``interface=`` explicitly to expose it.  ``tls`` and ``allow_sources`` are
refused on an admin listener: keep it on loopback or a management interface.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from twistgw import hookimpl
from twistgw.errors import ConfigError
from twistgw.http import GatewaySite
from twistgw.reload import ReloadStep
from twistgw.routing import parse_query

from .metrics import GatewayMetrics

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort

    from twistgw import Context, Registry, Response
    from twistgw.config import GatewayConfig, ListenerConfig
    from twistgw.deployment import Deployment
    from twistgw.gateway import Gateway
    from twistgw.http import HttpRequest
    from twistgw.pipeline import Outcome

__all__ = ["register", "configure", "startup", "shutdown", "prepare_reload", "request_finished",
           "metrics_for", "readiness", "admin_endpoint", "GatewayMetrics", "AdminResource"]

log = Logger()

#: At most this many ``key`` query parameters in one ``/usage`` request.
MAX_USAGE_KEYS = 100


class _Admin:
    """The admin side of one running gateway: its metrics and bound admin ports."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.metrics = GatewayMetrics(gateway)
        self.ports: list[IListeningPort] = []


#: Admin state per gateway config (``id(config)`` -> (config, admin)); the config is kept
#: so that an id reused after a reload can never match a stale entry.
_admins: dict[int, tuple[Any, _Admin]] = {}


@hookimpl
def register(registry: Registry) -> None:
    """Claim the ``admin`` listener option."""
    registry.add_listener_option("admin")


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Refuse what an admin listener cannot do; check its endpoint now."""
    for i, listener in enumerate(config.listeners):
        if not listener.admin:
            continue
        where = f"listeners[{i}]"
        if listener.tls is not None or listener.allow_sources:
            key = "tls" if listener.tls is not None else "allow_sources"
            raise ConfigError(config.source, f"{where}.{key}",
                              f"'{key}' is not supported on an admin listener; bind it to "
                              "loopback or a management interface instead")
        admin_endpoint(listener, config.source, where)


def admin_endpoint(listener: ListenerConfig, source: str, where: str) -> str:
    """The endpoint an admin listener binds: ``tcp:PORT`` gets ``interface=127.0.0.1``."""
    text = listener.endpoint
    parts = text.split(":")
    if parts[0] in ("tcp", "tcp6") and not any(p.startswith("interface=") for p in parts[1:]):
        text += ":interface=" + ("::1" if parts[0] == "tcp6" else "127.0.0.1")
    elif parts[0] not in ("tcp", "tcp6", "unix"):
        raise ConfigError(source, f"{where}.endpoint",
                          f"an admin listener binds tcp:, tcp6: or unix:, not {text!r}")
    return text


@hookimpl
def startup(gateway: Gateway) -> None:
    """Bind the admin listeners at once, so ``/ready`` answers while plugins warm up."""
    admin = metrics_for(gateway)
    config = gateway.config
    for i, listener in enumerate(config.listeners):
        if not listener.admin:
            continue
        text = admin_endpoint(listener, config.source, f"listeners[{i}]")
        site = GatewaySite(AdminResource(gateway), listener.limits, clock=gateway.reactor,
                           name=listener.name)
        result: list[Any] = []
        serverFromString(gateway.reactor, text).listen(site).addBoth(result.append)
        if not result or not hasattr(result[0], "getHost"):
            problem = result[0].getErrorMessage() if result else "did not bind at once"
            raise RuntimeError(f"admin listener {listener.name!r} cannot listen on "
                               f"{text}: {problem}")
        port: IListeningPort = result[0]
        admin.ports.append(port)
        addr: Any = port.getHost()
        where = (f"http://{addr.host}:{addr.port}" if hasattr(addr, "port")
                 else f"unix:{getattr(addr, 'name', text)}")
        log.info("admin listener {name} on {where}: /health /ready /metrics /usage",
                 name=listener.name, where=where)


@hookimpl
def shutdown(gateway: Gateway) -> Any:
    """Close the admin listeners and forget the gateway's metrics."""
    entry = _admins.pop(id(gateway.config), None)
    if entry is None:
        return None
    stops = [defer.maybeDeferred(p.stopListening) for p in entry[1].ports]
    return defer.DeferredList(stops, consumeErrors=True)


@hookimpl
def prepare_reload(gateway: Gateway, deployment: Deployment) -> ReloadStep | None:
    """SIGHUP: the admin listeners and metrics carry over to the new config (requests
    finishing on the old deployment still count); admin listener changes need a restart."""
    old, new = gateway.config, deployment.config
    entry = _admins.get(id(old))
    if entry is None or entry[0] is not old:
        return None
    if [lst for lst in old.listeners if lst.admin] != [lst for lst in new.listeners
                                                        if lst.admin]:
        log.warn("reload: admin listener changes are applied at the next restart")

    def commit() -> None:
        _admins[id(new)] = (new, entry[1])

    def retire() -> None:
        found = _admins.get(id(old))
        if found is not None and found[0] is old and old is not new:
            del _admins[id(old)]

    return ReloadStep(commit=commit, retire=retire)


def metrics_for(gateway: Gateway) -> _Admin:
    """The admin state of ``gateway``, created on first use (tests use it in-process)."""
    entry = _admins.get(id(gateway.config))
    if entry is not None and entry[0] is gateway.config:
        return entry[1]
    admin = _Admin(gateway)
    _admins[id(gateway.config)] = (gateway.config, admin)
    return admin


@hookimpl
def request_finished(ctx: Context, response: Response, outcome: Outcome) -> None:
    """Count the request in its gateway's metrics (a dict lookup when none is kept)."""
    entry = _admins.get(id(outcome.deployment.config))
    if entry is not None:
        entry[1].metrics.observe(ctx, response.status, outcome.finish)


def readiness(gateway: Gateway) -> tuple[bool, dict[str, str]]:
    """``(ready, {check: reason})``; the reasons name what is not ready yet."""
    problems: dict[str, str] = {}
    if not gateway.ready:
        problems["gateway"] = "starting: the startup hooks have not finished"
    expected = {lst.name for lst in gateway.config.listeners if not lst.admin}
    unbound = sorted(expected - set(gateway.ports))
    if unbound:
        problems["listeners"] = f"not bound: {', '.join(unbound)}"
    for plugin, name, check in gateway.pm.registry.readiness_checks:
        try:
            reason = check(gateway)
        except Exception as e:
            log.failure("plugin {plugin}: readiness check {name} failed", plugin=plugin,
                        name=name)
            reason = f"the check failed: {e}"
        if reason is not None:
            problems[name] = reason
    return not problems, problems


class AdminResource:
    """The admin listener's request handler: four read-only GET endpoints, served by the
    same HTTP layer as the API listeners (:class:`twistgw.http.GatewaySite`)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def __call__(self, request: HttpRequest) -> None:
        """Answer one request (``/usage`` may answer later)."""
        target, _, query = request.target.partition(b"?")
        path = target.decode("latin-1", "replace")
        if request.method not in (b"GET", b"HEAD"):
            _json(request, 405, {"message": "the admin endpoints are read-only"},
                  b"Allow: GET, HEAD\r\n")
        elif path == "/health":
            _json(request, 200, {"status": "ok"})
        elif path == "/ready":
            ready, problems = readiness(self.gateway)
            _json(request, 200 if ready else 503, {"ready": ready, "problems": problems})
        elif path == "/metrics":
            body = generate_latest(metrics_for(self.gateway).metrics.registry)
            request.respond(200, b"Content-Type: %s\r\nCache-Control: no-store\r\n"
                            % CONTENT_TYPE_LATEST.encode(), body)
        elif path == "/usage":
            self._usage(request, query.decode("latin-1"))
        else:
            _json(request, 404, {"message": f"no admin endpoint {path}; try /health, "
                                            "/ready, /metrics or /usage"})

    def _usage(self, request: HttpRequest, query: str) -> None:
        if self.gateway.pm.get_plugin("access") is None:
            _json(request, 404, {"message": "the access plugin is not enabled, so there "
                                            "is no usage to report"})
            return
        keys: Sequence[str] | None = None
        raw = [value for name, value in parse_query(query) if name == "key"]
        if raw:
            if len(raw) > MAX_USAGE_KEYS:
                _json(request, 400, {"message": f"at most {MAX_USAGE_KEYS} key parameters"})
                return
            keys = raw
        import twistgw_access

        d = twistgw_access.usage(self.gateway, keys)

        def done(report: list[Any]) -> None:
            _json(request, 200, {"items": [attrs.asdict(u) for u in report]})

        def failed(failure: Any) -> None:
            log.failure("the usage report failed", failure)
            _json(request, 503, {"message": "the usage store did not answer; see the "
                                            "gateway log"})

        d.addCallbacks(done, failed)


def _json(request: HttpRequest, status: int, body: Any, extra: bytes = b"") -> None:
    if not request.connected:
        return
    request.respond(status, b"Content-Type: application/json\r\nCache-Control: no-store\r\n"
                    + extra, json.dumps(body, sort_keys=True).encode())
