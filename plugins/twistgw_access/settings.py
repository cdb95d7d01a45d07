"""``plugins.settings.access``: API keys, usage plans and throttles, checked at load time.

Everything an operator can get wrong is refused here, before the gateway serves, with a
:class:`~twistgw.errors.ConfigError` naming ``plugins.settings.access.<path>`` and the fix:
unknown keys, key values outside AWS's 20-128 characters, a plan naming an unknown key,
API or stage, a key in two plans for the same stage (AWS allows one plan per stage and
key), periods and offsets AWS does not accept, limits above the account's.

Key values are hashed (SHA-256) as soon as they are read and the plain values are not
kept: a config dump, a repr or a heap snapshot of the settings shows no key.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from twistgw.config import SettingsReader
from twistgw.errors import ConfigError

from .periods import MAX_OFFSET, PERIODS
from .redis_store import RedisSettings, parse_url

if TYPE_CHECKING:
    from twistgw.config import GatewayConfig

__all__ = ["Throttle", "ApiKey", "Quota", "PlanStage", "UsagePlan", "StageThrottle",
           "AccessSettings", "parse_settings", "key_digest", "ACCOUNT_DEFAULT", "PREFIX"]

PREFIX = "plugins.settings.access"

_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: AWS's API key values: 20-128 characters; printable ASCII keeps header and config
#: spellings identical (a header value is latin-1, a config value UTF-8).
_KEY_VALUE_RE = re.compile(r"^[\x21-\x7e]{20,128}$")
_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY")


@attrs.frozen
class Throttle:
    """A token bucket's limits: capacity ``burst``, refilled at ``rate`` tokens/second."""

    rate: float
    burst: int


#: AWS's account-level default per region (aws-apigw-spec.md §5.3).
ACCOUNT_DEFAULT = Throttle(rate=10000.0, burst=5000)


@attrs.frozen
class ApiKey:
    """A configured API key: its id and the SHA-256 digest of its value (never the value)."""

    id: str
    digest: bytes = attrs.field(repr=False)
    enabled: bool = True


@attrs.frozen
class Quota:
    """A usage plan's quota: ``limit`` requests per ``period`` (DAY/WEEK/MONTH, UTC)."""

    limit: int
    period: str
    offset: int = 0


@attrs.frozen
class PlanStage:
    """An API stage a usage plan covers, with per-method throttles (``"/pets/GET"``)."""

    api: str
    stage: str
    method_throttles: Mapping[str, Throttle] = attrs.field(factory=dict)


@attrs.frozen
class UsagePlan:
    """A usage plan: the stages it covers, its per-key throttle and quota, its keys."""

    id: str
    stages: tuple[PlanStage, ...]
    throttle: Throttle | None = None
    quota: Quota | None = None
    keys: tuple[str, ...] = ()


@attrs.frozen
class StageThrottle:
    """A stage's default method throttle and per-method overrides (``"/pets/GET"``)."""

    api: str
    stage: str
    throttle: Throttle | None = None
    methods: Mapping[str, Throttle] = attrs.field(factory=dict)


@attrs.frozen
class AccessSettings:
    """The checked settings, indexed for the request path.

    :ivar keys_by_digest: API keys by the SHA-256 digest of their values.
    :ivar plan_for: ``(key id, api, stage) -> (plan, plan stage)``; at most one plan per
        key and stage, as on AWS.
    :ivar stage_throttles: ``(api, stage) -> StageThrottle``.
    """

    keys: Mapping[str, ApiKey] = attrs.field(factory=dict)
    keys_by_digest: Mapping[bytes, ApiKey] = attrs.field(factory=dict, repr=False)
    plans: Mapping[str, UsagePlan] = attrs.field(factory=dict)
    plan_for: Mapping[tuple[str, str, str], tuple[UsagePlan, PlanStage]] = attrs.field(
        factory=dict)
    stage_throttles: Mapping[tuple[str, str], StageThrottle] = attrs.field(factory=dict)
    account: Throttle = ACCOUNT_DEFAULT
    store: str | RedisSettings = "memory"


def key_digest(value: str) -> bytes:
    """SHA-256 of an API key value (ASCII; the caller refuses anything else)."""
    return hashlib.sha256(value.encode("ascii")).digest()


class _Reader(SettingsReader):
    def __init__(self, config: GatewayConfig) -> None:
        super().__init__(config.source, PREFIX)
        self.config = config
        self.apis = {a.id: a for a in config.apis}

    def ident(self, value: Any, path: str, what: str) -> str:
        if not isinstance(value, str) or not _ID_RE.match(value):
            raise self.fail(path, f"{what} ids use letters, digits, '.', '_' and '-' "
                            "(1 to 128 characters)")
        return value

    def throttle(self, value: Any, path: str, account: Throttle | None) -> Throttle:
        raw = self.mapping(value, path, ("rate", "burst"), required=("rate", "burst"))
        rate = raw["rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0 \
                or not math.isfinite(rate):
            raise self.fail(f"{path}.rate", "expected requests per second, a finite number "
                            ">= 0")
        burst = self.integer(raw["burst"], f"{path}.burst", 0)
        if account is not None:
            if rate > account.rate:
                raise self.fail(f"{path}.rate", f"{rate} exceeds the account throttle rate "
                                f"({account.rate:g}); lower it or raise "
                                f"{PREFIX}.account_throttle.rate")
            if burst > account.burst:
                raise self.fail(f"{path}.burst", f"{burst} exceeds the account throttle "
                                f"burst ({account.burst}); lower it or raise "
                                f"{PREFIX}.account_throttle.burst")
        return Throttle(rate=float(rate), burst=burst)

    def method_throttles(self, value: Any, path: str, account: Throttle
                         ) -> dict[str, Throttle]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, "expected a mapping of \"/resource/path/METHOD\" to "
                            "{rate, burst}")
        out: dict[str, Throttle] = {}
        for key, spec in value.items():
            kpath = f"{path}.{key}"
            text = str(key)
            resource, _, method = text.rpartition("/")
            if not resource.startswith("/") or method not in _METHODS:
                raise self.fail(kpath, "method keys are the resource path and the HTTP "
                                "method: \"/pets/GET\", \"/pets/{id}/ANY\", \"//GET\" for "
                                "the root (methods: " + ", ".join(_METHODS) + ")")
            out[text] = self.throttle(spec, kpath, account)
        return out

    def api_stage(self, raw: Mapping[str, Any], path: str, *, rest_only: bool
                  ) -> tuple[str, str]:
        api = raw["api"]
        if not isinstance(api, str) or api not in self.apis:
            known = ", ".join(sorted(self.apis))
            raise self.fail(f"{path}.api", f"no API has id {api!r} (apis: {known}); use "
                            "the id of an apis[] entry")
        api_cfg = self.apis[api]
        if rest_only and api_cfg.type == "HTTP":
            raise self.fail(f"{path}.api", f"API {api!r} is an HTTP API; usage plans and "
                            "API keys apply to REST and WebSocket APIs only (as on AWS)")
        stage = raw["stage"]
        stages = [s.name for s in api_cfg.stages]
        if not isinstance(stage, str) or stage not in stages:
            raise self.fail(f"{path}.stage", f"API {api!r} has no stage {stage!r} (stages: "
                            f"{', '.join(stages)})")
        return api, stage

    def read(self, raw: Mapping[str, Any]) -> AccessSettings:
        self.mapping(raw, "", ("api_keys", "usage_plans", "stage_throttles",
                               "account_throttle", "store"))
        store = self.store(raw.get("store", "memory"))
        account = ACCOUNT_DEFAULT
        if "account_throttle" in raw:
            account = self.throttle(raw["account_throttle"], "account_throttle", None)
        keys, by_digest = self.api_keys(raw.get("api_keys"))
        plans, plan_for = self.usage_plans(raw.get("usage_plans"), keys, account)
        stage_throttles = self.stage_throttles(raw.get("stage_throttles"), account)
        return AccessSettings(keys=keys, keys_by_digest=by_digest, plans=plans,
                              plan_for=plan_for, stage_throttles=stage_throttles,
                              account=account, store=store)

    def store(self, value: Any) -> str | RedisSettings:
        if value == "memory":
            return "memory"
        if not isinstance(value, Mapping):
            raise self.fail("store", f"{value!r} is not a store; use 'memory' or "
                            "{url: \"redis://host:6379/0\", failure: open|closed}")
        raw = self.mapping(value, "store", ("url", "failure", "timeout_ms", "prefix",
                                            "max_pending"), required=("url",))
        url = raw["url"]
        try:
            if not isinstance(url, str):
                raise ValueError("expected a string")
            parse_url(url)
        except ValueError as e:
            raise self.fail("store.url", f"{e}; write "
                            "redis://[[user]:password@]host:port/db, e.g. "
                            "redis://127.0.0.1:6379/0") from None
        failure = raw.get("failure", "open")
        if failure not in ("open", "closed"):
            raise self.fail("store.failure", f"{failure!r}: use 'open' (allow requests "
                            "while Redis is unreachable) or 'closed' (refuse them)")
        timeout_ms = self.integer(raw.get("timeout_ms", 50), "store.timeout_ms", 1, 60000)
        max_pending = self.integer(raw.get("max_pending", 1000), "store.max_pending", 1)
        prefix = raw.get("prefix", "twistgw:access:")
        if not isinstance(prefix, str) or not prefix:
            raise self.fail("store.prefix", "expected a non-empty string")
        return RedisSettings(url=url, failure=failure, timeout_ms=timeout_ms, prefix=prefix,
                             max_pending=max_pending)

    def api_keys(self, value: Any) -> tuple[dict[str, ApiKey], dict[bytes, ApiKey]]:
        keys: dict[str, ApiKey] = {}
        by_digest: dict[bytes, ApiKey] = {}
        for i, raw in enumerate(self.seq(value, "api_keys")):
            path = f"api_keys[{i}]"
            raw = self.mapping(raw, path, ("id", "value", "enabled"),
                               required=("id", "value"))
            key_id = self.ident(raw["id"], f"{path}.id", "API key")
            if key_id in keys:
                raise self.fail(f"{path}.id", f"a second API key with id {key_id!r}")
            value_text = raw["value"]
            if not isinstance(value_text, str):
                raise self.fail(f"{path}.value", "expected a string; write the key as "
                                "{\"$env\": NAME} or {\"$file\": path} to keep it out of "
                                "the config")
            if not _KEY_VALUE_RE.match(value_text):
                # Never echo the value: it is a secret (and maybe a mistyped one).
                if len(value_text) < 20:
                    problem = "API Key value should be at least 20 characters"
                elif len(value_text) > 128:
                    problem = "API Key value exceeds maximum size of 128 characters"
                else:
                    problem = "API key values use printable ASCII without spaces"
                raise self.fail(f"{path}.value", f"{problem} (AWS's rule: 20 to 128 "
                                "printable characters); generate a longer random key, e.g. "
                                "with `openssl rand -hex 20`")
            enabled = raw.get("enabled", True)
            if not isinstance(enabled, bool):
                raise self.fail(f"{path}.enabled", "expected true or false")
            digest = key_digest(value_text)
            if digest in by_digest:
                raise self.fail(f"{path}.value", f"the same value as API key "
                                f"{by_digest[digest].id!r}; key values must be unique")
            key = ApiKey(id=key_id, digest=digest, enabled=enabled)
            keys[key_id] = key
            by_digest[digest] = key
        return keys, by_digest

    def usage_plans(self, value: Any, keys: Mapping[str, ApiKey], account: Throttle
                    ) -> tuple[dict[str, UsagePlan],
                               dict[tuple[str, str, str], tuple[UsagePlan, PlanStage]]]:
        plans: dict[str, UsagePlan] = {}
        plan_for: dict[tuple[str, str, str], tuple[UsagePlan, PlanStage]] = {}
        for i, raw in enumerate(self.seq(value, "usage_plans")):
            path = f"usage_plans[{i}]"
            raw = self.mapping(raw, path, ("id", "apis", "throttle", "quota", "keys"),
                               required=("id", "apis"))
            plan_id = self.ident(raw["id"], f"{path}.id", "usage plan")
            if plan_id in plans:
                raise self.fail(f"{path}.id", f"a second usage plan with id {plan_id!r}")
            stages: list[PlanStage] = []
            seen: set[tuple[str, str]] = set()
            for j, s in enumerate(self.seq(raw["apis"], f"{path}.apis")):
                spath = f"{path}.apis[{j}]"
                s = self.mapping(s, spath, ("api", "stage", "method_throttles"),
                                 required=("api", "stage"))
                api, stage = self.api_stage(s, spath, rest_only=True)
                if (api, stage) in seen:
                    raise self.fail(spath, f"stage {api}/{stage} is listed twice in this "
                                    "plan")
                seen.add((api, stage))
                stages.append(PlanStage(api=api, stage=stage, method_throttles=(
                    self.method_throttles(s.get("method_throttles"),
                                          f"{spath}.method_throttles", account))))
            throttle = self.throttle(raw["throttle"], f"{path}.throttle", account) \
                if raw.get("throttle") is not None else None
            quota = self.quota(raw["quota"], f"{path}.quota") \
                if raw.get("quota") is not None else None
            plan_keys: list[str] = []
            for j, key_id in enumerate(self.seq(raw.get("keys"), f"{path}.keys")):
                kpath = f"{path}.keys[{j}]"
                if not isinstance(key_id, str) or key_id not in keys:
                    known = ", ".join(sorted(keys)) or "none"
                    raise self.fail(kpath, f"no API key has id {key_id!r} (declared: "
                                    f"{known}); declare it under {PREFIX}.api_keys or fix "
                                    "the id")
                if key_id in plan_keys:
                    raise self.fail(kpath, f"API key {key_id!r} is listed twice")
                plan_keys.append(key_id)
            plan = UsagePlan(id=plan_id, stages=tuple(stages), throttle=throttle,
                             quota=quota, keys=tuple(plan_keys))
            for key_id in plan_keys:
                for stage_entry in stages:
                    index = (key_id, stage_entry.api, stage_entry.stage)
                    other = plan_for.get(index)
                    if other is not None:
                        raise self.fail(f"{path}.keys", f"API key {key_id!r} is already in "
                                        f"usage plan {other[0].id!r} for stage "
                                        f"{stage_entry.api}/{stage_entry.stage}; a key may be "
                                        "in one plan per stage (as on AWS)")
                    plan_for[index] = (plan, stage_entry)
            plans[plan_id] = plan
        return plans, plan_for

    def quota(self, value: Any, path: str) -> Quota:
        raw = self.mapping(value, path, ("limit", "period", "offset"),
                           required=("limit", "period"))
        limit = self.integer(raw["limit"], f"{path}.limit", 0)
        period = raw["period"]
        if period not in PERIODS:
            raise self.fail(f"{path}.period", f"{period!r} is not a quota period; use "
                            + ", ".join(PERIODS))
        high = MAX_OFFSET[period]
        offset = raw.get("offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= high:
            hint = {"DAY": "a DAY quota starts at midnight UTC: use 0",
                    "WEEK": "the weekday the week starts on: 0 = Sunday ... 6 = Saturday",
                    "MONTH": "days after the 1st the month starts on: 0 to 27"}[period]
            raise self.fail(f"{path}.offset", f"{offset!r} is not a valid {period} offset; "
                            + hint)
        return Quota(limit=limit, period=period, offset=offset)

    def stage_throttles(self, value: Any, account: Throttle
                        ) -> dict[tuple[str, str], StageThrottle]:
        out: dict[tuple[str, str], StageThrottle] = {}
        for i, raw in enumerate(self.seq(value, "stage_throttles")):
            path = f"stage_throttles[{i}]"
            raw = self.mapping(raw, path, ("api", "stage", "rate", "burst", "methods"),
                               required=("api", "stage"))
            api, stage = self.api_stage(raw, path, rest_only=False)
            if (api, stage) in out:
                raise self.fail(path, f"a second entry for stage {api}/{stage}; merge them")
            throttle = None
            if "rate" in raw or "burst" in raw:
                limits = {k: raw[k] for k in ("rate", "burst") if k in raw}
                throttle = self.throttle(limits, path, account)
            methods = self.method_throttles(raw.get("methods"), f"{path}.methods", account)
            out[(api, stage)] = StageThrottle(api=api, stage=stage, throttle=throttle,
                                              methods=methods)
        return out


def parse_settings(config: GatewayConfig) -> AccessSettings:
    """Check ``plugins.settings.access`` of ``config``.

    :raises ConfigError: naming ``plugins.settings.access.<path>`` and the fix.
    """
    settings = _Reader(config).read(config.plugin_settings("access"))
    _check_definitions(config, settings)
    return settings


def _method_key_sites(settings: AccessSettings) -> list[tuple[str, str, str]]:
    """``(api, method key, settings path)`` of every configured method throttle."""
    sites: list[tuple[str, str, str]] = []
    for i, plan in enumerate(settings.plans.values()):
        for j, stage in enumerate(plan.stages):
            sites += [(stage.api, key, f"usage_plans[{i}].apis[{j}].method_throttles.{key}")
                      for key in stage.method_throttles]
    for i, st in enumerate(settings.stage_throttles.values()):
        sites += [(st.api, key, f"stage_throttles[{i}].methods.{key}") for key in st.methods]
    return sites


def _check_definitions(config: GatewayConfig, settings: AccessSettings) -> None:
    """Refuse what would silently never work: a method throttle that names no operation,
    and an API key on an HTTP API route (AWS has keys for REST APIs only; the route could
    only answer 401).

    The deployment is built after ``configure``, so the definitions concerned (APIs with
    method throttles, HTTP APIs) are read here; a definition's own errors are left for the
    core to report, with its file and path.  Under ``strict: false`` nothing is refused.
    """
    sites = _method_key_sites(settings)
    http_apis = [a for a in config.apis if a.type == "HTTP"]
    if not config.strict or not (sites or http_apis):
        return
    from twistgw.definition import ApiDefinition, load_definition

    apis = {a.id: a for a in config.apis}
    loaded: dict[str, ApiDefinition | None] = {}

    def definition_of(api_id: str) -> ApiDefinition | None:
        if api_id not in loaded:
            api_cfg = apis[api_id]
            try:
                loaded[api_id] = load_definition(api_cfg.definition,
                                                 api_cfg.definition_display, strict=False,
                                                 warnings=[])
            except ConfigError:
                loaded[api_id] = None
        return loaded[api_id]

    for api_cfg in http_apis:
        definition = definition_of(api_cfg.id)
        if definition is None:
            continue
        for op in definition.operations:
            for req in op.security:
                if definition.security_schemes[req.scheme].kind == "api_key":
                    file, _, where = op.where.rpartition(": ")
                    raise ConfigError(file or definition.source, f"{where}.security",
                                      f"API keys (scheme {req.scheme!r}) apply to REST APIs "
                                      "only, as on AWS; remove the scheme from this route or "
                                      f"serve API {api_cfg.id!r} as type REST")
    for api_id, key, path in sites:
        definition = definition_of(api_id)
        if definition is None:
            continue
        keys = {f"{op.path}/{op.method}" for op in definition.operations}
        if key in keys:
            continue
        resource = key.rpartition("/")[0] or "/"
        same_path = sorted(k for k in keys if k.rpartition("/")[0] == resource)
        hint = (f"the operations on {resource} are: {', '.join(same_path)}" if same_path
                else f"API {api_id!r} has no resource {resource}")
        raise ConfigError(config.source, f"{PREFIX}.{path}",
                          f"names no operation of API {api_id!r}, so it would never apply; "
                          f"{hint}")
