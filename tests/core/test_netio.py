"""DirectWriter: straight to the socket at the end of the reactor turn while nothing is
queued, in order always."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport

from twistgw.netio import DirectWriter

Pair = tuple[tcp.Connection, socket.socket, MemoryReactorClock]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A real Twisted TCP connection over a socketpair, its peer and its reactor."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    reactor = MemoryReactorClock()
    conn = tcp.Connection(ours, Protocol(), reactor)
    conn.connected = True  # as tcp.Server and tcp.Client set it once connected
    try:
        yield conn, peer, reactor
    finally:
        ours.close()
        peer.close()


def read_all(peer: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_small_writes_reach_the_peer_at_the_end_of_the_turn_in_one_send(pair: Pair) -> None:
    conn, peer, reactor = pair
    writer = DirectWriter(conn)
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    writer.write(b"second")
    assert read_all(peer) == b""  # not before the turn's events are handled
    assert len(reactor.getDelayedCalls()) == 1
    reactor.advance(0)
    assert read_all(peer) == b"HTTP/1.1 200 OK\r\n\r\nsecond"
    assert conn not in reactor.getWriters()  # no epoll round trip was asked for


def test_one_call_at_the_end_of_a_turn_sends_every_connections_bytes() -> None:
    reactor = MemoryReactorClock()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        writers = []
        for ours, peer in pairs:
            ours.setblocking(False)
            peer.setblocking(False)
            conn = tcp.Connection(ours, Protocol(), reactor)
            conn.connected = True
            writers.append(DirectWriter(conn))
        for i, writer in enumerate(writers):
            writer.write(b"answer %d" % i)
        assert len(reactor.getDelayedCalls()) == 1
        reactor.advance(0)
        assert [read_all(peer) for _, peer in pairs] == [b"answer 0", b"answer 1",
                                                         b"answer 2"]
        writers[1].write(b"next turn")  # a new turn schedules a new flush
        assert len(reactor.getDelayedCalls()) == 1
        reactor.advance(0)
        assert read_all(pairs[1][1]) == b"next turn"
    finally:
        for ours, peer in pairs:
            ours.close()
            peer.close()


def test_flush_sends_at_once_and_the_turn_then_has_nothing_left(pair: Pair) -> None:
    conn, peer, reactor = pair
    writer = DirectWriter(conn)
    writer.write(b"now")
    writer.flush()
    assert read_all(peer) == b"now"
    reactor.advance(0)
    assert read_all(peer) == b""


def test_bytes_written_through_the_transport_meanwhile_go_after_ours(pair: Pair) -> None:
    """An error response or a protocol taking the connection over writes with
    ``transport.write`` while our answer waits for the end of the turn: ours first."""
    conn, peer, reactor = pair
    writer = DirectWriter(conn)
    writer.write(b"first ")
    conn.write(b"second ")
    writer.write(b"third ")  # still the turn's bytes, before the transport's
    conn.write(b"fourth")
    reactor.advance(0)
    assert conn in reactor.getWriters()  # the transport sends, in order, when writable
    conn.doWrite()
    assert read_all(peer) == b"first third second fourth"
    writer.write(b" fifth")  # from now on through the transport, after what it holds
    reactor.advance(0)
    conn.doWrite()
    assert read_all(peer) == b" fifth"


def test_what_the_socket_does_not_take_and_all_later_writes_go_through_the_transport(
        pair: Pair) -> None:
    conn, peer, reactor = pair
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer = DirectWriter(conn)
    big = bytes(range(256)) * 8192  # 2 MiB: more than the socket takes at once
    writer.write(big)
    reactor.advance(0)
    writer.write(b"after")
    assert conn in reactor.getWriters()  # Twisted holds the rest and waits for epoll
    received = read_all(peer)
    assert len(received) < len(big)
    for _ in range(10_000):  # what the reactor would do: write when writable, in order
        if conn.doWrite() is not None or not (conn.dataBuffer or conn._tempDataBuffer):
            break
        received += read_all(peer)
    received += read_all(peer)
    assert received == big + b"after"


def test_a_closing_connection_is_left_to_the_transport(pair: Pair) -> None:
    conn, peer, reactor = pair
    writer = DirectWriter(conn)
    conn.disconnecting = True  # loseConnection() was called
    writer.write(b"late")
    reactor.advance(0)
    assert read_all(peer) == b""
    assert conn._tempDataBuffer == [b"late"]  # the transport sends it before closing


def test_a_close_begun_after_the_write_still_sends_it(pair: Pair) -> None:
    """loseConnection() after an answer: Twisted closes on a later epoll event, once its
    (empty) buffer is flushed, so the answer sent at the end of the turn is not lost."""
    conn, peer, reactor = pair
    writer = DirectWriter(conn)
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    conn.loseConnection()
    reactor.advance(0)
    assert read_all(peer) == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"


def _lose(conn: tcp.Connection) -> None:
    conn.connected = False  # what connectionLost does first


@pytest.mark.parametrize("end", [_lose, tcp.Connection.abortConnection])
def test_bytes_of_a_connection_lost_or_aborted_before_the_end_of_the_turn_are_dropped(
        pair: Pair, end: Callable[[tcp.Connection], None]) -> None:
    conn, peer, reactor = pair
    writer = DirectWriter(conn)
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    end(conn)
    reactor.advance(0)
    assert read_all(peer) == b""


def test_an_aborted_connection_sends_nothing_more(pair: Pair) -> None:
    """abortConnection() leaves the transport ``connected`` until the next reactor turn;
    a response produced in between (a shutdown cancelling a backend call) must not go
    out, as it would not through ``transport.write``."""
    conn, peer, reactor = pair
    writer = DirectWriter(conn)
    conn.abortConnection()
    assert conn.connected
    writer.write(b"HTTP/1.1 504 Gateway Timeout\r\n\r\n")
    reactor.advance(0)
    assert read_all(peer) == b""


def test_other_transports_always_use_their_write() -> None:
    transport = StringTransport()
    writer = DirectWriter(transport)
    writer.write(b"a")
    writer.write(b"b")
    assert transport.value() == b"ab"


def test_a_reactor_whose_loop_cannot_end_a_turn_for_us_gets_the_bytes_at_once() -> None:
    """The asyncio reactor (and any loop that is not Twisted's own) may handle the
    events of its next poll before a ``callLater(0)``: a ``loseConnection`` right after
    the write would close first, so such reactors are written to at once."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    try:
        conn = tcp.Connection(ours, Protocol(), MemoryReactor())  # no Twisted loop
        conn.connected = True
        DirectWriter(conn).write(b"now")
        assert read_all(peer) == b"now"
    finally:
        ours.close()
        peer.close()


def test_which_reactors_end_the_turn() -> None:
    import asyncio

    from twisted.internet.asyncioreactor import AsyncioSelectorReactor
    from twisted.internet.epollreactor import EPollReactor
    from twisted.internet.pollreactor import PollReactor

    from twistgw.netio import _turn_of

    loop = asyncio.new_event_loop()
    reactors = [EPollReactor(), PollReactor(), AsyncioSelectorReactor(loop)]
    try:
        assert [_turn_of(r) is not None for r in reactors] == [True, True, False]
        assert _turn_of(MemoryReactorClock()) is not None
    finally:
        for r in reactors:
            r.waker.connectionLost(None)
        reactors[0]._poller.close()
        loop.close()


def test_a_transport_that_fails_at_the_end_of_the_turn_does_not_keep_the_others_bytes(
        pair: Pair) -> None:
    conn, peer, reactor = pair
    broken = tcp.Connection(socket.socket(), Protocol(), reactor)
    broken.connected = True
    later: list[bytes] = []

    def write(data: bytes) -> None:
        if not later:
            later.append(b"")
            raise RuntimeError("broken transport")
        later.append(data)

    first = DirectWriter(broken)
    first.write(b"lost")
    broken.socket.close()  # send() now fails with EBADF ...
    broken.write = write  # type: ignore[method-assign]  # ... and so does write, once
    DirectWriter(conn).write(b"still sent")
    reactor.advance(0)
    assert read_all(peer) == b"still sent"
    first.write(b"again")  # nothing left pending: the transport has it
    assert later == [b"", b"again"]


def test_a_cancelled_end_of_turn_call_is_made_again(pair: Pair) -> None:
    conn, peer, reactor = pair
    writer = DirectWriter(conn)
    writer.write(b"first ")
    for call in reactor.getDelayedCalls():
        call.cancel()  # what a test janitor does with pending calls
    writer.write(b"second ")  # still this turn's bytes: appended, the turn made again
    reactor.advance(0)
    assert read_all(peer) == b"first second "
    writer.write(b"third")
    for call in reactor.getDelayedCalls():
        call.cancel()
    other, other_peer = socket.socketpair()
    try:
        other.setblocking(False)
        other_peer.setblocking(False)
        second = tcp.Connection(other, Protocol(), reactor)
        second.connected = True
        DirectWriter(second).write(b"other")  # another connection's write, same turn
        reactor.advance(0)
        assert (read_all(peer), read_all(other_peer)) == (b"third", b"other")
    finally:
        other.close()
        other_peer.close()
