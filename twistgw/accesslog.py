"""Access log: one line per request in API Gateway's ``$context`` format syntax.

A core plugin (its ``request_finished`` implementation cannot be disabled, but the config
can turn the log off with ``access_log: false``).  Formats use the variables of
aws-apigw-spec.md §6.9 and are compiled once per deployment; unset values print as ``-``
as on AWS.  Presets ``clf``, ``json`` and ``http-clf`` expand to AWS's documented examples.
Lines go to the gateway's own log (namespace ``twistgw.access``, so twistd's ``--logfile``
and ``--logger`` options apply) or to a file named in the config.

Through the gateway's log, a line is one event of a
:class:`~twistgw.redaction.RedactedLineLogger`: the redaction observer passes it
without a second scan, and :func:`speed_up_observers` lets twistd's text observers
(``-n``, ``--logfile``) and the JSON observer format it directly (the same text) and
write the lines of up to 0.1 s together.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from threading import get_ident
from typing import IO, TYPE_CHECKING, Any

from twisted.logger import FileLogObserver, LogLevel, globalLogPublisher

from .hookspecs import hookimpl
from .redaction import LINE_FORMAT, RedactedLineLogger, access_log_getter, redacted_line
from .variables import Finish, Getter, getter_for

if TYPE_CHECKING:
    from .config import AccessLogConfig
    from .models import Context, Response
    from .pipeline import Outcome

__all__ = ["AccessLog", "compile_format", "request_finished", "speed_up_observers"]

log = RedactedLineLogger(namespace="twistgw.access")

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
            if not _sped_up:
                speed_up_observers()
            log.line(line)
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


# -- twistd's observers ------------------------------------------------------------------

_sped_up = False
_PROBE = "twistgw-access-probe"
#: Published to one observer to make it write the lines its formatter holds.
_FLUSH: dict[str, Any] = {"log_format": "", "twistgw_flush": True}


class _ClassicText:
    """Access lines as twistd's text observers (``-n``, ``--logfile``) write them,
    ``<time> [twistgw.access#info] <line>``, without Twisted's generic formatting.

    The prefix (time to the second, ``[namespace#level]``) comes from the observer's own
    formatter, asked once per second with a probe event; a line the classic format would
    change (empty, multi-line) or a time it would round up is left to that formatter.
    """

    def __init__(self, original: Callable[[dict[str, Any]], str | None]) -> None:
        self.original = original
        self._key: tuple[int, str] | None = None
        self._prefix = ""

    def prefix(self, second: int, namespace: str) -> str | None:
        """The text in front of a line logged at ``second``, or None if the formatter
        does not write ``<prefix><line>\n`` the same for a whole second."""
        texts = {self.original({"line": _PROBE, "log_logger": log, "log_level": LogLevel.info,
                                "log_namespace": namespace, "log_source": None,
                                "log_format": LINE_FORMAT, "log_time": second + frac})
                 for frac in (0.0, 0.999999)}
        text = texts.pop() if len(texts) == 1 else None
        if not isinstance(text, str) or not text.endswith(_PROBE + "\n"):
            return None
        return text[:-len(_PROBE) - 1]

    def __call__(self, event: dict[str, Any], line: str) -> str | None:
        if "\n" in line or not line or line.isspace():
            return None
        when = event["log_time"]
        second = int(when)
        if when - second > 0.999999:  # rounds up to the next second in Twisted's format
            return None
        key = (second, event["log_namespace"])
        if key != self._key:
            prefix = self.prefix(*key)
            if prefix is None:
                return None
            self._key, self._prefix = key, prefix
        return f"{self._prefix}{line}\n"


class _Lines:
    """A file observer's ``formatEvent`` for access lines: each formatted by ``fast``
    (same text as ``original`` would give) and, while the reactor runs, written together
    after at most :data:`FLUSH_SECONDS` instead of one write and flush each.

    At most :data:`FLUSH_BYTES` wait; any other event of the reactor's thread writes them
    first (the order stays), and so does reactor shutdown.  Events of other threads are
    written at once, as before.  A timer rather than the end of each reactor turn: a
    ``callLater(0)`` per turn cost more than the write it saved when a turn serves one
    request (bench/RESULTS.md).
    """

    FLUSH_BYTES = 65536
    FLUSH_SECONDS = 0.1

    def __init__(self, observer: FileLogObserver,
                 fast: Callable[[dict[str, Any], str], str | None],
                 reactor: Any = None) -> None:
        self.observer = observer
        self.original: Callable[[dict[str, Any]], str | None] = observer.formatEvent
        self.fast = fast
        self._held: list[str] = []
        self._size = 0
        self._thread = get_ident()
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._flush_call: Any = None
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def flush(self) -> None:
        """Write the lines held now (timer, shutdown)."""
        self._flush_call = None
        if self._held:
            self.observer(_FLUSH)

    def _take(self) -> str:
        held, self._held, self._size = self._held, [], 0
        return "".join(held)

    def __call__(self, event: dict[str, Any]) -> str | None:
        line = redacted_line(event)
        text = None if line is None else self.fast(event, line)
        if get_ident() != self._thread:  # only the reactor's thread touches what is held
            return self.original(event) if text is None else text
        if text is None:
            if event is _FLUSH:
                return self._take()
            text = self.original(event)
            return self._take() + (text or "") if self._held else text
        if not self._reactor.running:
            return self._take() + text if self._held else text
        self._held.append(text)
        self._size += len(text)
        if self._size >= self.FLUSH_BYTES:
            return self._take()
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(self.FLUSH_SECONDS, self.flush)
        return None


def speed_up_observers(publisher: Any = globalLogPublisher, reactor: Any = None) -> int:
    """Give twistd's file observers of ``publisher`` the access lines' fast path.

    Text observers whose formatter writes ``<time> [system] <line>`` with a time to the
    second (twistd's ``-n`` and ``--logfile``) and the JSON observer
    (:func:`twistgw.jsonlog.format_json`) are changed; others are left alone.  Called on
    the first line logged through the gateway's log, once twistd installed its observer.
    Returns how many were changed; idempotent.
    """
    from .jsonlog import format_json, line_json

    global _sped_up
    _sped_up = True
    changed = 0
    for observer in list(getattr(publisher, "_observers", ())):
        if not isinstance(observer, FileLogObserver) or isinstance(observer.formatEvent, _Lines):
            continue
        fast: Callable[[dict[str, Any], str], str | None]
        if observer.formatEvent is format_json:
            fast = line_json
        else:
            fast = text = _ClassicText(observer.formatEvent)
            try:
                if text.prefix(int(time.time()), log.namespace) is None:
                    continue
            except Exception:
                continue
        observer.formatEvent = _Lines(observer, fast, reactor)
        changed += 1
    return changed
