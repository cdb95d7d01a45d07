"""The gateway as a Twisted service: plugins, deployment, pipeline and listeners together.

:class:`Gateway` is what ``twistd apigw`` runs.  Creating it loads the plugins and builds
the deployment, so every config error surfaces before anything binds.  Listeners bind in
``privilegedStartService`` (before twistd drops privileges, so ports below 1024 work, and
a port in use fails startup with a clear error instead of a daemon that serves nothing);
``startService`` then awaits the plugins' ``startup`` hooks and opens the doors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

from .config import GatewayConfig
from .deployment import Deployment, build_deployment
from .errors import ConfigError
from .http import GatewaySite
from .pipeline import Pipeline
from .plugins import GatewayPluginManager, describe, make_plugin_manager
from .server import GatewayResource

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort

__all__ = ["Gateway", "served_urls"]

log = Logger()


class Gateway(MultiService):
    """The running gateway.

    :param config: the checked gateway config.
    :param reactor: the reactor to listen on and time with (the global one by default).
    :param extra_plugins: ``(name, plugin)`` pairs registered in-process, used by
        :mod:`twistgw.testing`; production plugins come from entry points.
    :raises ConfigError: when the plugins or the deployment refuse the config.
    """

    def __init__(self, config: GatewayConfig, *, reactor: Any = None,
                 extra_plugins: Sequence[tuple[str, Any]] = ()) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.config = config
        self.pm: GatewayPluginManager = make_plugin_manager(config.plugins, extra=extra_plugins,
                                                            source=config.source)
        self.deployment: Deployment = build_deployment(config, self.pm, reactor)
        self.pipeline = Pipeline(reactor)
        self.ready = False
        self.sites: dict[str, GatewaySite] = {}
        self.ports: dict[str, IListeningPort] = {}
        for listener in config.listeners:
            if listener.admin:
                continue  # served by the plugin that claims the admin option
            resource = GatewayResource(self, listener.name,
                                       "https" if listener.tls is not None else "http")
            self.sites[listener.name] = GatewaySite(resource, listener.limits,
                                                    clock=reactor, name=listener.name)

    # -- lifecycle --------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind every listener now, failing loudly (port in use, bad endpoint)."""
        super().privilegedStartService()
        for listener in self.config.listeners:
            site = self.sites.get(listener.name)
            if site is None:
                continue
            try:
                endpoint = serverFromString(self.reactor, listener.endpoint)
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(self.config.source, f"listener {listener.name!r}.endpoint",
                                  f"{listener.endpoint!r} is not a valid Twisted endpoint "
                                  f"description: {e}") from None
            factory: Any = site
            for _plugin, wrap in self.pm.registry.listener_wrappers:
                endpoint, factory = wrap(listener, endpoint, factory, self.reactor)
            d = endpoint.listen(factory)
            result: list[Any] = []
            d.addBoth(result.append)
            if not result:
                raise RuntimeError(f"listener {listener.name!r} did not bind synchronously")
            outcome = result[0]
            if isinstance(outcome, Failure):
                raise RuntimeError(f"listener {listener.name!r} cannot listen on "
                                   f"{listener.endpoint}: {outcome.getErrorMessage()}")
            self.ports[listener.name] = outcome

    def startService(self) -> None:
        """Log what is loaded, run the ``startup`` hooks, then serve."""
        if not self.ports:
            self.privilegedStartService()
        super().startService()
        for line in describe(self.pm):
            log.info("plugin loaded: {plugin}", plugin=line)
        for warning in self.deployment.warnings:
            log.warn("{warning}", warning=warning)
        d = defer.maybeDeferred(self._call_all, "startup")
        d.addCallbacks(self._opened, self._startup_failed)

    def _opened(self, _: object) -> None:
        self.ready = True
        for url, what in served_urls(self):
            log.info("serving {url} -> {what}", url=url, what=what)

    def _startup_failed(self, failure: Any) -> None:
        log.failure("a plugin's startup hook failed; stopping", failure)
        self.reactor.stop()

    def stopService(self) -> Any:
        """Stop accepting, then run the ``shutdown`` hooks."""
        self.ready = False
        stops = [defer.maybeDeferred(port.stopListening) for port in self.ports.values()]
        self.ports.clear()
        d = defer.DeferredList(stops, consumeErrors=True)
        d.addCallback(lambda _: self._call_all("shutdown"))
        d.addBoth(lambda _: self.deployment.close())
        d.addBoth(lambda _: MultiService.stopService(self))
        return d

    def _call_all(self, hook: str) -> Any:
        results = getattr(self.pm.hook, hook)(gateway=self)
        waits = [defer.ensureDeferred(r) if not isinstance(r, defer.Deferred) else r
                 for r in results if r is not None and (isinstance(r, defer.Deferred)
                                                        or hasattr(r, "__await__"))]
        if not waits:
            return None
        dl = defer.DeferredList(waits, fireOnOneErrback=True, consumeErrors=True)
        return dl

    def port_of(self, listener: str) -> int:
        """The bound port of a listener (useful with ``tcp:0``)."""
        address: Any = self.ports[listener].getHost()
        return int(address.port)


def served_urls(gateway: Gateway) -> list[tuple[str, str]]:
    """``(url, description)`` for every API stage on every bound listener."""
    out: list[tuple[str, str]] = []
    dep = gateway.deployment
    for name, port in gateway.ports.items():
        addr: Any = port.getHost()
        host = getattr(addr, "host", "localhost")
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if gateway.config.listener(name).tls is not None else "http"
        base = f"{scheme}://{host}:{addr.port}"
        targets = dep.listeners.get(name)
        if targets is None:
            continue
        several = len(targets.apis) > 1
        for api in targets.apis.values():
            for stage in api.stages:
                path = "/" if stage == "$default" else f"/{stage}/"
                hint = f" (send x-apigw-api-id: {api.id})" if several else ""
                out.append((f"{base}{path}", f"{api.config.type} API {api.id!r} "
                            f"({api.definition.title or 'untitled'}) stage {stage}{hint}"))
        for domain in targets.domains.values():
            for m in domain.mappings:
                out.append((f"{scheme}://{domain.name}:{addr.port}/{m.base_path}",
                            f"custom domain -> API {m.api!r} stage {m.stage}"))
    return out
