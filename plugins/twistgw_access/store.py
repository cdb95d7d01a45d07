"""Where throttle buckets and quota counters live: a small interface and its in-memory form.

The access plugin never touches its state directly: it asks an :class:`AccessStore` to
take a token from a named bucket or to count a request against a named quota, or to run
all of one request's steps at once (:meth:`AccessStore.run`: one round trip to Redis).  One
gateway process uses :class:`MemoryStore`; a store shared by several processes (Redis,
``twistgw_access.redis_store``) implements the same coroutines and plugs in without changing
the plugin.  The methods are ``async`` for that reason: an in-memory call never waits, so
a synchronous route (a MOCK) still completes inside one call (see
:func:`twistgw.dispatch.run_maybe_sync`), while a networked store may await its server.

Names of buckets and counters are built by the plugin from configured ids only (plan,
key, API, stage, resource path), never from what a client sent, so the state is bounded
by the config.  Time is passed in (``now``, epoch seconds) rather than read here, so tests
drive it with the gateway's ``task.Clock`` and a shared store sees each caller's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["AccessStore", "MemoryStore", "QuotaCount", "Bucket", "Counter", "Outcome",
           "refill"]


@attrs.frozen
class QuotaCount:
    """The result of counting one request against a quota.

    :ivar allowed: the request fits in the period's limit (and was counted).
    :ivar used: requests counted in the current period, this one included when allowed.
    :ivar previous: when this call rolled the counter into a new period, the count the
        previous period ended with (for the "quota reset" log line); else ``None``.
    """

    allowed: bool
    used: int
    previous: int | None = None


@attrs.frozen
class Bucket:
    """A step of :meth:`AccessStore.run`: take one token from a bucket."""

    name: str
    rate: float
    burst: int


@attrs.frozen
class Counter:
    """A step of :meth:`AccessStore.run`: count the request against a quota period."""

    name: str
    period_start: float
    period_end: float
    limit: int


@attrs.frozen
class Outcome:
    """What :meth:`AccessStore.run` did.

    :ivar refused: the index of the step that refused the request (the later steps were
        not run), or ``None`` when every step passed.
    :ivar quota: the :class:`Counter` step's count, when one ran.
    """

    refused: int | None
    quota: QuotaCount | None = None


@runtime_checkable
class AccessStore(Protocol):
    """The state behind API-key throttling and quotas (token buckets and counters)."""

    async def take_token(self, bucket: str, rate: float, burst: int, now: float) -> bool:
        """Take one token from ``bucket`` (capacity ``burst``, refilled at ``rate``/s).

        A bucket seen for the first time starts full.  Returns ``False`` when it is empty.
        Changed limits (a reloaded config) apply to the existing bucket's tokens.
        """
        ...

    async def count_request(self, counter: str, period_start: float, limit: int,
                            period_end: float | None = None) -> QuotaCount:
        """Count one request against ``counter`` for the period starting at ``period_start``.

        A counter whose stored period is older restarts at zero.  A request over ``limit``
        is refused and not counted.  ``period_end`` lets a shared store expire the counter.
        """
        ...

    async def quota_used(self, counter: str, period_start: float) -> int:
        """Requests counted in the period starting at ``period_start`` (0 if none)."""
        ...

    async def run(self, steps: Sequence[Bucket | Counter], now: float) -> Outcome:
        """Run ``steps`` in order, as one request's checks, stopping at the first refusal.

        A step that passed keeps what it took when a later one refuses (AWS's limits are
        best effort too).  A networked store does it in one round trip.
        """
        ...


def refill(tokens: float, last: float, rate: float, burst: int, now: float) -> float:
    """The bucket's tokens at ``now``: refilled at ``rate``/s since ``last``, capped at burst.

    A clock that went backwards (wall-clock adjustment) adds nothing rather than draining.
    """
    elapsed = now - last
    if elapsed > 0:
        tokens += elapsed * rate
    return min(tokens, float(burst))


class MemoryStore:
    """:class:`AccessStore` in this process's memory (one gateway node).

    Buckets are ``[tokens, last refill time]`` and counters ``[period start, used]`` in
    plain dicts: one entry per configured bucket or counter name, so no eviction is needed.
    """

    def __init__(self) -> None:
        self.buckets: dict[str, list[float]] = {}
        self.counters: dict[str, list[float]] = {}

    async def take_token(self, bucket: str, rate: float, burst: int, now: float) -> bool:
        return self._take(bucket, rate, burst, now)

    async def run(self, steps: Sequence[Bucket | Counter], now: float) -> Outcome:
        quota = None
        for i, step in enumerate(steps):
            if isinstance(step, Bucket):
                if not self._take(step.name, step.rate, step.burst, now):
                    return Outcome(refused=i, quota=quota)
            else:
                quota = self._count(step.name, step.period_start, step.limit)
                if not quota.allowed:
                    return Outcome(refused=i, quota=quota)
        return Outcome(refused=None, quota=quota)

    def _take(self, bucket: str, rate: float, burst: int, now: float) -> bool:
        state = self.buckets.get(bucket)
        if state is None:
            state = self.buckets[bucket] = [float(burst), now]
        tokens = refill(state[0], state[1], rate, burst, now)
        state[1] = max(now, state[1])
        if tokens >= 1.0:
            state[0] = tokens - 1.0
            return True
        state[0] = tokens
        return False

    async def count_request(self, counter: str, period_start: float, limit: int,
                            period_end: float | None = None) -> QuotaCount:
        return self._count(counter, period_start, limit)

    def _count(self, counter: str, period_start: float, limit: int) -> QuotaCount:
        state = self.counters.get(counter)
        previous: int | None = None
        if state is None:
            state = self.counters[counter] = [period_start, 0]
        elif state[0] != period_start:
            previous = int(state[1])
            state[0], state[1] = period_start, 0
        used = int(state[1])
        if used >= limit:
            return QuotaCount(allowed=False, used=used, previous=previous)
        state[1] = used + 1
        return QuotaCount(allowed=True, used=used + 1, previous=previous)

    async def quota_used(self, counter: str, period_start: float) -> int:
        state = self.counters.get(counter)
        if state is None or state[0] != period_start:
            return 0
        return int(state[1])
