"""Plugin discovery, enablement and ordering.

Every plugin, shipped or third-party, is found through the ``twistgw`` entry-point group
(the shipped ones are declared in twistgw's own ``setup.py``), so builtins are ordinary
plugins that third parties can copy.  Two core modules (gateway responses and the access
log) are always registered: they are the fallbacks that guarantee every request gets an
answer and a log line.

Order is deterministic: shipped plugins register first, so under pluggy's LIFO call
order they run last and act as fallbacks; third-party plugins then register in reverse of
the ``plugins.enabled`` list, so the list order is the call order.  Without an allowlist,
every installed plugin loads, in name order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any

import pluggy
from twisted.logger import Logger

from . import accesslog, gateway_responses, hookspecs
from .config import PluginsConfig
from .errors import ConfigError
from .hookspecs import PROJECT, REQUEST_PATH_HOOKS
from .registry import Registry

__all__ = ["GatewayPluginManager", "make_plugin_manager", "ENTRY_POINT_GROUP",
           "CORE_PLUGINS", "installed_plugins"]

log = Logger()

ENTRY_POINT_GROUP = "twistgw"
SHIPPED_DISTRIBUTION = "twistgw"
#: Core plugins that cannot be disabled.
CORE_PLUGINS = (("gateway_responses", gateway_responses), ("access_log", accesslog))


class GatewayPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers versions and the registry of claims."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.versions: dict[str, str] = {}

    def loaded(self) -> list[tuple[str, str]]:
        """``(name, version)`` of every registered plugin, in registration order."""
        return [(name, self.versions.get(name, "")) for name, _ in self.list_name_plugin()
                if name is not None]


def installed_plugins() -> list[metadata.EntryPoint]:
    """Entry points of the ``twistgw`` group, sorted by name."""
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else ""


def _dist_version(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.version) if dist is not None else ""


def make_plugin_manager(
    plugins: PluginsConfig,
    *,
    extra: Sequence[tuple[str, Any]] = (),
    source: str = "gateway config",
) -> GatewayPluginManager:
    """Build the plugin manager for a config.

    :param extra: ``(name, plugin object)`` pairs registered after the discovered ones
        (so they run first); ``twistgw.testing`` uses this for in-process plugins.
    :raises ConfigError: an enabled plugin is not installed, or a plugin breaks the
        request-path rules.
    """
    pm = GatewayPluginManager()
    for name, module in CORE_PLUGINS:
        pm.register(module, name=name)
        pm.versions[name] = "core"
    available = {ep.name: ep for ep in installed_plugins()}
    if os.environ.get("TWISTGW_DISABLE_PLUGIN_AUTOLOAD") and plugins.enabled is None:
        wanted: list[str] = []
    elif plugins.enabled is not None:
        wanted = list(plugins.enabled)
    else:
        wanted = [n for n in available if n not in plugins.disabled]
    extra_names = {n for n, _ in extra}
    for i, name in enumerate(wanted):
        if name not in available and name not in extra_names:
            hint = ", ".join(sorted(available)) or "none"
            raise ConfigError(source, f"plugins.enabled[{i}]",
                              f"plugin {name!r} is enabled but not installed (installed: "
                              f"{hint}); install its package or remove it from the list")
    eps = [available[n] for n in wanted if n in available]
    shipped = sorted((ep for ep in eps if _dist_name(ep) == SHIPPED_DISTRIBUTION),
                     key=lambda ep: ep.name)
    third = [ep for ep in eps if _dist_name(ep) != SHIPPED_DISTRIBUTION]
    if plugins.enabled is None:
        third.sort(key=lambda ep: ep.name)
    for ep in shipped + list(reversed(third)):
        try:
            plugin = ep.load()
        except Exception as e:
            raise ConfigError(source, "plugins", f"plugin {ep.name!r} ({ep.value}) failed to "
                              f"import: {type(e).__name__}: {e}") from e
        pm.register(plugin, name=ep.name)
        pm.versions[ep.name] = _dist_version(ep)
    for name, plugin in reversed(list(extra)):
        pm.register(plugin, name=name)
        pm.versions[name] = "in-process"
    pm.check_pending()
    _lint_request_path(pm, source)
    _run_register(pm)
    return pm


def _lint_request_path(pm: GatewayPluginManager, source: str) -> None:
    """Refuse wrapper impls on request-path hooks.

    Their code after ``yield`` would run before an asynchronous result arrives, which is
    never what the author meant.  ``request_started``/``request_finished`` serve
    cross-cutting needs instead.
    """
    for hook_name in REQUEST_PATH_HOOKS:
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                raise ConfigError(source, "plugins",
                                  f"plugin {impl.plugin_name!r} implements {hook_name} as a "
                                  "wrapper, which the request path does not support; use "
                                  "tryfirst/trylast or request_started/request_finished")


def _run_register(pm: GatewayPluginManager) -> None:
    """Call each ``register`` impl with the registry bound to its plugin's name."""
    for impl in pm.hook.register.get_hookimpls():
        pm.registry.plugin = impl.plugin_name
        impl.function(*[pm.registry for _ in impl.argnames])
    pm.registry.plugin = "<core>"


def describe(pm: GatewayPluginManager) -> Iterable[str]:
    """Lines naming each loaded plugin and its version, for the startup log."""
    for name, version in pm.loaded():
        yield f"{name}=={version}" if version else name
