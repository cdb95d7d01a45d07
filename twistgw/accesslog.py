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
from typing import IO, TYPE_CHECKING

from twisted.logger import Logger

from .hookspecs import hookimpl
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
            pieces.append(getter)
        pos = m.end()
    if pos < len(fmt):
        pieces.append(fmt[pos:])
    return tuple(pieces)


class AccessLog:
    """A compiled access-log format and its destination."""

    def __init__(self, config: AccessLogConfig) -> None:
        self.config = config
        self.pieces = compile_format(config.format) if config.format else ()
        self._file: IO[str] | None = None

    @property
    def enabled(self) -> bool:
        """False when the config turned the access log off."""
        return bool(self.pieces)

    def render(self, ctx: Context, fin: Finish) -> str:
        """The log line for one request."""
        out: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
            else:
                value = piece(ctx, fin)
                out.append("-" if value is None or value == "" else str(value))
        return "".join(out)

    def write(self, line: str) -> None:
        """Send ``line`` to the configured destination."""
        if self.config.path is None:
            log.info("{line}", line=line)
            return
        if self._file is None:
            self._file = open(self.config.path, "a", encoding="utf-8", buffering=1)
        self._file.write(line + "\n")

    def close(self) -> None:
        """Close the file destination, if any (on shutdown and reload)."""
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
