"""The gateway config file: what to serve, where, with which plugins and limits.

One YAML (or JSON) file names listeners, APIs with their definition files and stages,
custom domains, Lambda functions, plugins and limits (docs/config.rst lists every key).
Everything is checked here, before anything binds a port: unknown keys, bad names,
missing files.  Every :class:`~twistgw.errors.ConfigError` names the file, the key path
inside it and what to do.  Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigError
from .limits import LIMIT_FIELDS, Limits
from .models import EMPTY_MAPPING, freeze_mapping

__all__ = [
    "GatewayConfig",
    "ListenerConfig",
    "ApiConfig",
    "StageConfig",
    "DomainConfig",
    "BasePathMapping",
    "PluginsConfig",
    "AccessLogConfig",
    "Secret",
    "SettingsReader",
    "load_config",
    "parse_config",
    "demo_config_path",
    "API_TYPES",
]

#: The ``apis[].type`` values.  REST and HTTP definitions are OpenAPI files the core
#: reads; other types are read by the plugin that registers them
#: (:meth:`~twistgw.registry.Registry.add_api_type`), e.g. WEBSOCKET by the websocket plugin.
API_TYPES = ("REST", "HTTP", "WEBSOCKET")

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_API_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STAGE_VAR_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_STAGE_VAR_VALUE_RE = re.compile(r"^[A-Za-z0-9\-._~:/?#&=,]{1,512}$")
_BASE_PATH_RE = re.compile(r"^[A-Za-z0-9$\-_.+!*'()/]{0,300}$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                        r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

ACCESS_LOG_PRESETS: dict[str, str] = {
    "clf": (
        '$context.identity.sourceIp $context.identity.caller $context.identity.user '
        '[$context.requestTime] "$context.httpMethod $context.resourcePath $context.protocol" '
        '$context.status $context.responseLength $context.requestId '
        '$context.extendedRequestId'
    ),
    "json": (
        '{ "requestId":"$context.requestId", "extendedRequestId":"$context.extendedRequestId",'
        ' "ip": "$context.identity.sourceIp", "caller":"$context.identity.caller",'
        ' "user":"$context.identity.user", "requestTime":"$context.requestTime",'
        ' "httpMethod":"$context.httpMethod", "resourcePath":"$context.resourcePath",'
        ' "status":"$context.status", "protocol":"$context.protocol",'
        ' "responseLength":"$context.responseLength" }'
    ),
    "http-clf": (
        '$context.identity.sourceIp - - [$context.requestTime] '
        '"$context.httpMethod $context.routeKey $context.protocol" $context.status '
        '$context.responseLength $context.requestId'
    ),
}


class Secret(str):
    """A value resolved from ``{"$env": NAME}`` or ``{"$file": path}``.

    It behaves as the string it holds, but its ``repr`` hides it so that config dumps and
    log events never show it.
    """

    def __repr__(self) -> str:
        return "Secret('***')"


@attrs.frozen
class ListenerConfig:
    """A ``listeners[]`` entry: a Twisted endpoint plus options plugins may claim."""

    name: str
    endpoint: str
    limits: Limits = attrs.field(factory=Limits)
    admin: bool = False
    tls: Mapping[str, Any] | None = None
    allow_sources: tuple[str, ...] = ()
    options: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)


@attrs.frozen
class AccessLogConfig:
    """Where and how access-log lines are written.

    :ivar format: the ``$context`` template (presets ``clf``, ``json``, ``http-clf``
        already expanded).
    :ivar path: a file to append to, or ``None`` for the gateway's log (twistd's).
    """

    format: str | None
    path: str | None = None


@attrs.frozen
class StageConfig:
    """A stage of an API: its name, stage variables and optional access-log override."""

    name: str
    variables: Mapping[str, str] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)
    access_log: AccessLogConfig | None = None


@attrs.frozen
class ApiConfig:
    """An ``apis[]`` entry."""

    id: str
    type: str
    definition: Path
    definition_display: str
    stages: tuple[StageConfig, ...]
    listeners: tuple[str, ...]
    endpoint_type: str = "REGIONAL"
    where: str = ""


@attrs.frozen
class BasePathMapping:
    """A custom domain's base path mapping (empty ``base_path`` = the ``(none)`` mapping)."""

    base_path: str
    api: str
    stage: str


@attrs.frozen
class DomainConfig:
    """A custom domain name served on some listeners, with its base path mappings."""

    name: str
    mappings: tuple[BasePathMapping, ...]
    listeners: tuple[str, ...]


@attrs.frozen
class PluginsConfig:
    """``plugins:``: which installed plugins run, in which order, with which settings.

    ``enabled`` is ``None`` when the config does not name an allowlist; then every
    installed plugin of the ``twistgw`` entry-point group loads (in name order).
    """

    enabled: tuple[str, ...] | None = None
    disabled: tuple[str, ...] = ()
    settings: Mapping[str, Mapping[str, Any]] = attrs.field(default=EMPTY_MAPPING,
                                                            converter=freeze_mapping)


@attrs.frozen
class GatewayConfig:
    """The whole gateway config, checked and frozen."""

    source: str
    base_dir: Path
    listeners: tuple[ListenerConfig, ...]
    apis: tuple[ApiConfig, ...]
    domains: tuple[DomainConfig, ...] = ()
    functions: Mapping[str, Mapping[str, Any]] = attrs.field(default=EMPTY_MAPPING,
                                                             converter=freeze_mapping)
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    limits: Limits = attrs.field(factory=Limits)
    access_log: AccessLogConfig = attrs.field(
        factory=lambda: AccessLogConfig(format=ACCESS_LOG_PRESETS["clf"]))
    strict: bool = True
    #: Seconds requests in flight get to finish on SIGTERM (and on an old deployment
    #: after a reload) before their connections are cut.
    shutdown_grace: float = 30.0
    raw: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping,
                                         eq=False)

    def plugin_settings(self, name: str) -> Mapping[str, Any]:
        """The ``plugins.settings.<name>`` section (secrets resolved), or empty."""
        return self.plugins.settings.get(name, EMPTY_MAPPING)

    def listener(self, name: str) -> ListenerConfig:
        """The listener called ``name``."""
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)


class SettingsReader:
    """Checks config values; every refusal is a ``ConfigError(file, key path, fix)``.

    The gateway config's reader is one.  Plugins check their ``plugins.settings.<name>``
    section with :meth:`for_plugin`, so their paths and messages read like the core's::

        r = SettingsReader.for_plugin(config, "auth")
        raw = r.mapping(config.plugin_settings("auth"), "", allowed={"jwt", "iam"})
        leeway = r.number(raw.get("leeway", 30), "leeway", 0, 60)  # plugins.settings.auth.leeway
    """

    def __init__(self, file: str, prefix: str = "") -> None:
        self.file = file
        self.prefix = prefix

    @classmethod
    def for_plugin(cls, config: GatewayConfig, name: str) -> SettingsReader:
        """A reader for ``plugins.settings.<name>`` of ``config`` (paths are relative)."""
        return cls(config.source, f"plugins.settings.{name}")

    def fail(self, path: str, problem: str) -> ConfigError:
        """The error for ``path`` (relative to the prefix; ``""`` is the prefix itself)."""
        full = f"{self.prefix}.{path}" if self.prefix and path else self.prefix or path
        return ConfigError(self.file, full or "(top level)", problem)

    def mapping(self, value: Any, path: str, allowed: Collection[str] | None = None,
                required: tuple[str, ...] = ()) -> Mapping[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    hint = ", ".join(sorted(allowed))
                    raise self.fail(f"{path}.{key}" if path else str(key),
                                    f"unknown key; the keys allowed here are: {hint}")
        for key in required:
            if key not in value:
                raise self.fail(path, f"missing required key '{key}'")
        return value

    def seq(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {type(value).__name__}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, "expected a non-empty string")
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        return tuple(self.string(v, f"{path}[{i}]")
                     for i, v in enumerate(self.seq(value, path)))

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "expected true or false")
        return value

    def integer(self, value: Any, path: str, low: int, high: int | None = None) -> int:
        """A whole number (not a boolean) from ``low`` to ``high`` (inclusive)."""
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (
                high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise self.fail(path, f"expected a whole number {bound}")
        return value

    def number(self, value: Any, path: str, low: float, high: float) -> float:
        """A finite number (int or float, not a boolean) from ``low`` to ``high``."""
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not low <= value <= high:
            raise self.fail(path, f"expected a number from {low:g} to {high:g}")
        return float(value)


class _Reader(SettingsReader):
    """Checks one gateway config document, remembering the file for error messages."""

    def __init__(self, file: str, base_dir: Path) -> None:
        super().__init__(file)
        self.base_dir = base_dir

    def path_value(self, value: Any, path: str) -> tuple[Path, str]:
        text = self.string(value, path)
        p = Path(os.path.expanduser(text))
        if not p.is_absolute():
            p = self.base_dir / p
        return p, text

    def secrets(self, value: Any, path: str) -> Any:
        """Resolve ``{"$env": NAME}`` / ``{"$file": path}`` anywhere inside ``value``."""
        if isinstance(value, Mapping):
            if len(value) == 1 and ("$env" in value or "$file" in value):
                if "$env" in value:
                    name = self.string(value["$env"], f"{path}.$env")
                    if name not in os.environ:
                        raise self.fail(path, f"the environment variable {name} is not set; "
                                        "export it before starting the gateway")
                    return Secret(os.environ[name])
                fpath, _ = self.path_value(value["$file"], f"{path}.$file")
                try:
                    return Secret(fpath.read_text(encoding="utf-8").rstrip("\r\n"))
                except OSError as e:
                    raise self.fail(f"{path}.$file", f"cannot read the secret file: "
                                    f"{e.strerror}") from None
            return {k: self.secrets(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.secrets(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def limits(self, value: Any, path: str, base: Limits) -> Limits:
        raw = self.mapping(value, path, frozenset(LIMIT_FIELDS))
        changes: dict[str, Any] = {}
        for key, kind in LIMIT_FIELDS.items():
            if key not in raw:
                continue
            v = raw[key]
            if kind is str:
                if not isinstance(v, str):
                    raise self.fail(f"{path}.{key}", "expected a string")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or (
                    kind is int and not isinstance(v, int)):
                raise self.fail(f"{path}.{key}", f"expected a {'whole ' if kind is int else ''}"
                                "number")
            changes[key] = v
        try:
            return attrs.evolve(base, **changes)
        except ValueError as e:
            raise self.fail(path, str(e)) from None

    def access_log(self, value: Any, path: str, default: AccessLogConfig | None
                   ) -> AccessLogConfig:
        if value is False:
            return AccessLogConfig(format=None)
        raw = self.mapping(value, path, frozenset({"format", "path"}))
        fmt = raw.get("format", "clf" if default is None else None)
        if fmt is None and default is not None:
            fmt_text = default.format
        elif fmt is False or fmt == "off":
            fmt_text = None
        else:
            text = self.string(fmt, f"{path}.format")
            fmt_text = ACCESS_LOG_PRESETS.get(text, text)
            if "\n" in fmt_text:
                raise self.fail(f"{path}.format", "an access-log format is a single line")
            if text not in ACCESS_LOG_PRESETS and "$context." not in text:
                raise self.fail(f"{path}.format", "a custom format must use $context "
                                "variables (e.g. $context.requestId), or name a preset: "
                                + ", ".join(ACCESS_LOG_PRESETS))
        log_path: str | None = default.path if default is not None else None
        if "path" in raw:
            p, _ = self.path_value(raw["path"], f"{path}.path")
            log_path = str(p) if raw["path"] != "-" else None
        return AccessLogConfig(format=fmt_text, path=log_path)

    def read(self, doc: Any) -> GatewayConfig:
        top = self.mapping(doc, "", frozenset({
            "listeners", "apis", "domains", "functions", "plugins", "limits", "access_log",
            "strict", "shutdown_grace",
        }), required=("apis",))
        strict = self.boolean(top.get("strict", True), "strict")
        grace = top.get("shutdown_grace", 30)
        if isinstance(grace, bool) or not isinstance(grace, int | float) \
                or not 0 <= grace <= 3600:
            raise self.fail("shutdown_grace", f"{grace!r} is not a number of seconds from 0 "
                            "to 3600; the default is 30")
        limits = self.limits(top.get("limits"), "limits", Limits())
        access_log = self.access_log(top.get("access_log"), "access_log", None)
        listeners = self.listeners(top.get("listeners"), limits)
        listener_names = {lst.name for lst in listeners}
        apis = self.apis(top.get("apis"), listener_names,
                         [lst.name for lst in listeners if not lst.admin], access_log)
        domains = self.domains(top.get("domains"), apis, listener_names)
        plugins = self.plugins(top.get("plugins"))
        functions = self.functions(top.get("functions"))
        return GatewayConfig(
            source=self.file, base_dir=self.base_dir, listeners=listeners, apis=apis,
            domains=domains, functions=functions, plugins=plugins, limits=limits,
            access_log=access_log, strict=strict, shutdown_grace=float(grace), raw=dict(top),
        )

    def listeners(self, value: Any, limits: Limits) -> tuple[ListenerConfig, ...]:
        items = self.seq(value, "listeners")
        if not items:
            items = [{"name": "default", "endpoint": "tcp:8080:interface=127.0.0.1"}]
        out: list[ListenerConfig] = []
        seen: set[str] = set()
        for i, raw in enumerate(items):
            path = f"listeners[{i}]"
            raw = self.mapping(raw, path, None, required=("name", "endpoint"))
            name = self.string(raw["name"], f"{path}.name")
            if not _NAME_RE.match(name):
                raise self.fail(f"{path}.name", "use letters, digits, '-' and '_'")
            if name in seen:
                raise self.fail(f"{path}.name", f"a second listener named {name!r}; names "
                                "must be unique")
            seen.add(name)
            endpoint = self.string(raw["endpoint"], f"{path}.endpoint")
            core_keys = {"name", "endpoint", "limits", "admin", "tls", "allow_sources"}
            options = {k: v for k, v in raw.items() if k not in core_keys}
            tls = raw.get("tls")
            out.append(ListenerConfig(
                name=name,
                endpoint=endpoint,
                limits=self.limits(raw.get("limits"), f"{path}.limits", limits),
                admin=self.boolean(raw.get("admin", False), f"{path}.admin"),
                tls=self.secrets(self.mapping(tls, f"{path}.tls"), f"{path}.tls")
                if tls is not None else None,
                allow_sources=self.strings(raw.get("allow_sources"), f"{path}.allow_sources"),
                options=options,
            ))
        return tuple(out)

    def apis(self, value: Any, listener_names: set[str], public: list[str],
             access_log: AccessLogConfig) -> tuple[ApiConfig, ...]:
        items = self.seq(value, "apis")
        if not items:
            raise self.fail("apis", "name at least one API to serve")
        out: list[ApiConfig] = []
        seen: set[str] = set()
        for i, raw in enumerate(items):
            path = f"apis[{i}]"
            raw = self.mapping(raw, path, frozenset({
                "id", "type", "definition", "endpoint_type", "stages", "listeners",
            }), required=("id", "definition"))
            api_id = self.string(raw["id"], f"{path}.id")
            if not _API_ID_RE.match(api_id):
                raise self.fail(f"{path}.id", "use letters, digits, '-' and '_' (at most 64)")
            if api_id in seen:
                raise self.fail(f"{path}.id", f"a second API with id {api_id!r}")
            seen.add(api_id)
            api_type = str(raw.get("type", "REST")).upper()
            if api_type not in API_TYPES:
                raise self.fail(f"{path}.type", f"{raw.get('type')!r} is not one of "
                                + ", ".join(API_TYPES))
            endpoint_type = str(raw.get("endpoint_type", "REGIONAL")).upper()
            if endpoint_type not in ("EDGE", "REGIONAL", "PRIVATE"):
                raise self.fail(f"{path}.endpoint_type", "use EDGE, REGIONAL or PRIVATE")
            if api_type != "REST" and endpoint_type != "REGIONAL":
                raise self.fail(f"{path}.endpoint_type",
                                f"{api_type} APIs are REGIONAL only")
            definition, display = self.path_value(raw["definition"], f"{path}.definition")
            if not definition.is_file():
                raise self.fail(f"{path}.definition", f"{display} does not exist (looked for "
                                f"{definition}); relative paths resolve against "
                                f"{self.base_dir}")
            stages = self.stages(raw.get("stages"), f"{path}.stages", api_type, access_log)
            if "listeners" in raw:
                listeners = self.strings(raw["listeners"], f"{path}.listeners")
                for j, lname in enumerate(listeners):
                    if lname not in listener_names:
                        raise self.fail(f"{path}.listeners[{j}]",
                                        f"no listener is named {lname!r}; define it under "
                                        "listeners")
            else:
                listeners = tuple(public)
            out.append(ApiConfig(
                id=api_id, type=api_type, definition=definition,
                definition_display=str(definition), stages=stages,
                listeners=listeners, endpoint_type=endpoint_type, where=path,
            ))
        return tuple(out)

    def stages(self, value: Any, path: str, api_type: str, access_log: AccessLogConfig
               ) -> tuple[StageConfig, ...]:
        items = self.seq(value, path)
        if not items:
            if api_type == "HTTP":
                return (StageConfig(name="$default", access_log=None),)
            raise self.fail(path, f"a {api_type} API needs at least one stage, e.g. "
                            "stages: [{name: prod}]")
        out: list[StageConfig] = []
        seen: set[str] = set()
        for i, raw in enumerate(items):
            spath = f"{path}[{i}]"
            if isinstance(raw, str):
                raw = {"name": raw}
            raw = self.mapping(raw, spath, frozenset({"name", "variables", "access_log"}),
                               required=("name",))
            name = self.string(raw["name"], f"{spath}.name")
            if not (_NAME_RE.match(name) or (name == "$default" and api_type == "HTTP")):
                raise self.fail(f"{spath}.name", f"{name!r} is not a valid stage name; use "
                                "letters, digits, '-' and '_' (at most 128)"
                                + (" or $default" if api_type == "HTTP" else ""))
            if name in seen:
                raise self.fail(f"{spath}.name", f"a second stage named {name!r}")
            seen.add(name)
            variables: dict[str, str] = {}
            vraw = self.mapping(raw.get("variables"), f"{spath}.variables")
            if len(vraw) > 100:
                raise self.fail(f"{spath}.variables", "at most 100 stage variables")
            for vk, vv in vraw.items():
                vpath = f"{spath}.variables.{vk}"
                if not _STAGE_VAR_NAME_RE.match(str(vk)):
                    raise self.fail(vpath, "stage variable names use letters, digits and '_' "
                                    "(at most 64)")
                if isinstance(vv, bool) or not isinstance(vv, (str, int, float)):
                    raise self.fail(vpath, "stage variable values are strings")
                text = str(vv)
                if not _STAGE_VAR_VALUE_RE.match(text):
                    raise self.fail(vpath, "stage variable values use letters, digits and "
                                    "-._~:/?#&=, (at most 512 characters)")
                variables[str(vk)] = text
            stage_log = None
            if "access_log" in raw:
                stage_log = self.access_log(raw["access_log"], f"{spath}.access_log",
                                            access_log)
            out.append(StageConfig(name=name, variables=variables, access_log=stage_log))
        return tuple(out)

    def domains(self, value: Any, apis: tuple[ApiConfig, ...], listener_names: set[str]
                ) -> tuple[DomainConfig, ...]:
        out: list[DomainConfig] = []
        api_stages = {a.id: {s.name for s in a.stages} for a in apis}
        seen: set[str] = set()
        for i, raw in enumerate(self.seq(value, "domains")):
            path = f"domains[{i}]"
            raw = self.mapping(raw, path, frozenset({"name", "mappings", "listeners"}),
                               required=("name", "mappings"))
            name = self.string(raw["name"], f"{path}.name").lower()
            if not _DOMAIN_RE.match(name):
                raise self.fail(f"{path}.name", f"{name!r} is not a domain name")
            if name in seen:
                raise self.fail(f"{path}.name", f"the domain {name!r} is defined twice")
            seen.add(name)
            mappings: list[BasePathMapping] = []
            bases: set[str] = set()
            for j, m in enumerate(self.seq(raw["mappings"], f"{path}.mappings")):
                mpath = f"{path}.mappings[{j}]"
                m = self.mapping(m, mpath, frozenset({"base_path", "api", "stage"}),
                                 required=("api", "stage"))
                base = str(m.get("base_path", "") or "").strip("/")
                if base == "(none)":
                    base = ""
                if not _BASE_PATH_RE.match(base):
                    raise self.fail(f"{mpath}.base_path", "use letters, digits and "
                                    "$-_.+!*'()/ (at most 300)")
                if base in bases:
                    raise self.fail(f"{mpath}.base_path", f"base path {base or '(none)'!r} is "
                                    "mapped twice")
                bases.add(base)
                api = self.string(m["api"], f"{mpath}.api")
                if api not in api_stages:
                    raise self.fail(f"{mpath}.api", f"no API has id {api!r}")
                stage = self.string(m["stage"], f"{mpath}.stage")
                if stage not in api_stages[api]:
                    raise self.fail(f"{mpath}.stage", f"API {api!r} has no stage {stage!r}")
                mappings.append(BasePathMapping(base_path=base, api=api, stage=stage))
            listeners = self.strings(raw.get("listeners"), f"{path}.listeners")
            for j, lname in enumerate(listeners):
                if lname not in listener_names:
                    raise self.fail(f"{path}.listeners[{j}]", f"no listener is named {lname!r}")
            out.append(DomainConfig(name=name, mappings=tuple(mappings),
                                    listeners=listeners))
        return tuple(out)

    def plugins(self, value: Any) -> PluginsConfig:
        raw = self.mapping(value, "plugins", frozenset({"enabled", "disabled", "settings"}))
        enabled = None
        if "enabled" in raw and raw["enabled"] is not None:
            enabled = self.strings(raw["enabled"], "plugins.enabled")
            if len(set(enabled)) != len(enabled):
                raise self.fail("plugins.enabled", "a plugin is listed twice")
        disabled = self.strings(raw.get("disabled"), "plugins.disabled")
        settings = self.mapping(raw.get("settings"), "plugins.settings")
        resolved = {str(k): freeze_mapping(self.secrets(
            self.mapping(v, f"plugins.settings.{k}"), f"plugins.settings.{k}"))
            for k, v in settings.items()}
        return PluginsConfig(enabled=enabled, disabled=disabled, settings=resolved)

    def functions(self, value: Any) -> dict[str, Mapping[str, Any]]:
        raw = self.mapping(value, "functions")
        out: dict[str, Mapping[str, Any]] = {}
        for name, spec in raw.items():
            path = f"functions.{name}"
            spec = self.mapping(spec, path)
            out[str(name)] = freeze_mapping(self.secrets(spec, path))
        return out


def parse_config(doc: Any, file: str, base_dir: Path) -> GatewayConfig:
    """Check an already-loaded config document."""
    return _Reader(file, base_dir).read(doc)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Load and check the gateway config at ``path``."""
    from .definition import read_structured_file

    p = Path(path)
    doc = read_structured_file(p, str(path))
    return parse_config(doc, str(path), p.resolve().parent)


def demo_config_path() -> Path:
    """The embedded demo config, shipped inside the installed package (``twistgw.demo``).

    In a source checkout (the package imported from the tree, not installed) the same
    files are read from ``examples/demo/``.
    """
    try:
        return Path(str(resources.files("twistgw.demo").joinpath("gateway.yaml")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "examples" / "demo" / "gateway.yaml"
