"""Random hex digits read a block at a time, fork-safe.

Trace ids (``X-Amzn-Trace-Id``'s Root and Parent) and Lambda invocation ids are random on
every request.  ``os.urandom`` is a ``getrandom`` system call each time, which showed in
the gateway's live system-call count, so :class:`RandomHex` reads 256 ids' worth at once
and hands them out in order.  A forked process (``twistd apigw --workers N`` forks its
serving processes) starts from a fresh block, so parent and child never hand out the
same ids.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator

__all__ = ["RandomHex"]

#: Ids per ``os.urandom`` call.
BLOCK_IDS = 256


class RandomHex:
    """``take()`` returns the next ``digits`` random hex digits (``digits`` even)."""

    __slots__ = ("__weakref__", "digits", "take")

    def __init__(self, digits: int) -> None:
        if digits <= 0 or digits % 2:
            raise ValueError(f"digits must be a positive even number, not {digits}")
        self.digits = digits
        #: The block reader's ``__next__``: one attribute load and a C call per id.
        self.take: Callable[[], str] = self._blocks().__next__
        _sources.add(self)

    def _blocks(self) -> Iterator[str]:
        digits = self.digits
        while True:
            block = os.urandom(digits // 2 * BLOCK_IDS).hex()
            for start in range(0, len(block), digits):
                yield block[start:start + digits]

    def reseed(self) -> None:
        """Drop what is left of the current block (done in a forked child)."""
        self.take = self._blocks().__next__


_sources: weakref.WeakSet[RandomHex] = weakref.WeakSet()


def _after_fork() -> None:
    for source in list(_sources):
        source.reseed()


os.register_at_fork(after_in_child=_after_fork)
