"""twistgw-sample-plugin: one small plugin that takes part in every twistgw hook.

It is written the way a third-party plugin is: an ordinary package published in the
``twistgw`` entry-point group (``sample = twistgw_sample``), importing only what
``twistgw`` exports.  Read README.md next to setup.py for what each hook does and the
settings it reads from ``plugins.settings.sample``.

Settings are checked in ``configure`` (a bad value stops the gateway with the key named)
and read again at request time through ``ctx.plugin_settings("sample")``, never kept in a
module global: the gateway may check several configs (``twistgw validate``, a reload)
and each request must see the settings of the deployment serving it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

from twistgw import (
    Allow,
    ConfigError,
    Deny,
    Headers,
    IntegrationResponse,
    Principal,
    Response,
    StashKey,
    Unauthorized,
    hookimpl,
)

if TYPE_CHECKING:
    from twistgw import Context, GatewayError, IntegrationRequest, Registry

    # Hooks receive these three, but twistgw does not export them at the top level yet;
    # they are used for annotations only.
    from twistgw.config import GatewayConfig
    from twistgw.gateway import Gateway
    from twistgw.pipeline import Outcome

__all__ = [
    "GREETING_EXTENSION",
    "NAME",
    "STATS",
    "Settings",
    "Stats",
    "__version__",
    "parse_settings",
]

__version__ = "1.0.0"

#: The entry-point name, which is also the key of our settings under ``plugins.settings``.
NAME = "sample"

#: A root-level definition extension this plugin claims (and echoes from ``integrate``).
GREETING_EXTENSION = "x-amazon-apigateway-sample-greeting"

#: Request headers the plugin reacts to.
DENY_HEADER = "x-sample-deny"
USER_HEADER = "x-sample-user"
RAISE_HEADER = "x-sample-raise"
#: Header ``map_request`` adds to the integration request.
MAPPED_HEADER = "x-sample-mapped"
#: Header ``map_response`` adds to every response.
VERSION_HEADER = "x-sample-plugin"

#: Hooks that ``x-sample-raise`` can make fail (when ``raise_on_header`` is true).
RAISING_HOOKS = ("authorize", "map_request", "integrate", "map_response", "handle_error",
                 "request_started", "request_finished")

log = Logger(namespace="twistgw_sample")

_STARTED: StashKey[float] = StashKey("sample.started")


@attrs.frozen
class Settings:
    """``plugins.settings.sample``, checked.

    :ivar integrate_paths: resource paths (``/things/{id}``, as written in the definition)
        whose requests this plugin answers in ``integrate``; every other route is left to
        the integration the definition names.
    :ivar wrap_body: wrap JSON response bodies as ``{"data": ..., "plugin": "sample"}``.
    :ivar raise_on_header: let the ``x-sample-raise: <hook>`` request header make that
        hook raise ``RuntimeError`` (for testing the gateway's failure handling; never turn
        this on in production).
    """

    integrate_paths: frozenset[str] = frozenset()
    wrap_body: bool = False
    raise_on_header: bool = False


_KEYS = ("integrate_paths", "wrap_body", "raise_on_header")


def parse_settings(raw: Mapping[str, Any], source: str = "gateway config") -> Settings:
    """Check ``raw`` (the ``plugins.settings.sample`` mapping) and build :class:`Settings`.

    :raises ConfigError: naming ``plugins.settings.sample.<key>`` and the fix.
    """

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(source, f"plugins.settings.{NAME}.{key}", problem)

    for key in raw:
        if key not in _KEYS:
            raise fail(str(key), f"unknown setting; the sample plugin reads: {', '.join(_KEYS)}")
    paths = raw.get("integrate_paths", [])
    if not isinstance(paths, list):
        raise fail("integrate_paths", "expected a list of resource paths such as "
                   "['/sample/{id}']")
    for i, path in enumerate(paths):
        if not isinstance(path, str) or not path.startswith("/"):
            raise fail(f"integrate_paths[{i}]", f"{path!r} is not a resource path; write it "
                       "as in the definition, starting with '/' (e.g. '/sample/{id}')")
    for key in ("wrap_body", "raise_on_header"):
        if not isinstance(raw.get(key, False), bool):
            raise fail(key, "expected true or false")
    return Settings(integrate_paths=frozenset(paths),
                    wrap_body=raw.get("wrap_body", False),
                    raise_on_header=raw.get("raise_on_header", False))


_parsed: tuple[Mapping[str, Any], Settings] | None = None


def settings_of(ctx: Context) -> Settings:
    """The settings of the deployment serving ``ctx`` (parsed once per settings mapping)."""
    global _parsed
    raw = ctx.plugin_settings(NAME)
    cached = _parsed
    if cached is not None and cached[0] is raw:
        return cached[1]
    settings = parse_settings(raw)
    _parsed = (raw, settings)
    return settings


def _owned(ctx: Context, settings: Settings) -> bool:
    operation = ctx.operation
    return operation is not None and operation.path in settings.integrate_paths


def _maybe_raise(ctx: Context, hook: str) -> Settings:
    """Raise if the request asks ``hook`` to fail and the settings allow it."""
    settings = settings_of(ctx)
    if settings.raise_on_header and ctx.request.headers.get(RAISE_HEADER) == hook:
        raise RuntimeError(f"sample plugin: {hook} failed as {RAISE_HEADER} asked")
    return settings


@attrs.define
class Stats:
    """What ``request_finished`` counted in this process."""

    finished: int = 0
    by_status: dict[int, int] = attrs.field(factory=dict)
    last_seconds: float = 0.0


STATS = Stats()


# -- set-up ---------------------------------------------------------------------------------


@hookimpl
def register(registry: Registry) -> None:
    """Claim our definition extension, so APIs using it load only with this plugin on."""
    registry.add_extension(GREETING_EXTENSION)


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Refuse bad ``plugins.settings.sample`` values before anything binds."""
    parse_settings(config.plugin_settings(NAME), config.source)


# -- lifecycle --------------------------------------------------------------------------------


@hookimpl
def startup(gateway: Gateway) -> None:
    """Say we are up (a real plugin would open pools or start workers here)."""
    settings = parse_settings(gateway.config.plugin_settings(NAME), gateway.config.source)
    log.info("sample plugin {version} started; answering {paths}", version=__version__,
             paths=sorted(settings.integrate_paths) or "no routes")


@hookimpl
def shutdown(gateway: Gateway) -> None:
    """Report what we counted (a real plugin would close what ``startup`` opened)."""
    log.info("sample plugin stopped (requests finished: {count})", count=STATS.finished)


# -- request path ---------------------------------------------------------------------------


@hookimpl
def authorize(ctx: Context) -> Allow | Deny:
    """Deny ``x-sample-deny: yes`` with 401; otherwise allow, naming the caller."""
    _maybe_raise(ctx, "authorize")
    if (ctx.request.headers.get(DENY_HEADER) or "").lower() == "yes":
        return Deny(Unauthorized())
    user = ctx.request.headers.get(USER_HEADER) or "anonymous"
    return Allow(Principal(id=user, kind=NAME, context={"plugin": NAME}))


@hookimpl
def map_request(ctx: Context, request: IntegrationRequest) -> IntegrationRequest:
    """Tell the integration who the caller is, in the ``x-sample-mapped`` header."""
    _maybe_raise(ctx, "map_request")
    principal = ctx.principal.id if ctx.principal is not None else "-"
    return attrs.evolve(request,
                        headers=request.headers.with_set(MAPPED_HEADER, f"principal={principal}"))


@hookimpl
def integrate(ctx: Context, request: IntegrationRequest) -> IntegrationResponse | None:
    """Answer the routes listed in ``integrate_paths`` with an echo; abstain elsewhere."""
    settings = _maybe_raise(ctx, "integrate")
    if not _owned(ctx, settings):
        return None
    api = ctx.api
    echo = {
        "plugin": NAME,
        "resource": ctx.operation.path if ctx.operation is not None else None,
        "method": request.method,
        "path_params": dict(request.path_params),
        "principal": ctx.principal.id if ctx.principal is not None else None,
        "headers": request.headers.to_dict_last(),
        "greeting": api.extensions.get(GREETING_EXTENSION) if api is not None else None,
        "finished_before": STATS.finished,
    }
    return IntegrationResponse(status=200,
                               headers=Headers.of({"Content-Type": "application/json"}),
                               body=json.dumps(echo).encode("utf-8"))


@hookimpl
def map_response(ctx: Context, integration_response: IntegrationResponse,
                 response: Response) -> Response:
    """Sign every response with ``x-sample-plugin: <version>``; wrap JSON if configured."""
    settings = _maybe_raise(ctx, "map_response")
    body = response.body
    if settings.wrap_body:
        try:
            data = json.loads(body)
        except ValueError:
            pass
        else:
            body = json.dumps({"data": data, "plugin": NAME}).encode("utf-8")
    return attrs.evolve(response, body=body,
                        headers=response.headers.with_set(VERSION_HEADER, __version__))


@hookimpl
def handle_error(ctx: Context, error: GatewayError) -> Response | None:
    """Render errors on our own routes in our own JSON shape; leave the rest to AWS's."""
    settings = _maybe_raise(ctx, "handle_error")
    if not _owned(ctx, settings):
        return None
    body = {"plugin": NAME, "error": error.response_type, "message": error.message}
    return Response(status=error.status,
                    headers=Headers.of({"Content-Type": "application/json",
                                        "x-amzn-ErrorType": error.error_type}),
                    body=json.dumps(body).encode("utf-8"))


# -- observation ----------------------------------------------------------------------------


@hookimpl
def request_started(ctx: Context) -> None:
    """Start a timer in the request's stash."""
    _maybe_raise(ctx, "request_started")
    ctx.stash[_STARTED] = perf_counter()


@hookimpl
def request_finished(ctx: Context, response: Response, outcome: Outcome) -> None:
    """Count finished requests by status."""
    _maybe_raise(ctx, "request_finished")
    STATS.finished += 1
    STATS.by_status[response.status] = STATS.by_status.get(response.status, 0) + 1
    if _STARTED in ctx.stash:
        STATS.last_seconds = perf_counter() - ctx.stash[_STARTED]
