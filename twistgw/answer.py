"""A result that comes later, lighter than a Deferred: what ``integrate`` may return.

A Deferred is general: any number of callbacks, chaining to other Deferreds, pausing,
debugging aids, unhandled-error reports.  An integration's answer needs less: the plugin
maps what its backend said to an :class:`~twistgw.models.IntegrationResponse` (a stage or
two), the core takes the result (one more), and a timeout or a client gone cancels the
call.  On the proxy and Lambda routes that Deferred was created, extended and fired on
every request; :class:`Answer` does the same work with a list of stages and a loop.

The semantics are Deferred's where they overlap, so a plugin can switch without
rethinking its code:

* :meth:`Answer.always` adds a stage: ``stage(result, *args)`` runs when the result is
  there (at once if it is already), gets a value or a
  :class:`~twisted.python.failure.Failure` alike (``addBoth``), and what it returns, or
  the exception it raises as a Failure, is what the next stage gets.
  :meth:`Answer.then` adds one for values only (``addCallback``): a Failure passes it
  by.  A stage's return value is passed on as it is: a Deferred or an Answer returned
  by a stage is not waited for.
* :meth:`Answer.settle` delivers the result (a value or a Failure); the first call wins
  and later ones are ignored and return ``False`` (the late answer of a call that was
  cancelled or timed out), where a Deferred would raise ``AlreadyCalledError``.
* :meth:`Answer.cancel` calls the canceller, if the result is not there yet; if the
  canceller did not settle it, it settles with a :class:`CancelledError` Failure, as
  ``Deferred.cancel`` does.
* :meth:`Answer.as_deferred` (and ``await answer``) gives a Deferred of the result for
  code written against Deferreds.

A Failure left after the last stage is not reported anywhere (a Deferred logs it when
collected): the core always takes the result of an Answer returned by ``integrate``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

__all__ = ["Answer"]

_T = TypeVar("_T")


class Answer(Generic[_T]):
    """A result that comes later, with stages run when it does (see the module doc).

    :param canceller: called with the answer by :meth:`cancel` while no result is there,
        to stop the work; it may settle the answer itself.
    """

    __slots__ = ("_canceller", "_stages", "called", "result")

    def __init__(self, canceller: Callable[[Answer[_T]], object] | None = None) -> None:
        self._canceller = canceller
        #: The stages not run yet, in order (None: none added yet, or all run).
        self._stages: list[tuple[Callable[..., Any], tuple[Any, ...]]] | None = None
        #: True once :meth:`settle` was called (the stages then have run, or are running).
        self.called = False
        #: The result after the last stage (meaningful once :attr:`called`).
        self.result: Any = None

    def then(self, stage: Callable[..., Any], *args: Any) -> Answer[Any]:
        """:meth:`always` for a value only: a Failure passes ``stage`` by
        (``Deferred.addCallback``'s contract)."""
        return self.always(_on_value, stage, args)

    def always(self, stage: Callable[..., Any], *args: Any) -> Answer[Any]:
        """Run ``stage(result, *args)`` on the result (value or Failure) when it is there,
        at once if it is; its return value (or raised exception, as a Failure) becomes
        the result.  Returns the answer itself (``Deferred.addBoth``'s contract)."""
        stages = self._stages
        if stages is not None:  # waiting, or stages running now: after them
            stages.append((stage, args))
        elif self.called:
            try:
                self.result = stage(self.result, *args)
            except BaseException:
                self.result = Failure()
        else:
            self._stages = [(stage, args)]
        return self

    def settle(self, result: _T | Failure) -> bool:
        """Deliver the result and run the stages; ``False`` (and nothing done) if the
        answer was settled already (cancelled, or answered before)."""
        if self.called:
            return False
        self.called = True
        self._canceller = None
        stages = self._stages
        if stages is not None:
            # A stage may add stages (then() appends to this list while it runs; a
            # list's iterator sees what is appended).
            for stage, args in stages:
                try:
                    result = stage(result, *args)
                except BaseException:
                    result = Failure()
            self._stages = None
        self.result = result
        return True

    def cancel(self) -> None:
        """Stop waiting: the canceller runs, and the answer fails with
        :class:`CancelledError` unless the canceller settled it.  Nothing happens once
        the result is there."""
        if self.called:
            return
        canceller = self._canceller
        if canceller is not None:
            canceller(self)
        if not self.called:
            self.settle(Failure(CancelledError()))

    def as_deferred(self) -> Deferred[Any]:
        """A Deferred of the result (after the stages added so far); cancelling it
        cancels the answer."""
        d: Deferred[Any] = Deferred(lambda _d: self.cancel())
        self.always(_fire, d)
        return d

    def __await__(self) -> Generator[Any, Any, Any]:
        return self.as_deferred().__await__()


def _on_value(result: Any, stage: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """The stage :meth:`Answer.then` adds: ``stage`` for a value, a Failure as it is."""
    if isinstance(result, Failure):
        return result
    return stage(result, *args)


def _fire(result: Any, d: Deferred[Any]) -> Any:
    """The stage :meth:`Answer.as_deferred` adds: the Deferred gets the result, which
    later stages get too."""
    if not d.called:  # (cancelled through the Deferred: it has its CancelledError)
        d.callback(result)
    return result
