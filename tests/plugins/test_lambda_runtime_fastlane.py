"""The Runtime API fast lane (``Worker.fast_lane``) against the general parser: for any
read a worker's connection may deliver after an invocation started, both leave the same
bytes on the wire, the same worker state and the same result for the caller."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twistgw_lambda import runtime as rt
from twistgw_lambda.functions import FunctionConfig
from twistgw_lambda.runtime_api import RuntimeApiFactory, RuntimeRequest

HOST = b"127.0.0.1:40000"
NEXT = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST
OUTPUT = b'{"statusCode": 200, "body": "hi"}'
ARN = "arn:aws:lambda:us-east-1:123456789012:function:Hello"


class _Reactor(MemoryReactorClock):
    """Also "spawns" processes (a pool short of workers starts one)."""

    def spawnProcess(self, *args: Any, **kw: Any) -> Any:
        self.spawned = getattr(self, "spawned", 0) + 1
        return mock.Mock(pid=None)


class Setup:
    """A pool with one worker, connected over a StringTransport, holding a poll."""

    def __init__(self, fast: bool, max_workers: int = 1) -> None:
        self.reactor = _Reactor()
        cfg = FunctionConfig(name="Hello", handler="app.handler", code=Path("/tmp"),
                             max_workers=max_workers)
        self.pool = rt.FunctionPool(cfg, self.reactor, "us-east-1")
        self.worker = worker = rt.Worker(self.pool, 1)
        worker.expect_client(HOST)
        self.pool.workers.append(worker)
        factory = RuntimeApiFactory(functools.partial(rt._route, worker),
                                    worker.fast_lane if fast else None)
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.proto.dataReceived(NEXT)
        self.results: list[Any] = []

    def invoke(self, request_id: str) -> None:
        self.transport.clear()
        # a fixed id: the two setups' bytes must compare equal
        with mock.patch.object(rt, "new_request_id", lambda: request_id):
            d = self.pool.invoke(b'{"event": 1}', ARN, "Root=1-a-b")
        d.addBoth(self.results.append)

    def state(self) -> tuple[Any, ...]:
        w = self.worker
        # the deadline header differs between two runs by the clock
        out = re.sub(rb"Deadline-Ms: \d+", b"", self.transport.value())
        poll = w.pending_next
        held = None if poll is None else (poll.long_poll, poll.on_lost == w._poll_lost,
                                          poll.connected, w._idle_since)
        return (out, self.transport.disconnecting, w.state, held,
                w.current.id if w.current is not None else None,
                [(r.request_id, r.payload, r.function_error) for r in self.results
                 if isinstance(r, rt.InvokeResult)], len(self.results))


def _result(request_id: bytes, body: bytes, head: bytes | None = None) -> bytes:
    head = head if head is not None else (
        b"Host: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
            HOST, len(body)))
    return (b"POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\n%s\r\n%s"
            % (request_id, head, body))


RID = "8f5b7f2c-6a1e-4c3b-9d2e-0123456789ab"

#: Reads a worker may deliver: the shipped worker's usual one, and shapes around it.
reads = st.one_of(
    st.just(_result(RID.encode(), OUTPUT) + NEXT),
    st.builds(lambda body: _result(RID.encode(), body) + NEXT, st.binary(max_size=64)),
    st.builds(lambda rid: _result(rid, OUTPUT) + NEXT,
              st.sampled_from([b"other-id", RID.encode()[:-1], RID.encode() + b"x", b""])),
    st.builds(lambda n: _result(RID.encode(), OUTPUT, b"Host: %s\r\nContent-Type: application/"
                                b"json\r\nContent-Length: %d\r\n" % (HOST, n)) + NEXT,
              st.integers(0, 80)),
    st.builds(lambda head: _result(RID.encode(), OUTPUT, head) + NEXT, st.sampled_from([
        b"Host: %s\r\nContent-Length: %d\r\n" % (HOST, len(OUTPUT)),
        b"Host: other\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        % len(OUTPUT),
        b"Host: %s\r\nContent-Type: application/json\r\nContent-Length:  %d\r\n"
        % (HOST, len(OUTPUT)),
        b"Host: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n" % (HOST, len(OUTPUT)),
        b"Host: %s\r\nContent-Type: application/json\r\nContent-Length: +%d\r\n"
        % (HOST, len(OUTPUT) - 1)])),
    st.builds(lambda tail: _result(RID.encode(), OUTPUT) + tail, st.sampled_from([
        b"", NEXT[:-2], NEXT + NEXT, NEXT.replace(b"GET", b"PUT"), NEXT + b"x",
        NEXT.replace(b"next", b"nexT")])),
    st.builds(lambda raw: raw, st.binary(max_size=200)),
    st.builds(lambda i: (_result(RID.encode(), OUTPUT) + NEXT)[:i], st.integers(0, 300)),
    st.just(_result(RID.encode(), OUTPUT).replace(b"/response", b"/error") + NEXT),
)


QUEUED = "5e1f2a3b-0000-4000-8000-000000000002"


@settings(max_examples=300, deadline=None)
@given(first=reads, rest=st.binary(max_size=16), then=st.booleans(), queued=st.booleans())
def test_the_fast_lane_does_what_the_parser_does(first: bytes, rest: bytes, then: bool,
                                                 queued: bool) -> None:
    runs = []
    for fast in (True, False):
        s = Setup(fast)
        s.invoke(RID)
        if queued:  # another invoke waits for the worker (the wrk case)
            s.invoke(QUEUED)
        s.proto.dataReceived(first)
        if rest:
            s.proto.dataReceived(rest)
        states = [s.state()]
        if then:  # the next invoke goes to the poll the read left (or queues)
            s.invoke("1d3c5b7a-0000-4000-8000-000000000001")
            states.append(s.state())
        runs.append(states)
    assert runs[0] == runs[1]


def _peer(s: Setup, state: str) -> rt.Worker:
    """A second worker of the pool, in ``state`` (``idle``: its poll lost; ``polling``:
    idle with a poll that nothing answered, and ``dead`` still listed: states no event
    leaves behind, which the shortcuts must still leave to dispatch)."""
    peer = rt.Worker(s.pool, 2)
    s.pool.workers.append(peer)
    peer.state = state
    return peer


def _unsettle(peer: rt.Worker, state: str) -> None:
    """Put ``peer`` in a state no event leaves behind while invocations wait (the
    shortcuts must leave those to dispatch too)."""
    peer.state = "idle" if state == "polling" else state
    if state == "polling":
        channel = RuntimeApiFactory(functools.partial(rt._route, peer)).buildProtocol(None)
        channel.makeConnection(StringTransport())
        peer.pending_next = RuntimeRequest(channel, b"GET", rt._NEXT_PATH, {}, True)
    if state == "busy":
        with mock.patch.object(rt, "new_request_id", lambda: "peer-invocation"):
            peer.current = rt.Invocation(b"{}", ARN, "", 3.0)


@settings(max_examples=300, deadline=None)
@given(peer=st.sampled_from([None, "busy", "between", "starting", "idle", "retiring",
                             "polling", "dead"]),
       room=st.booleans(), queued=st.integers(0, 3), events=st.integers(0, 2),
       first=st.sampled_from([_result(RID.encode(), OUTPUT) + NEXT,
                              _result(RID.encode(), OUTPUT)]))
def test_the_queued_invocation_shortcuts_do_what_dispatch_does(
        peer: str | None, room: bool, queued: int, events: int, first: bytes) -> None:
    """The fast lane's hand-over of the first queued invocation and ``submit``'s skipped
    dispatch (both when the pool is saturated) leave the pool as the general path (the
    parser's route to ``next_request``, and ``dispatch`` called every time) does,
    whatever the other worker's state, whether the function may start another worker,
    and what waits."""
    runs = []
    for fast in (True, False):
        s = Setup(fast, max_workers=(2 if peer else 1) + room)
        other = _peer(s, peer) if peer else None
        general = mock.patch.object(rt.FunctionPool, "saturated", lambda *a: False)
        if not fast:
            general.start()
        try:
            s.invoke(RID)
            for n in range(queued):
                s.invoke(f"5e1f2a3b-0000-4000-8000-00000000001{n}")
            for n in range(events):
                with mock.patch.object(rt, "new_request_id", lambda n=n: f"ev-{n}"):
                    s.pool.invoke(b'{"async": 1}', ARN, "", invocation_type="Event")
            states = [(len(s.pool.queue), len(s.pool.workers),
                       getattr(s.reactor, "spawned", 0))]
            if other is not None and peer in ("polling", "dead"):
                _unsettle(other, peer)
            s.reactor.advance(1)  # (the worker's idle time is read from the clock)
            s.proto.dataReceived(first)
            states.append(s.state())
            s.invoke("1d3c5b7a-0000-4000-8000-000000000001")
            states.append(s.state())
        finally:
            if not fast:
                general.stop()
        pool = s.pool
        states.append((
            [inv.id for inv in pool.queue], [inv.id for inv in pool.events],
            [(w.number, w.state, w.current.id if w.current else None) for w in pool.workers],
            getattr(s.reactor, "spawned", 0), other.state if other else None,
            s.worker.invocations, s.worker.last_id, s.worker._idle_since))
        runs.append(states)
    assert runs[0] == runs[1]


def test_the_fast_lane_takes_the_shipped_workers_read() -> None:
    """Not vacuous: the usual read is taken by the fast lane (the parser never sees it),
    and its 202 leaves in the same write as the next event."""
    s = Setup(True)
    handled: list[Any] = []
    s.proto.handle = handled.append
    s.invoke(RID)
    s.transport.clear()
    s.proto.dataReceived(_result(RID.encode(), OUTPUT) + NEXT)
    assert handled == []
    assert s.results[0].payload == OUTPUT and s.worker.state == "idle"
    assert s.transport.value() == b""
    s.invoke("1d3c5b7a-0000-4000-8000-000000000001")
    out = s.transport.value()
    assert out.startswith(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 16\r\n\r\n{\"status\": \"OK\"}HTTP/1.1 200 OK\r\n")
    assert out.endswith(b'\r\n\r\n{"event": 1}')


@pytest.mark.parametrize("fast", [True, False])
def test_the_next_queued_event_leaves_before_the_callers_answer(fast: bool) -> None:
    """The fast lane hands a queued invocation to the worker and sends its event before the
    finished one's caller runs (which then answers its client while the worker works);
    the parser's path sends it after.  Both end with the same bytes."""
    s = Setup(fast)
    s.invoke(RID)
    running = s.worker.current
    assert running is not None
    on_the_wire: list[bytes] = []
    running.then(lambda r: on_the_wire.append(s.transport.value()) or r)
    s.invoke(QUEUED)
    s.proto.dataReceived(_result(RID.encode(), OUTPUT) + NEXT)
    event = b"Lambda-Runtime-Aws-Request-Id: " + QUEUED.encode()
    assert (event in on_the_wire[0]) is fast
    assert event in s.transport.value()
    assert s.worker.current is not None and s.worker.current.id == QUEUED
    assert [r.payload for r in s.results] == [OUTPUT]
