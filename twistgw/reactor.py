"""The reactor ``twistd apigw`` installs when the operator chose none: Twisted's epoll
reactor with a leaner per-event dispatch.

Twisted's epoll reactor hands every read or write event to
``twisted.python.log.callWithLogger(selectable, ...)``: ask the selectable's
``logPrefix()``, copy the current log context, add ``{"system": prefix}`` and push it
through ``context.call`` for the duration of the event.  That is ten Python calls, about
16 k instructions under callgrind, for every event: once per MOCK request, twice per
proxied request or Lambda invoke (the client's read and the backend's or the worker's).
Only the legacy log (``twisted.python.log.msg``/``err``) reads that context; the
gateway's own lines go through ``twisted.logger`` and name their namespace.

:class:`GatewayReactor` keeps the same semantics with the same objects and fewer calls:
per event it asks ``logPrefix()`` (a buggy one is logged and replaced, as Twisted
does), pushes ``{ILogContext: {...current, "system": prefix}}`` onto the thread's
:class:`~twisted.python.context.ContextTracker` ``contexts`` stack (its documented
state, what ``callWithContext`` pushes), runs the reactor's own ``_doReadOrWrite``
(which disconnects a selectable whose ``doRead``/``doWrite`` raised, and logs it), and
pops the context; anything that still escapes is logged with the prefix, as
``callWithLogger`` does.  If the context tracker is not Twisted's (someone called
``installContextTracker``), events go through ``callWithLogger`` as before.

It also runs what asked to happen once a poll's events are all handled
(:attr:`GatewayReactor.after_dispatch`, registered while :attr:`~GatewayReactor.dispatching`):
``twistgw.netio`` sends the turn's writes there instead of through a ``callLater(0)``,
whose DelayedCall, timer-heap operations (a Python ``__lt__`` per comparison) and
``timeout()`` pass cost about 24 k instructions per turn: a Lambda invoke under load
takes a turn of its own, a MOCK request shares one with several others
(bench/RESULTS.md).  Those calls run before the reactor runs its timers or polls again,
as the ``callLater(0)`` did.

``twistd -r REACTOR apigw`` (any explicit choice) keeps the chosen reactor; so does an
embedder who installed one before building the gateway.  Not on Linux (no epoll):
nothing is installed.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import context, log
from twisted.python.log import ILogContext

__all__ = ["GatewayReactor", "install", "install_if_unchosen"]


class GatewayReactor(EPollReactor):
    """:class:`EPollReactor` with a leaner per-event dispatch (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        #: The context tracker and its stack for this reactor's thread, read once.
        self._tracker: Any = None
        self._contexts: list[dict[Any, Any]] = []
        #: True while :meth:`doPoll` hands a poll's events to their selectables.
        self.dispatching = False
        #: Callables to run once each, in order, when the current poll's events are all
        #: handled; append only while :attr:`dispatching` (else nothing would run them).
        self.after_dispatch: list[Callable[[], object]] = []

    def doPoll(self, timeout: float | None) -> None:
        """Poll for events and dispatch each (``EPollReactor.doPoll``'s contract)."""
        if timeout is None:
            timeout = -1  # wait indefinitely
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        if not events:
            return
        tracker = context.theContextTracker
        if tracker is not self._tracker:  # first poll, or another tracker installed
            if type(tracker) is not context.ThreadedContextTracker:
                self._dispatch_logged(events)
                return
            self._tracker = tracker
            # The reactor's thread's stack: doPoll only ever runs in that thread.
            self._contexts = tracker.currentContext().contexts
        contexts = self._contexts
        base = contexts[-1].get(ILogContext)
        if base is None:  # not in the innermost context: look further out
            base = tracker.getContext(ILogContext) or {}
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        self.dispatching = True
        try:
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                try:
                    prefix = selectable.logPrefix()
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    prefix = "(buggy logPrefix method)"
                    log.err(system=prefix)
                log_context = base.copy()
                log_context["system"] = prefix
                contexts.append({ILogContext: log_context})
                try:
                    dispatch(selectable, fd, event)
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    log.err(system=prefix)
                finally:
                    contexts.pop()
        finally:
            self.dispatching = False
            if self.after_dispatch:
                self._run_after_dispatch()

    def _run_after_dispatch(self) -> None:
        """Run (and forget) :attr:`after_dispatch`; one that raises is logged and the
        others still run."""
        calls, self.after_dispatch = self.after_dispatch, []
        for call in calls:
            try:
                call()
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(_why="after_dispatch call failed")

    doIteration = doPoll

    def _dispatch_logged(self, events: list[tuple[int, int]]) -> None:
        """Twisted's own dispatch, for a context tracker this module does not know."""
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = self._selectables.get(fd)
            if selectable is not None:
                log.callWithLogger(selectable, dispatch, selectable, fd, event)


def install() -> GatewayReactor:
    """Install a :class:`GatewayReactor` as the global reactor."""
    from twisted.internet.main import installReactor

    reactor = GatewayReactor()
    installReactor(reactor)
    return reactor


def install_if_unchosen() -> Any:
    """Install :class:`GatewayReactor` unless a reactor is installed already (chosen
    with ``twistd -r``, or by an embedder); returns the global reactor either way."""
    if "twisted.internet.reactor" not in sys.modules and sys.platform.startswith("linux"):
        return install()
    from twisted.internet import reactor

    return reactor
