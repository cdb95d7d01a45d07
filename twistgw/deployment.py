"""A deployment: the frozen snapshot of everything the gateway serves.

Built once from a gateway config and the loaded plugins (and again on every reload), it
holds each API's compiled route table, its stages, each route's hook plan (the plugin
implementations that apply to it, in call order) and, per listener, the resolver that
finds the API and stage a request addresses.  Requests read it and never change it, so a
new deployment can replace the old one atomically while requests in flight finish on
the one they started with.

Building it is also where "implemented?" is decided: every integration type, extension,
authorizer kind, listener option and feature the config uses must be provided by the core
or an enabled plugin.  With ``strict: false`` those refusals become warnings.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .accesslog import AccessLog
from .config import AccessLogConfig, ApiConfig, DomainConfig, GatewayConfig
from .definition import ApiDefinition, Integration, Operation, load_definition
from .dispatch import HookPlan, Impl, impls_in_call_order
from .errors import ConfigError
from .models import EMPTY_MAPPING, freeze_mapping
from .routing import RouteTable

if TYPE_CHECKING:
    from .plugins import GatewayPluginManager

__all__ = ["Deployment", "ApiDeployment", "StageDeployment", "Route", "ListenerTargets",
           "build_deployment", "has_vtl", "memoize", "MEMO_LIMIT"]

_VTL_RE = re.compile(
    r"\$!?\{?[A-Za-z]|#(?:set|if|elseif|else|end|foreach|macro|define|parse|include|stop|"
    r"break|evaluate)\b|##|#\*"
)

HTTP_API_INTEGRATIONS = ("AWS_PROXY", "HTTP_PROXY")


#: At most this many entries per route in :attr:`Route.memo` through :func:`memoize`.
MEMO_LIMIT = 64


def memoize(route: Route, key: Any, compute: Callable[[], Any]) -> Any:
    """``route.memo[key]``, computed once; past :data:`MEMO_LIMIT` entries, just computed.

    For per-route results that depend on a few request values (a content type, an
    ``Accept`` header): the common values hit the memo, a flood of odd ones costs only
    the computation.
    """
    memo = route.memo
    try:
        return memo[key]
    except KeyError:
        pass
    value = compute()
    if len(memo) < MEMO_LIMIT:
        memo[key] = value
    return value


def has_vtl(template: str | None) -> bool:
    """True when a mapping template uses Velocity directives or references."""
    return bool(template) and _VTL_RE.search(template or "") is not None


@attrs.frozen
class Route:
    """A routable operation of one API with its precomputed hook plan."""

    api_id: str
    operation: Operation
    resource_id: str
    timeout: float
    #: True when the operation names an authorizer, an API key or IAM: an ``authorize``
    #: implementation must then return ``Allow`` or the request is refused (401).
    requires_auth: bool = False
    plan: HookPlan = attrs.field(factory=HookPlan, eq=False)
    #: Per-route memo for plugins' derived data (key it by your plugin's name first).
    #: Lives as long as the deployment; callers must bound what they store, since keys
    #: derived from requests are attacker-chosen (see :func:`memoize`).
    memo: dict[Any, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def integration(self) -> Integration | None:
        """The operation's integration."""
        return self.operation.integration


@attrs.frozen
class StageDeployment:
    """A stage: its variables and its access log."""

    name: str
    variables: Mapping[str, str] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)
    access_log: AccessLog | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ApiDeployment:
    """One API ready to serve: definition, routes and stages."""

    config: ApiConfig
    definition: ApiDefinition
    gateway: GatewayConfig
    table: RouteTable[Route] = attrs.field(eq=False)
    stages: Mapping[str, StageDeployment] = attrs.field(converter=freeze_mapping)

    @property
    def id(self) -> str:
        """The API id."""
        return self.config.id

    @property
    def is_http(self) -> bool:
        """True for an HTTP API (v2), false for REST."""
        return self.config.type == "HTTP"


@attrs.frozen
class ListenerTargets:
    """What one listener serves: its APIs by id and its custom domains by host name."""

    name: str
    apis: Mapping[str, ApiDeployment] = attrs.field(converter=freeze_mapping)
    domains: Mapping[str, DomainConfig] = attrs.field(converter=freeze_mapping)
    #: The pipeline's cache of successful resolutions, ``(Host, x-apigw-api-id, path)``
    #: -> its target (bounded by the pipeline; lives as long as the deployment).
    resolved: dict[Any, Any] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    @property
    def only_api(self) -> ApiDeployment | None:
        """The listener's API when it serves exactly one."""
        if len(self.apis) == 1:
            return next(iter(self.apis.values()))
        return None


@attrs.frozen
class Deployment:
    """Everything served, frozen; see the module docstring."""

    config: GatewayConfig
    apis: Mapping[str, ApiDeployment] = attrs.field(converter=freeze_mapping)
    listeners: Mapping[str, ListenerTargets] = attrs.field(converter=freeze_mapping)
    base_plan: HookPlan = attrs.field(eq=False)
    access_log: AccessLog | None = attrs.field(eq=False)
    warnings: tuple[str, ...] = ()

    def close(self) -> None:
        """Release what the deployment holds open (access-log files)."""
        logs = [self.access_log] + [s.access_log for a in self.apis.values()
                                    for s in a.stages.values()]
        for access in logs:
            if access is not None:
                access.close()


class _Builder:
    def __init__(self, config: GatewayConfig, pm: GatewayPluginManager, clock: Any) -> None:
        self.clock = clock
        self.config = config
        self.pm = pm
        self.registry = pm.registry
        self.warnings: list[str] = []
        self.base_plan = HookPlan(**{
            f.name: tuple(impls_in_call_order(pm, f.name)) for f in attrs.fields(HookPlan)
        })

    def refuse(self, error: ConfigError) -> None:
        """Raise ``error``, or record it as a warning under ``strict: false``."""
        if self.config.strict:
            raise error
        self.warnings.append(f"{error} (strict is false: continuing without it)")

    def need_feature(self, feature: str, file: str, path: str, what: str) -> None:
        if feature in self.registry.features:
            return
        self.refuse(ConfigError(file, path, f"{what} is not implemented by twistgw or any "
                                "enabled plugin; enable a plugin that provides the "
                                f"'{feature}' feature, remove it, or set 'strict: false'"))

    def build(self) -> Deployment:
        cfg = self.config
        self.check_listeners()
        for api_cfg in cfg.apis:
            if api_cfg.endpoint_type == "PRIVATE":
                self.need_feature("private_apis", cfg.source, f"{api_cfg.where}.endpoint_type",
                                  "a PRIVATE API (served only on private listeners)")
        if cfg.functions:
            self.need_feature("functions", cfg.source, "functions", "running Lambda functions")
        default_log = AccessLog(cfg.access_log, self.clock)
        apis: dict[str, ApiDeployment] = {}
        for api_cfg in cfg.apis:
            apis[api_cfg.id] = self.api(api_cfg, default_log.config)
        listeners: dict[str, ListenerTargets] = {}
        for listener in cfg.listeners:
            if listener.admin:
                continue
            served = {a.id: a for a in apis.values() if listener.name in a.config.listeners}
            domains = {d.name: d for d in cfg.domains
                       if not d.listeners or listener.name in d.listeners}
            listeners[listener.name] = ListenerTargets(name=listener.name, apis=served,
                                                       domains=domains)
        return Deployment(config=cfg, apis=apis, listeners=listeners,
                          base_plan=self.base_plan,
                          access_log=default_log if default_log.enabled else None,
                          warnings=tuple(self.warnings))

    def check_listeners(self) -> None:
        for i, listener in enumerate(self.config.listeners):
            path = f"listeners[{i}]"
            claimed = self.registry.listener_options
            used: list[str] = list(listener.options)
            if listener.tls is not None:
                used.append("tls")
            if listener.allow_sources:
                used.append("allow_sources")
            if listener.admin:
                used.append("admin")
            for key in used:
                if key not in claimed:
                    self.refuse(ConfigError(
                        self.config.source, f"{path}.{key}",
                        f"the listener option '{key}' is not implemented by any enabled "
                        "plugin; remove it or enable the plugin that provides it"))

    def api(self, api_cfg: ApiConfig, default_log: AccessLogConfig) -> ApiDeployment:
        claimed = frozenset(self.registry.extensions)
        api_type = self.registry.api_types.get(api_cfg.type)
        if api_type is not None:
            definition = api_type[1](api_cfg, self.config)
        elif api_cfg.type in ("REST", "HTTP"):
            definition = load_definition(api_cfg.definition, api_cfg.definition_display,
                                         claimed_extensions=claimed,
                                         strict=self.config.strict, warnings=self.warnings)
        else:
            raise ConfigError(self.config.source, f"{api_cfg.where}.type",
                              f"{api_cfg.type} APIs are served by a plugin and no enabled "
                              "plugin serves them; enable it (the websocket plugin for "
                              "WEBSOCKET) or change the type")
        routes: list[tuple[str, str, Route]] = []
        default_route: Route | None = None
        for op in definition.operations:
            if op.integration is None:
                self.refuse(ConfigError(
                    definition.source, op.where.split(": ", 1)[-1],
                    "this operation has no x-amazon-apigateway-integration, so nothing can "
                    "answer it; add one (type: mock for a fixed answer)"))
                continue
            self.check_operation(api_cfg, definition, op)
            route = self.route(api_cfg, definition, op)
            for _plugin, check in self.registry.route_checks:
                try:
                    check(route)
                except ConfigError as error:
                    self.refuse(error)
            if api_cfg.type == "HTTP" and op.is_default_route:
                default_route = route
            else:
                routes.append((op.method, op.path, route))
        try:
            table = RouteTable(routes, default_route=default_route)
        except ValueError as e:
            raise ConfigError(definition.source, "paths", str(e)) from None
        stages = {
            s.name: StageDeployment(
                name=s.name, variables=s.variables,
                access_log=AccessLog(s.access_log, self.clock) if s.access_log is not None
                else None)
            for s in api_cfg.stages
        }
        return ApiDeployment(config=api_cfg, definition=definition, gateway=self.config,
                             table=table, stages=stages)

    def check_operation(self, api_cfg: ApiConfig, definition: ApiDefinition, op: Operation
                        ) -> None:
        file = definition.source
        where = op.where.split(": ", 1)[-1]
        integ = op.integration
        assert integ is not None
        iwhere = f"{where}.x-amazon-apigateway-integration"
        if api_cfg.type == "HTTP":
            if integ.type not in HTTP_API_INTEGRATIONS:
                raise ConfigError(file, f"{iwhere}.type",
                                  f"HTTP APIs support aws_proxy and http_proxy integrations, "
                                  f"not {integ.type.lower()}; serve this API as type REST "
                                  "or change the integration")
            if integ.payload_format_version is None:
                raise ConfigError(file, f"{iwhere}.payloadFormatVersion",
                                  "HTTP API integrations need payloadFormatVersion "
                                  "(\"2.0\" for Lambda, \"1.0\" for http_proxy)")
            if integ.timeout_ms > 30000:
                raise ConfigError(file, f"{iwhere}.timeoutInMillis",
                                  "HTTP API integrations time out after at most 30000 ms")
        elif integ.response_parameters:
            raise ConfigError(file, f"{iwhere}.responseParameters",
                              "integration-level responseParameters belong to HTTP APIs; "
                              "on a REST API map headers under responses.<pattern>."
                              "responseParameters")
        if integ.type not in self.registry.integration_types:
            self.refuse(ConfigError(
                file, f"{iwhere}.type",
                f"the {integ.type} integration type is not implemented by any enabled "
                "plugin; enable the plugin that provides it"))
        for rtype, template in list(integ.request_templates.items()):
            if has_vtl(template):
                self.need_feature("mapping_templates", file,
                                  f"{iwhere}.requestTemplates.{rtype}",
                                  "a VTL mapping template")
        if integ.request_parameters and integ.type != "MOCK":
            self.need_feature("request_parameters", file, f"{iwhere}.requestParameters",
                              "integration request parameter mapping")
        if integ.content_handling is not None or any(
                r.content_handling for r in integ.responses):
            self.need_feature("content_handling", file, f"{iwhere}.contentHandling",
                              "contentHandling (binary conversion)")
        for resp in integ.responses:
            rwhere = f"{iwhere}.responses.{resp.selection_pattern or 'default'}"
            for ctype, template in resp.response_templates.items():
                if has_vtl(template):
                    self.need_feature("mapping_templates", file,
                                      f"{rwhere}.responseTemplates.{ctype}",
                                      "a VTL mapping template")
            for key, source in resp.response_parameters.items():
                if not key.startswith("method.response.header."):
                    raise ConfigError(file, f"{rwhere}.responseParameters.{key}",
                                      "keys must look like method.response.header.NAME")
                if source.startswith("integration.response.body"):
                    self.need_feature("mapping_templates", file,
                                      f"{rwhere}.responseParameters.{key}",
                                      "mapping from the integration response body")
        for req in op.security:
            scheme = definition.security_schemes[req.scheme]
            swhere = f"{where}.security"
            if scheme.kind == "api_key":
                self.need_feature("api_keys", file, swhere, "API key enforcement")
            elif scheme.kind == "aws_iam":
                self.need_feature("aws_iam", file, swhere, "IAM (SigV4) authorization")
            elif scheme.kind.startswith("authorizer:"):
                kind = scheme.kind.split(":", 1)[1]
                if kind not in self.registry.authorizer_types:
                    self.refuse(ConfigError(
                        file, swhere, f"the {kind} authorizer (scheme {req.scheme!r}) is not "
                        "implemented by any enabled plugin; enable the plugin that provides "
                        "it"))
            else:
                self.warnings.append(
                    f"{file}: {swhere}: security scheme {req.scheme!r} has no API Gateway "
                    "meaning (no x-amazon-apigateway-authorizer); AWS ignores it and so does "
                    "twistgw")
        if op.auth_type == "AWS_IAM":
            self.need_feature("aws_iam", file, f"{where}.x-amazon-apigateway-auth",
                              "IAM (SigV4) authorization")
        if op.request_validator is not None:
            validator = definition.request_validators[op.request_validator]
            if validator.validate_body or validator.validate_parameters:
                self.need_feature("request_validation", file,
                                  f"{where}.x-amazon-apigateway-request-validator",
                                  "request validation")

    def route(self, api_cfg: ApiConfig, definition: ApiDefinition, op: Operation) -> Route:
        integ = op.integration
        assert integ is not None
        timeout_ms = integ.timeout_ms
        if api_cfg.type == "HTTP" and "timeoutInMillis" not in integ.raw:
            timeout_ms = 30000
        resource_id = hashlib.sha1(f"{api_cfg.id} {op.path}".encode()).hexdigest()[:10]
        schemes = definition.security_schemes
        requires_auth = op.auth_type == "AWS_IAM" or any(
            schemes[req.scheme].kind != "other" for req in op.security)
        route = Route(api_id=api_cfg.id, operation=op, resource_id=resource_id,
                      timeout=timeout_ms / 1000.0, requires_auth=requires_auth)
        return attrs.evolve(route, plan=self.plan_for(route))

    def plan_for(self, route: Route) -> HookPlan:
        filters = self.registry.route_filters
        hook_filters = self.registry.hook_route_filters
        if not filters and not hook_filters:
            return self.base_plan
        excluded = {name for name, predicate in filters.items() if not predicate(route)}
        dropped = {key for key, predicate in hook_filters.items() if not predicate(route)}
        if not excluded and not dropped:
            return self.base_plan

        def keep(impls: tuple[Impl, ...]) -> tuple[Impl, ...]:
            return tuple(i for i in impls if i.plugin not in excluded
                         and (i.plugin, i.hook) not in dropped)

        return HookPlan(**{f.name: keep(getattr(self.base_plan, f.name))
                           for f in attrs.fields(HookPlan)})


def build_deployment(config: GatewayConfig, pm: GatewayPluginManager, clock: Any = None
                     ) -> Deployment:
    """Build and check the deployment for ``config`` with the plugins of ``pm``.

    ``clock`` times the access-log flushes (the reactor by default).

    :raises ConfigError: naming the file, the path inside it and the fix.
    """
    pm.hook.configure(config=config)
    return _Builder(config, pm, clock).build()
