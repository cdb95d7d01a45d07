"""Lambda (TOKEN/REQUEST), JWT, Cognito user-pool and IAM (SigV4) authorization (issue #6).

A shipped plugin registered through the ``twistgw`` entry-point group.  It claims the
``token``, ``request``, ``jwt`` and ``cognito_user_pools`` authorizer types and the
``aws_iam`` feature, and
implements ``authorize`` (default
order, so before the access plugin's ``trylast`` API-key check, as on AWS, §A.2).  Each
route's authorizers are read from the definition once and kept in ``route.memo``; JWKS
caches exist only per issuer named by a definition, so nothing is keyed by what a client
sends.  Settings: ``plugins.settings.auth`` (docs/auth.rst).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

from twistgw import hookimpl
from twistgw.definition import load_definition
from twistgw.errors import AccessDenied, ApiConfigurationError, ConfigError
from twistgw.models import Allow, Principal
from twistgw.reload import ReloadStep
from twistgw.variables import ACCOUNT_ID

from . import jwt_auth, lambda_auth, resource_policy, sigv4
from .jwks import JwksCache
from .settings import AuthSettings, IamKey, parse_settings

if TYPE_CHECKING:
    from twistgw import Context, Registry
    from twistgw.config import ApiConfig, GatewayConfig
    from twistgw.deployment import Deployment, Route
    from twistgw.gateway import Gateway

__all__ = ["register", "configure", "prepare_reload", "authorize", "caches_for",
           "lambda_cache_for"]

_log = Logger()
_MEMO = "twistgw_auth"
POLICY = "x-amazon-apigateway-policy"
#: Gateway configs whose settings and caches are kept (tests build many).
_KEEP = 16


_VPCE_RE = re.compile(r"^vpce-[0-9A-Za-z]{1,64}$")


@attrs.define
class _Runtime:
    config: GatewayConfig
    settings: AuthSettings
    #: ``aws:SourceVpce`` of each listener that declares a ``vpce`` id.
    vpces: dict[str, str] = attrs.field(factory=dict)
    caches: dict[str, JwksCache] = attrs.field(factory=dict)
    lambda_cache: lambda_auth.AuthorizerCache = attrs.field(
        factory=lambda: lambda_auth.AuthorizerCache(shared=_shared_cache))
    verified: jwt_auth.VerifiedTokens = attrs.field(factory=jwt_auth.VerifiedTokens)

    def cache(self, issuer: str) -> JwksCache:
        found = self.caches.get(issuer)
        if found is None:
            configured = self.settings.issuers.get(issuer)
            s = self.settings
            found = JwksCache(issuer, configured.jwks_uri if configured else None,
                              ttl=s.jwks_ttl, refetch_interval=s.refetch_interval,
                              timeout=s.fetch_timeout, max_bytes=s.max_jwks_bytes)
            self.caches[issuer] = found
        return found


_runtimes: dict[int, _Runtime] = {}


def _shared_cache(config: GatewayConfig) -> lambda_auth.SharedCache | None:
    """The access plugin's Redis store serving ``config``, when it runs with one."""
    try:
        from twistgw_access import shared_store
    except ImportError:
        return None
    return shared_store(config)


def _runtime(config: GatewayConfig) -> _Runtime:
    found = _runtimes.get(id(config))
    if found is not None and found.config is config:
        return found
    rt = _Runtime(config=config, settings=parse_settings(config), vpces={
        listener.name: str(listener.options["vpce"]) for listener in config.listeners
        if isinstance(listener.options.get("vpce"), str)})
    _runtimes.pop(id(config), None)
    _runtimes[id(config)] = rt
    while len(_runtimes) > _KEEP:
        del _runtimes[next(iter(_runtimes))]
    return rt


def caches_for(config: GatewayConfig) -> dict[str, JwksCache]:
    """The JWKS caches serving ``config``, by issuer (for operators and tests)."""
    return _runtime(config).caches


def lambda_cache_for(config: GatewayConfig) -> lambda_auth.AuthorizerCache:
    """The Lambda authorizer result cache serving ``config`` (for operators and tests)."""
    return _runtime(config).lambda_cache


@hookimpl
def register(registry: Registry) -> None:
    """Claim the JWT and Cognito authorizer types and IAM; run only on routes with auth."""
    registry.add_authorizer_type("token")
    registry.add_authorizer_type("request")
    registry.add_authorizer_type("jwt")
    registry.add_authorizer_type("cognito_user_pools")
    registry.add_feature("aws_iam")
    registry.add_extension(POLICY)
    registry.add_listener_option("vpce")
    # Stay off the plans of routes with no authorization and no resource policy, so
    # they pay nothing for this plugin.  The set is filled by ``configure``, which runs
    # before route plans are built; ids from several configs only ever over-include.
    registry.add_route_filter(
        lambda route: route.requires_auth or route.api_id in _POLICY_APIS)


#: Ids of APIs whose definition carries a resource policy (see ``register``).
_POLICY_APIS: set[str] = set()


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Check ``plugins.settings.auth``, and refuse (under ``strict``) resource policies
    and Lambda authorizers this plugin cannot evaluate, naming the file and key."""
    _runtimes.pop(id(config), None)
    rt = _runtime(config)
    for i, listener in enumerate(config.listeners):
        vpce = listener.options.get("vpce")
        if vpce is not None and (not isinstance(vpce, str) or not _VPCE_RE.match(vpce)):
            raise ConfigError(config.source, f"listeners[{i}].vpce", "expected an id such as "
                              "vpce-0a1b2c3d (vpce- then 1 to 64 letters or digits), matched "
                              "by aws:SourceVpce conditions of resource policies")
    for api_cfg in config.apis:
        if _has_policy(api_cfg):
            _POLICY_APIS.add(api_cfg.id)
    if config.strict:
        for api_cfg in config.apis:
            _check_definition(api_cfg, rt.settings.iam_region or "us-east-1")


def _lambda_authorizers(deployment: Deployment
                        ) -> dict[tuple[str, str], lambda_auth.LambdaAuthorizer]:
    """Every TOKEN / REQUEST authorizer of ``deployment``, by API id and name."""
    found = {}
    for api in deployment.apis.values():
        for name, scheme in api.definition.security_schemes.items():
            if scheme.kind in ("authorizer:token", "authorizer:request"):
                found[(api.id, name)] = lambda_auth.from_scheme(
                    name, scheme.kind.split(":", 1)[1], scheme.raw, http=api.is_http)
    return found


@hookimpl
def prepare_reload(gateway: Gateway, deployment: Deployment) -> ReloadStep | None:
    """Carry caches over a reload: Lambda authorizer results of authorizers whose
    definition is unchanged, and (while ``plugins.settings.auth`` is unchanged) the JWKS
    key sets and verified tokens; anything changed starts empty."""
    old = _runtimes.get(id(gateway.config))
    if old is None or old.config is not gateway.config:
        return None
    new = _runtime(deployment.config)
    before = _lambda_authorizers(gateway.deployment)
    kept = {key for key, auth in _lambda_authorizers(deployment).items()
            if before.get(key) == auth}
    same_settings = new.settings == old.settings

    def commit() -> None:
        entries = old.lambda_cache.entries
        for key in [k for k in entries if (k[0], k[1]) not in kept]:
            del entries[key]  # (api id, authorizer name, function, identity values)
        new.lambda_cache = old.lambda_cache
        if same_settings:
            new.caches, new.verified = old.caches, old.verified

    return ReloadStep(commit=commit)


def _has_policy(api_cfg: ApiConfig) -> bool:
    try:
        definition = load_definition(api_cfg.definition, api_cfg.definition_display,
                                     claimed_extensions=frozenset({POLICY}), strict=False,
                                     warnings=[])
    except ConfigError:
        return False  # the deployment build reports it
    return POLICY in definition.extensions


def _check_definition(api_cfg: ApiConfig, region: str) -> None:
    try:
        definition = load_definition(api_cfg.definition, api_cfg.definition_display,
                                     claimed_extensions=frozenset({POLICY}), strict=False,
                                     warnings=[])
    except ConfigError:
        return  # the deployment build reports it
    source = definition.source
    doc = definition.extensions.get(POLICY)
    if doc is not None:
        if api_cfg.type != "REST":
            raise ConfigError(source, POLICY, "resource policies are for REST APIs only; "
                              "remove it (HTTP APIs have none on AWS either)")
        try:
            resource_policy.parse(doc, region=region, account=ACCOUNT_ID, api_id=api_cfg.id)
        except resource_policy.PolicyError as e:
            raise ConfigError(source, POLICY, f"{e}; twistgw evaluates Allow/Deny on "
                              "execute-api:Invoke with aws:SourceIp and aws:SourceVpce "
                              "conditions (docs/auth.rst)") from None
    if api_cfg.type != "REST":
        for name, scheme in definition.security_schemes.items():
            if scheme.kind not in ("authorizer:token", "authorizer:request"):
                continue
            problem = lambda_auth.from_scheme(name, "request", scheme.raw, http=True).problem
            if problem is not None:
                raise ConfigError(source, f"securitySchemes.{name}.x-amazon-apigateway-"
                                  "authorizer", problem)


@attrs.frozen
class _RoutePlan:
    jwt: tuple[tuple[jwt_auth.JwtAuthorizer, tuple[str, ...]], ...] = ()
    iam: bool = False
    lambdas: tuple[lambda_auth.LambdaAuthorizer, ...] = ()
    policy: resource_policy.ResourcePolicy | None = None
    policy_error: str | None = None
    region: str = "us-east-1"


def _plan(ctx: Context, route: Route) -> _RoutePlan:
    found = route.memo.get(_MEMO)
    if isinstance(found, _RoutePlan):
        return found
    api = ctx.deployment_api
    assert api is not None
    schemes = api.definition.security_schemes
    jwts = []
    lambdas = []
    iam = route.operation.auth_type == "AWS_IAM"
    for req in route.operation.security:
        scheme = schemes.get(req.scheme)
        if scheme is None:
            continue
        if scheme.kind in ("authorizer:jwt", "authorizer:cognito_user_pools"):
            kind = scheme.kind.split(":", 1)[1]
            jwts.append((jwt_auth.from_scheme(scheme.name, kind, scheme.raw), req.scopes))
        elif scheme.kind in ("authorizer:token", "authorizer:request"):
            kind = scheme.kind.split(":", 1)[1]
            lambdas.append(lambda_auth.from_scheme(scheme.name, kind, scheme.raw,
                                                   http=api.is_http))
        elif scheme.kind == "aws_iam":
            iam = True
    region = _runtime(api.gateway).settings.iam_region or "us-east-1"
    policy = None
    policy_error = None
    doc = api.definition.extensions.get(POLICY)
    if doc is not None:
        if api.is_http:
            policy_error = f"{POLICY} is for REST APIs only; HTTP APIs have no resource policy"
        else:
            try:
                policy = resource_policy.parse(doc, region=region, account=ACCOUNT_ID,
                                               api_id=api.id)
            except resource_policy.PolicyError as e:
                policy_error = f"{POLICY}: {e}"
    plan = _RoutePlan(jwt=tuple(jwts), iam=iam, lambdas=tuple(lambdas), policy=policy,
                      policy_error=policy_error, region=region)
    route.memo[_MEMO] = plan
    return plan


@hookimpl
def authorize(ctx: Context) -> Any:
    """SigV4 on IAM routes; JWT / Cognito tokens on routes naming such an authorizer."""
    route = ctx.route
    api = ctx.deployment_api
    if route is None or api is None:
        return None
    plan = _plan(ctx, route)
    has_policy = plan.policy is not None or plan.policy_error is not None
    if not route.requires_auth and not has_policy:
        return None
    principal = None
    verdict = ""
    if plan.iam:
        s = _runtime(api.gateway).settings
        principal = sigv4.authorize(ctx, s.iam_keys, region=s.iam_region,
                                    max_skew=s.max_skew)
        if has_policy:
            verdict = _check_policy(ctx, plan, principal)
        _check_identity(ctx, plan, s.iam_keys, principal, verdict, api.is_http)
    elif has_policy:
        _check_policy(ctx, plan, principal)
    if not plan.jwt and not plan.lambdas:
        return Allow(principal) if plan.iam or has_policy else None
    return _check(ctx, api.gateway, plan)


def _vpce(ctx: Context) -> str | None:
    """``aws:SourceVpce``: the ``vpce`` id of the listener the request came in on."""
    api = ctx.deployment_api
    return _runtime(api.gateway).vpces.get(ctx.request.listener) if api is not None else None


def _check_identity(ctx: Context, plan: _RoutePlan, keys: Mapping[str, IamKey],
                    principal: Principal, resource: str, is_http: bool) -> None:
    """The IAM caller's own policies (§5.7): an explicit Deny refuses; otherwise their
    Allow or the resource policy's (same account, §5.9 Table A) is needed."""
    key = keys.get(str(principal.context.get("accessKey")))
    arn = lambda_auth.method_arn(ctx, plan.region)
    action = str(ctx.route.operation.raw.get(lambda_auth.IAM_ACTION_FIELD,
                                             "execute-api:Invoke")) if ctx.route else \
        "execute-api:Invoke"
    verdict = key.policy.evaluate(arn, ctx.request.client_ip, action=action,
                                  vpce=_vpce(ctx)) if key is not None else ""
    if verdict == "Allow" or (verdict == "" and resource == "Allow"):
        return
    if is_http:
        raise AccessDenied("Forbidden")
    raise AccessDenied(resource_policy.anonymous_denied(arn, verdict == "Deny",
                                                        principal.id))


def _check_policy(ctx: Context, plan: _RoutePlan, principal: Principal | None) -> str:
    """The resource policy (§5.9): an explicit Deny always refuses; without an
    authorizer or IAM an explicit Allow is required; Cognito needs it too (after
    authentication, in :func:`_check`).  Returns the verdict for IAM callers."""
    if plan.policy is None:
        _log.error("({request_id}) Execution failed due to configuration error: {error}",
                   request_id=ctx.request_id, error=plan.policy_error)
        raise ApiConfigurationError()
    arn = lambda_auth.method_arn(ctx, plan.region)
    caller = str(principal.context.get("userArn")) if principal is not None else None
    verdict = plan.policy.evaluate(arn, ctx.request.client_ip, caller, vpce=_vpce(ctx))
    user = caller or "anonymous"
    if verdict == "Deny":
        raise AccessDenied(resource_policy.anonymous_denied(arn, True, user))
    if verdict != "Allow" and not plan.iam and not plan.lambdas and not plan.jwt:
        raise AccessDenied(resource_policy.anonymous_denied(arn, False, user))
    return verdict


async def _check(ctx: Context, config: GatewayConfig, plan: _RoutePlan) -> Allow:
    rt = _runtime(config)
    s = rt.settings
    principal = None
    for lam in plan.lambdas:
        principal = await lambda_auth.authorize(ctx, config, lam, rt.lambda_cache)
    for authorizer, scopes in plan.jwt:
        caches = {issuer: rt.cache(issuer) for issuer in authorizer.issuers}
        principal = await jwt_auth.authorize(ctx, authorizer, scopes, caches,
                                             leeway=s.leeway, max_bytes=s.max_token_bytes,
                                             verified=rt.verified)
    if plan.jwt and plan.policy is not None:
        # Cognito: authenticated first, then the resource policy must explicitly allow.
        arn = lambda_auth.method_arn(ctx, plan.region)
        if plan.policy.evaluate(arn, ctx.request.client_ip, vpce=_vpce(ctx)) != "Allow":
            raise AccessDenied(resource_policy.anonymous_denied(arn, False))
    return Allow(principal)
