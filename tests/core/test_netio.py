"""DirectWriter: straight to the socket while nothing is queued, in order always."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport

from twistgw.netio import DirectWriter


@pytest.fixture
def pair() -> Iterator[tuple[tcp.Connection, socket.socket, MemoryReactor]]:
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


def test_small_writes_reach_the_peer_without_the_reactor(
        pair: tuple[tcp.Connection, socket.socket, MemoryReactor]) -> None:
    conn, peer, reactor = pair
    writer = DirectWriter(conn)
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    writer.write(b"second")
    assert read_all(peer) == b"HTTP/1.1 200 OK\r\n\r\nsecond"
    assert conn not in reactor.getWriters()  # no epoll round trip was asked for


def test_what_the_socket_does_not_take_and_all_later_writes_go_through_the_transport(
        pair: tuple[tcp.Connection, socket.socket, MemoryReactor]) -> None:
    conn, peer, reactor = pair
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer = DirectWriter(conn)
    big = bytes(range(256)) * 8192  # 2 MiB: more than the socket takes at once
    writer.write(big)
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


def test_a_closing_connection_is_left_to_the_transport(
        pair: tuple[tcp.Connection, socket.socket, MemoryReactor]) -> None:
    conn, peer, _ = pair
    writer = DirectWriter(conn)
    conn.disconnecting = True  # loseConnection() was called
    writer.write(b"late")
    assert read_all(peer) == b""


def test_an_aborted_connection_sends_nothing_more(
        pair: tuple[tcp.Connection, socket.socket, MemoryReactor]) -> None:
    """abortConnection() leaves the transport ``connected`` until the next reactor turn;
    a response produced in between (a shutdown cancelling a backend call) must not go
    out, as it would not through ``transport.write``."""
    conn, peer, _ = pair
    writer = DirectWriter(conn)
    conn.abortConnection()
    assert conn.connected
    writer.write(b"HTTP/1.1 504 Gateway Timeout\r\n\r\n")
    assert read_all(peer) == b""


def test_other_transports_always_use_their_write() -> None:
    transport = StringTransport()
    writer = DirectWriter(transport)
    writer.write(b"a")
    writer.write(b"b")
    assert transport.value() == b"ab"
