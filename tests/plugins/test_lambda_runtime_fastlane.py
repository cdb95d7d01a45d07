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
from twistgw_lambda.runtime_api import RuntimeApiFactory

HOST = b"127.0.0.1:40000"
NEXT = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST
OUTPUT = b'{"statusCode": 200, "body": "hi"}'
ARN = "arn:aws:lambda:us-east-1:123456789012:function:Hello"


class Setup:
    """A pool with one worker, connected over a StringTransport, holding a poll."""

    def __init__(self, fast: bool) -> None:
        self.reactor = MemoryReactorClock()
        cfg = FunctionConfig(name="Hello", handler="app.handler", code=Path("/tmp"),
                             max_workers=1)
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
