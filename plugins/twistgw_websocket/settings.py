"""``plugins.settings.websocket``: connection limits and the shared Redis registry.

AWS's limits are the defaults (§7.1): 2 h per connection, 10 min idle, 32 KB frames,
128 KB messages.  Tests and operators may lower or raise them; every key is checked and a
bad one is a :class:`~twistgw.errors.ConfigError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from twistgw.errors import ConfigError

__all__ = ["WsSettings", "RedisConfig", "parse_settings", "PREFIX"]

PREFIX = "plugins.settings.websocket"


@attrs.frozen
class RedisConfig:
    """``redis:``: where connections are registered and pushes are relayed."""

    url: str
    prefix: str = "twistgw:ws:"
    timeout_ms: int = 500
    max_pending: int = 1000


@attrs.frozen
class WsSettings:
    """The checked settings (see docs/websocket.rst)."""

    idle_timeout: float = 600.0
    max_lifetime: float = 7200.0
    max_frame_bytes: int = 32 * 1024
    max_message_bytes: int = 128 * 1024
    send_buffer_bytes: int = 1024 * 1024
    max_connections: int = 100_000
    new_connections_per_second: int = 500
    close_timeout: float = 5.0
    node_id: str = attrs.field(factory=lambda: os.urandom(6).hex())
    redis: RedisConfig | None = None


_NUMBERS: dict[str, tuple[type, float, float]] = {
    "idle_timeout": (float, 0.01, 86400.0),
    "max_lifetime": (float, 0.01, 7 * 86400.0),
    "max_frame_bytes": (int, 125, 16 * 1024 * 1024),
    "max_message_bytes": (int, 125, 64 * 1024 * 1024),
    "send_buffer_bytes": (int, 1024, 1024 * 1024 * 1024),
    "max_connections": (int, 1, 10_000_000),
    "new_connections_per_second": (int, 1, 10_000_000),
    "close_timeout": (float, 0.01, 600.0),
}


def parse_settings(raw: Mapping[str, Any], source: str) -> WsSettings:
    """Check ``plugins.settings.websocket``."""
    allowed = set(_NUMBERS) | {"redis", "node_id"}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{PREFIX}.{key}"
        if key not in allowed:
            raise ConfigError(source, path, "unknown key; the keys allowed here are: "
                              + ", ".join(sorted(allowed)))
        if key in _NUMBERS:
            kind, low, high = _NUMBERS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    kind is int and not isinstance(value, int)) or not low <= value <= high:
                raise ConfigError(source, path, f"expected a {'whole ' if kind is int else ''}"
                                  f"number from {low:g} to {high:g}")
            values[key] = kind(value)
        elif key == "node_id":
            if not isinstance(value, str) or not value.replace("-", "").isalnum() or \
                    len(value) > 64:
                raise ConfigError(source, path, "letters, digits and '-' (at most 64)")
            values[key] = value
        else:
            values[key] = _redis(value, source)
    if values.get("max_frame_bytes", 32768) > values.get("max_message_bytes", 131072):
        raise ConfigError(source, f"{PREFIX}.max_frame_bytes", "cannot exceed "
                          "max_message_bytes (a message is one or more frames)")
    return WsSettings(**values)


def _redis(value: Any, source: str) -> RedisConfig:
    path = f"{PREFIX}.redis"
    if not isinstance(value, Mapping):
        raise ConfigError(source, path, "expected a mapping with url (redis://host:port/db)")
    allowed = {"url", "prefix", "timeout_ms", "max_pending"}
    for key in value:
        if key not in allowed:
            raise ConfigError(source, f"{path}.{key}", "unknown key; the keys allowed here "
                              "are: " + ", ".join(sorted(allowed)))
    url = value.get("url")
    if not isinstance(url, str):
        raise ConfigError(source, f"{path}.url", "expected redis://host:port/db")
    from twistgw_access.redis_store import parse_url

    try:
        parse_url(url)
    except ValueError as e:
        raise ConfigError(source, f"{path}.url", f"{e}") from None
    prefix = value.get("prefix", "twistgw:ws:")
    if not isinstance(prefix, str):
        raise ConfigError(source, f"{path}.prefix", "expected a string")
    out: dict[str, Any] = {"url": url, "prefix": prefix}
    for key, low, high in (("timeout_ms", 1, 60000), ("max_pending", 1, 1_000_000)):
        if key in value:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ConfigError(source, f"{path}.{key}", f"a whole number from {low} to "
                                  f"{high}")
            out[key] = v
    return RedisConfig(**out)
