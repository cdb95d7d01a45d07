"""API keys, usage plans and throttling on one gateway node (issue #6, first slice).

A shipped plugin, registered through the ``twistgw`` entry-point group like any
third-party plugin.  It claims the ``api_keys`` feature (operations whose ``security``
names an ``x-api-key`` header scheme, aws-apigw-spec.md §10.1) and implements
``authorize`` ``trylast``: AWS checks the API key after the authorizer (§A.2), and with
``apiKeySource: AUTHORIZER`` the key comes from the authorizer's principal, so every other
``authorize`` implementation must have run.  The decision itself is
:class:`twistgw_access.control.AccessControl`; the state is behind
:class:`twistgw_access.store.AccessStore`: in memory, or in Redis
(:mod:`twistgw_access.redis_store`) to share it among gateway processes.

**Clock.** Token refills and calendar quota periods read ``seconds()`` of the gateway's
reactor, taken in the ``startup`` hook (a ``task.Clock`` in tests, so refills are
deterministic).  A request served before ``startup`` ran (a
:class:`~twistgw.testing.GatewayHarness` that never starts the service, or a hook called
directly) gets the global reactor's clock, which is the wall clock.

**Operators** read current usage per key with :func:`usage` (a Deferred of
:class:`~twistgw_access.control.KeyUsage` rows; a stable API: the admin listener's
``/usage`` serves it), or with ``twistgw usage`` (:mod:`twistgw_access.cli`) straight from
the Redis store; each quota period rollover logs one line.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from twistgw import hookimpl
from twistgw.errors import ConfigError
from twistgw.reload import ReloadStep

from .control import AccessControl, KeyUsage
from .redis_store import RedisSettings, RedisStore
from .settings import ACCOUNT_DEFAULT, AccessSettings, parse_settings
from .store import AccessStore, MemoryStore

if TYPE_CHECKING:
    from twistgw import Allow, Context, Deny, Registry
    from twistgw.config import GatewayConfig
    from twistgw.deployment import Deployment
    from twistgw.gateway import Gateway

__all__ = ["register", "configure", "startup", "shutdown", "prepare_reload", "authorize",
           "usage",
           "control_for", "shared_store", "AccessControl", "AccessStore", "MemoryStore", "KeyUsage"]

#: Gateway configs whose settings or controls are kept (a process normally serves one;
#: tests build many, so old entries are dropped).
_KEEP = 16


class _State:
    """Checked settings and the running controls, both keyed by gateway config.

    ``configure`` runs for every config the gateway loads; ``startup`` creates the control
    (with the gateway's clock) for the config it serves.  Entries hold the config itself
    and are matched by identity, so a recycled ``id()`` never picks up stale settings.
    """

    def __init__(self) -> None:
        self.settings: dict[int, tuple[GatewayConfig, AccessSettings]] = {}
        self.controls: dict[int, tuple[GatewayConfig, AccessControl]] = {}

    def settings_for(self, config: GatewayConfig) -> AccessSettings:
        found = self.settings.get(id(config))
        if found is not None and found[0] is config:
            return found[1]
        settings = parse_settings(config)
        _remember(self.settings, config, settings)
        return settings

    def control_for(self, config: GatewayConfig, clock: Any = None) -> AccessControl:
        found = self.controls.get(id(config))
        if found is not None and found[0] is config and clock is None:
            return found[1]
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        settings = self.settings_for(config)
        store: AccessStore
        if isinstance(settings.store, RedisSettings):
            # Shared state: quota periods follow the Redis server's clock too.
            store = clock = _start_redis(settings.store, clock)
        else:
            store = MemoryStore()
        control = AccessControl(settings, store, clock)
        _remember(self.controls, config, control)
        return control


def _start_redis(settings: RedisSettings, reactor: Any) -> RedisStore:
    store = RedisStore(settings, reactor)
    store.start()
    return store


def _remember(table: dict[int, tuple[GatewayConfig, Any]], config: GatewayConfig,
              value: Any) -> None:
    _close(table.pop(id(config), None))
    table[id(config)] = (config, value)
    while len(table) > _KEEP:
        _close(table.pop(next(iter(table))))


def _close(entry: tuple[GatewayConfig, Any] | None) -> None:
    """Close the Redis connection of a control that is dropped."""
    if entry is not None and isinstance(entry[1], AccessControl) and isinstance(
            entry[1].store, RedisStore):
        entry[1].store.stop()


_state = _State()


@hookimpl
def register(registry: Registry) -> None:
    """Claim API-key enforcement; throttles apply to every route, so no route filter."""
    registry.add_feature("api_keys")
    registry.add_worker_check(worker_check)


def worker_check(config: GatewayConfig, workers: int) -> list[str]:
    """``--workers N`` with the in-memory store: refuse quotas, warn about throttles.

    Each worker would keep its own counters: a quota of 1 000 a day would let N x 1 000
    through (a contract broken silently), so that is refused; token buckets would allow N
    x the rate, which is logged loudly.  A ``redis://`` store is shared and exact.
    """
    settings = parse_settings(config)
    if isinstance(settings.store, RedisSettings):
        return []
    quotas = sorted(p.id for p in settings.plans.values() if p.quota is not None)
    if quotas:
        raise ConfigError(config.source, "plugins.settings.access.store",
                          f"usage plans {', '.join(quotas)} have quotas, and with --workers "
                          f"{workers} the in-memory store would count them per process "
                          f"(up to {workers} x the quota); set store: redis://HOST:PORT/DB "
                          "or run --workers 1")
    throttled = (settings.stage_throttles or settings.account != ACCOUNT_DEFAULT
                 or any(p.throttle is not None for p in settings.plans.values()))
    if not throttled:
        return []
    return [f"plugins.settings.access.store is memory: with --workers {workers} every "
            f"worker keeps its own throttle buckets, so up to {workers} x each configured "
            "rate and burst get through; set store: redis://HOST:PORT/DB to share them"]


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Check ``plugins.settings.access`` (keys, plans, throttles, quotas)."""
    _remember(_state.settings, config, parse_settings(config))


@hookimpl
def startup(gateway: Gateway) -> None:
    """Start counting for the gateway's config, on the gateway's clock."""
    _state.control_for(gateway.config, clock=gateway.reactor)


@hookimpl
def shutdown(gateway: Gateway) -> None:
    """Forget the gateway's buckets and counters; close the Redis connection if any."""
    found = _state.controls.get(id(gateway.config))
    if found is not None and found[0] is gateway.config:
        del _state.controls[id(gateway.config)]
        if isinstance(found[1].store, RedisStore):
            found[1].store.stop()


@hookimpl
def prepare_reload(gateway: Gateway, deployment: Deployment) -> ReloadStep | None:
    """Keep counting across a reload: with the same ``store`` settings the new config's
    control shares the running store (token buckets, quota counters, the Redis
    connection), so a SIGHUP never resets a limit; changed plans and limits apply to
    the existing counts."""
    old_config, new_config = gateway.config, deployment.config
    found = _state.controls.get(id(old_config))
    if found is None or found[0] is not old_config:
        return None  # not started: the new config's control is created when needed
    old = found[1]
    settings = _state.settings_for(new_config)
    same_store = settings.store == old.settings.store

    def commit() -> None:
        if same_store:
            _state.controls[id(new_config)] = (new_config,
                                               AccessControl(settings, old.store, old.clock))
        else:
            _state.control_for(new_config, clock=gateway.reactor)

    def retire() -> None:
        entry = _state.controls.get(id(old_config))
        if entry is not None and entry[0] is old_config:
            del _state.controls[id(old_config)]
            if not same_store:
                _close(entry)

    return ReloadStep(commit=commit, retire=retire)


@hookimpl(trylast=True)
def authorize(ctx: Context) -> Coroutine[Any, Any, Allow | Deny | None] | None:
    """API key, usage-plan throttles and quota, stage and account throttles (AWS's order).

    Returns ``Allow`` naming the key for routes that require one, ``None`` for the others
    when no limit refused them, ``Deny`` with INVALID_API_KEY, THROTTLED or
    QUOTA_EXCEEDED otherwise.
    """
    api = ctx.deployment_api
    if api is None:
        return None
    return _state.control_for(api.gateway).check(ctx)


def control_for(gateway: Gateway) -> AccessControl:
    """The access control serving ``gateway`` (created on its clock if not started)."""
    found = _state.controls.get(id(gateway.config))
    if found is not None and found[0] is gateway.config:
        return found[1]
    return _state.control_for(gateway.config, clock=gateway.reactor)


def shared_store(config: GatewayConfig) -> RedisStore | None:
    """The Redis store serving ``config``'s running access control, if it has one.

    Other plugins share state through it (the auth plugin caches Lambda authorizer
    results there); ``None`` with the in-memory store or before the control exists (it
    is created by ``startup``), so callers fall back to their own memory.
    """
    found = _state.controls.get(id(config))
    if found is not None and found[0] is config and isinstance(found[1].store, RedisStore):
        return found[1].store
    return None


def usage(gateway: Gateway, key_ids: Sequence[str] | None = None
          ) -> Deferred[list[KeyUsage]]:
    """Current usage per API key and usage plan (quota used, remaining, period bounds).

    The operators' read API, kept stable: the admin listener's ``GET /usage`` serves it
    as ``{"items": [attrs.asdict(row), ...]}`` (docs/config.rst).  With the in-memory
    store the Deferred has already fired.
    """
    return Deferred.fromCoroutine(control_for(gateway).usage(key_ids))
