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

__all__ = ["FunctionConfig", "parse_functions", "RUNTIMES", "DEFAULT_TIMEOUT",
           "DEFAULT_MEMORY", "DEFAULT_MAX_WORKERS", "DEFAULT_IDLE_TIMEOUT"]

#: Runtimes this plugin runs today; ``remote:`` is later work (issue #3).
RUNTIMES = ("python", "command")
DEFAULT_TIMEOUT = 3  # seconds, Lambda's default
DEFAULT_MEMORY = 128  # MB, Lambda's default
DEFAULT_MAX_WORKERS = 4
DEFAULT_IDLE_TIMEOUT = 300  # seconds an extra worker may sit idle before it is stopped

_KEYS = ("handler", "code", "runtime", "command", "timeout", "memory", "environment",
         "min_workers", "max_workers", "idle_timeout", "description")
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


def _int(spec: Mapping[str, Any], key: str, default: int, low: int, high: int,
         fail: Any, fix: str) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            int(value) != value or not low <= value <= high:
        raise fail(key, f"{value!r} is not a whole number in {low}..{high}; {fix}")
    return int(value)


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
    runtime = spec.get("runtime", "python")
    if runtime not in RUNTIMES:
        raise fail("runtime", f"{runtime!r} is not supported yet; use 'python' or 'command' "
                              "(remote: is planned)")
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
    max_workers = _int(spec, "max_workers", max(DEFAULT_MAX_WORKERS, min_workers), 1, 256,
                       fail, "give the most concurrent workers (the function's concurrency)")
    if max_workers < min_workers:
        raise fail("max_workers", f"{max_workers} is below min_workers ({min_workers}); "
                                  "raise max_workers or lower min_workers")
    idle_timeout = _int(spec, "idle_timeout", DEFAULT_IDLE_TIMEOUT, 0, 86400, fail,
                        "give the seconds an extra worker may stay idle (0: never stop it)")
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
                          idle_timeout=float(idle_timeout), command=command)


def parse_functions(functions: Mapping[str, Mapping[str, Any]], source: str, base_dir: Path
                    ) -> dict[str, FunctionConfig]:
    """Check every function of a gateway config; raises :class:`ConfigError`."""
    return {name: parse_function(name, spec, source, base_dir)
            for name, spec in functions.items()}
