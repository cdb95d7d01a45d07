"""The gateway's reactor runs ``after_dispatch`` calls once a poll's events are handled,
and ``twistgw.netio`` sends a turn's writes there instead of through a ``callLater(0)``:
the same bytes in the same order, sent before the reactor runs timers or polls again."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Factory, Protocol

from twistgw.netio import DirectWriter, _turn_of
from twistgw.reactor import GatewayReactor


class _Upper(Protocol):
    """Answers each read with its bytes upper-cased, through a DirectWriter; ``later``
    seconds after a read it writes ``b"|timer"`` from a timer as well."""

    def __init__(self, later: float | None) -> None:
        self.later = later

    def connectionMade(self) -> None:
        self.writer = DirectWriter(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.writer.write(data.upper())
        self.writer.write(b".")
        if self.later is not None:
            reactor: Any = self.transport.reactor  # type: ignore[union-attr]
            reactor.callLater(self.later, self.writer.write, b"|timer")


class Served:
    """A fresh reactor serving :class:`_Upper` on loopback, and one client socket."""

    def __init__(self, reactor: Any, later: float | None = None) -> None:
        self.reactor = reactor
        self.port = reactor.listenTCP(0, Factory.forProtocol(lambda: _Upper(later)),
                                      interface="127.0.0.1")
        self.client = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        for _ in range(100):  # accept it
            reactor.doIteration(0.01)
            if reactor.getReaders()[1:]:
                break

    def received(self, wait: float = 0.0) -> bytes:
        """What the client has been sent so far (waiting up to ``wait`` for the first)."""
        out = b""
        while select.select([self.client], [], [], wait)[0]:
            chunk = self.client.recv(65536)
            if not chunk:
                break
            out += chunk
            wait = 0.0
        return out

    def close(self) -> None:
        self.client.close()
        self.port.stopListening()
        for _ in range(5):
            self.reactor.iterate(0)
        self.reactor.disconnectAll()
        self.reactor._poller.close()


@pytest.fixture(params=[GatewayReactor, EPollReactor])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    s = Served(request.param())
    try:
        yield s
    finally:
        s.close()


def _flushes(reactor: Any) -> list[Any]:
    turn = _turn_of(reactor)
    return [c for c in reactor.getDelayedCalls() if turn is not None and
            getattr(c.func, "__self__", None) is turn]


def test_writes_of_an_event_leave_when_the_polls_events_are_handled(served: Served) -> None:
    served.client.sendall(b"hello")
    served.reactor.doPoll(5.0)  # the read: dataReceived writes twice
    if isinstance(served.reactor, GatewayReactor):
        # sent already, in one piece, and no timer was armed for it
        assert served.received(1.0) == b"HELLO."
        assert _flushes(served.reactor) == []
        assert served.reactor.after_dispatch == []
    else:  # Twisted's reactor: the callLater(0) of the turn sends them
        assert served.received() == b""
        assert len(_flushes(served.reactor)) == 1
        served.reactor.runUntilCurrent()
        assert served.received(1.0) == b"HELLO."


def test_both_reactors_deliver_the_same_bytes_in_order() -> None:
    got = []
    for kind in (GatewayReactor, EPollReactor):
        s = Served(kind(), later=0.0)
        try:
            out = b""
            for word in (b"one", b"two"):
                s.client.sendall(word)
                part = b""
                for _ in range(50):
                    s.reactor.iterate(0.01)
                    part += s.received()
                    if part.endswith(b"|timer"):
                        break
                out += part
            got.append(out)
        finally:
            s.close()
    assert got[0] == got[1] == b"ONE.|timerTWO.|timer"


def test_a_write_outside_the_dispatch_still_ends_its_turn_with_a_call_later() -> None:
    s = Served(GatewayReactor(), later=0.0)
    try:
        s.client.sendall(b"x")
        s.reactor.doPoll(5.0)
        assert s.received(1.0) == b"X."
        s.reactor.runUntilCurrent()  # the timer writes: not in a dispatch
        assert len(_flushes(s.reactor)) == 1
        assert s.received() == b""
        s.reactor.runUntilCurrent()
        assert s.received(1.0) == b"|timer"
    finally:
        s.close()


def test_an_after_dispatch_call_that_raises_is_logged_and_the_others_run() -> None:
    s = Served(GatewayReactor())
    ran: list[str] = []
    errors: list[dict[str, Any]] = []
    from twisted.python import log

    log.addObserver(errors.append)
    try:
        def broken() -> None:
            raise RuntimeError("after dispatch")

        s.reactor.dispatching = True  # as while an event is dispatched
        s.reactor.after_dispatch += [broken, lambda: ran.append("second")]
        s.reactor.dispatching = False
        s.client.sendall(b"y")
        s.reactor.doPoll(5.0)
        assert ran == ["second"]
        assert s.received(1.0) == b"Y."
        assert [e["failure"].type for e in errors if e.get("isError")] == [RuntimeError]
        assert s.reactor.after_dispatch == []
    finally:
        log.removeObserver(errors.append)
        s.close()
