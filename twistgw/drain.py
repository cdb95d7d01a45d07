"""Graceful drain of a listener: know its connections, close the idle ones, wait for the rest.

Stopping a listener's port leaves its keep-alive connections open, and nothing tells the
gateway when the requests in flight are done.  :class:`DrainingSite` uses the set of open
channels its site keeps.  :meth:`DrainingSite.drain`
closes the idle ones at once and makes every later response carry ``Connection: close``
(the connection then closes after it); :meth:`DrainingSite.wait_closed` fires when the
last one is gone, and :meth:`DrainingSite.abort_all` cuts what is left when the grace
period is over.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall

from .http import GatewaySite

__all__ = ["DrainingSite", "wait_all_closed"]

#: Seconds between two looks at the open connections while waiting for a drain.
POLL_INTERVAL = 0.05


def _is_gone(channel: Any) -> bool:
    """The transport is closed (or closing for good)."""
    transport: Any = channel.transport
    if transport is None:
        return True
    inner: Any = getattr(transport, "transport", None)
    return bool(getattr(transport, "disconnected", False)
                or getattr(inner, "disconnected", False))


class DrainingSite(GatewaySite):
    """A :class:`~twistgw.http.GatewaySite` that can be drained (see the module docstring).

    Its ``channels`` are the open HTTP connections; connections handed over to another
    protocol (a WebSocket through ``http.Handover``) leave that set: the protocol that owns
    them closes them (the websocket plugin's ``shutdown`` hook), the drain neither waits
    for them nor cuts them.

    :ivar draining: set by :meth:`drain`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.draining = False

    def open_channels(self) -> int:
        """HTTP channels still open (forgetting any whose transport is already gone)."""
        for channel in [c for c in self.channels if _is_gone(c)]:
            self.channels.discard(channel)
        return len(self.channels)

    def drain(self) -> None:
        """Close idle connections now; busy ones close after their current response."""
        self.draining = True
        for channel in list(self.channels):
            if _is_gone(channel):
                self.channels.discard(channel)
            else:
                channel.close_when_idle()

    def abort_all(self) -> int:
        """Abort every connection still open; returns how many there were."""
        count = 0
        for channel in list(self.channels):
            if _is_gone(channel):
                continue
            count += 1
            transport: Any = channel.transport
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()
        self.channels.clear()
        return count


def wait_all_closed(sites: list[DrainingSite], clock: Any) -> defer.Deferred[None]:
    """Fires once none of ``sites`` has an open connection (at once when none has)."""
    if not any(site.open_channels() for site in sites):
        return defer.succeed(None)

    def check() -> None:
        if not any(site.open_channels() for site in sites):
            loop.stop()

    def stop_polling(_: object) -> None:
        if loop.running:
            loop.stop()

    # Cancelling the wait (the grace is over) stops the polling and fires it normally;
    # the caller then aborts whatever is still open.
    done: defer.Deferred[None] = defer.Deferred(stop_polling)
    loop = LoopingCall(check)
    loop.clock = clock
    loop.start(POLL_INTERVAL, now=False).addBoth(
        lambda _: None if done.called else done.callback(None))
    return done
