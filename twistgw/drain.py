"""Graceful drain of a listener: know its connections, close the idle ones, wait for the rest.

Twisted's ``Site`` does not remember its connections, so stopping a listener leaves
keep-alive connections open and nothing tells the gateway when the requests in flight are
done.  :class:`DrainingSite` keeps the set of its open channels.  :meth:`DrainingSite.drain`
closes the idle ones at once and makes every later response carry ``Connection: close``
(the connection then closes after it); :meth:`DrainingSite.wait_closed` fires when the
last one is gone, and :meth:`DrainingSite.abort_all` cuts what is left when the grace
period is over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall

from .http import GatewaySite, HardenedHTTPChannel

if TYPE_CHECKING:
    from twisted.internet.interfaces import IProtocol
    from twisted.python.failure import Failure

__all__ = ["DrainingSite", "wait_all_closed"]

#: Seconds between two looks at the open connections while waiting for a drain.
POLL_INTERVAL = 0.05


class _TrackedChannel(HardenedHTTPChannel):
    """A hardened channel that its site knows about while it is open."""

    def connectionMade(self) -> None:
        site = getattr(self, "site", None)
        if isinstance(site, DrainingSite):
            site.channels.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._forget()
        super().connectionLost(reason)

    def _protocolUpgradeForWebsockets(self, protocol: IProtocol) -> None:
        # No longer HTTP: the new protocol owns (and closes) the connection, and Twisted
        # replaces connectionLost on the instance, so forget it now.
        self._forget()
        super()._protocolUpgradeForWebsockets(protocol)

    def _forget(self) -> None:
        site = getattr(self, "site", None)
        if isinstance(site, DrainingSite):
            site.channels.discard(self)


def _is_idle(channel: HardenedHTTPChannel) -> bool:
    """No request is being received or answered, and nothing is buffered."""
    return not channel.requests and not channel._dataBuffer and not channel._in_head


def _is_upgraded(channel: HardenedHTTPChannel) -> bool:
    """The connection left HTTP (a WebSocket took it through ``http.Handover``): the
    protocol that owns it closes it (the websocket plugin's ``shutdown`` hook), the drain
    neither waits for it nor cuts it."""
    return "dataReceived" in vars(channel)


def _is_gone(channel: HardenedHTTPChannel) -> bool:
    """The transport is closed (also covers channels whose transport was handed over)."""
    transport: Any = channel.transport
    if transport is None:
        return True
    inner: Any = getattr(transport, "transport", None)
    return bool(getattr(transport, "disconnected", False)
                or getattr(inner, "disconnected", False))


class DrainingSite(GatewaySite):
    """A :class:`~twistgw.http.GatewaySite` that can be drained (see the module docstring).

    :ivar channels: the open HTTP channels of this site.
    :ivar draining: set by :meth:`drain`.
    """

    protocol = _TrackedChannel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channels: set[HardenedHTTPChannel] = set()
        self.draining = False

    def open_channels(self) -> int:
        """HTTP channels still open (forgetting any whose transport is already gone, and
        not counting upgraded ones)."""
        for channel in [c for c in self.channels if _is_gone(c)]:
            self.channels.discard(channel)
        return sum(1 for c in self.channels if not _is_upgraded(c))

    def drain(self) -> None:
        """Close idle connections now; busy ones close after their current response."""
        self.draining = True
        resource: Any = self.resource
        if hasattr(resource, "draining"):
            resource.draining = True
        for channel in list(self.channels):
            if _is_gone(channel):
                self.channels.discard(channel)
            elif _is_upgraded(channel):
                continue
            elif _is_idle(channel):
                channel.loseConnection()
            else:
                channel.persistent = False

    def abort_all(self) -> int:
        """Abort every connection still open; returns how many there were."""
        count = 0
        for channel in list(self.channels):
            if _is_gone(channel) or _is_upgraded(channel):
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
