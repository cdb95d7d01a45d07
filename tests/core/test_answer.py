"""``twistgw.answer.Answer`` behaves as a Deferred used through ``addBoth``,
``addCallback``, ``callback`` and ``cancel`` does (``always``, ``then``, ``settle``,
``cancel``): the same values reach the same stages in the same order, whatever they
return or raise, whenever they are added and however the result comes (a value, a
Failure, a cancellation with or without a canceller that answers)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from twistgw.answer import Answer

#: What a stage does with its input (pass it on, return a new value, raise, return a
#: Failure, or recover from a Failure) and whether it sees Failures (``always``) or
#: values only (``then``).
STAGES = st.tuples(st.sampled_from(["pass", "value", "raise", "failure", "recover"]),
                   st.booleans())
#: How the result comes: a value, a Failure, cancel() with no canceller, with a canceller
#: that does nothing, or with one that answers with a value.
ENDINGS = st.sampled_from(["value", "failure", "cancel", "cancel-quiet", "cancel-answers"])


class Boom(Exception):
    pass


def _seen(x: Any) -> tuple[str, Any]:
    if isinstance(x, Failure):
        return ("failure", x.type.__name__)
    return ("value", x)


def _stage(kind: str, n: int, log: list[tuple[int, tuple[str, Any]]]) -> Any:
    def stage(result: Any) -> Any:
        log.append((n, _seen(result)))
        if kind == "pass":
            return result
        if kind == "value":
            return f"v{n}"
        if kind == "raise":
            raise Boom(n)
        if kind == "failure":
            return Failure(Boom(n))
        if isinstance(result, Failure):  # recover
            return f"recovered{n}"
        return result
    return stage


def _drive(kind: str, before: list[tuple[str, bool]], ending: str,
           after: list[tuple[str, bool]]
           ) -> tuple[list[tuple[int, tuple[str, Any]]], list[str], tuple[str, Any]]:
    """Run one scenario on a Deferred (``kind="deferred"``) or an Answer: stages
    ``before``, the ending, stages ``after``; what the stages saw, what the canceller
    saw, and the result after the last stage."""
    log: list[tuple[int, tuple[str, Any]]] = []
    cancels: list[str] = []

    def canceller(target: Any) -> None:
        cancels.append("cancelled")
        if ending == "cancel-answers":
            target.callback("answered") if kind == "deferred" else target.settle("answered")

    has_canceller = ending in ("cancel-quiet", "cancel-answers")
    if kind == "deferred":
        d: Any = Deferred(canceller if has_canceller else None)
        adds = {True: d.addBoth, False: d.addCallback}
        fire = d.callback
    else:
        d = Answer(canceller if has_canceller else None)
        adds = {True: d.always, False: d.then}
        fire = d.settle
    add = adds[True]
    for n, (stage, both) in enumerate(before):
        assert adds[both](_stage(stage, n, log)) is d
    if ending == "value":
        fire("result")
    elif ending == "failure":
        fire(Failure(Boom("in")))
    else:
        d.cancel()
    d.cancel()  # once there is a result, cancel does nothing (either kind)
    for n, (stage, both) in enumerate(after, len(before)):
        adds[both](_stage(stage, n, log))
    final: list[Any] = []
    add(final.append)
    if kind == "deferred" and isinstance(final[0], Failure):
        add(lambda _f: None)  # handled: no "Unhandled error in Deferred" at collection
    return log, cancels, _seen(final[0])


@settings(max_examples=300, deadline=None)
@given(before=st.lists(STAGES, max_size=4), ending=ENDINGS,
       after=st.lists(STAGES, max_size=3))
def test_an_answer_runs_its_stages_as_a_deferred_runs_its_callbacks(
        before: list[tuple[str, bool]], ending: str, after: list[tuple[str, bool]]) -> None:
    assert _drive("answer", before, ending, after) == _drive("deferred", before, ending,
                                                             after)


def test_the_first_result_wins_and_a_late_one_is_ignored() -> None:
    answer: Answer[str] = Answer()
    seen: list[Any] = []
    answer.always(seen.append)
    answer.cancel()
    assert answer.settle("late") is False  # a Deferred would raise AlreadyCalledError
    assert len(seen) == 1 and seen[0].check(CancelledError)
    assert answer.settle("again") is False and len(seen) == 1


def test_a_stage_added_by_a_running_stage_runs_after_the_others() -> None:
    answer: Answer[int] = Answer()
    order: list[str] = []

    def first(result: int) -> int:
        answer.then(lambda r: order.append(f"added saw {r}") or r)
        order.append("first")
        return result + 1

    answer.then(first)
    answer.then(lambda r: order.append(f"second saw {r}") or r * 10)
    answer.settle(1)
    assert order == ["first", "second saw 2", "added saw 20"]
    assert answer.result == 20


@pytest.mark.parametrize("outcome", ["value", "failure"])
def test_as_deferred_and_await_give_the_result(outcome: str) -> None:
    answer: Answer[str] = Answer()
    d = answer.as_deferred()

    async def waits() -> Any:
        return await answer

    awaited = Deferred.fromCoroutine(waits())
    got: list[Any] = []
    d.addBoth(got.append)
    awaited.addBoth(got.append)
    assert got == []
    answer.settle("done" if outcome == "value" else Failure(Boom("x")))
    if outcome == "value":
        assert got == ["done", "done"]
    else:
        assert [f.check(Boom) for f in got] == [Boom, Boom]


def test_cancelling_the_deferred_cancels_the_answer() -> None:
    cancelled: list[Answer[str]] = []
    answer: Answer[str] = Answer(cancelled.append)
    d = answer.as_deferred()
    got: list[Any] = []
    d.addBoth(got.append)
    d.cancel()
    assert cancelled == [answer] and answer.called
    assert got[0].check(CancelledError)
