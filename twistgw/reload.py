"""Two-phase reload: what a plugin hands back from ``prepare_reload``, and in-flight counts.

A reload (``SIGHUP``) must switch every request that starts after it to the new
deployment while requests in flight finish on the old one, and a rejected config must
leave nothing behind.  Plugins therefore prepare new state *aside* and return a
:class:`ReloadStep`: the core calls every ``commit`` in the one reactor turn that switches
deployments, every ``abort`` when any part of the reload fails, and every ``retire`` once
the old deployment's last request finished (so a replaced Lambda pool or connection pool
is only stopped when nothing uses it any more).

:class:`Serving` is the deployment requests start on, with the count of those still in
flight; the core retires it when that count reaches zero (bounded by ``shutdown_grace``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["ReloadStep", "Serving"]

_T = TypeVar("_T")


def _nothing() -> None:
    return None


@attrs.frozen
class ReloadStep:
    """A plugin's prepared part of a reload (see the module docstring).

    :ivar commit: called synchronously in the reactor turn the new deployment starts
        serving; must not fail (do everything that can fail while preparing).
    :ivar abort: called when the reload is rejected after this step was prepared; undo
        what preparing started.  May return a Deferred (not awaited by the reload).
    :ivar retire: called once every request that started on the old deployment finished
        (or ``shutdown_grace`` passed, or the gateway stops); release what only the old
        deployment used.  May return a Deferred (awaited on shutdown).
    """

    commit: Callable[[], None] = _nothing
    abort: Callable[[], Any] = _nothing
    retire: Callable[[], Any] = _nothing


class Serving:
    """A deployment together with the number of requests in flight on it.

    The request path reads ``gateway.serving`` once per request, calls :meth:`enter`, and
    :meth:`leave` when the response is written or the client is gone.
    """

    __slots__ = ("_on_idle", "deployment", "inflight")

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.inflight = 0
        self._on_idle: Callable[[], None] | None = None

    def enter(self) -> None:
        """One more request started on this deployment."""
        self.inflight += 1

    def leave(self, passthrough: _T = None) -> _T:  # type: ignore[assignment]
        """One request finished; returns ``passthrough`` so it fits ``addBoth``."""
        self.inflight -= 1
        if self.inflight <= 0 and self._on_idle is not None:
            call, self._on_idle = self._on_idle, None
            call()
        return passthrough

    def when_idle(self, call: Callable[[], None]) -> None:
        """Call ``call`` once nothing is in flight (now if nothing is)."""
        if self.inflight <= 0:
            call()
        else:
            self._on_idle = call
