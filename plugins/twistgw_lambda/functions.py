"""The ``functions:`` section of the gateway config, checked into :class:`FunctionConfig`.

The core keeps each function as a raw mapping (it does not know what a function is); this
module is where the keys get their meaning, so every refusal names ``functions.<name>.<key>``
and says what to write instead.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from twistgw import ConfigError

from .sigv4 import Credentials

__all__ = ["FunctionConfig", "RemoteConfig", "parse_functions", "RUNTIMES", "DEFAULT_TIMEOUT",
           "DEFAULT_MEMORY", "DEFAULT_MAX_WORKERS", "DEFAULT_IDLE_TIMEOUT",
           "DEFAULT_ASYNC_QUEUE"]

#: Runtimes this plugin runs in local workers (``remote:`` functions run elsewhere).
RUNTIMES = ("python", "command")
DEFAULT_TIMEOUT = 3  # seconds, Lambda's default
DEFAULT_MEMORY = 128  # MB, Lambda's default
DEFAULT_MAX_WORKERS = 4
DEFAULT_IDLE_TIMEOUT = 300  # seconds an extra worker may sit idle before it is stopped
#: Asynchronous (``X-Amz-Invocation-Type: Event``) invocations a function may hold queued.
DEFAULT_ASYNC_QUEUE = 1000

_KEYS = ("handler", "code", "runtime", "command", "timeout", "memory", "environment",
         "min_workers", "max_workers", "idle_timeout", "description", "remote",
         "reserved_concurrency", "async_queue", "cpus")
#: The keys a ``remote:`` function may have besides ``remote`` itself.
_REMOTE_FUNCTION_KEYS = ("remote", "description")
_REMOTE_KEYS = ("endpoint", "region", "function", "qualifier", "log_type", "credentials",
                "profile", "connect_timeout")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
DEFAULT_CONNECT_TIMEOUT = 5.0
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HANDLER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: Variables Lambda reserves; a function may not set them (Lambda refuses them too).
RESERVED_ENV = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
})


@attrs.frozen
class RemoteConfig:
    """A checked ``functions.<name>.remote`` mapping (the Lambda Invoke API)."""

    endpoint: str
    region: str
    #: The function name, ARN or partial ARN sent in the Invoke path.
    function: str
    qualifier: str | None = None
    #: ``X-Amz-Log-Type``: ``None`` or ``Tail`` (the last 4 KB of logs are logged).
    log_type: str = "None"
    #: From config secrets; ``None`` resolves from the environment or the shared file.
    credentials: Credentials | None = None
    profile: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT


@attrs.frozen
class FunctionConfig:
    """One checked ``functions.<name>`` entry.

    :ivar code: the folder holding the handler's module (becomes ``LAMBDA_TASK_ROOT``
        and the worker's working directory, as ``/var/task`` is on Lambda).
    :ivar timeout: the function's own timeout in seconds (Lambda: 1..900, default 3).
    :ivar command: for ``runtime: command``, the program and arguments of a Runtime API
        client (a custom runtime's ``bootstrap``, ``python -m awslambdaric app.handler``),
        the program resolved to an absolute path; ``None`` runs the shipped worker.
    """

    name: str
    handler: str
    code: Path
    runtime: str = "python"
    timeout: float = DEFAULT_TIMEOUT
    memory: int = DEFAULT_MEMORY
    environment: Mapping[str, str] = attrs.field(factory=dict)
    min_workers: int = 0
    max_workers: int = DEFAULT_MAX_WORKERS
    #: Workers beyond ``min_workers`` idle this long are stopped (0: never).
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    command: tuple[str, ...] | None = None
    #: Lambda's reserved concurrency: invocations running or waiting for a worker beyond
    #: this are throttled at once (0 throttles every invoke); ``None``: no reservation.
    reserved_concurrency: int | None = None
    #: Asynchronous invocations held until a worker is free; beyond it they are throttled.
    async_queue: int = DEFAULT_ASYNC_QUEUE
    #: Set for ``remote:`` functions: invoked through the Invoke API, no workers.
    remote: RemoteConfig | None = None
    #: The CPUs the function's workers may run on (Linux CPU affinity); ``None``: where
    #: the system puts them (the gateway's own affinity, inherited).
    cpus: tuple[int, ...] | None = None


def _int(spec: Mapping[str, Any], key: str, default: int, low: int, high: int,
         fail: Any, fix: str) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            int(value) != value or not low <= value <= high:
        raise fail(key, f"{value!r} is not a whole number in {low}..{high}; {fix}")
    return int(value)


def _cpus(value: Any, fail: Any) -> tuple[int, ...]:
    """Check ``cpus``: CPU numbers this machine has, each once."""
    if not hasattr(os, "sched_setaffinity"):
        raise fail("cpus", "CPU affinity is not available on this platform (Linux only); "
                           "remove cpus")
    count = os.cpu_count() or 1
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < count
            for v in value):
        raise fail("cpus", f"{value!r} is not a list of CPU numbers; give the CPUs the "
                           f"workers may run on, each in 0..{count - 1}, e.g. [1] to keep "
                           "them off a gateway pinned to CPU 0")
    if len(set(value)) != len(value):
        raise fail("cpus", f"{value!r} names a CPU twice; list each CPU once")
    return tuple(sorted(value))


def _command(value: Any, code: Path, fail: Any) -> tuple[str, ...]:
    """Check ``command`` and resolve its program: ``python`` means the gateway's own
    interpreter (its packages, e.g. awslambdaric, are there); a relative path is looked up
    in ``code`` (a custom runtime's ``./bootstrap``), a bare name on ``PATH``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or \
            not all(isinstance(v, str) and v for v in value):
        raise fail("command", "give the program and its arguments as a list of strings, "
                              "e.g. [./bootstrap] or [python, -m, awslambdaric, app.handler]")
    program = value[0]
    if program in ("python", "python3"):
        resolved: str | None = sys.executable
    elif os.path.isabs(program):
        resolved = program
    elif "/" in program or (code / program).is_file():
        resolved = str((code / program).resolve())
    else:
        resolved = shutil.which(program)
    if resolved is None or not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
        raise fail("command", f"{program!r} is not an executable file (looked in {code} and "
                              "on PATH); fix the path or make it executable")
    return (resolved, *value[1:])


def parse_function(name: str, spec: Mapping[str, Any], source: str, base_dir: Path
                   ) -> FunctionConfig:
    """Check one ``functions.<name>`` mapping."""

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(source, f"functions.{name}.{key}" if key else f"functions.{name}",
                           problem)

    if not _NAME_RE.match(name):
        raise fail("", "a function name is 1-64 letters, digits, '-' or '_' (the name in "
                       "the function ARN); rename it")
    for key in spec:
        if key not in _KEYS:
            raise fail(str(key), f"unknown key; use one of {', '.join(_KEYS)}")
    if "remote" in spec:
        for key in spec:
            if key not in _REMOTE_FUNCTION_KEYS:
                raise fail(str(key), "a remote: function runs elsewhere; remove this key "
                                     "(the function's settings live where it runs)")
        return FunctionConfig(name=name, handler="", code=base_dir, runtime="remote",
                              remote=_remote(name, spec["remote"], fail))
    runtime = spec.get("runtime", "python")
    if runtime not in RUNTIMES:
        raise fail("runtime", f"{runtime!r} is not supported; use 'python' or 'command', "
                              "or remote: for a function behind the Lambda Invoke API")
    handler = spec.get("handler")
    if runtime == "python" or handler is not None:
        if not isinstance(handler, str) or not _HANDLER_RE.match(handler):
            raise fail("handler", f"{handler!r} is not a handler; write 'module.function' "
                                  "(e.g. app.handler for def handler in app.py)")
    code_raw = spec.get("code", ".")
    if not isinstance(code_raw, str) or not code_raw:
        raise fail("code", "give the folder holding the handler module, relative to the "
                           "gateway config")
    code = (base_dir / code_raw).resolve()
    if not code.is_dir():
        raise fail("code", f"{code_raw!r} ({code}) is not a folder; point it at the folder "
                           "holding the handler module")
    command: tuple[str, ...] | None = None
    if runtime == "command":
        command = _command(spec.get("command"), code, fail)
    elif "command" in spec:
        raise fail("command", "only runtime: command runs a command; set runtime: command "
                              "or remove it")
    timeout = _int(spec, "timeout", DEFAULT_TIMEOUT, 1, 900, fail,
                   "give the function's timeout in seconds (Lambda allows 1..900)")
    memory = _int(spec, "memory", DEFAULT_MEMORY, 128, 10240, fail,
                  "give the memory size in MB (Lambda allows 128..10240)")
    min_workers = _int(spec, "min_workers", 0, 0, 256, fail,
                       "give how many warm workers to keep (0 starts them on demand)")
    reserved: int | None = None
    if "reserved_concurrency" in spec:
        reserved = _int(spec, "reserved_concurrency", 0, 0, 256, fail,
                        "give the function's reserved concurrency (0 throttles every "
                        "invoke; leave it out for no reservation)")
    default_max = max(DEFAULT_MAX_WORKERS, min_workers) if reserved is None else \
        max(reserved, min_workers, 1)
    max_workers = _int(spec, "max_workers", default_max, 1, 256,
                       fail, "give the most concurrent workers (the function's concurrency)")
    if reserved is not None and reserved < min_workers:
        raise fail("reserved_concurrency", f"{reserved} is below min_workers "
                                           f"({min_workers}); warm workers beyond the "
                                           "reservation would never run; lower min_workers")
    if reserved is not None and max_workers > max(reserved, 1):
        raise fail("max_workers", f"{max_workers} is above reserved_concurrency "
                                  f"({reserved}), so the extra workers would never run; "
                                  "lower max_workers or leave it out")
    async_queue = _int(spec, "async_queue", DEFAULT_ASYNC_QUEUE, 0, 100000, fail,
                       "give how many asynchronous (Event) invocations may wait for a "
                       "worker (0 refuses them)")
    if max_workers < min_workers:
        raise fail("max_workers", f"{max_workers} is below min_workers ({min_workers}); "
                                  "raise max_workers or lower min_workers")
    idle_timeout = _int(spec, "idle_timeout", DEFAULT_IDLE_TIMEOUT, 0, 86400, fail,
                        "give the seconds an extra worker may stay idle (0: never stop it)")
    cpus = _cpus(spec["cpus"], fail) if "cpus" in spec else None
    env_raw = spec.get("environment") or {}
    if not isinstance(env_raw, Mapping):
        raise fail("environment", "write a mapping of variable names to values")
    environment: dict[str, str] = {}
    for key, value in env_raw.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise fail(f"environment.{key}", "variable names start with a letter and hold "
                                             "letters, digits and '_'")
        if key in RESERVED_ENV:
            raise fail(f"environment.{key}", "this variable is reserved by Lambda and set "
                                             "by the runtime; remove it")
        if isinstance(value, Mapping | list) or value is None:
            raise fail(f"environment.{key}", "values are strings (quote numbers and "
                                             "booleans)")
        environment[key] = ("true" if value else "false") if isinstance(value, bool) \
            else str(value)
    return FunctionConfig(name=name, handler=handler or "", code=code, runtime=str(runtime),
                          timeout=float(timeout), memory=memory, environment=environment,
                          min_workers=min_workers, max_workers=max_workers,
                          idle_timeout=float(idle_timeout), command=command,
                          reserved_concurrency=reserved, async_queue=async_queue,
                          cpus=cpus)


def _remote(name: str, raw: Any, fail: Any) -> RemoteConfig:
    """Check ``functions.<name>.remote``."""
    if not isinstance(raw, Mapping):
        raise fail("remote", "write a mapping: {region: eu-west-1, endpoint: https://..., "
                             "function: name-or-arn, qualifier: alias, credentials: {...}}")
    for key in raw:
        if key not in _REMOTE_KEYS:
            raise fail(f"remote.{key}", f"unknown key; use one of {', '.join(_REMOTE_KEYS)}")

    def text(key: str, default: str | None) -> str | None:
        value = raw.get(key, default)
        if value is not None and (not isinstance(value, str) or not value):
            raise fail(f"remote.{key}", "give a non-empty string")
        return value

    region = text("region", None)
    if region is None or not _REGION_RE.match(region):
        raise fail("remote.region", f"{region!r} is not an AWS region; give the region the "
                                    "function lives in (e.g. eu-west-1), used to sign")
    endpoint = text("endpoint", f"https://lambda.{region}.amazonaws.com")
    assert endpoint is not None
    if not re.match(r"^https?://[^/?#]+/?$", endpoint):
        raise fail("remote.endpoint", f"{endpoint!r} is not an endpoint; write "
                                      "https://host[:port] (no path)")
    function = text("function", name)
    assert function is not None
    qualifier = text("qualifier", None)
    log_type = text("log_type", "None")
    if log_type not in ("None", "Tail"):
        raise fail("remote.log_type", f"{log_type!r}: use None or Tail (Tail logs the "
                                      "invoke's last 4 KB of function logs)")
    profile = text("profile", None)
    credentials: Credentials | None = None
    creds = raw.get("credentials")
    if creds is not None:
        if not isinstance(creds, Mapping):
            raise fail("remote.credentials", "write {access_key_id: {$env: NAME}, "
                                             "secret_access_key: {$env: NAME}, "
                                             "session_token: ...}")
        for key in creds:
            if key not in ("access_key_id", "secret_access_key", "session_token"):
                raise fail(f"remote.credentials.{key}", "unknown key; use access_key_id, "
                                                        "secret_access_key, session_token")
        values: dict[str, str | None] = {}
        for key in ("access_key_id", "secret_access_key", "session_token"):
            value = creds.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise fail(f"remote.credentials.{key}", "give a string (usually a secret, "
                                                        "{$env: NAME} or {$file: path})")
            values[key] = value
        if not values["access_key_id"] or not values["secret_access_key"]:
            raise fail("remote.credentials", "give both access_key_id and "
                                             "secret_access_key")
        credentials = Credentials(str(values["access_key_id"]),
                                  str(values["secret_access_key"]),
                                  values["session_token"], source="config")
    connect_timeout = raw.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int | float) \
            or not 0 < connect_timeout <= 60:
        raise fail("remote.connect_timeout", "give seconds, more than 0 and at most 60")
    return RemoteConfig(endpoint=endpoint.rstrip("/"), region=region, function=function,
                        qualifier=qualifier, log_type=log_type or "None",
                        credentials=credentials, profile=profile,
                        connect_timeout=float(connect_timeout))


def parse_functions(functions: Mapping[str, Mapping[str, Any]], source: str, base_dir: Path
                    ) -> dict[str, FunctionConfig]:
    """Check every function of a gateway config; raises :class:`ConfigError`."""
    return {name: parse_function(name, spec, source, base_dir)
            for name, spec in functions.items()}
