"""Send small writes straight to a TCP socket, once per reactor turn, not through Twisted.

``ITransport.write`` on a TCP connection only queues the bytes: the transport asks epoll
for writability, sends on the reactor's next turn and then takes the registration back.
For a request/response protocol whose answers are one small write on a connection that
is almost never congested, that is a reactor event and two ``epoll_ctl`` calls per
answer for nothing -- a visible share of a request in the gateway's live profiles (the
listeners, the Runtime API server and the outbound HTTP client all paid it).

:class:`DirectWriter` keeps what is written during a reactor turn and sends it with
``socket.send`` once the turn's events are handled (one ``callLater(0)`` per turn for all
connections, which runs before the reactor waits again).  Sending at once instead, as this
module first did, cost more than the ``epoll_ctl`` calls it saved: on loopback a send
wakes the peer's task when it sleeps in ``epoll_wait``, and a wake-up on another core is
an inter-processor interrupt, which in a virtual machine costs tens of microseconds of
the sender's system time.  Writing each answer the moment it is ready woke nginx and wrk
about once per proxied request (``perf stat -e sched:sched_waking`` on the gateway:
1.07-1.31 per request, bare twisted.web 0.09); sending a turn's writes together wakes a
peer once for the lot (0.11 per request), as Twisted's own buffered writes do.

On the gateway's own reactor (``twistgw.reactor.GatewayReactor``) writes made while it
dispatches a poll's events are sent when those events are all handled, through its
``after_dispatch`` list, with no ``callLater(0)``: a DelayedCall, two timer-heap
operations and a ``timeout()`` pass less per turn (live gateway under callgrind: a
Lambda invoke, which takes a turn of its own under load, 487.6 k -> 463.8 k
instructions; a MOCK request, which shares its turn, 266.4 k -> 265.8 k).  Writes made
elsewhere (a timer, a thread's callback) still end their turn with the ``callLater(0)``.

Whatever the kernel does not take is handed to ``transport.write``, and from then on every
write of the connection goes through the transport, so bytes can never overtake bytes
Twisted holds; Twisted's buffering, producer pausing and error handling then work exactly
as before.  Bytes someone writes through the transport itself while ours wait for the end
of the turn (an error response, a protocol taking the connection over) go after ours.
Bytes of a connection aborted or lost before the end of the turn are dropped, as Twisted
drops its buffer then.  Transports that are not Twisted socket connections (TLS, protocol
wrappers, test transports) always use ``transport.write``; on a reactor whose loop is not
Twisted's own (the asyncio reactor) the bytes go to the socket at once, as before.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet import tcp
from twisted.internet.base import ReactorBase
from twisted.internet.task import Clock
from twisted.logger import Logger

__all__ = ["DirectWriter"]

_log = Logger()


class _Turn:
    """The writers of one reactor with bytes waiting for the end of the current turn."""

    __slots__ = ("call", "hooked", "queued", "reactor", "writers")

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.writers: list[DirectWriter] = []
        #: The pending ``callLater(0)``; a new one is made if someone cancelled it (a
        #: test janitor cancelling every pending call).
        self.call: Any = None
        #: The reactor runs ``after_dispatch`` calls (the gateway's own reactor).
        self.hooked = isinstance(getattr(reactor, "after_dispatch", None), list) and \
            isinstance(getattr(reactor, "dispatching", None), bool)
        #: :meth:`flush` is in the reactor's ``after_dispatch`` for this poll.
        self.queued = False

    def wait(self) -> None:
        """Have :meth:`flush` run once the turn's events are handled: after the poll's
        dispatch on a hooked reactor that is dispatching, else a ``callLater(0)``."""
        if self.queued:
            return
        reactor = self.reactor
        if self.hooked and reactor.dispatching:
            self.queued = True
            reactor.after_dispatch.append(self.flush)
            return
        call = self.call
        if call is None or call.cancelled:
            self.call = reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Send every waiting writer's bytes (the end of a turn)."""
        self.call = None
        self.queued = False
        writers, self.writers = self.writers, []
        for writer in writers:
            try:
                writer.flush()
            except Exception:  # one broken transport must not keep the others' bytes
                _log.failure("Sending a connection's bytes at the end of the turn")


_turns: WeakKeyDictionary[Any, _Turn] = WeakKeyDictionary()


def _turn_of(reactor: Any) -> _Turn | None:
    """The turn of ``reactor``, or None when its loop may not run a ``callLater(0)``
    before it handles the next events: a transport closed by ``loseConnection`` right
    after our write would then close before the end of the turn sends the bytes."""
    turn = _turns.get(reactor)
    if turn is None:
        kind = type(reactor)
        # Twisted's own loop (posixbase: epoll, poll, select, kqueue) runs the due
        # timers, then polls; a task.Clock (tests) runs them when it is advanced.
        # Others (the asyncio reactor runs the events a poll found first) send at once.
        if not (isinstance(reactor, Clock) or (
                getattr(kind, "mainLoop", None) is ReactorBase.mainLoop
                and getattr(kind, "callLater", None) is ReactorBase.callLater)):
            return None
        turn = _turns[reactor] = _Turn(reactor)
    return turn


class DirectWriter:
    """Writes for one connection: to the socket at the end of the turn while nothing is
    queued in the transport, else through the transport."""

    __slots__ = ("_pending", "_sock", "_transport", "_turn")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        #: Bytes written this turn, not yet sent.
        self._pending: bytes | None = None
        #: The connected socket while direct sends are safe; ``None`` once they are not.
        self._sock: Any = None
        self._turn: _Turn | None = None
        if isinstance(transport, tcp.Connection):
            self._sock = transport.getHandle()
            self._turn = _turn_of(transport.reactor)

    def write(self, data: bytes) -> None:
        """Send ``data`` in order after everything written before."""
        pending = self._pending
        if pending is not None:
            self._pending = pending + data
            turn = self._turn
            if turn is not None and not turn.queued and (
                    turn.call is None or turn.call.cancelled):
                turn.wait()
            return
        transport = self._transport
        # ``_aborting``: abortConnection() drops every later write, but the transport
        # stays ``connected`` until the next reactor turn (tested in test_netio).
        if (self._sock is not None and transport.connected and not transport.disconnecting
                and not transport._aborting):
            self._pending = data
            turn = self._turn
            if turn is None:
                self.flush()  # a loop that cannot end a turn for us: at once
                return
            turn.writers.append(self)
            if not turn.queued:
                turn.wait()
            return
        transport.write(data)  # after a close began, the transport decides as always

    def flush(self) -> None:
        """Send the bytes waiting for the end of the turn now (called by the turn; a
        caller that must know them on the wire before it goes on may call it too)."""
        data = self._pending
        if data is None:
            return
        self._pending = None
        transport = self._transport
        if not transport.connected or transport._aborting:
            return  # lost or aborted meanwhile: Twisted drops its own buffer then too
        if transport.dataBuffer or transport._tempDataBuffer:
            # Written through the transport after ours (nothing of it is sent yet: the
            # transport sends on a later epoll event): ours go first.
            transport._tempDataBuffer.insert(0, data)
            transport._tempDataLen += len(data)
            self._sock = None
            return
        try:
            sent = self._sock.send(data)
        except OSError:  # EAGAIN, or a broken connection the transport will notice
            sent = 0
        if sent == len(data):
            return
        self._sock = None
        transport.write(data[sent:])
