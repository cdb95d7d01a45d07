"""TLS listeners, SNI, mutual TLS, certificate reload, allow-lists and private listeners.

A shipped plugin (issue 7) that claims the listener keys ``tls``, ``allow_sources`` and
``private`` and shapes those listeners through
:meth:`~twistgw.registry.Registry.add_listener_wrapper`:

* ``tls: {certificate: chain.pem, key: key.pem}`` (RSA or ECDSA; paths relative to the
  gateway config) wraps the listener's site in TLS: TLS 1.2 or newer, Mozilla
  "intermediate"'s six ECDHE-AEAD suites for TLS 1.2 and its key exchange groups, ALPN
  ``http/1.1`` only (no HTTP/2).  ``tls.policy`` takes AWS security policy names.
* ``tls.client_ca: bundle.pem`` turns on mutual TLS; the client certificate reaches
  ``$context.identity.clientCert`` and the Lambda events.
* ``tls.sni: {api.example.com: {certificate, key, client_ca}}`` serves several custom
  domains on one listener, each with its own certificate (and truststore); an unknown or
  absent server name gets the listener's default certificate.
* Certificates, keys and truststores reload without dropping connections: when their files
  change (polled every ``plugins.settings.tls.watch_interval`` seconds) and when
  :func:`reload_certificates` is called (the gateway's SIGHUP handler).  Expiry is checked
  at startup and daily.
* ``allow_sources: [CIDR, ...]`` closes connections from other peers in ``buildProtocol``,
  before TLS or HTTP see a byte.  A listener with ``allow_sources`` or ``private: true`` is
  *private*; an API with ``endpoint_type: PRIVATE`` may only be served on private listeners.
"""

from __future__ import annotations

import datetime
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from twistgw import hookimpl
from twistgw.errors import ConfigError
from twistgw.reload import ReloadStep

from .allow import AllowListFactory, Network, parse_sources
from .contexts import (
    DEFAULT_POLICY,
    MOZILLA_GROUPS,
    MOZILLA_INTERMEDIATE,
    POLICIES,
    ListenerTls,
)

if TYPE_CHECKING:
    from twistgw import Registry
    from twistgw.config import GatewayConfig, ListenerConfig
    from twistgw.deployment import Deployment
    from twistgw.gateway import Gateway

__all__ = ["register", "configure", "startup", "shutdown", "prepare_reload", "wrap_listener",
           "reload_certificates", "POLICIES", "MOZILLA_INTERMEDIATE", "MOZILLA_GROUPS",
           "DEFAULT_POLICY", "AllowListFactory", "ListenerTls", "parse_sources",
           "is_private", "TlsSettings"]

log = Logger()

#: Seconds between expiry checks after the one at startup.
EXPIRY_CHECK_INTERVAL = 86400.0
_SETTINGS_KEYS = frozenset({"watch_interval", "expiry_warning_days"})


class TlsSettings:
    """``plugins.settings.tls``: how often files are polled, when expiry is warned about."""

    def __init__(self, config: GatewayConfig) -> None:
        raw = config.plugin_settings("tls")
        where = "plugins.settings.tls"
        for key in raw:
            if key not in _SETTINGS_KEYS:
                raise ConfigError(config.source, f"{where}.{key}", "unknown key; known: "
                                  + ", ".join(sorted(_SETTINGS_KEYS)))
        self.watch_interval = _number(raw.get("watch_interval", 10), config.source,
                                      f"{where}.watch_interval", 0, 86400)
        days = _number(raw.get("expiry_warning_days", 30), config.source,
                       f"{where}.expiry_warning_days", 0, 3650)
        self.warn_within = datetime.timedelta(days=days)


def _number(value: Any, source: str, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            low <= value <= high):
        raise ConfigError(source, where, f"expected a number from {low:g} to {high:g}")
    return float(value)


class _Prepared:
    """What ``configure`` read for one listener: its TLS contexts and allow-list."""

    def __init__(self, listener: ListenerConfig, tls: ListenerTls | None,
                 sources: tuple[Network, ...]) -> None:
        self.listener = listener
        self.tls = tls
        self.sources = sources


#: Per listener object (``id``), kept with the listener so a reused id never matches.
_prepared: dict[int, _Prepared] = {}
#: The TLS listeners actually bound (weakly: a stopped listener's factory goes away).
_bound: weakref.WeakSet[ListenerTls] = weakref.WeakSet()
#: Timers per running gateway config (``id``): the file watcher and the expiry check.
_timers: dict[int, list[LoopingCall]] = {}


@hookimpl
def register(registry: Registry) -> None:
    """Claim ``tls``, ``allow_sources`` and ``private``; wrap the listeners using them."""
    registry.add_listener_option("tls")
    registry.add_listener_option("allow_sources")
    registry.add_listener_option("private")
    registry.add_feature("private_apis")
    registry.add_listener_wrapper(wrap_listener)
    registry.add_gauge_source(certificate_gauges)


def certificate_gauges(gateway: Gateway) -> Iterator[tuple[str, str, dict[str, str], float]]:
    """``/metrics``: when each served certificate expires, so an alert can fire well
    before the certificate does."""
    for tls in _listeners_of(gateway.config):
        contexts = tls.current
        for server_name, loaded in [("", contexts.default), *contexts.names.items()]:
            yield ("tls_certificate_not_after_seconds", "When a served certificate expires "
                   "(Unix time); server_name is empty for the listener's default",
                   {"listener": tls.name, "server_name": server_name},
                   loaded.leaf.not_valid_after_utc.timestamp())


def is_private(listener: ListenerConfig) -> bool:
    """Whether a listener may serve PRIVATE APIs: it has ``allow_sources`` or is marked
    ``private: true`` (bound to an interface only a private network reaches)."""
    return bool(listener.allow_sources) or listener.options.get("private") is True


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Read and check every listener's certificates and allow-list before anything binds;
    refuse PRIVATE APIs on public listeners."""
    settings = TlsSettings(config)
    for i, listener in enumerate(config.listeners):
        if listener.admin:
            continue
        where = f"listeners[{i}]"
        private = listener.options.get("private", False)
        if not isinstance(private, bool):
            raise ConfigError(config.source, f"{where}.private", "expected true or false")
        sources = parse_sources(listener.allow_sources, config.source, where)
        tls = None
        if listener.tls is not None:
            tls = ListenerTls(listener.tls, config.base_dir, config.source, f"{where}.tls",
                              listener.name, settings.warn_within)
        _prepared[id(listener)] = _Prepared(listener, tls, sources)
    check_private_apis(config)


def check_private_apis(config: GatewayConfig) -> None:
    """A PRIVATE API (or a custom domain mapping to one) only on private listeners."""
    listeners = {lst.name: lst for lst in config.listeners}
    private_apis = {api.id for api in config.apis if api.endpoint_type == "PRIVATE"}
    for api in config.apis:
        if api.id not in private_apis:
            continue
        for name in api.listeners:
            if not is_private(listeners[name]):
                raise ConfigError(config.source, f"{api.where}.listeners",
                                  f"the PRIVATE API {api.id!r} is served on listener "
                                  f"{name!r}, which is public; give that listener "
                                  "allow_sources (or private: true when it is bound to a "
                                  "private interface), or list only private listeners")
    public = [lst.name for lst in config.listeners if not lst.admin]
    for i, domain in enumerate(config.domains):
        for j, mapping in enumerate(domain.mappings):
            if mapping.api not in private_apis:
                continue
            for name in domain.listeners or tuple(public):
                if not is_private(listeners[name]):
                    raise ConfigError(config.source, f"domains[{i}].mappings[{j}].api",
                                      f"the domain {domain.name!r} maps the PRIVATE API "
                                      f"{mapping.api!r} and is served on the public "
                                      f"listener {name!r}; limit the domain's listeners to "
                                      "private ones")


def wrap_listener(listener: ListenerConfig, endpoint: Any, factory: Any,
                  reactor: Any) -> tuple[Any, Any]:
    """TLS around the site, and the allow-list around that (refusal before the handshake)."""
    entry = _prepared.get(id(listener))
    if entry is None or entry.listener is not listener:
        return endpoint, factory
    if entry.tls is not None:
        factory = TLSMemoryBIOFactory(entry.tls, False, factory)
        _bound.add(entry.tls)
    if entry.sources:
        factory = AllowListFactory(factory, entry.sources, listener.name, reactor)
    return endpoint, factory


def _listeners_of(config: GatewayConfig) -> list[ListenerTls]:
    out: list[ListenerTls] = []
    for listener in config.listeners:
        entry = _prepared.get(id(listener))
        if entry is not None and entry.listener is listener and entry.tls is not None:
            out.append(entry.tls)
    return out


@hookimpl
def startup(gateway: Gateway) -> None:
    """Watch the gateway's certificate files and check expiry daily."""
    config = gateway.config
    tls = _listeners_of(config)
    if not tls:
        return
    settings = TlsSettings(config)
    timers: list[LoopingCall] = []
    if settings.watch_interval > 0:
        watch = LoopingCall(poll_files, tls)
        watch.clock = gateway.reactor
        watch.start(settings.watch_interval, now=False)
        timers.append(watch)
    expiry = LoopingCall(check_expiry, tls)
    expiry.clock = gateway.reactor
    expiry.start(EXPIRY_CHECK_INTERVAL, now=False)
    timers.append(expiry)
    _timers[id(config)] = timers


@hookimpl
def shutdown(gateway: Gateway) -> None:
    """Stop the gateway's watcher and expiry timers."""
    for timer in _timers.pop(id(gateway.config), []):
        if timer.running:
            timer.stop()


@hookimpl
def prepare_reload(gateway: Gateway, deployment: Deployment) -> ReloadStep:
    """SIGHUP: re-read the bound listeners' certificates now (a bad file raises
    ``ConfigError``, which rejects the whole reload and changes nothing); the file watcher
    and expiry timers carry over to the new config."""
    reload_certificates()
    old, new = id(gateway.config), id(deployment.config)

    def commit() -> None:
        if old in _timers and old != new:
            _timers[new] = _timers.pop(old)

    return ReloadStep(commit=commit)


def check_expiry(listeners: list[ListenerTls]) -> None:
    """The daily expiry check of every certificate of these listeners."""
    for tls in listeners:
        tls.check_expiry()


def poll_files(listeners: list[ListenerTls]) -> None:
    """Reload a listener whose files changed (mtime, size or inode); a bad new file is
    logged and the listener keeps its current certificates until the files change again."""
    for tls in listeners:
        signature = tls.file_signature()
        if signature == tls.signature:
            continue
        try:
            tls.reload()
        except ConfigError as e:
            tls.signature = signature  # retried when the files change again
            log.error("listener {name}: the changed certificate files were not loaded, the "
                      "previous certificates stay in use: {error}", name=tls.name,
                      error=str(e))


def reload_certificates() -> list[str]:
    """Re-read the certificates, keys and truststores of every bound TLS listener.

    For the gateway's SIGHUP handler (and operators' tooling).  All listeners are built
    first and swapped only when every one loaded, so a bad file changes nothing.
    Established connections keep their TLS session; new connections get the new files.

    :returns: the names of the listeners reloaded.
    :raises ConfigError: naming the listener key and the file that is bad.
    """
    listeners = list(_bound)
    built = [(tls, tls.file_signature(), tls.build()) for tls in listeners]
    for tls, signature, contexts in built:
        tls.current = contexts
        tls.signature = signature
        log.info("listener {name}: certificates reloaded ({count} context(s))",
                 name=tls.name, count=len(contexts.all()))
    return [tls.name for tls in listeners]
