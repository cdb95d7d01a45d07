"""Integration timeouts without a timer per request.

``Deferred.addTimeout`` schedules a ``DelayedCall`` for every integration call (a heap
push, later a cancellation and a heap rebuild) and adds two callbacks; on the proxy and
Lambda routes that was a visible share of the core's per-request cost, for a timer that
almost never fires.

:class:`Deadlines` keeps the calls in flight in one *lane* per timeout value instead.
Calls of one lane are added in the order their deadlines fall (a request's deadline is
its start plus the lane's timeout, and requests start in order), so a lane is an
insertion-ordered dict whose first entry is always the next to expire, and one timer per
lane suffices: armed for the first entry's deadline, it expires every entry whose
deadline has come (cancelling its Deferred) and re-arms for the new first entry.  A call
that completes only leaves its lane (a dict deletion); the lane's timer is not moved, so
when it fires early it just re-arms.  A call whose deadline would not keep its lane's
order (a later ``integrate`` impl after an asynchronous one abstained, or the wall clock
stepping back) gets a lane of its own, i.e. exactly the one timer it had before.

Bounds: an entry per call in flight; an empty lane lives until its timer fires (at most
its timeout), so the number of lanes is bounded by the distinct timeouts used within one
timeout period -- in practice the routes' ``timeoutInMillis`` values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from .answer import Answer

    #: What a lane watches: anything cancelled by ``cancel()``.
    Call = Deferred[Any] | Answer[Any]

__all__ = ["Deadlines", "Lane"]

#: A deadline this close to the timer's firing time counts as reached (the timer was
#: armed for ``deadline - now`` seconds; float rounding must not cost an extra turn).
_SLACK = 1e-6


class Lane:
    """The calls in flight with one timeout, in deadline order, and their one timer."""

    __slots__ = ("_clock", "_entries", "_owner", "_timer", "last", "timeout")

    def __init__(self, owner: Deadlines | None, clock: IReactorTime, timeout: float) -> None:
        self._owner = owner
        self._clock = clock
        self.timeout = timeout
        #: Deferred -> its deadline (``clock.seconds()``), in deadline order.
        self._entries: dict[Call, float] = {}
        self._timer: IDelayedCall | None = None
        #: Never below the deadline of the last entry (the latest one added; entries
        #: that leave do not lower it), so a deadline at or after it keeps the order.
        self.last = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def done(self, d: Call) -> bool:
        """``d`` finished: forget it.  ``False`` if it had already timed out (the timer
        took it out and cancelled it), which is how the caller tells a timeout from
        another cancellation."""
        entries = self._entries
        if entries.pop(d, None) is None:
            return False
        if self._owner is None and not entries:
            self.stop()  # a lane of its own: its timer has nothing left to do
        return True

    def _arm(self, deadline: float) -> None:
        self._timer = self._clock.callLater(max(deadline - self._clock.seconds(), 0.0),
                                            self._expire)

    def _expire(self) -> None:
        """Cancel every call whose deadline has come; re-arm for the next one."""
        self._timer = None
        entries = self._entries
        now = self._clock.seconds() + _SLACK
        expired = []
        for d, deadline in entries.items():
            if deadline > now:
                break
            expired.append(d)
        for d in expired:
            del entries[d]
        # Re-arm first: a cancellation's callbacks may start new calls on this lane.
        if entries:
            self._arm(next(iter(entries.values())))
        elif self._owner is not None:
            self._owner._drop(self)
        for d in expired:
            d.cancel()

    def stop(self) -> None:
        """Cancel the timer (the calls still in the lane never time out)."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


class Deadlines:
    """The integration timeouts of one pipeline (see the module docstring).

    :param clock: the reactor (a ``task.Clock`` in tests); deadlines are in its
        ``seconds()``.
    """

    __slots__ = ("_clock", "_lanes")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._lanes: dict[float, Lane] = {}

    def watch(self, d: Call, timeout: float, remaining: float) -> Lane:
        """Cancel ``d`` in ``remaining`` seconds unless it is :meth:`Lane.done` first.

        ``timeout`` names the lane: calls with the same timeout share one timer.
        Returns the lane, whose :meth:`Lane.done` the caller must call when ``d`` fires.
        """
        return self.watch_until(d, timeout, self._clock.seconds() + remaining)

    def watch_until(self, d: Call, timeout: float, deadline: float) -> Lane:
        """:meth:`watch` with the deadline given in the clock's ``seconds()``."""
        clock = self._clock
        lane = self._lanes.get(timeout)
        if lane is None:
            lane = self._lanes[timeout] = Lane(self, clock, timeout)
        elif lane._entries and deadline < lane.last:
            lane = Lane(None, clock, timeout)  # out of order: a timer of its own
        lane._entries[d] = lane.last = deadline
        if lane._timer is None:
            lane._arm(deadline)
        return lane

    def _drop(self, lane: Lane) -> None:
        if self._lanes.get(lane.timeout) is lane:
            del self._lanes[lane.timeout]

    def stop(self) -> None:
        """Cancel every lane's timer (shutdown; calls in flight no longer time out)."""
        for lane in self._lanes.values():
            lane.stop()
        self._lanes.clear()

    def __len__(self) -> int:
        """The number of calls being watched (in shared lanes)."""
        return sum(len(lane) for lane in self._lanes.values())
