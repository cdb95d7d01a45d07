"""What the loaded plugins provide, declared through the ``register`` hook.

The config check consults the registry so that an integration type, an
``x-amazon-apigateway-*`` extension, a listener option or a feature (API keys,
authorizers, request validation, mapping templates, Lambda functions) that no enabled
plugin implements is refused at load time, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ApiConfig, GatewayConfig, ListenerConfig
    from .definition import ApiDefinition
    from .deployment import Route
    from .gateway import Gateway

#: ``wrap(listener, endpoint, factory, reactor) -> (endpoint, factory)``; see
#: :meth:`Registry.add_listener_wrapper`.
ListenerWrapper = Callable[["ListenerConfig", Any, Any, Any], tuple[Any, Any]]
#: ``load(api, config) -> ApiDefinition``; see :meth:`Registry.add_api_type`.
ApiLoader = Callable[["ApiConfig", "GatewayConfig"], "ApiDefinition"]

#: ``check(gateway) -> None`` when ready, else the reason; see
#: :meth:`Registry.add_readiness_check`.
ReadinessCheck = Callable[["Gateway"], "str | None"]
#: ``collect(gateway) -> [(name, help, labels, value), ...]``; see
#: :meth:`Registry.add_gauge_source`.
GaugeSource = Callable[["Gateway"], Iterable[tuple[str, str, Mapping[str, str], float]]]
#: ``check(config, workers) -> warnings``; see :meth:`Registry.add_worker_check`.
WorkerCheck = Callable[["GatewayConfig", int], Iterable[str]]

__all__ = ["Registry", "FEATURES", "ListenerWrapper", "ApiLoader", "ReadinessCheck", "GaugeSource",
           "WorkerCheck"]

#: Features the core knows how to ask for; plugins claim them with ``add_feature``.
FEATURES = {
    "api_keys": "operations that require an API key (an x-api-key security scheme)",
    "aws_iam": "IAM (SigV4) authorization (x-amazon-apigateway-auth type AWS_IAM)",
    "request_validation": "request validators that validate parameters or bodies",
    "mapping_templates": "VTL mapping templates (requestTemplates / responseTemplates "
                         "with $ or # directives)",
    "request_parameters": "integration requestParameters mappings",
    "functions": "Lambda functions declared under functions:",
    "content_handling": "contentHandling CONVERT_TO_BINARY / CONVERT_TO_TEXT",
    "private_apis": "APIs with endpoint_type PRIVATE, served only on private listeners",
}


class Registry:
    """Collects claims from plugins; ``plugin`` is set by the manager during each call."""

    def __init__(self) -> None:
        self.plugin = "<core>"
        self.integration_types: dict[str, str] = {}
        self.extensions: dict[str, str] = {}
        self.features: dict[str, str] = {}
        self.authorizer_types: dict[str, str] = {}
        self.listener_options: dict[str, str] = {}
        self.route_filters: dict[str, Callable[[Route], bool]] = {}
        #: ``(plugin, hook)`` -> predicate: filters of single hooks (``add_route_filter``'s
        #: ``hooks``).
        self.hook_route_filters: dict[tuple[str, str], Callable[[Route], bool]] = {}
        self.route_checks: list[tuple[str, Callable[[Route], None]]] = []
        self.listener_wrappers: list[tuple[str, ListenerWrapper]] = []
        self.api_types: dict[str, tuple[str, ApiLoader]] = {}
        self.readiness_checks: list[tuple[str, str, ReadinessCheck]] = []
        self.gauge_sources: list[tuple[str, GaugeSource]] = []
        self.worker_checks: list[tuple[str, WorkerCheck]] = []

    def add_integration_type(self, name: str) -> None:
        """Claim an integration type (``MOCK``, ``HTTP_PROXY``, ...)."""
        self.integration_types[name.upper()] = self.plugin

    def add_extension(self, name: str) -> None:
        """Claim an ``x-amazon-apigateway-*`` extension the core does not read itself.

        Root-level claimed extensions reach the plugin as ``ApiDefinition.extensions``;
        operation-level ones as ``Operation.raw``.
        """
        self.extensions[name] = self.plugin

    def add_feature(self, name: str) -> None:
        """Claim one of :data:`FEATURES`."""
        if name not in FEATURES:
            raise ValueError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
        self.features[name] = self.plugin

    def add_authorizer_type(self, name: str) -> None:
        """Claim an authorizer kind (``token``, ``request``, ``jwt``, ``cognito_user_pools``)."""
        self.authorizer_types[name.lower()] = self.plugin

    def add_listener_option(self, name: str) -> None:
        """Claim a listener key (``tls``, ``allow_sources``, ``admin`` or a new one)."""
        self.listener_options[name] = self.plugin

    def add_listener_wrapper(self, wrap: ListenerWrapper) -> None:
        """Shape every listener before it binds: ``wrap(listener, endpoint, factory, reactor)``.

        The gateway calls each wrapper, in the order the ``register`` hooks ran, for every non-admin
        listener in ``privilegedStartService``, with the
        :class:`~twistgw.config.ListenerConfig`, the server endpoint parsed from
        ``listener.endpoint``, the protocol factory (the listener's
        :class:`~twistgw.http.GatewaySite`, or what an earlier wrapper returned) and the
        reactor.  It returns the ``(endpoint, factory)`` to bind: the same ones when the
        listener is not its business, or wrapped ones (TLS around the factory, a factory
        that refuses some peers in ``buildProtocol`` before any byte is parsed).  A
        wrapper raises :class:`~twistgw.errors.ConfigError` to refuse the listener.
        """
        self.listener_wrappers.append((self.plugin, wrap))

    def add_api_type(self, name: str, load: ApiLoader) -> None:
        """Serve ``apis[]`` of ``type: NAME`` from definitions this plugin reads.

        The core reads REST and HTTP definitions (OpenAPI) itself; an API type whose
        definitions have another shape (WEBSOCKET) is read by ``load(api, config)``, which
        returns the :class:`~twistgw.definition.ApiDefinition` the core then serves like
        any other: its operations become routes (checked, planned, matched, authorized,
        integrated and logged by the normal pipeline), typically with an integration type
        the same plugin claims.  ``load`` raises :class:`~twistgw.errors.ConfigError`
        naming the definition file and the key to refuse a definition.  A config naming an
        API type no enabled plugin registered is refused at load time.
        """
        self.api_types[name.upper()] = (self.plugin, load)

    def add_route_filter(self, predicate: Callable[[Route], bool], *,
                         hooks: Iterable[str] | None = None) -> None:
        """Leave this plugin's request-path impls out of routes where ``predicate`` is false.

        Evaluated once per route when a deployment is built, so a plugin that only cares
        about some routes costs nothing on the others.  With ``hooks`` (request-path hook
        names), only those impls of this plugin are left out there: a hook needed on few
        of the plugin's routes (a ``map_response`` that applies ``responseParameters``,
        say) is then not called on every other request.  Both kinds combine.
        """
        if hooks is None:
            self.route_filters[self.plugin] = predicate
            return
        for hook in hooks:
            self.hook_route_filters[(self.plugin, hook)] = predicate

    def add_route_check(self, check: Callable[[Route], None]) -> None:
        """Check every route at load time; ``check`` raises ``ConfigError`` to refuse it.

        Called once per route when a deployment is built, after the core's own checks, so
        a plugin can refuse what only it understands (e.g. a parameter mapping to a header
        AWS forbids) before anything is served.  The error should name the definition file
        and the path inside it (``route.operation.where`` holds both).  Under
        ``strict: false`` the refusal becomes a warning and the route is served anyway, so
        the plugin must still handle it at request time.
        """
        self.route_checks.append((self.plugin, check))

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """Take part in the gateway's readiness (the admin plugin's ``/ready``).

        ``check(gateway)`` is called on every readiness probe, on the reactor thread, so it
        must be cheap and must not block: it returns ``None`` when this plugin is ready to
        serve (e.g. its worker pools are warm) or a short reason why not, which the probe
        reports under ``name``.
        """
        self.readiness_checks.append((self.plugin, name, check))

    def add_worker_check(self, check: WorkerCheck) -> None:
        """Say what happens to this plugin's state under ``--workers N`` (N > 1).

        ``check(config, workers)`` runs before twistd daemonizes: it returns warnings to
        log (state kept per process, e.g. in-memory counters that each worker applies on
        its own) or raises :class:`~twistgw.errors.ConfigError` to refuse a config whose
        meaning would change when spread over processes.
        """
        self.worker_checks.append((self.plugin, check))

    def add_gauge_source(self, collect: GaugeSource) -> None:
        """Expose gauges (pool sizes, queue lengths) on the admin plugin's ``/metrics``.

        ``collect(gateway)`` runs at scrape time only, never on the request path, and
        yields ``(name, help, labels, value)``: ``name`` is a Prometheus metric name
        (the admin plugin prefixes ``twistgw_``), every sample of one name must use the
        same label names, and label values must come from the config (function names),
        never from requests, so the number of series stays bounded.
        """
        self.gauge_sources.append((self.plugin, collect))
