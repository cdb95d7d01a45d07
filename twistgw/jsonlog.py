"""Structured logs: one JSON object per line, for journald, Loki, Elasticsearch...

Use it as twistd's log observer::

    twistd -n --logger twistgw.jsonlog.observer apigw --config gateway.yaml

Each line holds ``time`` (ISO 8601 UTC), ``level``, ``namespace``, ``message`` (the
event formatted as the text log would show it), ``system`` and every other field of the
event that JSON can carry (others as their ``repr``), ``traceback`` for failures.
Access-log lines logged through the gateway's log carry ``line`` (the same text as
``message``; such an event is written by a short path, its line having been redacted
when it was built).  Events are redacted (:mod:`twistgw.redaction`) before they are
written.  Lines go to standard output (with ``-n``; journald or a container runtime
collects and rotates them); set
``TWISTGW_JSONLOG_PATH`` to append to a file instead, which ``SIGUSR1`` reopens (for
logrotate's ``postrotate``; see docs/deployment.rst).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import FileLogObserver, formatEvent

from .redaction import redact_event, redact_text, redacted_line

__all__ = ["observer", "format_json", "line_json", "PATH_ENV"]

#: A file to append JSON lines to instead of standard output.
PATH_ENV = "TWISTGW_JSONLOG_PATH"

_SKIP = frozenset(("log_format", "log_time", "log_level", "log_namespace", "log_system",
                   "log_logger", "log_source", "log_failure", "log_text", "log_io",
                   "log_flattened", "log_trace", "message", "format", "isError", "time",
                   "system", "printed", "why", "failure"))
_MAX_FIELD = 16384


def _jsonable(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, str) and len(value) > _MAX_FIELD:
            return value[:_MAX_FIELD] + "...[truncated]"
        return value
    if depth < 4 and isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    return _jsonable(repr(value), depth)


def _time(when: float | None) -> str:
    return datetime.fromtimestamp(when or 0, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


_string = json.JSONEncoder(ensure_ascii=False).encode


def line_json(event: dict[str, Any], line: str) -> str:
    """What :func:`format_json` writes for a redacted access line, made directly."""
    text = _string(line)
    field = text if len(line) <= _MAX_FIELD else _string(_jsonable(line))
    return (f'{{"time":"{_time(event["log_time"])}","level":"info","namespace":'
            f'{_string(event["log_namespace"])},"message":{text},"line":{field}}}\n')


def format_json(event: dict[str, Any]) -> str:
    """One event as one JSON line (redacted), ending in a newline."""
    line = redacted_line(event)
    if line is not None:
        return line_json(event, line)
    event = dict(redact_event(dict(event)))
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": _time(event.get("log_time")),
        "level": getattr(level, "name", None) or "info",
        "namespace": event.get("log_namespace"),
        "message": redact_text(formatEvent(event)),
    }
    system = event.get("log_system")
    if system and system != "-":
        out["system"] = system
    failure = event.get("log_failure")
    if failure is not None:
        try:
            out["traceback"] = redact_text(failure.getTraceback())
        except Exception:
            out["traceback"] = repr(failure)
    for key, value in event.items():
        if key in _SKIP or key.startswith("log_") or key in out:
            continue
        out[key] = _jsonable(value)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=repr) + "\n"


class _ReopenableFile:
    """An append-mode file that ``SIGUSR1`` reopens (after logrotate moved it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] = open(path, "a", encoding="utf-8")

    def write(self, text: str) -> None:
        with self._lock:
            self._file.write(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def reopen(self) -> None:
        with self._lock:
            self._file.close()
            self._file = open(self.path, "a", encoding="utf-8")


def observer() -> FileLogObserver:
    """The ``--logger`` factory: JSON lines on stdout, or in ``$TWISTGW_JSONLOG_PATH``."""
    path = os.environ.get(PATH_ENV)
    if not path:
        return FileLogObserver(sys.stdout, format_json)
    out = _ReopenableFile(path)

    def reopen(signum: int, frame: Any) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(out.reopen)  # type: ignore[attr-defined]

    signal.signal(signal.SIGUSR1, reopen)
    return FileLogObserver(out, format_json)  # type: ignore[arg-type]
