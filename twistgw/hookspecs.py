"""The hook specifications: every point where a plugin can take part.

Four hooks sit on the request path and give the project its shape: ``authorize``,
``map_request``, ``integrate`` and ``map_response``.  Around them are set-up hooks
(``register``, ``configure``), lifecycle hooks (``startup``, ``shutdown``,
``prepare_reload``), observers
(``request_started``, ``request_finished``) and ``handle_error``.

Request-path hooks are called by :mod:`twistgw.dispatch`, not by pluggy's caller, because
they may be asynchronous: an implementation may return a plain value, a ``Deferred`` or be
an ``async def`` coroutine, and an awaited ``None`` abstains.  Implementations run in
pluggy's order: ``tryfirst`` ones first, then plugins in the order of the config's
``plugins.enabled`` list, then the builtins, ``trylast`` ones last.

Every docstring states the phase, the call semantics in one fixed sentence, what the
implementation may change and what the builtin does.  docs/hooks.rst is checked against
these signatures by the test suite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .deployment import Deployment
    from .errors import GatewayError
    from .gateway import Gateway
    from .models import (
        Allow,
        Context,
        Deny,
        IntegrationRequest,
        IntegrationResponse,
        Response,
    )
    from .pipeline import Outcome
    from .registry import Registry

__all__ = ["hookspec", "hookimpl", "PROJECT", "REQUEST_PATH_HOOKS"]

PROJECT = "twistgw"
hookspec = pluggy.HookspecMarker(PROJECT)
#: Mark a plugin's hook implementations with this (``from twistgw import hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Hooks that run per request through the async-aware dispatcher.
REQUEST_PATH_HOOKS = ("authorize", "map_request", "integrate", "map_response", "handle_error")


# -- set-up -----------------------------------------------------------------------------


@hookspec
def register(registry: Registry) -> None:
    """Declare what the plugin provides: integration types, extensions, features.

    :phase: set-up, once per plugin manager, before any config is checked.
    :semantics: All implementations are called.
    :may change: only ``registry`` (``add_integration_type``, ``add_extension``,
        ``add_feature``, ``add_listener_option``, ``add_route_filter``,
        ``add_route_check``).
    :builtin: the MOCK plugin registers the ``MOCK`` integration type; the mapping plugin
        registers integration-response handling.

    The config check refuses an integration type, extension or feature that no enabled
    plugin registered, so nothing in an API definition is silently ignored.

    .. versionadded:: 0.1
    """


@hookspec
def configure(config: GatewayConfig) -> None:
    """Read and check the plugin's part of the gateway config.

    :phase: set-up, after the gateway config is loaded and before listeners bind; again
        for every config the gateway is asked to load.
    :semantics: All implementations are called.
    :may change: nothing; raise :class:`twistgw.errors.ConfigError` naming the key and the
        fix to refuse the config.  Read ``config.plugin_settings(name)`` for settings.
    :builtin: none.

    .. versionadded:: 0.1
    """


# -- lifecycle ----------------------------------------------------------------------------


@hookspec
def startup(gateway: Gateway) -> Any:
    """Start the plugin's long-lived work (pools, workers, timers).

    :phase: lifecycle, when the twistd service starts, before listeners accept.
    :semantics: All implementations are called; returned awaitables are awaited together.
    :may change: the plugin's own state.  May return a Deferred or be ``async def``.
    :builtin: none.

    .. versionadded:: 0.1
    """


@hookspec
def shutdown(gateway: Gateway) -> Any:
    """Stop the plugin's long-lived work and release resources.

    :phase: lifecycle, when the twistd service stops, after listeners stopped accepting.
    :semantics: All implementations are called; returned awaitables are awaited together,
        bounded by the gateway's shutdown grace.
    :may change: the plugin's own state.  May return a Deferred or be ``async def``.
    :builtin: none.

    .. versionadded:: 0.1
    """


@hookspec
def prepare_reload(gateway: Gateway, deployment: Deployment) -> Any:
    """Get ready to serve a reloaded config without disturbing the one serving now.

    :phase: reload (``SIGHUP``), after every ``configure`` accepted the new config and its
        deployment was built, before it serves.  ``gateway.config`` and
        ``gateway.deployment`` are still the ones serving; ``deployment.config`` is new.
    :semantics: All implementations are called; returned awaitables are awaited together.
        Return ``None`` (nothing to switch) or a :class:`~twistgw.reload.ReloadStep` (or
        an awaitable of one).  Raise :class:`~twistgw.errors.ConfigError` (or fail the
        awaitable) to reject the reload: every step already prepared is aborted and the
        old deployment keeps serving.
    :may change: nothing requests of the old deployment see: build new state aside.  The
        step's ``commit`` runs in the reactor turn that switches deployments, ``abort``
        when the reload is rejected, ``retire`` once the requests in flight on the old
        deployment finished (at most ``shutdown_grace`` later).
    :builtin: the Lambda plugin starts pools for new and changed functions (unchanged
        ones are kept) and stops replaced pools at retire; the access plugin keeps its
        counters and token buckets; the TLS plugin re-reads certificates; the admin and
        websocket plugins carry their listener, metrics and connections over; the auth
        plugin its authorizer caches and the http plugin its backend pools (while their
        settings are unchanged).  A plugin
        that does not implement this hook gets
        ``configure(new)`` to check the config, ``configure(old)`` right after (so it
        keeps serving the old one) and ``configure(new)`` again at commit.

    .. versionadded:: 0.2
    """


# -- request path --------------------------------------------------------------------------


@hookspec
def authorize(ctx: Context) -> Allow | Deny | None:
    """Decide whether the request may proceed, and who the caller is.

    :phase: request path, after API, stage and route are resolved, before mapping.
    :semantics: Every implementation runs in order; the first ``Deny`` (or raised
        :class:`~twistgw.errors.GatewayError`) stops the request.  ``None`` abstains.
    :may change: return ``Allow(principal)`` to name the caller (later hooks see it as
        ``ctx.principal``), ``Deny(error)`` to answer with ``error``'s gateway response.
        May return a Deferred or be ``async def``.
    :builtin: the access plugin, ``trylast``: API keys, usage plans and throttles
        (authorizers, IAM and resource policies arrive as builtin implementations that
        run before it, in AWS's order).  An operation that requires authorization that no
        implementation allowed is refused with 401.

    .. versionadded:: 0.1
    """


@hookspec
def map_request(ctx: Context, request: IntegrationRequest) -> IntegrationRequest | None:
    """Turn the method request into the integration request.

    :phase: request path, after ``authorize``.
    :semantics: Pipe: each implementation gets the previous one's result; return a new
        value (``attrs.evolve(request, ...)``) or ``None`` to leave it unchanged.
    :may change: every field of the :class:`~twistgw.models.IntegrationRequest`.
        May return a Deferred or be ``async def``.
    :builtin: the core starts from the method request (integration method, URI with stage
        variables substituted, headers, query, body); the mapping plugin renders
        ``requestTemplates`` for non-proxy integrations, ``tryfirst``, so other
        implementations see the templated request; the http plugin applies
        ``requestParameters`` for ``HTTP`` and ``HTTP_PROXY`` (filling the URI's
        ``{name}`` placeholders), so ``trylast`` implementations see what is sent.

    .. versionadded:: 0.1
    """


@hookspec
def integrate(ctx: Context, request: IntegrationRequest) -> IntegrationResponse | None:
    """Call the backend and return what it answered.

    :phase: request path, after ``map_request``; bounded by the integration's
        ``timeoutInMillis`` (a timeout answers 504 ``Endpoint request timed out``).
    :semantics: First non-None result wins.
    :may change: nothing; return an :class:`~twistgw.models.IntegrationResponse`, or
        ``None`` when the route's ``ctx.integration.type`` is not yours.  A ``tryfirst``
        implementation can short-circuit (e.g. a response cache).  May return a Deferred, a
        :class:`~twistgw.answer.Answer` (lighter: stages and a canceller, no chaining) or
        be ``async def``; cancellation (client gone, timeout) reaches it.
    :builtin: the MOCK plugin answers ``MOCK`` integrations; the http plugin answers
        ``HTTP`` and ``HTTP_PROXY`` ones.  If no implementation answers, the client gets
        500 Internal server error.

    .. versionadded:: 0.1
    """


@hookspec
def map_response(
    ctx: Context, integration_response: IntegrationResponse, response: Response
) -> Response | None:
    """Turn the integration's answer into the method response.

    :phase: request path, after ``integrate``.
    :semantics: Pipe: each implementation gets the previous one's result; return a new
        value or ``None`` to leave it unchanged.
    :may change: every field of the :class:`~twistgw.models.Response`;
        ``integration_response`` is what the backend said, unchanged.  May return a
        Deferred or be ``async def``.
    :builtin: the core starts from the integration response as is (right for proxy
        integrations); the mapping plugin selects the integration response by
        ``selectionPattern`` and applies its status, header mappings and template for
        non-proxy integrations, ``tryfirst``, so other implementations refine the method
        response it built.

    .. versionadded:: 0.1
    """


@hookspec
def handle_error(ctx: Context, error: GatewayError) -> Response | None:
    """Turn a request-path error into the response the client gets.

    :phase: request path, whenever a phase raised a
        :class:`~twistgw.errors.GatewayError` or an implementation failed (then ``error``
        is a :class:`~twistgw.errors.PluginError`).
    :semantics: First non-None result wins.
    :may change: nothing; return a :class:`~twistgw.models.Response`.  May return a
        Deferred or be ``async def``.
    :builtin: a ``trylast`` implementation that renders AWS's gateway responses with the
        API's ``x-amazon-apigateway-gateway-responses`` applied; it always answers.

    .. versionadded:: 0.1
    """


# -- observation ------------------------------------------------------------------------------


@hookspec
def request_started(ctx: Context) -> None:
    """Observe a request entering the pipeline (start timers, traces).

    :phase: request path, once the request id exists, before API resolution.
    :semantics: Notification; exceptions are logged and never change the response.
    :may change: only ``ctx.stash``.
    :builtin: none.

    .. versionadded:: 0.1
    """


@hookspec
def request_finished(ctx: Context, response: Response, outcome: Outcome) -> None:
    """Observe a finished request (access logs, metrics).

    :phase: request path, after the response was handed to the transport.
    :semantics: Notification; exceptions are logged and never change the response.
    :may change: nothing.  ``outcome`` carries the error (if any), the per-phase and
        per-plugin timings and the integration latency.
    :builtin: the access log writes one line per request in the configured ``$context``
        format.

    .. versionadded:: 0.1
    """
