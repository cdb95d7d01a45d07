"""Events sent ahead to a busy shipped worker (``Worker.send_ahead``), in memory: when
they are sent, their clock, taking them back, their fate when a worker dies or a caller
gives up, and the fast lane against the parser for the reads they bring.  The real worker
processes' side is in ``test_lambda_ahead_e2e``."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lambda_runtime_fastlane import ARN, HOST, OUTPUT, _result
from twisted.internet.defer import CancelledError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twistgw_lambda import runtime as rt
from twistgw_lambda.functions import FunctionConfig
from twistgw_lambda.runtime_api import RuntimeApiFactory, RuntimeApiProtocol

POLL = (b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: %s\r\n"
        b"Twistgw-Ahead: 1\r\n\r\n" % HOST)
A, B, C, D, E = (f"{i}e1f2a3b-0000-4000-8000-00000000000{i}" for i in range(1, 6))


class Pool:
    """A pool of ``n`` workers offered events ahead (at most ``depth`` each), each
    connected over a StringTransport and polling; starting more workers is recorded, not
    done."""

    def __init__(self, n: int = 1, fast: bool = True, depth: int = rt.AHEAD_DEPTH,
                 **config: Any) -> None:
        self.reactor = MemoryReactorClock()
        cfg = FunctionConfig(name="Hello", handler="app.handler", code=Path("/tmp"),
                             **{"max_workers": n, **config})
        self.pool = rt.FunctionPool(cfg, self.reactor, "us-east-1")
        self.spawned = 0
        self.pool.spawn = self._spawn  # type: ignore[method-assign]
        self.workers: list[rt.Worker] = []
        self.protos: list[RuntimeApiProtocol] = []
        self.transports: list[StringTransport] = []
        self.results: dict[str, Any] = {}
        for i in range(n):
            worker = rt.Worker(self.pool, i + 1)
            worker.ahead_depth = depth
            worker.open_pipes()
            worker.expect_client(HOST)
            self.pool.workers.append(worker)
            proto = RuntimeApiFactory(functools.partial(rt._route, worker),
                                      worker.fast_lane if fast else None).buildProtocol(None)
            transport = StringTransport()
            proto.makeConnection(transport)
            proto.dataReceived(POLL)
            self.workers.append(worker)
            self.protos.append(proto)
            self.transports.append(transport)

    def _spawn(self) -> None:
        self.spawned += 1

    def invoke(self, request_id: str, payload: bytes = b'{"event": 1}') -> Any:
        with mock.patch.object(rt, "new_request_id", lambda: request_id):
            d = self.pool.invoke(payload, ARN, "Root=1-a-b")
        d.addBoth(lambda r: self.results.__setitem__(request_id, r))
        return d

    def answer(self, i: int, *request_ids: str) -> None:
        """Worker ``i`` posts the results of ``request_ids`` (each with its poll) in one
        read."""
        self.protos[i].dataReceived(b"".join(_result(rid.encode(), OUTPUT) + POLL
                                             for rid in request_ids))

    def claim(self, i: int, pipe: int) -> bool:
        """Worker ``i`` starts the event sent ahead on ``pipe``: reads its token."""
        pipes = self.workers[i]._pipes
        assert pipes is not None
        try:
            return bool(os.read(pipes[pipe][0], 1))
        except BlockingIOError:
            return False

    def tokens(self, i: int) -> list[int]:
        """How many tokens each pipe of worker ``i`` holds (read out: the end)."""
        pipes = self.workers[i]._pipes
        assert pipes is not None
        counts = []
        for read, _write in pipes:
            try:
                counts.append(len(os.read(read, 16)))
            except BlockingIOError:
                counts.append(0)
        return counts

    def close(self) -> None:
        for worker in self.workers:
            worker.close_pipes()


@pytest.fixture
def pools() -> Iterator[list[Pool]]:
    made: list[Pool] = []
    yield made
    for p in made:
        p.close()


def _pool(pools: list[Pool], *args: Any, **kw: Any) -> Pool:
    pools.append(Pool(*args, **kw))
    return pools[-1]


def _ok(result: Any) -> bytes:
    assert isinstance(result, rt.InvokeResult) and result.function_error is None, result
    return result.payload


def test_an_invoke_that_would_queue_is_sent_ahead_with_a_timeout_not_a_deadline(
        pools: list[Pool]) -> None:
    p = _pool(pools, timeout=3.0)
    p.invoke(A)
    p.transports[0].clear()
    p.invoke(B)
    out = p.transports[0].value()
    assert out.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 12\r\nLambda-Runtime-Aws-Request-Id: "
                          + B.encode() + b"\r\nTwistgw-Ahead: 0 3000\r\n")
    assert b"Deadline-Ms" not in out and out.endswith(b'\r\n\r\n{"event": 1}')
    w = p.workers[0]
    assert (w.current and w.current.id, w.ahead and w.ahead.id) == (A, B)
    assert not p.pool.queue and p.pool.running() == 2
    assert p.tokens(0) == [1, 0, 0]


def test_nothing_is_sent_ahead_while_a_worker_is_free_or_the_pool_may_grow(
        pools: list[Pool]) -> None:
    p = _pool(pools, 2)
    p.invoke(A)
    p.invoke(B)  # the second worker is idle: it gets B
    assert [w.current and w.current.id for w in p.workers] == [A, B]
    assert all(w.ahead is None for w in p.workers)
    p.invoke(C)  # every worker busy, the pool at its size
    assert p.workers[0].ahead is not None and p.workers[0].ahead.id == C
    grow = _pool(pools, 1, max_workers=2)  # one worker of two
    grow.invoke(A)
    grow.invoke(B)  # a second worker may start: B waits for it in the queue
    assert grow.workers[0].ahead is None and [i.id for i in grow.pool.queue] == [B]
    assert grow.spawned == 1


def test_the_clock_of_an_event_sent_ahead_starts_when_the_running_one_ends(
        pools: list[Pool]) -> None:
    p = _pool(pools, timeout=3.0)
    p.invoke(A)
    p.invoke(B)
    p.reactor.advance(2.5)
    p.answer(0, A)
    assert _ok(p.results[A]) == OUTPUT
    w = p.workers[0]
    assert w.current is not None and w.current.id == B and w.state == "busy"
    p.reactor.advance(2.0)  # 4.5 s after B was sent, 2 s after it started
    assert B not in p.results
    p.reactor.advance(1.1)
    result = p.results[B]
    assert result.function_error == "Unhandled"
    assert b"Task timed out after 3.00 seconds" in result.payload


def test_a_worker_that_asks_for_work_takes_an_event_not_started_elsewhere(
        pools: list[Pool]) -> None:
    p = _pool(pools, 2, depth=1)
    p.invoke(A)
    p.invoke(B)
    p.invoke(C)  # ahead to the first worker (its invocation started first)
    assert p.workers[0].ahead is not None and p.workers[0].ahead.id == C
    p.transports[1].clear()
    p.answer(1, B)  # the second worker is free, nothing queued: C comes to it
    w0, w1 = p.workers
    assert w0.ahead is not None and w1.state == "idle"  # at the end of the turn:
    p.reactor.advance(0)
    assert w0.ahead is None and w1.current is not None and w1.current.id == C
    assert b"Lambda-Runtime-Aws-Request-Id: " + C.encode() in p.transports[1].value()
    assert p.tokens(0) == [0, 0]  # taken: the first worker will skip it
    p.invoke(D)  # nothing more ahead to the first worker until A ends
    assert w0.ahead is None and w1.ahead is not None and w1.ahead.id == D
    p.answer(0, A)  # a poll like any other: free, it takes D from the second worker
    p.reactor.advance(0)
    assert w0.current is not None and w0.current.id == D and w1.ahead is None


def test_a_request_read_in_the_same_turn_goes_to_the_free_worker_first(
        pools: list[Pool]) -> None:
    """The take-back waits for the end of the reactor turn: an invoke read after the
    result in the same turn takes the free worker, and the event sent ahead stays."""
    p = _pool(pools, 2)
    p.invoke(A)
    p.invoke(B)
    p.invoke(C)
    p.answer(1, B)
    p.invoke(D)
    p.reactor.advance(0)
    w0, w1 = p.workers
    assert w0.ahead is not None and w0.ahead.id == C
    assert w1.current is not None and w1.current.id == D and p.tokens(0) == [1, 0, 0]


def test_an_event_the_worker_started_is_not_taken_back(pools: list[Pool]) -> None:
    p = _pool(pools, 2)
    p.invoke(A)
    p.invoke(B)
    p.invoke(C)
    assert p.claim(0, 0)  # the first worker read C's token (it ran A's result first)
    p.answer(1, B)
    p.reactor.advance(0)
    w0, w1 = p.workers
    assert w0.ahead is not None and w0.ahead.id == C and w1.state == "idle"
    p.answer(0, A)
    assert w0.current is not None and w0.current.id == C


def test_an_event_sent_ahead_behind_a_slow_invoke_goes_to_the_next_worker(
        pools: list[Pool]) -> None:
    p = _pool(pools, 2, depth=1)
    p.invoke(A)
    p.invoke(B)
    p.invoke(C)  # ahead to the first worker
    p.reactor.advance(rt.AHEAD_PATIENCE * 2)
    p.invoke(D)  # A is slow: C goes to the second worker first, D waits
    w0, w1 = p.workers
    assert w0.ahead is None and w1.ahead is not None and w1.ahead.id == C
    assert [i.id for i in p.pool.queue] == [D] and p.tokens(0) == [0, 0]
    p.answer(1, B)
    assert w1.current is not None and w1.current.id == C
    assert w1.ahead is not None and w1.ahead.id == D and w0.ahead is None


@pytest.mark.parametrize("started", [False, True])
def test_an_event_sent_ahead_whose_caller_gives_up(pools: list[Pool],
                                                    started: bool) -> None:
    p = _pool(pools)
    p.invoke(A)
    d = p.invoke(B)
    if started:
        assert p.claim(0, 0)
    d.cancel()
    assert isinstance(p.results[B], Failure) and p.results[B].check(CancelledError)
    w = p.workers[0]
    assert (w.ahead is not None) is started  # not started: it never does, as if queued
    assert not p.pool.queue
    p.answer(0, A)
    assert _ok(p.results[A]) == OUTPUT
    assert w.state == ("busy" if started else "idle")


def test_a_worker_that_dies_gives_back_the_event_it_had_not_started(
        pools: list[Pool]) -> None:
    p = _pool(pools)
    p.invoke(A)
    p.invoke(B)
    p.workers[0].exited(None, 9)
    assert b"Runtime exited with error: signal: killed" in p.results[A].payload
    assert B not in p.results and [i.id for i in p.pool.queue] == [B]
    assert p.spawned == 1  # its replacement runs it


def test_an_event_sent_ahead_whose_result_came_is_given_back_if_never_started(
        pools: list[Pool]) -> None:
    p = _pool(pools)
    p.invoke(A)
    p.invoke(B)
    p.answer(0, A)  # B is current now; the worker dies before it reads B's token
    p.workers[0].exited(1, None)
    assert _ok(p.results[A]) == OUTPUT
    assert B not in p.results and [i.id for i in p.pool.queue] == [B]


@pytest.mark.parametrize("result_comes", [True, False])
def test_a_worker_that_dies_in_the_event_it_started(pools: list[Pool],
                                                    result_comes: bool) -> None:
    """It wrote A's result, started B and died before the gateway read A's result: B
    failed mid-invoke, A gets its result if it is read before the connection closes."""
    p = _pool(pools)
    p.invoke(A)
    p.invoke(B)
    assert p.claim(0, 0)
    p.workers[0].exited(1, None)
    assert b"Runtime exited with error: exit status 1" in p.results[B].payload
    assert A not in p.results and not p.pool.queue
    if result_comes:
        p.protos[0].dataReceived(_result(A.encode(), OUTPUT) + POLL)
        assert _ok(p.results[A]) == OUTPUT
    p.protos[0].connectionLost(None)
    if not result_comes:
        assert b"Runtime exited with error: exit status 1" in p.results[A].payload


def test_reserved_concurrency_counts_events_sent_ahead(pools: list[Pool]) -> None:
    p = _pool(pools, reserved_concurrency=2)
    p.invoke(A)
    p.invoke(B)  # ahead
    p.invoke(C)
    assert p.results[C].function_error == "Throttled"
    assert p.workers[0].ahead is not None and not p.pool.queue


def test_a_client_without_the_offer_gets_no_event_ahead(pools: list[Pool]) -> None:
    p = _pool(pools)
    w = p.workers[0]
    w.close_pipes()  # not the shipped worker: no pipes, its polls' header means nothing
    w.ahead_ok = False
    w.channel = None
    p.invoke(A)
    p.protos[0].dataReceived(POLL)  # polling again without answering A
    assert p.results[A].function_error == "Unhandled" and w.ahead is None
    p.invoke(B)
    p.invoke(C)
    assert w.ahead is None and [i.id for i in p.pool.queue] == [C]


class _Spawner(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def spawnProcess(self, *args: Any, **kw: Any) -> Any:
        self.spawned.append(kw)
        return mock.Mock(pid=0)


@pytest.mark.parametrize("command, offered", [
    (None, True),
    (["/usr/bin/python3", "-m", "awslambdaric", "app.handler"], False),
    (["/opt/bootstrap"], False),
])
def test_only_the_shipped_worker_is_offered_events_ahead(command: list[str] | None,
                                                         offered: bool) -> None:
    reactor = _Spawner()
    cfg = FunctionConfig(name="Hello", handler="app.handler", code=Path("/tmp"))
    pool = rt.FunctionPool(cfg, reactor, "us-east-1", command)
    worker = pool.spawn()
    try:
        kw = reactor.spawned[0]
        assert (rt.AHEAD_FDS_VARIABLE in kw["env"]) is offered
        assert sorted(kw["childFDs"]) == ([0, 1, 2, 3, 4, 5] if offered else [0, 1, 2])
        if offered:
            assert kw["env"][rt.AHEAD_FDS_VARIABLE] == "3,4,5"
        # The shipped worker is started without a working directory (so Twisted uses
        # posix_spawn, no fork) and changes to its code folder itself; other clients
        # are started in it.
        assert kw["path"] == (None if offered else "/tmp")
        assert worker._next_poll.endswith(b"Twistgw-Ahead: 1\r\n\r\n" if offered
                                          else b":" + str(reactor.tcpServers[0][0]).encode()
                                          + b"\r\n\r\n")
    finally:
        worker.close_pipes()


# -- the fast lane against the parser, with events sent ahead --------------------------

def _segment(rid: str) -> bytes:
    return _result(rid.encode(), OUTPUT) + POLL


reads = st.one_of(
    st.just(_segment(A)),
    st.just(_segment(A) + _segment(B)),
    st.sampled_from([_segment(A) + _segment(C), _segment(A) + _segment(A),
                     _segment(A) + _segment(B) + _segment(C), _segment(B),
                     _segment(A) + _segment(B) + _segment(C) + _segment(D),
                     _segment(A) + _segment(C) + _segment(B),
                     _segment(A) + _segment(B) + _segment(C)[:-3],
                     _segment(A) + _segment(B)[:-1], _segment(A)[:-2] + b"\r\n",
                     _segment(A).replace(b"Twistgw-Ahead: 1\r\n", b""),
                     _segment(A) + _result(B.encode(), OUTPUT),
                     (_segment(A) + _segment(B)).replace(b"/response", b"/error", 1)]),
    st.builds(lambda i: (_segment(A) + _segment(B) + _segment(C))[:i],
              st.integers(0, 900)),
    st.builds(lambda body: _result(A.encode(), body) + POLL + _segment(B),
              st.binary(max_size=40)),
)


@settings(max_examples=300, deadline=None)
@given(first=reads, rest=st.sampled_from([b"", POLL, _segment(B), _segment(C), b"x"]),
       queued=st.integers(0, 3), claimed=st.integers(0, 2), depth=st.sampled_from([1, 2]))
def test_the_fast_lane_does_what_the_parser_does_with_events_ahead(
        first: bytes, rest: bytes, queued: int, claimed: int, depth: int) -> None:
    runs = []
    for fast in (True, False):
        p = Pool(1, fast, depth, timeout=3.0)
        try:
            p.invoke(A)
            for rid in (B, C, D, E)[:queued + 1]:
                p.invoke(rid)  # B (and C, at depth 2) ahead, the others queued
            for pipe in range(min(claimed, depth)):
                p.claim(0, pipe)  # the worker started the first ones sent ahead
            p.protos[0].dataReceived(first)
            if rest:
                p.protos[0].dataReceived(rest)
            p.reactor.advance(0)  # the end of the turn
            # The fast lane may keep a 202 for the next write (the worker reads it when it
            # comes; it never waits for one): the same bytes, in the same order.
            p.protos[0]._flush()
            w = p.workers[0]
            runs.append((
                re.sub(rb"Deadline-Ms: \d+", b"", p.transports[0].value()), w.state,
                w.current and w.current.id, [i.id for i in w.aheads], w._poll_answered,
                sorted(w._free_pipes), w._stale_pipes,
                w.pending_next is not None, [i.id for i in p.pool.queue],
                sorted((k, v.payload, v.function_error) if isinstance(v, rt.InvokeResult)
                       else (k, repr(v)) for k, v in p.results.items()),
                p.tokens(0)))
        finally:
            p.close()
    assert runs[0] == runs[1]


def test_the_fast_lane_takes_two_results_in_one_read(pools: list[Pool]) -> None:
    """Not vacuous: a worker that ran the event sent ahead before the gateway read its
    first result sends both with their polls; the fast lane takes them (the parser never
    sees them) and sends the next two events ahead, with the two 202s, in one write."""
    p = _pool(pools, depth=1)
    handled: list[Any] = []
    p.protos[0].handle = handled.append
    for rid in (A, B, C, D):
        p.invoke(rid)
    p.transports[0].clear()
    p.answer(0, A, B)
    assert handled == [] and _ok(p.results[A]) == _ok(p.results[B]) == OUTPUT
    w = p.workers[0]
    assert (w.current and w.current.id, w.ahead and w.ahead.id) == (C, D)
    out = p.transports[0].value()
    assert out.count(b"HTTP/1.1 202 Accepted") == 2 and out.index(C.encode()) < \
        out.index(D.encode()) and b"Twistgw-Ahead: 1 " in out


# -- two events ahead per worker (the shipped depth) ----------------------------------

def test_two_events_go_ahead_to_a_busy_worker_each_with_a_pipe_of_its_own(
        pools: list[Pool]) -> None:
    p = _pool(pools, timeout=3.0)
    for rid in (A, B, C, D):
        p.invoke(rid)
    w = p.workers[0]
    assert rt.AHEAD_DEPTH == 2 and [i.id for i in w.aheads] == [B, C]
    assert [i.id for i in p.pool.queue] == [D] and p.pool.running() == 3
    out = p.transports[0].value()
    assert b"Twistgw-Ahead: 0 3000\r\n" in out and b"Twistgw-Ahead: 1 3000\r\n" in out
    assert p.tokens(0) == [1, 1, 0]


def test_the_fast_lane_takes_three_results_in_one_read(pools: list[Pool]) -> None:
    """A worker that ran both events sent ahead before the gateway read its first result
    sends the three results with their polls in one write: the fast lane takes them (the
    parser never sees them), and the event queued behind them goes to the worker (ahead,
    on the pipe left free); the 202s the worker does not wait for go with the next
    write."""
    p = _pool(pools)
    handled: list[Any] = []
    p.protos[0].handle = handled.append
    for rid in (A, B, C, D):
        p.invoke(rid)
    p.claim(0, 0)
    p.claim(0, 1)
    p.transports[0].clear()
    p.answer(0, A, B, C)
    assert handled == [] and [_ok(p.results[r]) for r in (A, B, C)] == [OUTPUT] * 3
    w = p.workers[0]
    assert w.current is not None and w.current.id == D and not w.aheads
    out = p.transports[0].value()
    assert b"Twistgw-Ahead: 2 " in out
    p.protos[0]._flush()
    assert p.transports[0].value().count(b"HTTP/1.1 202 Accepted") == 3
    assert p.tokens(0) == [0, 0, 1]


def test_a_pipe_is_not_reused_while_the_worker_may_still_look_for_a_token_taken_back(
        pools: list[Pool]) -> None:
    """C is taken back (its caller gave up) while the worker runs A with B before it:
    the worker will still read C's pipe when it comes to C, so no other event's token
    goes into that pipe until the worker is past C (it ended an event after C)."""
    p = _pool(pools)
    p.invoke(A)
    p.invoke(B)  # ahead, pipe 0
    c = p.invoke(C)  # ahead, pipe 1
    c.cancel()
    assert isinstance(p.results[C], Failure)
    p.answer(0, A)  # B runs; the worker will come to C next
    p.invoke(D)  # ahead, pipe 2
    p.invoke(E)  # pipe 1 is not free yet: E waits in the queue
    w = p.workers[0]
    assert [i.id for i in w.aheads] == [D] and [i.id for i in p.pool.queue] == [E]
    assert not p.claim(0, 1)  # the worker, at C, finds it taken back and skips it
    assert p.claim(0, 2)  # and starts D
    p.answer(0, B)  # B's end frees pipe 0: E goes ahead there
    assert [i.id for i in w.aheads] == [E] and b"Twistgw-Ahead: 0 " in \
        p.transports[0].value().rpartition(E.encode())[2]
    f = A.replace("1", "6", 1)
    p.invoke(f)  # the worker may not be past C yet (it has just ended B): f waits
    assert [i.id for i in p.pool.queue] == [f]
    p.answer(0, D)  # the worker ended D, after C: C's pipe is free again (and D's)
    assert w.current is not None and w.current.id == E and [i.id for i in w.aheads] == [f]
    assert not w._stale_pipes and sorted(w._free_pipes) == [1]
    assert C not in [r for r in p.results if not isinstance(p.results[r], Failure)]


@pytest.mark.parametrize("started, results_come", [(1, True), (1, False), (2, True),
                                                   (2, False), (0, False)])
def test_a_worker_that_dies_with_two_events_sent_ahead(pools: list[Pool], started: int,
                                                       results_come: bool) -> None:
    """The worker started ``started`` of B and C (having written the results of the
    events before each) and died: the last it started fails mid-invoke, the ones before
    it get the results it wrote if they are read before the connection closes, and the
    ones it never started go back to the head of the queue, in order."""
    p = _pool(pools)
    for rid in (A, B, C, D):
        p.invoke(rid)
    for pipe in range(started):
        assert p.claim(0, pipe)
    p.workers[0].exited(1, None)
    order = [A, B, C]
    running = order[started]
    ended = order[:started]
    assert b"Runtime exited with error: exit status 1" in p.results[running].payload
    assert [i.id for i in p.pool.queue] == [*order[started + 1:], D]
    assert all(r not in p.results for r in ended)
    if results_come:
        p.protos[0].dataReceived(b"".join(_result(r.encode(), OUTPUT) + POLL
                                          for r in ended))
        assert all(_ok(p.results[r]) == OUTPUT for r in ended)
    p.protos[0].connectionLost(None)
    for r in ended:
        assert (p.results[r].function_error is None) is results_come


def test_an_idle_worker_takes_the_last_event_sent_ahead_elsewhere(
        pools: list[Pool]) -> None:
    """The busy worker already started C (it wrote A's result): the idle worker takes D,
    sent ahead behind C and not started."""
    p = _pool(pools, 2)
    for rid in (A, B, C, E, D):
        p.invoke(rid)  # A, B run; C, E, D ahead (C and D to the first worker)
    w0, w1 = p.workers
    assert [i.id for i in w0.aheads] == [C, D] and [i.id for i in w1.aheads] == [E]
    assert p.claim(0, 0)  # the first worker started C
    p.answer(1, B, E)  # the second worker is free, nothing queued
    p.reactor.advance(0)
    assert w1.current is not None and w1.current.id == D and [i.id for i in w0.aheads] == [C]


def test_an_event_goes_ahead_to_the_worker_with_the_fewest_sent_ahead(
        pools: list[Pool]) -> None:
    p = _pool(pools, 2)
    for rid in (A, B, C, D):
        p.invoke(rid)
    w0, w1 = p.workers  # both started at the same time; the first gets C, then D
    assert [i.id for i in w0.aheads] == [C] and [i.id for i in w1.aheads] == [D]


def test_every_event_not_started_behind_a_slow_invoke_goes_back(pools: list[Pool]) -> None:
    p = _pool(pools, 2)
    f, g = A.replace("1", "6", 1), A.replace("1", "7", 1)
    for rid in (A, B, C, D, E, f):
        p.invoke(rid)  # C, E ahead to the first worker, D, f to the second
    w0, w1 = p.workers
    assert [i.id for i in w0.aheads] == [C, E] and [i.id for i in w1.aheads] == [D, f]
    p.reactor.advance(rt.AHEAD_PATIENCE * 2)
    p.answer(1, B)  # the second worker goes on (D); A is slow
    p.invoke(g)  # C and E go back to the head of the queue, C to the second worker
    assert not w0.aheads and [i.id for i in w1.aheads] == [f, C]
    assert [i.id for i in p.pool.queue] == [E, g]


def test_a_worker_that_dies_before_it_started_two_events_gives_back_all_three(
        pools: list[Pool]) -> None:
    p = _pool(pools)
    for rid in (A, B, C, D):
        p.invoke(rid)
    p.answer(0, A)  # B runs now (its clock started), C and D are sent ahead
    assert [i.id for i in p.workers[0].aheads] == [C, D]
    p.workers[0].exited(1, None)  # before it read B's token
    assert _ok(p.results[A]) == OUTPUT
    assert [i.id for i in p.pool.queue] == [B, C, D] and len(p.results) == 1
