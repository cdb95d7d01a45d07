"""WebSocket APIs (issue #9, aws-apigw-spec.md §7): ``type: WEBSOCKET`` in the config.

A shipped plugin registered through the ``twistgw`` entry-point group.  It registers the
``WEBSOCKET`` API type (its definition files are read by :mod:`.definition`) and claims
the integration type of the operations it builds, so the core's pipeline resolves,
authorizes (the auth plugin's Lambda REQUEST authorizers and IAM, the access plugin's API
keys), logs and answers the ``$connect`` handshake and the ``@connections`` management API
like any route; this plugin's ``integrate`` then runs the ``$connect`` integration and
upgrades the connection (a 101 response with ``upgrade``), or performs the management
operation.  autobahn implements the WebSocket protocol.  Settings:
``plugins.settings.websocket`` (docs/websocket.rst).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import attrs
from twisted.logger import Logger

from twistgw import hookimpl
from twistgw.errors import Throttled
from twistgw.models import Deny, Headers, IntegrationResponse
from twistgw.reload import ReloadStep

from .connection import Connection, Hub
from .definition import CONNECT_OP, EXTENSION, INTEGRATION_TYPE, WsApi, load_api
from .events import connect_event, handshake
from .integrations import call_integration
from .settings import WsSettings, parse_settings

if TYPE_CHECKING:
    from twistgw import Context, Registry
    from twistgw.config import GatewayConfig
    from twistgw.deployment import Deployment, Route
    from twistgw.gateway import Gateway
    from twistgw.models import IntegrationRequest

__all__ = ["register", "configure", "startup", "shutdown", "prepare_reload", "authorize",
           "integrate", "hub_for"]

log = Logger()


@attrs.define
class _State:
    settings: dict[int, tuple[GatewayConfig, WsSettings]] = attrs.field(factory=dict)
    hubs: dict[int, tuple[GatewayConfig, Hub]] = attrs.field(factory=dict)


_state = _State()
#: Configs whose settings are remembered (tests build many).
_KEEP = 16


def _is_websocket_route(route: Route) -> bool:
    integration = route.integration
    return integration is not None and integration.type == INTEGRATION_TYPE


@hookimpl
def register(registry: Registry) -> None:
    """Serve ``type: WEBSOCKET`` APIs; stay off every other route."""
    registry.add_api_type("WEBSOCKET", load_api)
    registry.add_integration_type(INTEGRATION_TYPE)
    registry.add_route_filter(_is_websocket_route)
    registry.add_gauge_source(_gauges)


def _gauges(gateway: Gateway) -> list[tuple[str, str, dict[str, str], float]]:
    """``/metrics``: open connections per WebSocket API and stage of this process (labels
    from the config only, so the series stay bounded)."""
    found = _state.hubs.get(id(gateway.config))
    hub = found[1] if found is not None and found[0] is gateway.config else None
    counts: dict[tuple[str, str], int] = {
        (api.id, stage.name): 0 for api in gateway.config.apis if api.type == "WEBSOCKET"
        for stage in api.stages}
    if hub is not None:
        for conn in hub.connections.values():
            key = (conn.api_id, conn.stage)
            if key in counts:
                counts[key] += 1
    return [("websocket_connections", "Open WebSocket connections",
             {"api": api, "stage": stage}, float(count))
            for (api, stage), count in sorted(counts.items())]


def _settings_of(config: GatewayConfig) -> WsSettings:
    found = _state.settings.get(id(config))
    if found is not None and found[0] is config:
        return found[1]
    settings = parse_settings(config.plugin_settings("websocket"), config.source)
    _state.settings[id(config)] = (config, settings)
    while len(_state.settings) > _KEEP:
        del _state.settings[next(iter(_state.settings))]
    return settings


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Check ``plugins.settings.websocket``."""
    _state.settings.pop(id(config), None)
    _settings_of(config)


def hub_for(config: GatewayConfig, reactor: Any = None) -> Hub:
    """The connections of the gateway serving ``config`` (created on first use)."""
    found = _state.hubs.get(id(config))
    if found is not None and found[0] is config:
        return found[1]
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    hub = Hub(config, _settings_of(config), reactor)
    _state.hubs[id(config)] = (config, hub)
    return hub


@hookimpl
def startup(gateway: Gateway) -> None:
    """Create the gateway's hub; join the Redis cluster when one is configured."""
    if not any(api.type == "WEBSOCKET" for api in gateway.config.apis):
        return
    hub = hub_for(gateway.config, gateway.reactor)
    redis = hub.settings.redis
    if redis is not None and hub.cluster is None:
        from .cluster import Cluster

        hub.cluster = Cluster(hub, redis)
        hub.cluster.start()


@hookimpl
def prepare_reload(gateway: Gateway, deployment: Deployment) -> ReloadStep | None:
    """SIGHUP: open connections stay; the hub (connections, cluster membership, the
    @connections API's view) carries over and runs its integrations with the new config.
    Changed ``plugins.settings.websocket`` apply at the next restart."""
    old, new = gateway.config, deployment.config
    found = _state.hubs.get(id(old))
    if found is None or found[0] is not old:
        return None
    hub = found[1]
    apis = {api_id: api.definition.extensions.get(EXTENSION)
            for api_id, api in deployment.apis.items()}

    def commit() -> None:
        hub.config = new
        _state.hubs[id(new)] = (new, hub)
        # Each connection follows its API's new routes; an API that is gone closes its
        # connections (1001, as a deployment AWS tears down does).
        for conn in list(hub.connections.values()):
            api = apis.get(conn.api_id)
            if isinstance(api, WsApi):
                conn.api = api
            else:
                conn.close(1001, "Going away")

    def retire() -> None:
        entry = _state.hubs.get(id(old))
        if entry is not None and entry[0] is old and old is not new:
            del _state.hubs[id(old)]

    return ReloadStep(commit=commit, retire=retire)


@hookimpl
def shutdown(gateway: Gateway) -> Any:
    """Close every connection (1001) and leave the cluster."""
    found = _state.hubs.pop(id(gateway.config), None)
    if found is None:
        return None
    return found[1].stop()


def _json(status: int, doc: Any, error_type: str | None = None) -> IntegrationResponse:
    headers = [("Content-Type", "application/json")]
    if error_type is not None:
        headers.append(("x-amzn-ErrorType", error_type))
    return IntegrationResponse(status=status, headers=Headers(tuple(headers)),
                               body=json.dumps(doc).encode("utf-8"))


@hookimpl(tryfirst=True)
def authorize(ctx: Context) -> Deny | None:
    """Connection limits before any authorizer runs: a handshake flood must not reach
    the Lambda authorizer.  Over ``new_connections_per_second`` or ``max_connections``,
    the handshake is THROTTLED (429)."""
    operation = ctx.operation
    api = ctx.deployment_api
    if operation is None or operation.operation_id != CONNECT_OP or api is None or \
            not _is_upgrade(ctx):
        return None
    hub = hub_for(api.gateway)
    if hub.full or not hub.admit():
        return Deny(Throttled())
    return None


@hookimpl
async def integrate(ctx: Context, request: IntegrationRequest) -> IntegrationResponse | None:
    """The ``$connect`` handshake (then the upgrade) or an ``@connections`` operation."""
    integration = ctx.integration
    api = ctx.deployment_api
    if integration is None or integration.type != INTEGRATION_TYPE or api is None:
        return None
    ws = api.definition.extensions[EXTENSION]
    assert isinstance(ws, WsApi)
    hub = hub_for(api.gateway)
    operation = ctx.operation
    if operation is not None and operation.operation_id == CONNECT_OP:
        return await _connect(ctx, ws, hub)
    return await _manage(ctx, hub)


def _is_upgrade(ctx: Context) -> bool:
    headers = ctx.request.headers
    return (headers.get("upgrade") or "").strip().lower() == "websocket" and "upgrade" in \
        (headers.get("connection") or "").lower()


async def _connect(ctx: Context, ws: WsApi, hub: Hub) -> IntegrationResponse:
    headers = ctx.request.headers
    if not _is_upgrade(ctx):
        response = _json(426, {"message": "Upgrade Required"})
        return attrs.evolve(response, headers=Headers((*response.headers.items,
                                                       ("Upgrade", "websocket"))))
    if not headers.get("sec-websocket-key") or \
            (headers.get("sec-websocket-version") or "").strip() != "13":
        return _json(400, {"message": "Bad Request"})
    shake = handshake(ctx)
    principal = ctx.principal
    if principal is not None:
        if principal.kind not in ("api_key", "iam"):
            # Context values are stringified, as in REST events (an API key alone or
            # IAM names no authorizer).
            shake.authorizer = {"principalId": principal.id, **{
                k: None if v is None else ("true" if v is True else "false" if v is False
                                           else str(v))
                for k, v in principal.context.items()}}
        if principal.api_key_id is not None:
            shake.api_key = principal.usage_identifier_key or headers.get("x-api-key")
            shake.identity["apiKey"] = shake.api_key
            shake.identity["apiKeyId"] = principal.api_key_id
    conn = Connection(hub, ws, shake)
    route = ws.routes.get("$connect")
    if route is not None and route.integration is not None:
        event = connect_event(conn, ctx.extended_request_id)
        outcome = await call_integration(hub.config, route.integration, conn, event, b"",
                                         hub.http, hub.settings.max_message_bytes)
        if outcome.error is not None:
            error, request_id = outcome.error, ctx.request_id
            hub.log_failure(lambda skipped: log.error(
                "({request_id}) $connect: {error} ({skipped} more not logged)",
                request_id=request_id, error=error, skipped=skipped))
            return _json(500, {"message": "Internal server error"})
        if not 200 <= outcome.status < 300:
            return IntegrationResponse(
                status=outcome.status, headers=Headers((("Content-Type", "application/json"),)),
                body=outcome.body or b"")
        conn.subprotocol = next((v for k, v in outcome.headers.items()
                                 if k.lower() == "sec-websocket-protocol"), None)
    return IntegrationResponse(status=101, upgrade=conn.attach)


async def _manage(ctx: Context, hub: Hub) -> IntegrationResponse:
    """PostToConnection, GetConnection and DeleteConnection (§7.4); 500 while the shared
    registry (Redis) cannot say where a connection lives."""
    from .cluster import ClusterUnavailable

    try:
        return await _operation(ctx, hub)
    except ClusterUnavailable:
        return _json(500, {"message": "Internal server error"},
                     "InternalServerErrorException")


async def _operation(ctx: Context, hub: Hub) -> IntegrationResponse:
    connection_id = unquote(ctx.path_params.get("connectionId", ""))
    api, stage = ctx.deployment_api, ctx.stage
    where = (api.id if api is not None else "", stage.name if stage is not None else "")
    gone = _json(410, {"message": f"Connection {connection_id} is gone"}, "GoneException")
    method = ctx.request.method
    if method == "POST":
        body = ctx.request.body
        if len(body) > hub.settings.max_message_bytes:
            return _json(413, {"message": f"Message of {len(body)} bytes exceeds the "
                               f"{hub.settings.max_message_bytes} byte limit"},
                         "PayloadTooLargeException")
        result = await hub.post(connection_id, body, where)
        if result == "ok":
            return IntegrationResponse(status=200, headers=Headers((
                ("Content-Type", "application/json"),)), body=b"")
        if result == "full":
            return _json(429, {"message": "The connection's send buffer is full"},
                         "LimitExceededException")
        return gone
    if method == "GET":
        info = await hub.info(connection_id, where)
        return gone if info is None else _json(200, info)
    if await hub.delete(connection_id, where):
        return IntegrationResponse(status=204, headers=Headers((
            ("Content-Type", "application/json"),)), body=b"")
    return gone
