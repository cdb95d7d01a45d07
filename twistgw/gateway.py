"""The gateway as a Twisted service: plugins, deployment, pipeline and listeners together.

:class:`Gateway` is what ``twistd apigw`` runs.  Creating it loads the plugins and builds
the deployment, so every config error surfaces before anything binds.  Listeners bind in
``privilegedStartService`` (before twistd drops privileges, so ports below 1024 work, and
a port in use fails startup with a clear error instead of a daemon that serves nothing);
``startService`` then awaits the plugins' ``startup`` hooks and opens the doors.

Two operations keep a long-running daemon serving (docs/operations.rst):

* :meth:`Gateway.reload` (``SIGHUP``) loads the config file again, builds and prepares the
  new deployment aside (``configure``, the deployment checks, the plugins'
  ``prepare_reload``, new listeners' factories) and switches to it in one reactor turn;
  requests in flight finish on the old deployment, which is retired once they are done.
  Any error rejects the whole reload, logged with the file, key and fix.
* :meth:`Gateway.stopService` (``SIGTERM``, ``SIGINT``) drains: listeners stop accepting,
  idle keep-alive connections close, requests in flight get ``shutdown_grace`` seconds to
  finish (their responses carry ``Connection: close``), then the ``shutdown`` hooks run.
  Under twistd, ``SIGTERM`` is handled here so that a drained daemon exits 0.
"""

from __future__ import annotations

import gc
import inspect
import signal
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure

from .config import GatewayConfig, ListenerConfig, load_config
from .deployment import Deployment, build_deployment
from .drain import DrainingSite, wait_all_closed
from .errors import ConfigError
from .pipeline import Pipeline
from .plugins import GatewayPluginManager, describe, make_plugin_manager
from .reload import ReloadStep, Serving
from .server import GatewayHandler

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort

__all__ = ["Gateway", "served_urls"]

log = Logger()

#: The plugins' ``shutdown`` hooks get ``shutdown_grace`` seconds, and at least this many.
MIN_SHUTDOWN_HOOKS_BOUND = 5.0


class _Rejected(Exception):
    """A reload is refused; the message says why (file, key and fix when it is config)."""


@attrs.define
class _ListenerPlan:
    """How the listeners of a reloaded config are served.

    An unchanged listener keeps its socket, site and factory (certificates are re-read by
    the TLS plugin's ``prepare_reload``).  ``swap``: a changed listener on the same
    endpoint keeps its socket and gets a new factory (new limits, TLS settings,
    allow-list).  ``bind``: a new or moved endpoint, bound at commit.  ``close``: ports of
    removed or moved listeners, closed at commit.
    """

    sites: dict[str, DrainingSite]
    swap: list[tuple[str, Any]] = attrs.field(factory=list)
    bind: list[tuple[ListenerConfig, Any, Any]] = attrs.field(factory=list)
    close: list[str] = attrs.field(factory=list)


def _scheme(listener: ListenerConfig) -> str:
    return "https" if listener.tls is not None else "http"


#: Net allocations between young-generation collections in the daemon (CPython's
#: default is 700).
GC_YOUNG_THRESHOLD = 20_000


class Gateway(MultiService):
    """The running gateway.

    :param config: the checked gateway config.
    :param reactor: the reactor to listen on and time with (the global one by default).
    :param extra_plugins: ``(name, plugin)`` pairs registered in-process, used by
        :mod:`twistgw.testing`; production plugins come from entry points.
    :param config_path: the file :meth:`reload` reads (``config.source`` by default).
    :raises ConfigError: when the plugins or the deployment refuse the config.

    :ivar serving: the deployment new requests start on, with its in-flight count.
    :ivar handle_signals: set by ``twistd apigw``: ``startService`` then installs the
        ``SIGHUP`` (reload) and ``SIGTERM`` (drain, exit 0) handlers, and once serving,
        the objects built at start-up (plugins, deployment, compiled routes) are moved out
        of the garbage collector's reach with :func:`gc.freeze`.
    """

    def __init__(self, config: GatewayConfig, *, reactor: Any = None,
                 extra_plugins: Sequence[tuple[str, Any]] = (),
                 config_path: str | None = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.config = config
        self.config_path = config_path
        self.pm: GatewayPluginManager = make_plugin_manager(config.plugins, extra=extra_plugins,
                                                            source=config.source)
        self.serving = Serving(build_deployment(config, self.pm, reactor))
        self.pipeline = Pipeline(reactor)
        self.ready = False
        self.draining = False
        self.handle_signals = False
        self.reloads = {"applied": 0, "rejected": 0}
        self.sites: dict[str, DrainingSite] = {}
        self.ports: dict[str, IListeningPort] = {}
        #: Sites a reload removed or replaced that may still hold connections.
        self._old_sites: list[DrainingSite] = []
        #: Retirements of replaced deployments still waiting for their requests.
        self._retiring: list[Any] = []
        self._reload_busy = False
        self._reload_again = False
        self._terminating = False
        for listener in config.listeners:
            if listener.admin:
                continue  # served by the plugin that claims the admin option
            self.sites[listener.name] = self._new_site(listener)

    @property
    def deployment(self) -> Deployment:
        """The deployment new requests use."""
        return self.serving.deployment

    def _new_site(self, listener: ListenerConfig) -> DrainingSite:
        handler = GatewayHandler(self, listener.name, _scheme(listener))
        return DrainingSite(handler, listener.limits, clock=self.reactor, name=listener.name)

    def _factory(self, config: GatewayConfig, listener: ListenerConfig, site: DrainingSite
                 ) -> tuple[Any, Any]:
        """The listener's endpoint and its site wrapped by the plugins' listener wrappers."""
        try:
            endpoint = serverFromString(self.reactor, listener.endpoint)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(config.source, f"listener {listener.name!r}.endpoint",
                              f"{listener.endpoint!r} is not a valid Twisted endpoint "
                              f"description: {e}") from None
        factory: Any = site
        for _plugin, wrap in self.pm.registry.listener_wrappers:
            endpoint, factory = wrap(listener, endpoint, factory, self.reactor)
        return endpoint, factory

    def _bind(self, listener: ListenerConfig, endpoint: Any, factory: Any) -> IListeningPort:
        d = endpoint.listen(factory)
        result: list[Any] = []
        d.addBoth(result.append)
        if not result:
            raise RuntimeError(f"listener {listener.name!r} did not bind synchronously")
        outcome = result[0]
        if isinstance(outcome, Failure):
            raise RuntimeError(f"listener {listener.name!r} cannot listen on "
                               f"{listener.endpoint}: {outcome.getErrorMessage()}")
        return outcome  # type: ignore[no-any-return]

    # -- lifecycle --------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind every listener now, failing loudly (port in use, bad endpoint)."""
        super().privilegedStartService()
        for listener in self.config.listeners:
            site = self.sites.get(listener.name)
            if site is None:
                continue
            endpoint, factory = self._factory(self.config, listener, site)
            self.ports[listener.name] = self._bind(listener, endpoint, factory)

    def startService(self) -> None:
        """Log what is loaded, run the ``startup`` hooks, then serve."""
        if not self.ports:
            self.privilegedStartService()
        super().startService()
        if self.handle_signals:
            signal.signal(signal.SIGHUP, self._on_signal)
            # After the reactor installed its own handlers ("during startup"):
            self.reactor.callWhenRunning(signal.signal, signal.SIGTERM, self._on_signal)
        for line in describe(self.pm):
            log.info("plugin loaded: {plugin}", plugin=line)
        for warning in self.deployment.warnings:
            log.warn("{warning}", warning=warning)
        d = defer.maybeDeferred(self._call_all, "startup")
        d.addCallbacks(self._opened, self._startup_failed)

    def _opened(self, _: object) -> None:
        self.ready = True
        if self.handle_signals:
            # Everything built so far lives as long as the daemon; left in the oldest
            # generation, each full collection walks it again and stalls the reactor
            # (~30 ms measured under the proxy benchmark, bench/RESULTS.md). Only the
            # daemon does this: tests build many gateways in one process.
            gc.freeze()
            # A young-generation collection every 700 net allocations ran every ~10
            # proxied requests (requests waiting on a backend keep their objects alive),
            # ~10 % of the proxy's CPU; requests make no reference cycles, so the
            # collector has little to find and can wait longer (bench/RESULTS.md).
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        for url, what in served_urls(self):
            log.info("serving {url} -> {what}", url=url, what=what)

    def _startup_failed(self, failure: Any) -> None:
        log.failure("a plugin's startup hook failed; stopping", failure)
        self.reactor.stop()

    def stopService(self) -> Any:
        """Drain (see the module docstring), then run the ``shutdown`` hooks."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self.draining = True
        stops = [defer.maybeDeferred(port.stopListening) for port in self.ports.values()]
        self.ports.clear()
        await defer.DeferredList(stops, consumeErrors=True)
        sites = list(self.sites.values()) + self._old_sites
        for site in sites:
            site.drain()
        grace = self.config.shutdown_grace
        still_open = sum(site.open_channels() for site in sites)
        if still_open:
            log.info("draining: {connections} connection(s) still open, {requests} "
                     "request(s) in flight; waiting at most {grace:g}s",
                     connections=still_open, requests=self.serving.inflight, grace=grace)
        waiting = wait_all_closed(sites, self.reactor)
        timer = self.reactor.callLater(grace, waiting.cancel)
        await waiting
        if timer.active():
            timer.cancel()
        cut = sum(site.abort_all() for site in sites)
        if cut:
            log.warn("shutdown_grace of {grace:g}s is over: cut {count} connection(s) with "
                     "requests still in flight", grace=grace, count=cut)
        elif still_open:
            log.info("drained: every request in flight finished")
        self.ready = False
        retirements = [defer.maybeDeferred(retire) for retire in list(self._retiring)]
        await defer.DeferredList(retirements, consumeErrors=True)
        hooks = defer.maybeDeferred(self._call_all, "shutdown")
        bound = max(grace, MIN_SHUTDOWN_HOOKS_BOUND)
        overdue: list[bool] = []

        def give_up() -> None:
            overdue.append(True)
            hooks.cancel()

        timer = self.reactor.callLater(bound, give_up)
        try:
            await hooks
        except Exception:
            if overdue:
                log.error("the plugins' shutdown hooks did not finish within {bound:g}s; "
                          "stopping anyway", bound=bound)
            else:
                log.failure("a plugin's shutdown hook failed")
        finally:
            if timer.active():
                timer.cancel()
        self.deployment.close()
        # Every request is answered or cut by now; the integration-timeout lanes' timers
        # (up to a timeout ahead) would only outlive the service.
        self.pipeline.deadlines.stop()
        await defer.maybeDeferred(MultiService.stopService, self)

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

    # -- signals ------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """``SIGHUP`` reloads; ``SIGTERM`` drains and exits 0.

        Ours replaces the reactor's ``SIGTERM`` handler, which records the signal so that
        twistd kills itself with it at exit: the status would be -15 even after a clean
        drain.  ``SIGINT`` keeps Twisted's handler (it drains the same way).
        """
        call = self.reload if signum == signal.SIGHUP else self.terminate
        self.reactor.callFromThread(call)

    def terminate(self) -> None:
        """Stop the daemon gracefully; a second call cuts what is still draining."""
        if self._terminating:
            cut = sum(site.abort_all() for site in [*self.sites.values(), *self._old_sites])
            log.warn("stop requested again: cut {count} connection(s) now", count=cut)
            return
        self._terminating = True
        log.info("SIGTERM: stopping; listeners close now, requests in flight get "
                 "{grace:g}s", grace=self.config.shutdown_grace)
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass

    # -- reload -------------------------------------------------------------------------

    def reload(self) -> defer.Deferred[bool | None]:
        """Load the config file again and switch to it if it is good (``SIGHUP``).

        Fires with ``True`` when the new deployment serves, ``False`` when the reload was
        rejected (the reason is logged and the old deployment keeps serving), ``None``
        when a reload was already running: one more then follows it.
        """
        if self._reload_busy:
            self._reload_again = True
            return defer.succeed(None)
        if self.draining or not self.running:
            log.warn("reload ignored: the gateway is not serving")
            return defer.succeed(None)
        self._reload_busy = True
        d: defer.Deferred[bool | None] = defer.ensureDeferred(self._reload())
        d.addBoth(self._reload_done)
        return d

    def _reload_done(self, result: Any) -> Any:
        self._reload_busy = False
        if self._reload_again:
            self._reload_again = False
            self.reload()
        return result

    async def _reload(self) -> bool:
        number = self.reloads["applied"] + self.reloads["rejected"] + 1
        path = self.config_path or self.config.source
        log.info("reload {number}: reading {path}", number=number, path=path)
        deployment: Deployment | None = None
        steps: list[tuple[str, ReloadStep]] = []
        closing: list[defer.Deferred[Any]] = []
        try:
            try:
                config = load_config(path)
                self._check_reloadable(config)
                deployment = self._build(config)
                plan = self._plan_listeners(config)
            except ConfigError as e:
                raise _Rejected(str(e)) from None
            steps = await self._prepare(deployment)
            if self.draining:
                raise _Rejected("the gateway is stopping")
            closing = self._commit(config, deployment, plan, steps)
        except Exception as e:
            if not isinstance(e, _Rejected):
                log.failure("reload {number} failed unexpectedly", number=number)
            for name, step in reversed(steps):
                _quietly(name, "abort", step.abort)
            if deployment is not None:
                deployment.close()
            self.reloads["rejected"] += 1
            reason = str(e) if isinstance(e, _Rejected) else f"{type(e).__name__}: {e}"
            log.error("reload {number} rejected, still serving the previous config: "
                      "{reason}", number=number, reason=reason)
            return False
        # A port stops listening a reactor turn later: "applied" means the listeners the
        # new config dropped refuse connections by now (an operator, or a test, may act
        # on that line at once).
        for ok, result in await defer.DeferredList(closing, consumeErrors=True):
            if not ok:
                log.failure("reload {number}: closing a dropped listener failed", result,
                            number=number)
        self.reloads["applied"] += 1
        for warning in deployment.warnings:
            log.warn("{warning}", warning=warning)
        log.info("reload {number} applied: {path} ({apis} API(s), {functions} function(s), "
                 "{listeners} listener(s))", number=number, path=path,
                 apis=len(deployment.apis), functions=len(config.functions),
                 listeners=len(self.ports))
        for url, what in served_urls(self, {lst.name for lst, _e, _f in plan.bind}):
            log.info("serving {url} -> {what}", url=url, what=what)
        return True

    def _check_reloadable(self, config: GatewayConfig) -> None:
        """Refuse what a reload cannot change: the set of loaded plugins."""
        old, new = self.config.plugins, config.plugins
        if (old.enabled, old.disabled) != (new.enabled, new.disabled):
            raise ConfigError(config.source, "plugins.enabled",
                              "the plugins loaded cannot change on reload (only their "
                              "settings can); restart twistd to load or unload plugins, or "
                              "put the list back")

    def _naive_plugins(self) -> list[Any]:
        """Plugins implementing ``configure`` but not ``prepare_reload``."""
        prepared = {impl.plugin for impl in self.pm.hook.prepare_reload.get_hookimpls()}
        return [impl.plugin for impl in self.pm.hook.configure.get_hookimpls()
                if impl.plugin not in prepared]

    def _configure(self, plugins: list[Any], config: GatewayConfig) -> None:
        """Call ``configure(config)`` on ``plugins`` only."""
        for impl in self.pm.hook.configure.get_hookimpls():
            if impl.plugin in plugins:
                impl.function(*[config for _ in impl.argnames])

    def _build(self, config: GatewayConfig) -> Deployment:
        """Check ``config`` with every plugin and build its deployment, aside."""
        naive = self._naive_plugins()
        try:
            return build_deployment(config, self.pm, self.reactor)
        finally:
            if naive:
                # They may keep what configure read in module state: give them back the
                # config that is serving until the commit.
                self._configure(naive, self.config)

    def _plan_listeners(self, config: GatewayConfig) -> _ListenerPlan:
        """Sites and factories for the new listeners; nothing is bound or closed yet."""
        old = {lst.name: lst for lst in self.config.listeners if not lst.admin}
        plan = _ListenerPlan(sites={})
        for listener in config.listeners:
            if listener.admin:
                continue
            before = old.get(listener.name)
            site = self.sites.get(listener.name)
            port = self.ports.get(listener.name)
            if site is not None and port is not None and before == listener:
                plan.sites[listener.name] = site  # unchanged: socket and factory stay
                continue
            if (site is None or before is None or before.limits != listener.limits
                    or _scheme(before) != _scheme(listener)):
                site = self._new_site(listener)
            plan.sites[listener.name] = site
            endpoint, factory = self._factory(config, listener, site)
            if before is not None and port is not None and \
                    before.endpoint == listener.endpoint and hasattr(port, "factory"):
                plan.swap.append((listener.name, factory))
            else:
                plan.bind.append((listener, endpoint, factory))
                if port is not None:
                    plan.close.append(listener.name)
        plan.close += [name for name in self.ports if name not in plan.sites]
        return plan

    async def _prepare(self, deployment: Deployment) -> list[tuple[str, ReloadStep]]:
        """Run every ``prepare_reload``; on any failure abort the prepared steps."""
        args = {"gateway": self, "deployment": deployment}
        steps: list[tuple[str, ReloadStep]] = []
        pending: list[tuple[str, defer.Deferred[Any]]] = []
        failure: str | None = None
        for impl in reversed(self.pm.hook.prepare_reload.get_hookimpls()):  # call order
            try:
                result = impl.function(*[args[a] for a in impl.argnames])
            except ConfigError as e:
                failure = str(e)
                break
            except Exception as e:
                log.failure("plugin {plugin}: prepare_reload failed", plugin=impl.plugin_name)
                failure = f"plugin {impl.plugin_name!r} failed to prepare: {e!r}"
                break
            if isinstance(result, defer.Deferred) or inspect.isawaitable(result):
                pending.append((impl.plugin_name, defer.ensureDeferred(result)))  # type: ignore[arg-type]
            elif isinstance(result, ReloadStep):
                steps.append((impl.plugin_name, result))
            elif result is not None:
                failure = (f"plugin {impl.plugin_name!r}: prepare_reload returned "
                           f"{result!r}, not a ReloadStep or None")
                break
        for name, d in pending:
            try:
                step = await d
            except ConfigError as e:
                failure = failure or str(e)
                continue
            except Exception as e:
                log.failure("plugin {plugin}: prepare_reload failed", plugin=name)
                failure = failure or f"plugin {name!r} failed to prepare: {e!r}"
                continue
            if step is not None:
                steps.append((name, step))
        if failure is not None:
            for name, step in reversed(steps):
                _quietly(name, "abort", step.abort)
            raise _Rejected(failure)
        return steps

    def _commit(self, config: GatewayConfig, deployment: Deployment, plan: _ListenerPlan,
                steps: list[tuple[str, ReloadStep]]) -> list[defer.Deferred[Any]]:
        """Switch to the new deployment; everything here runs in one reactor turn.

        Returns the ``stopListening`` of each listener the new config dropped: their
        sockets close a turn later, and the reload waits for them before it says it is
        applied."""
        naive = self._naive_plugins()
        try:
            self._configure(naive, config)
        except Exception as e:
            self._configure(naive, self.config)
            raise _Rejected(f"a plugin refused the config at commit: {e}") from None
        bound: dict[str, IListeningPort] = {}
        for listener, endpoint, factory in plan.bind:
            try:
                bound[listener.name] = self._bind(listener, endpoint, factory)
            except RuntimeError as e:
                for port in bound.values():
                    port.stopListening()
                self._configure(naive, self.config)
                raise _Rejected(f"{config.source}: listener {listener.name!r}: {e}; "
                                "free the port, or restart twistd when the new endpoint "
                                "overlaps the old one") from None
        for name, factory in plan.swap:
            listening: Any = self.ports[name]
            old_factory = listening.factory
            factory.doStart()
            listening.factory = factory
            old_factory.doStop()
        closing = [defer.maybeDeferred(self.ports.pop(name).stopListening)
                   for name in plan.close]
        for name, site in self.sites.items():
            if plan.sites.get(name) is not site:
                site.drain()
                self._old_sites.append(site)
        self._old_sites = [s for s in self._old_sites if s.open_channels()]
        self.ports.update(bound)
        self.sites = plan.sites
        old_serving = self.serving
        self.config = config
        self.serving = Serving(deployment)
        for name, step in steps:
            _quietly(name, "commit", step.commit)
        self._retire_when_done(old_serving, steps)
        return closing

    def _retire_when_done(self, serving: Serving, steps: list[tuple[str, ReloadStep]]
                          ) -> None:
        """Release the replaced deployment once its requests are done (bounded)."""
        done: list[bool] = []

        def retire() -> defer.Deferred[Any]:
            if done:
                return defer.succeed(None)
            done.append(True)
            if timer.active():
                timer.cancel()
            self._retiring.remove(retire)
            waits = [defer.maybeDeferred(_quietly, name, "retire", step.retire)
                     for name, step in steps]
            serving.deployment.close()
            return defer.DeferredList(waits, consumeErrors=True)

        def overdue() -> None:
            log.warn("{count} request(s) still in flight on the deployment a reload "
                     "replaced after {grace:g}s; releasing it now", count=serving.inflight,
                     grace=self.config.shutdown_grace)
            retire()

        timer = self.reactor.callLater(self.config.shutdown_grace, overdue)
        self._retiring.append(retire)
        serving.when_idle(lambda: self.reactor.callLater(0, retire) and None)


def _quietly(plugin: str, what: str, call: Any) -> Any:
    """Run a reload step's callable; a failure is logged, never raised."""
    try:
        return call()
    except Exception:
        log.failure("plugin {plugin}: reload {what} failed", plugin=plugin, what=what)
        return None


def served_urls(gateway: Gateway, listeners: Collection[str] | None = None
                ) -> list[tuple[str, str]]:
    """``(url, description)`` for every API stage on every bound listener (or on
    ``listeners`` only)."""
    out: list[tuple[str, str]] = []
    dep = gateway.deployment
    for name, port in gateway.ports.items():
        if listeners is not None and name not in listeners:
            continue
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
