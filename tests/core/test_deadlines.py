"""Integration timeouts by lane (twistgw.deadlines): one timer per timeout value, each
call cancelled exactly at its own deadline, completed calls forgotten, out-of-order
deadlines on a timer of their own; and through the pipeline, every call of a route under
load times out at its own deadline with AWS's 504."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from twistgw import IntegrationResponse, hookimpl
from twistgw.deadlines import Deadlines
from twistgw.models import Context, IntegrationRequest

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory


def _watched(deadlines: Deadlines, timeout: float, remaining: float | None = None
             ) -> tuple[Deferred[Any], list[str]]:
    """A Deferred under watch that records how it ended ("timeout", "cancelled", "ok")."""
    d: Deferred[Any] = Deferred()
    seen: list[str] = []
    lane = deadlines.watch(d, timeout, timeout if remaining is None else remaining)

    def ok(result: object) -> None:
        seen.append("ok" if lane.done(d) else "late")

    def failed(failure: Any) -> None:
        failure.trap(CancelledError)
        seen.append("cancelled" if lane.done(d) else "timeout")

    d.addCallbacks(ok, failed)
    return d, seen


def test_each_call_times_out_at_its_own_deadline_on_one_timer() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    _first, first_seen = _watched(deadlines, 1.0)
    clock.advance(0.3)
    _second, second_seen = _watched(deadlines, 1.0)
    assert len(clock.getDelayedCalls()) == 1  # one timer for the lane, not one per call
    clock.advance(0.69)
    assert first_seen == second_seen == []
    clock.advance(0.02)  # t = 1.01: only the first call's deadline has come
    assert first_seen == ["timeout"] and second_seen == []
    clock.advance(0.28)  # t = 1.29
    assert second_seen == []
    clock.advance(0.02)  # t = 1.31
    assert second_seen == ["timeout"]
    assert len(deadlines) == 0


def test_completed_calls_leave_and_the_timer_rearms_lazily() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    first, first_seen = _watched(deadlines, 2.0)
    first.callback("answer")
    assert first_seen == ["ok"] and len(deadlines) == 0
    clock.advance(1.0)
    _second, second_seen = _watched(deadlines, 2.0)  # deadline t = 3
    clock.advance(1.5)  # t = 2.5: the lane's timer fired for the first call and re-armed
    assert second_seen == []
    assert [c.getTime() for c in clock.getDelayedCalls()] == [3.0]
    clock.advance(0.5)
    assert second_seen == ["timeout"]
    clock.advance(10)
    assert clock.getDelayedCalls() == []  # an empty lane lets its timer go


def test_a_cancelled_call_is_not_a_timeout() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    d, seen = _watched(deadlines, 1.0)
    d.cancel()  # the client went away
    assert seen == ["cancelled"]
    clock.advance(5)
    assert seen == ["cancelled"]


def test_out_of_order_deadline_gets_its_own_timer() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    _late, late_seen = _watched(deadlines, 5.0)
    _early, early_seen = _watched(deadlines, 5.0, remaining=1.0)  # e.g. a later impl
    assert len(clock.getDelayedCalls()) == 2
    clock.advance(1.0)
    assert early_seen == ["timeout"] and late_seen == []
    clock.advance(4.0)
    assert late_seen == ["timeout"]


def test_an_out_of_order_call_that_completes_cancels_its_timer() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    _watched(deadlines, 5.0)
    early, early_seen = _watched(deadlines, 5.0, remaining=1.0)
    early.callback(None)
    assert early_seen == ["ok"]
    assert [c.getTime() for c in clock.getDelayedCalls()] == [5.0]


def test_lanes_are_per_timeout_and_stop_cancels_their_timers() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    _watched(deadlines, 1.0)
    _watched(deadlines, 2.0)
    _watched(deadlines, 1.0)
    assert len(clock.getDelayedCalls()) == 2 and len(deadlines) == 3
    deadlines.stop()
    assert clock.getDelayedCalls() == [] and len(deadlines) == 0


def test_a_cancellation_that_starts_a_new_call_on_the_lane() -> None:
    """The expired call's callbacks run after the lane re-armed: a call they start (a
    retry, the next request) is timed like any other."""
    clock = Clock()
    deadlines = Deadlines(clock)
    d, seen = _watched(deadlines, 1.0)
    follow: list[list[str]] = []
    d.addBoth(lambda _: follow.append(_watched(deadlines, 1.0)[1]))
    clock.advance(1.0)
    assert seen == ["timeout"] and follow == [[]]
    clock.advance(0.99)
    assert follow == [[]]
    clock.advance(0.02)
    assert follow == [["timeout"]]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=3),  # gap to previous start
                          st.sampled_from([1, 2, 5]),  # timeout (the lane)
                          st.integers(min_value=0, max_value=1),  # time already used
                          st.one_of(st.none(), st.integers(min_value=0, max_value=7))),
                min_size=1, max_size=30))
def test_same_outcomes_as_one_timer_per_call(plan: list[tuple[int, int, int, int | None]]
                                             ) -> None:
    """Calls started over time with various timeouts, some with part of their time
    already used (a later impl: out of lane order), some answered: each ends exactly
    as under a ``callLater`` of its own (the ``Deferred.addTimeout`` the lanes replace),
    at the same clock time.  Integer seconds, so every time is exact."""
    clock = Clock()
    deadlines = Deadlines(clock)
    starts: list[int] = []
    t = 0
    for gap, *_rest in plan:
        t += gap
        starts.append(t)
    expected: list[tuple[str, float]] = []
    for start, (_gap, timeout, used, answer_after) in zip(starts, plan, strict=True):
        deadline = start + timeout - used if timeout > used else start + timeout
        answer = None if answer_after is None else start + answer_after
        expected.append(("ok", answer) if answer is not None and answer < deadline
                        else ("timeout", deadline))
    calls: list[Deferred[Any]] = []
    ended: list[list[tuple[str, float]]] = []
    for now in range(t + 10):
        if now:
            clock.advance(1)
        for i, start in enumerate(starts):
            if start == now:
                _gap, timeout, used, _answer = plan[i]
                remaining = timeout - used if timeout > used else timeout
                d, seen = _watched(deadlines, timeout, remaining)
                at: list[tuple[str, float]] = []
                d.addBoth(lambda _, seen=seen, at=at: at.append((seen[-1], clock.seconds())))
                calls.append(d)
                ended.append(at)
        for i, d in enumerate(calls):
            answer_after = plan[i][3]
            if answer_after is not None and starts[i] + answer_after == now and not d.called:
                d.callback(None)
    assert [at[0] if at else None for at in ended] == expected
    assert len(deadlines) == 0


class _Hangs:
    """An integration that never answers on its own; records cancellations."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.calls = 0

    @hookimpl
    def integrate(self, ctx: Context, request: IntegrationRequest
                  ) -> Deferred[IntegrationResponse]:
        self.calls += 1

        def cancel(_d: Deferred[IntegrationResponse]) -> None:
            self.cancelled += 1

        return Deferred(cancel)


def test_requests_in_flight_time_out_each_at_its_deadline(make_harness: HarnessFactory,
                                                           b: Builders) -> None:
    hangs = _Hangs()
    doc = b.openapi({"/x": {"get": b.mock_op(200, timeoutInMillis=1000)}})
    h = make_harness(doc, plugins=[("hangs", hangs)])
    boxes: list[list[Any]] = []
    for _ in range(3):
        result = h.exchange("GET", "/prod/x")
        assert isinstance(result, Deferred)
        box: list[Any] = []
        result.addBoth(box.append)
        boxes.append(box)
        h.clock.advance(0.4)  # requests start at t = 0, 0.4, 0.8
    # t = 1.2: only the first has timed out
    assert [len(box) for box in boxes] == [1, 0, 0] and hangs.cancelled == 1
    h.clock.advance(0.25)  # t = 1.45
    assert [len(box) for box in boxes] == [1, 1, 0] and hangs.cancelled == 2
    h.clock.advance(0.4)  # t = 1.85
    assert [len(box) for box in boxes] == [1, 1, 1] and hangs.cancelled == 3
    for box in boxes:
        response = box[0].response
        assert response.status == 504
        assert response.body == b'{"message": "Endpoint request timed out"}'
        assert box[0].outcome.finish.integration_status is None
    assert len(h.gateway.pipeline.deadlines) == 0


def test_a_client_that_goes_away_cancels_without_a_504(make_harness: HarnessFactory,
                                                        b: Builders) -> None:
    hangs = _Hangs()
    doc = b.openapi({"/x": {"get": b.mock_op(200, timeoutInMillis=1000)}})
    h = make_harness(doc, plugins=[("hangs", hangs)])
    result = h.exchange("GET", "/prod/x")
    assert isinstance(result, Deferred)
    box: list[Any] = []
    result.addBoth(box.append)
    result.cancel()
    assert hangs.cancelled == 1
    assert box[0].check(CancelledError)
    assert len(h.gateway.pipeline.deadlines) == 0
    h.clock.advance(5)
    assert hangs.cancelled == 1
