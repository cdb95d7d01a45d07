"""Access log: one line per request in API Gateway's ``$context`` format syntax.

A core plugin (its ``request_finished`` implementation cannot be disabled, but the config
can turn the log off with ``access_log: false``).  Formats use the variables of
aws-apigw-spec.md §6.9 and are compiled once per deployment; unset values print as ``-``
as on AWS.  Presets ``clf``, ``json`` and ``http-clf`` expand to AWS's documented examples.
Lines go to the gateway's own log (namespace ``twistgw.access``, so twistd's ``--logfile``
and ``--logger`` options apply) or to a file named in the config.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from twisted.logger import Logger

from .hookspecs import hookimpl
from .redaction import access_log_getter
from .variables import Finish, Getter, getter_for

if TYPE_CHECKING:
    from .config import AccessLogConfig
    from .models import Context, Response
    from .pipeline import Outcome

__all__ = ["AccessLog", "compile_format", "request_finished"]

log = Logger(namespace="twistgw.access")

_VAR_RE = re.compile(r"\$context\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)")


def compile_format(fmt: str) -> tuple[str | Getter, ...]:
    """Split ``fmt`` into literal text and getters; unknown variables render ``-``."""
    pieces: list[str | Getter] = []
    pos = 0
    for m in _VAR_RE.finditer(fmt):
        if m.start() > pos:
            pieces.append(fmt[pos:m.start()])
        name = m.group(1)
        getter = getter_for(name)
        if getter is None:
            # Try the longest known prefix ("$context.status." style trailing dots).
            pieces.append("-")
        else:
            pieces.append(access_log_getter(name, getter))  # no API key or token in logs
        pos = m.end()
    if pos < len(fmt):
        pieces.append(fmt[pos:])
    return tuple(pieces)


def _renderer(pieces: tuple[str | Getter, ...]) -> Callable[[Context, Finish], str]:
    """One function per format: literal text inlined, each getter called once.

    Generated once per deployment; it avoids a Python-level loop per line, which showed
    in profiles of the MOCK route.
    """
    getters = [p for p in pieces if not isinstance(p, str)]
    parts: list[str] = []
    names: dict[str, Any] = {"_dash": _dash, "_str": str}
    gi = 0
    for piece in pieces:
        if isinstance(piece, str):
            parts.append(repr(piece))
        else:
            names[f"_g{gi}"] = getters[gi]
            # A non-empty str (most values) is used as is, without calling _dash.
            parts.append(f"(v if (v := _g{gi}(c, f)).__class__ is _str and v else _dash(v))")
            gi += 1
    body = f"''.join(({', '.join(parts)},))" if parts else "''"
    code = f"def render(c, f):\n    return {body}\n"
    exec(compile(code, "<access-log format>", "exec"), names)
    return names["render"]  # type: ignore[no-any-return]


def _dash(value: object) -> str:
    if value is None or value == "":
        return "-"
    return value if isinstance(value, str) else str(value)


class AccessLog:
    """A compiled access-log format and its destination.

    A file destination is written through a bounded in-memory buffer flushed when it
    holds 64 KiB or after 0.2 s (and on close), so a busy gateway does one write per batch
    instead of one per request; at most 64 KiB of lines can be lost on a crash.
    """

    FLUSH_BYTES = 65536
    FLUSH_SECONDS = 0.2

    def __init__(self, config: AccessLogConfig, clock: Any = None) -> None:
        self.config = config
        self.pieces = compile_format(config.format) if config.format else ()
        self._render = _renderer(self.pieces) if self.pieces else None
        self._file: IO[str] | None = None
        self._buffer: list[str] = []
        self._buffered = 0
        self._clock = clock
        self._flush_call: Any = None

    @property
    def enabled(self) -> bool:
        """False when the config turned the access log off."""
        return bool(self.pieces)

    def render(self, ctx: Context, fin: Finish) -> str:
        """The log line for one request (unset values print as ``-``)."""
        if self._render is None:
            return ""
        return self._render(ctx, fin)

    def write(self, line: str) -> None:
        """Send ``line`` to the configured destination."""
        if self.config.path is None:
            log.info("{line}", line=line)
            return
        self._buffer.append(line)
        self._buffered += len(line) + 1
        if self._buffered >= self.FLUSH_BYTES:
            self.flush()
        elif self._flush_call is None:
            clock = self._clock
            if clock is None:
                from twisted.internet import reactor as clock
            self._flush_call = clock.callLater(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write buffered lines to the file destination now."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        if not self._buffer:
            return
        lines, self._buffer, self._buffered = self._buffer, [], 0
        try:
            if self._file is None:
                assert self.config.path is not None
                self._file = open(self.config.path, "a", encoding="utf-8")
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        except OSError as e:
            log.error("cannot write the access log {path}: {error}; {count} lines lost",
                      path=self.config.path, error=e, count=len(lines))

    def close(self) -> None:
        """Flush and close the file destination, if any (on shutdown and reload)."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


@hookimpl(trylast=True)
def request_finished(ctx: Context, response: Response, outcome: Outcome) -> None:
    """Builtin: write the request's access-log line."""
    access = outcome.access_log
    if access is None or not access.enabled:
        return
    access.write(access.render(ctx, outcome.finish))
