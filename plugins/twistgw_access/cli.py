"""``twistgw usage``: current usage per API key, read from the configured shared store.

Quota counters live where the access plugin keeps them.  With a Redis store they outlive
any one gateway process, so this command reads them directly (``GET`` of each counter of
the current period) and prints the same rows as the admin listener's ``GET /usage``
(:func:`twistgw_access.usage`).  The in-memory store exists only inside a running
gateway: the command says so and points at ``/usage`` instead of printing zeros.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from twistgw.config import GatewayConfig

from .control import AccessControl, KeyUsage
from .redis_store import RedisSettings, RedisStore
from .settings import parse_settings

__all__ = ["usage_rows", "format_rows", "main"]

#: How long to wait for Redis to accept the connection before giving up.
CONNECT_TIMEOUT = 5.0


class UsageError(Exception):
    """The report cannot be produced (message for the operator)."""


async def usage_rows(reactor: Any, config: GatewayConfig,
                     key_ids: Sequence[str] | None = None) -> list[KeyUsage]:
    """The usage report of ``config``'s Redis store (raises :class:`UsageError`)."""
    settings = parse_settings(config)
    if not isinstance(settings.store, RedisSettings):
        raise UsageError("the access plugin keeps usage in memory (store: memory), inside "
                         "the gateway process; read it from the running gateway's admin "
                         "listener: GET /usage[?key=ID] (docs/admin.rst)")
    unknown = [k for k in key_ids or () if k not in settings.keys]
    if unknown:
        raise UsageError(f"no API key with id {', '.join(map(repr, unknown))} in "
                         f"{config.source} (keys: {', '.join(settings.keys) or 'none'})")
    store = RedisStore(settings.store, reactor)
    store.start()
    try:
        waited = 0.0
        while store.client.proto is None:
            if waited >= CONNECT_TIMEOUT:
                raise UsageError(f"cannot reach Redis at {store.client.host}:"
                                 f"{store.client.port} (plugins.settings.access.store.url)")
            await task.deferLater(reactor, 0.05, lambda: None)
            waited += 0.05
        # Replies come in order: once PING answers, the clock-offset probe sent on
        # connecting has too, so quota periods follow the Redis server's clock.
        await store.client.execute("PING")
        control = AccessControl(settings, store, store)
        rows = await control.usage(list(key_ids) if key_ids else None)
        if not store.healthy:
            raise UsageError("Redis stopped answering while the report was read")
        return rows
    finally:
        store.stop()


def format_rows(rows: Sequence[KeyUsage]) -> list[str]:
    """A plain-text table: key, plan, used / limit, remaining, period."""
    out = [f"{'KEY':<24} {'PLAN':<16} {'USED':>10} {'LIMIT':>10} {'REMAINING':>10}  PERIOD"]
    for r in rows:
        state = "" if r.enabled else " (disabled)"
        limit = "-" if r.limit is None else str(r.limit)
        remaining = "-" if r.remaining is None else str(r.remaining)
        period = f"{r.period} {r.period_start} .. {r.period_end}" if r.period else "-"
        out.append(f"{r.key_id + state:<24} {r.plan_id or '(no plan)':<16} {r.used:>10} "
                   f"{limit:>10} {remaining:>10}  {period}")
    return out


def main(config: GatewayConfig, key_ids: Sequence[str] | None, as_json: bool) -> int:
    """Run the report on the global reactor and print it; the process's exit status."""
    from twisted.internet import reactor

    box: list[Any] = []

    def done(result: Any) -> None:
        box.append(result)
        if reactor.running:
            reactor.stop()

    d: Deferred[list[KeyUsage]] = ensureDeferred(usage_rows(reactor, config, key_ids))
    d.addBoth(done)
    if not box:
        reactor.run()
    result = box[0]
    if hasattr(result, "value"):  # a Failure
        if isinstance(result.value, UsageError):
            print(f"error: {result.value}", file=sys.stderr)
            return 1
        result.raiseException()
    rows: list[KeyUsage] = result
    if as_json:
        print(json.dumps({"items": [attrs.asdict(r) for r in rows]}, sort_keys=True))
    else:
        print("\n".join(format_rows(rows)))
    return 0
