"""The async-aware dispatcher for request-path hooks.

pluggy calls implementations synchronously and would treat a coroutine as a non-``None``
result.  The request path therefore walks the implementations itself, in pluggy's call
order (precomputed per route as a :class:`HookPlan`), and awaits each result: a plain
value, a ``Deferred`` or a coroutine.  An awaited ``None`` abstains.

Results that are already available never touch the reactor: awaiting a fired Deferred or
a plain value continues synchronously, so a fully synchronous route (a MOCK) runs start to
finish inside one call (see :func:`run_maybe_sync`).

An implementation that raises something other than a
:class:`~twistgw.errors.GatewayError` is logged once with the plugin and hook named, and
becomes a :class:`~twistgw.errors.PluginError` (a 500 gateway response).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Sequence
from time import perf_counter
from types import CoroutineType
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import GatewayError, PluginError

__all__ = ["Impl", "HookPlan", "Later", "impls_in_call_order", "call_first", "call_pipe",
           "pipe_now", "call_each", "notify", "run_maybe_sync", "resolve", "call_impl",
           "plugin_failure"]

log = Logger()
T = TypeVar("T")
#: Results the dispatcher must await (plain ``isinstance``: no Python-level call).
_AWAITABLE = (Deferred, CoroutineType)


class Later:
    """A result that comes later without being a Deferred (the pipeline's
    :class:`~twistgw.pipeline.Pending`): a coroutine :func:`run_maybe_sync` had to
    suspend hands it on as :meth:`as_deferred`."""

    __slots__ = ()

    def as_deferred(self) -> Deferred[Any]:
        """A Deferred of the result; cancelling it cancels what it waits on."""
        raise NotImplementedError


@attrs.frozen
class Impl:
    """One hook implementation: which plugin, the function and the arguments it takes."""

    plugin: str
    hook: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]


@attrs.frozen
class HookPlan:
    """The implementations to call for each request-path hook, in call order."""

    authorize: tuple[Impl, ...] = ()
    map_request: tuple[Impl, ...] = ()
    integrate: tuple[Impl, ...] = ()
    map_response: tuple[Impl, ...] = ()
    handle_error: tuple[Impl, ...] = ()
    request_started: tuple[Impl, ...] = ()
    request_finished: tuple[Impl, ...] = ()


def impls_in_call_order(pm: Any, hook_name: str) -> list[Impl]:
    """The implementations of ``hook_name`` in the order pluggy would call them."""
    caller = getattr(pm.hook, hook_name)
    return [Impl(plugin=i.plugin_name, hook=hook_name, function=i.function,
                 argnames=tuple(i.argnames)) for i in reversed(caller.get_hookimpls())]


async def resolve(value: Any) -> Any:
    """Await ``value`` if it is a Deferred or a coroutine, else return it."""
    if isinstance(value, Deferred):
        return await value
    if inspect.iscoroutine(value):
        return await value
    return value


def plugin_failure(impl: Impl, err: BaseException) -> PluginError:
    """Log ``err`` naming the plugin and hook; return the PluginError to raise."""
    log.failure("plugin {plugin} failed in hook {hook}", plugin=impl.plugin, hook=impl.hook,
                failure=_as_failure(err))
    return PluginError(impl.plugin, impl.hook)


def _as_failure(err: BaseException) -> Failure:
    return Failure(err, type(err), err.__traceback__)


def _call(impl: Impl, kwargs: dict[str, Any], timings: list[tuple[str, str, float]] | None,
          start: float) -> Any:
    """Call ``impl`` with its arguments from ``kwargs``; a failure is timed and raised
    (a plain exception as a logged :class:`PluginError`)."""
    try:
        return impl.function(*[kwargs[a] for a in impl.argnames])
    except Exception as e:
        error = _timed_failure(impl, e, timings, start)
        if error is e:
            raise
        raise error from e


def _timed_failure(impl: Impl, err: Exception,
                   timings: list[tuple[str, str, float]] | None, start: float) -> Exception:
    """Record the failed call's time; the exception to raise: a GatewayError as is, any
    other (a plugin's bug, which must not kill the request path) as a logged
    PluginError."""
    if timings is not None:
        timings.append((impl.hook, impl.plugin, perf_counter() - start))
    return err if isinstance(err, GatewayError) else plugin_failure(impl, err)


async def _settle(impl: Impl, pending: Any, start: float,
                  timings: list[tuple[str, str, float]] | None) -> Any:
    """Await ``impl``'s Deferred or coroutine result, timed from ``start``."""
    try:
        return await pending
    except GatewayError:
        raise
    except Exception as e:
        raise plugin_failure(impl, e) from e
    finally:
        if timings is not None:
            timings.append((impl.hook, impl.plugin, perf_counter() - start))


async def call_impl(impl: Impl, kwargs: dict[str, Any], timings: list[tuple[str, str, float]] | None
                    ) -> Any:
    """Call one implementation and await its result; record its time in ``timings``."""
    start = perf_counter()
    result = _call(impl, kwargs, timings, start)
    if isinstance(result, Deferred) or inspect.iscoroutine(result):
        return await _settle(impl, result, start, timings)
    if timings is not None:
        timings.append((impl.hook, impl.plugin, perf_counter() - start))
    return result


async def call_first(impls: Sequence[Impl], kwargs: dict[str, Any],
                     timings: list[tuple[str, str, float]] | None = None) -> Any:
    """First non-None result wins; ``None`` if every implementation abstains."""
    for impl in impls:
        result = await call_impl(impl, kwargs, timings)
        if result is not None:
            return result
    return None


async def call_pipe(impls: Sequence[Impl], kwargs: dict[str, Any], key: str,
                    timings: list[tuple[str, str, float]] | None = None) -> Any:
    """Pipe ``kwargs[key]`` through every implementation; ``None`` keeps the value.

    The loop calls implementations directly and only awaits results that need it: this
    runs on every request, and a coroutine per implementation was measurable.
    """
    for impl in impls:
        start = perf_counter()
        try:
            result = impl.function(*[kwargs[a] for a in impl.argnames])
            if result is not None and isinstance(result, _AWAITABLE):
                result = await result
        except GatewayError:
            raise
        except Exception as e:  # a plugin's bug must not kill the request path
            raise plugin_failure(impl, e) from e
        finally:
            if timings is not None:
                timings.append((impl.hook, impl.plugin, perf_counter() - start))
        if result is not None:
            kwargs[key] = result
    return kwargs[key]


def pipe_now(impls: Sequence[Impl], kwargs: dict[str, Any], key: str,
             timings: list[tuple[str, str, float]] | None = None) -> Any:
    """:func:`call_pipe` without a coroutine while every result is already there.

    Returns the piped value, or, as soon as an implementation returns a Deferred or a
    coroutine, a coroutine that awaits it and pipes the rest (the caller awaits that;
    a piped value is never itself a coroutine).  Creating and running a coroutine per
    pipe on every request was measurable.
    """
    for i, impl in enumerate(impls):
        start = perf_counter()
        try:  # _call inlined: a Python call per impl on every request
            result = impl.function(*[kwargs[a] for a in impl.argnames])
        except Exception as e:
            error = _timed_failure(impl, e, timings, start)
            if error is e:
                raise
            raise error from e
        if result is not None and isinstance(result, _AWAITABLE):
            return _pipe_rest(impls, i, result, start, kwargs, key, timings)
        if timings is not None:
            timings.append((impl.hook, impl.plugin, perf_counter() - start))
        if result is not None:
            kwargs[key] = result
    return kwargs[key]


async def _pipe_rest(impls: Sequence[Impl], i: int, pending: Any, start: float,
                     kwargs: dict[str, Any], key: str,
                     timings: list[tuple[str, str, float]] | None) -> Any:
    """Await implementation ``i``'s ``pending`` result, then pipe the rest."""
    result = await _settle(impls[i], pending, start, timings)
    if result is not None:
        kwargs[key] = result
    return await call_pipe(impls[i + 1:], kwargs, key, timings)


async def call_each(impls: Sequence[Impl], kwargs: dict[str, Any],
                    stop: Callable[[Any], bool],
                    timings: list[tuple[str, str, float]] | None = None) -> list[Any]:
    """Call every implementation in order, stopping after a result where ``stop`` is true.

    Returns the non-None results seen.
    """
    results: list[Any] = []
    for impl in impls:
        result = await call_impl(impl, kwargs, timings)
        if result is not None:
            results.append(result)
            if stop(result):
                break
    return results


def _log_observer_failure(failure: Failure, impl: Impl) -> None:
    log.failure("plugin {plugin} failed in hook {hook}", failure, plugin=impl.plugin,
                hook=impl.hook)


def notify(impls: Sequence[Impl], kwargs: dict[str, Any]) -> None:
    """Call observers one by one; an exception is logged and never propagates."""
    for impl in impls:
        try:
            result = impl.function(*[kwargs[a] for a in impl.argnames])
            if isinstance(result, CoroutineType):
                result = Deferred.fromCoroutine(result)
            if isinstance(result, Deferred):
                result.addErrback(_log_observer_failure, impl)
        except Exception as e:
            log.failure("plugin {plugin} failed in hook {hook}", _as_failure(e),
                        plugin=impl.plugin, hook=impl.hook)


def run_maybe_sync(coro: Coroutine[Any, Any, T]) -> T | Deferred[T]:
    """Run ``coro`` synchronously as far as it goes.

    If it completes without waiting on an unfired Deferred, its result is returned
    directly (no Deferred, no reactor turn).  Otherwise the rest of it is driven by a
    :class:`_Resume` (a Deferred's ``__await__`` simply yields itself again while
    unfired, so the hand-over is safe).
    """
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    return _Resume(coro, waiting).deferred


class _Resume:
    """Drives a suspended coroutine: resumes it whenever the Deferred it awaits fires,
    and fires :attr:`deferred` with its result; cancelling that cancels the awaited
    Deferred.  What :meth:`Deferred.fromCoroutine` does, minus what the request path
    never needs (``returnValue`` checks, a contextvars copy, a status object): every
    proxied or Lambda request goes through it."""

    __slots__ = ("coro", "deferred", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.deferred: Deferred[Any] = Deferred(self._cancel)
        self.waiting: Deferred[Any] | None = None
        self._wait(waiting)

    def _wait(self, waiting: Any) -> None:
        if not isinstance(waiting, Deferred):
            self.coro.close()
            self._fire(Failure(TypeError(f"awaited {waiting!r}, not a Deferred")))
            return
        self.waiting = waiting
        waiting.addBoth(self._step)

    def _fire(self, result: object) -> None:
        if isinstance(result, Later):
            result = result.as_deferred()
        if isinstance(result, Deferred):  # the coroutine's result: chained, cancellable
            self.waiting = result
            result.addBoth(self._fired)
            return
        # Already fired only if a cancellation errbacked it while the coroutine, having
        # caught the CancelledError, awaited something else: its late result is dropped.
        if not self.deferred.called:
            if isinstance(result, Failure):
                self.deferred.errback(result)
            else:
                self.deferred.callback(result)

    def _fired(self, result: object) -> None:
        self.waiting = None
        self._fire(result)

    def _step(self, result: object) -> None:
        """The awaited Deferred fired with ``result``: a value is read by its
        ``__await__`` (still its current result while this callback runs), a Failure is
        raised into the coroutine; either way the coroutine consumed it, so the awaited
        Deferred ends with ``None``, as under ``fromCoroutine``."""
        self.waiting = None
        try:
            if isinstance(result, Failure):
                waiting = result.throwExceptionIntoGenerator(self.coro)
            else:
                waiting = self.coro.send(None)
        except StopIteration as stop:
            self._fire(stop.value)
        except BaseException:
            self._fire(Failure())
        else:
            self._wait(waiting)

    def _cancel(self, _d: Deferred[Any]) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
