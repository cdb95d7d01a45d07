"""Reloading ``functions:`` (``SIGHUP``) without dropping an invoke.

A reload builds a new :class:`~twistgw_lambda.runtime.LambdaRuntime` for the new config
aside.  A function whose settings, region and code are unchanged keeps its pool (warm
workers, no cold start); a new or changed one gets a new pool whose ``min_workers`` are
started, and their init awaited, before the switch: a worker that fails init rejects the
reload, so a broken deployment of function code never replaces a working one.  At commit
the new runtime serves the new deployment; requests still running on the old deployment
keep using the old runtime, and the pools only it used are stopped at retire, once those
requests finished, so their workers never lose an invoke in flight.

"Code unchanged" is judged by a fingerprint of the function's ``code`` folder (path, size
and modification time of every file, bounded), taken when a pool starts.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task

from twistgw.errors import ConfigError
from twistgw.reload import ReloadStep

from .functions import FunctionConfig, parse_functions
from .runtime import FunctionPool, LambdaRuntime

if TYPE_CHECKING:
    from twistgw.deployment import Deployment
    from twistgw.gateway import Gateway

__all__ = ["prepare", "remember", "code_fingerprint", "MAX_FINGERPRINT_FILES"]

#: At most this many files are looked at for a code fingerprint (a huge folder then
#: counts as changed on every reload, which is safe: its pool is replaced gracefully).
MAX_FINGERPRINT_FILES = 10000

_fingerprints: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()


def code_fingerprint(code: Path) -> str | None:
    """A digest of the files under ``code`` (names, sizes, mtimes); ``None`` when the
    folder is too big or unreadable, which never compares equal."""
    digest = hashlib.sha256()
    count = 0
    try:
        for root, dirs, files in os.walk(code):
            dirs.sort()
            if "__pycache__" in dirs:
                dirs.remove("__pycache__")
            for name in sorted(files):
                count += 1
                if count > MAX_FINGERPRINT_FILES:
                    return None
                st = os.stat(os.path.join(root, name))
                digest.update(f"{root}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()


def remember(runtime: Any) -> None:
    """Record the code fingerprint of every local pool of ``runtime`` (at start)."""
    for pool in getattr(runtime, "pools", {}).values():
        if isinstance(pool, FunctionPool) and pool not in _fingerprints:
            _fingerprints[pool] = code_fingerprint(pool.config.code)


def _unchanged(pool: Any, cfg: FunctionConfig, region: str) -> bool:
    if getattr(pool, "closing", False):
        return False
    if isinstance(pool, FunctionPool):
        before = _fingerprints.get(pool)
        return (cfg.remote is None and pool.config == cfg and pool.region == region
                and before is not None and before == code_fingerprint(cfg.code))
    # A remote function: same Invoke API settings.
    return cfg.remote is not None and getattr(pool, "config", None) == cfg.remote


def prepare(gateway: Gateway, deployment: Deployment, runtimes: dict[int, Any],
            regions: dict[str, str]) -> defer.Deferred[ReloadStep] | None:
    """The Lambda plugin's ``prepare_reload`` (see the module docstring).

    :param runtimes: the plugin's runtimes by ``id(config)`` (``(config, runtime)``).
    :param regions: each function's region in the new deployment.
    """
    old_config, new_config = gateway.config, deployment.config
    entry = runtimes.get(id(old_config))
    old_runtime = entry[1] if entry is not None and entry[0] is old_config else None
    if old_runtime is None and not new_config.functions:
        return None
    functions = parse_functions(new_config.functions, new_config.source,
                                Path(new_config.base_dir))
    old_pools: dict[str, Any] = dict(getattr(old_runtime, "pools", {}))
    runtime = LambdaRuntime({}, gateway.reactor)
    fresh: dict[str, Any] = {}
    for name, cfg in functions.items():
        region = regions.get(name, "us-east-1")
        old = old_pools.get(name)
        if old is not None and _unchanged(old, cfg, region):
            runtime.pools[name] = old
        else:
            fresh[name] = LambdaRuntime({name: cfg}, gateway.reactor, regions=regions
                                        ).pools[name]
            runtime.pools[name] = fresh[name]
    remember(runtime)
    kept = {id(p) for p in runtime.pools.values()}
    replaced = [p for p in old_pools.values() if id(p) not in kept]

    def stop(pools: list[Any]) -> defer.Deferred[Any]:
        return defer.DeferredList([defer.maybeDeferred(p.stop) for p in pools],
                                  consumeErrors=True)

    def commit() -> None:
        runtimes[id(new_config)] = (new_config, runtime)

    def retire() -> defer.Deferred[Any]:
        found = runtimes.get(id(old_config))
        if found is not None and found[0] is old_config and old_config is not new_config:
            del runtimes[id(old_config)]
        return stop(replaced)

    step = ReloadStep(commit=commit, abort=lambda: stop(list(fresh.values())), retire=retire)
    waits = [d for pool in fresh.values() for d in pool.keep_warm()]
    starting = {name: list(getattr(pool, "workers", [])) for name, pool in fresh.items()}

    def failed_init(name: str, pool: Any) -> bool:
        return bool(getattr(pool, "broken", False)) or any(
            getattr(w, "init_failure", None) is not None for w in starting[name])

    def started(_: object) -> ReloadStep:
        for name, pool in fresh.items():
            if failed_init(name, pool):
                stop(list(fresh.values()))
                raise ConfigError(new_config.source, f"functions.{name}",
                                  "the function's new code failed init (the worker's error "
                                  "is logged above); fix the code and reload again")
        return step

    # A worker's init Deferred fires before its exit is fully handled (the pool marks
    # itself broken right after): look one reactor turn later.
    return defer.DeferredList(waits, consumeErrors=True).addCallback(
        lambda _: task.deferLater(gateway.reactor, 0, started, None))
