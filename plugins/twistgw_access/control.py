"""The decision for one request: API key, usage-plan throttles and quota, stage, account.

Order (aws-apigw-spec.md §A.2 step 6, §5.1-§5.3 and fact 19), first refusal wins:

1. API key, only when the operation requires one (an ``x-api-key`` scheme in its
   ``security``): read from the ``x-api-key`` header, or from the authorizer's
   ``usageIdentifierKey`` when the API's ``apiKeySource`` is ``AUTHORIZER``.  Missing,
   unknown, disabled, or not in a usage plan covering this API and stage →
   ``403 {"message":"Forbidden"}`` (INVALID_API_KEY).
2. The plan's per-method throttle for this key (``"/pets/GET"``), then the plan's per-key
   throttle → ``429 {"message":"Too Many Requests"}`` (THROTTLED).
3. The plan's quota → ``429 {"message":"Limit Exceeded"}`` (QUOTA_EXCEEDED).
4. The stage's method throttle (the method's own entry, else the stage default; AWS applies
   stage limits per method) → THROTTLED.  Applies to every request, with or without a key.
5. The account bucket (10,000 rps, burst 5,000 by default) → THROTTLED.

A request refused at one step keeps what it took at the earlier ones (tokens, and its
quota count when the stage or account throttle refuses it), as AWS's best-effort limits
do; it takes nothing from the later ones.

The key value is hashed (SHA-256) and looked up by digest; the digest found is compared
again with :func:`hmac.compare_digest`, so nothing on this path compares a raw secret
with ``==``.  Buckets and counters are created only for configured keys, plans and
routes, never for a value a client made up.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

from twistgw import Allow, Deny, InvalidApiKey, Principal, QuotaExceeded, Throttled
from twistgw.deployment import memoize

from .periods import iso, period_bounds
from .redis_store import StoreUnavailable
from .settings import AccessSettings, ApiKey, PlanStage, Quota, UsagePlan, key_digest
from .store import Bucket, Counter

if TYPE_CHECKING:
    from twistgw import Context
    from twistgw.definition import SecurityScheme
    from twistgw.deployment import ApiDeployment, Route

    from .store import AccessStore

__all__ = ["AccessControl", "KeyUsage", "RoutePolicy", "requires_api_key"]

log = Logger(namespace="twistgw_access")

_MAX_KEY_CHARS = 128


def requires_api_key(route: Route, schemes: Mapping[str, SecurityScheme]) -> bool:
    """True when the route's operation names an ``x-api-key`` scheme in ``security``."""
    for req in route.operation.security:
        scheme = schemes.get(req.scheme)
        if scheme is not None and scheme.kind == "api_key":
            return True
    return False


@attrs.frozen
class RoutePolicy:
    """What applies to one route on one stage, computed once (memoized on the route)."""

    requires_key: bool
    method_key: str
    stage_bucket: Bucket | None = None


@attrs.frozen
class KeyUsage:
    """One key's usage in one plan, for operators (see :meth:`AccessControl.usage`).

    ``plan_id`` is ``None`` for a key in no plan (every request with it is refused).
    Quota fields are ``None`` when the plan has no quota.
    """

    key_id: str
    enabled: bool
    plan_id: str | None
    used: int = 0
    limit: int | None = None
    remaining: int | None = None
    period: str | None = None
    period_start: str | None = None
    period_end: str | None = None


class AccessControl:
    """API keys, usage plans and throttles for one gateway config.

    :param settings: the checked ``plugins.settings.access``.
    :param store: where buckets and counters live (:class:`~.store.MemoryStore` on one
        node).
    :param clock: anything with ``seconds()`` (the gateway's reactor, a ``task.Clock`` in
        tests): the epoch time for token refills and calendar quota periods.
    """

    def __init__(self, settings: AccessSettings, store: AccessStore, clock: Any) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.account_bucket = Bucket("account", settings.account.rate,
                                     settings.account.burst)
        self._periods: dict[tuple[str, int], tuple[float, float]] = {}
        self._buckets: dict[tuple[str, ...], tuple[Bucket, ...]] = {}

    # -- request path -------------------------------------------------------------------

    def policy(self, ctx: Context) -> RoutePolicy | None:
        """The route's policy on this request's stage (``None`` before routing)."""
        route, api, stage = ctx.route, ctx.deployment_api, ctx.stage
        if route is None or api is None or stage is None:
            return None
        policy: RoutePolicy = memoize(route, ("access", stage.name),
                                      lambda: self._compute_policy(route, api, stage.name))
        return policy

    def _compute_policy(self, route: Route, api: ApiDeployment, stage: str) -> RoutePolicy:
        op = route.operation
        method_key = f"{op.path}/{op.method}"
        requires_key = not api.is_http and requires_api_key(
            route, api.definition.security_schemes)
        st = self.settings.stage_throttles.get((api.id, stage))
        throttle = None
        if st is not None:
            throttle = st.methods.get(method_key, st.throttle)
        bucket = Bucket(f"stage:{api.id}:{stage}:{method_key}", throttle.rate,
                        throttle.burst) if throttle is not None else None
        return RoutePolicy(requires_key=requires_key, method_key=method_key,
                           stage_bucket=bucket)

    async def check(self, ctx: Context) -> Allow | Deny | None:
        """The ``authorize`` verdict: ``Allow`` with the key for key routes, else ``None``.

        A shared store that cannot answer under ``failure: closed`` refuses the request
        with THROTTLED (see docs/config.rst).
        """
        try:
            return await self._check(ctx)
        except StoreUnavailable:
            return Deny(Throttled())

    async def _check(self, ctx: Context) -> Allow | Deny | None:
        policy = self.policy(ctx)
        if policy is None:
            return None
        now = float(self.clock.seconds())
        verdict: Allow | None = None
        steps: list[Bucket | Counter] = []
        quota: Quota | None = None
        plan: UsagePlan | None = None
        key: ApiKey | None = None
        if policy.requires_key:
            found = self.find_key(ctx)
            if found is None:
                return Deny(InvalidApiKey())
            key, value = found
            api = ctx.deployment_api
            assert api is not None and ctx.stage is not None
            entry = self.settings.plan_for.get((key.id, api.id, ctx.stage.name))
            if not key.enabled or entry is None:
                return Deny(InvalidApiKey())
            plan, plan_stage = entry
            steps += self._plan_buckets(key, plan, plan_stage, policy.method_key)
            quota = plan.quota
            if quota is not None:
                start, end = self._period(now, quota)
                steps.append(Counter(f"quota:{plan.id}:key:{key.id}", start, end,
                                     quota.limit))
            verdict = Allow(self._principal(ctx, key, value))
        if policy.stage_bucket is not None:
            steps.append(policy.stage_bucket)
        steps.append(self.account_bucket)
        outcome = await self.store.run(steps, now)
        counted = outcome.quota
        if counted is not None and counted.previous is not None and quota is not None:
            assert plan is not None and key is not None
            start, end = self._period(now, quota)
            log.info("quota reset for API key {key_id} in usage plan {plan_id}: new "
                     "{period} period {start} to {end}; {previous} of {limit} requests "
                     "used in the previous one", key_id=key.id, plan_id=plan.id,
                     period=quota.period, start=iso(start), end=iso(end),
                     previous=counted.previous, limit=quota.limit)
        if outcome.refused is None:
            return verdict
        if isinstance(steps[outcome.refused], Counter):
            assert plan is not None and quota is not None
            log.debug("({request_id}) Key quota exhausted for Usage Plan ID {plan_id}. "
                      "Quota Limit: {limit} Period: {period}", request_id=ctx.request_id,
                      plan_id=plan.id, limit=quota.limit, period=quota.period)
            return Deny(QuotaExceeded())
        return Deny(Throttled())

    def find_key(self, ctx: Context) -> tuple[ApiKey, str] | None:
        """The configured key this request presents, with the value presented, or None."""
        api = ctx.api
        if api is not None and api.api_key_source == "AUTHORIZER":
            value = ctx.principal.usage_identifier_key if ctx.principal is not None else None
        else:
            value = ctx.request.headers.get("x-api-key")
        if not value or len(value) > _MAX_KEY_CHARS or not value.isascii():
            return None
        digest = key_digest(value)
        key = self.settings.keys_by_digest.get(digest)
        if key is None or not hmac.compare_digest(key.digest, digest):
            return None
        return key, value

    def _period(self, now: float, quota: Quota) -> tuple[float, float]:
        """The quota period containing ``now``, computed once per period, not per request."""
        index = (quota.period, quota.offset)
        found = self._periods.get(index)
        if found is None or not found[0] <= now < found[1]:
            found = self._periods[index] = period_bounds(now, quota.period, quota.offset)
        return found

    def _plan_buckets(self, key: ApiKey, plan: UsagePlan, plan_stage: PlanStage,
                      method_key: str) -> tuple[Bucket, ...]:
        """The plan's method throttle for this key, then its per-key throttle (AWS's
        order); built once per key, stage and method (a bounded set: all configured)."""
        index = (key.id, plan.id, plan_stage.api, plan_stage.stage, method_key)
        found = self._buckets.get(index)
        if found is None:
            out: list[Bucket] = []
            method = plan_stage.method_throttles.get(method_key)
            if method is not None:
                out.append(Bucket(f"plan:{plan.id}:key:{key.id}:{plan_stage.api}:"
                                  f"{plan_stage.stage}:{method_key}", method.rate,
                                  method.burst))
            if plan.throttle is not None:
                # Per key across every stage of the plan (AWS aggregates a key's limits).
                out.append(Bucket(f"plan:{plan.id}:key:{key.id}", plan.throttle.rate,
                                  plan.throttle.burst))
            found = self._buckets[index] = tuple(out)
        return found

    @staticmethod
    def _principal(ctx: Context, key: ApiKey, value: str) -> Principal:
        """The caller with the accepted key; an authorizer's principal is kept, not replaced."""
        if ctx.principal is not None:
            return attrs.evolve(ctx.principal, api_key_id=key.id, usage_identifier_key=value)
        return Principal(id=key.id, kind="api_key", api_key_id=key.id,
                         usage_identifier_key=value)

    # -- operators ----------------------------------------------------------------------

    async def usage(self, key_ids: Sequence[str] | None = None) -> list[KeyUsage]:
        """Current usage per key and plan: quota used and remaining in this period.

        ``key_ids`` limits the report to those keys (default: every configured key).
        """
        settings = self.settings
        now = float(self.clock.seconds())
        wanted = list(settings.keys) if key_ids is None else list(key_ids)
        out: list[KeyUsage] = []
        for key_id in wanted:
            key = settings.keys.get(key_id)
            if key is None:
                continue
            plans = [p for p in settings.plans.values() if key_id in p.keys]
            if not plans:
                out.append(KeyUsage(key_id=key_id, enabled=key.enabled, plan_id=None))
            for plan in plans:
                quota = plan.quota
                if quota is None:
                    out.append(KeyUsage(key_id=key_id, enabled=key.enabled, plan_id=plan.id))
                    continue
                start, end = period_bounds(now, quota.period, quota.offset)
                used = await self.store.quota_used(f"quota:{plan.id}:key:{key_id}", start)
                out.append(KeyUsage(key_id=key_id, enabled=key.enabled, plan_id=plan.id,
                                    used=used, limit=quota.limit,
                                    remaining=max(quota.limit - used, 0),
                                    period=quota.period, period_start=iso(start),
                                    period_end=iso(end)))
        return out
