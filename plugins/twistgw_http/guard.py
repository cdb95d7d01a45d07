"""Per-backend protection: bounded concurrency with a bounded queue, and a circuit breaker.

One :class:`HostGuard` per backend ``(scheme, host, port)``.  A request takes a slot
before it is sent; when every slot is busy it waits in a queue of bounded length (its
wait counts against the integration timeout, and a cancelled wait leaves the queue), and
when the queue is full it is refused at once.  Refusing fast is the point: a backend that
cannot keep up must not make the gateway hold an unbounded number of requests.

The breaker counts consecutive failures to *talk* to the backend (refused, reset, TLS,
timeouts); any answer, even a 5xx, resets the count, because the backend is reachable and
its status is the client's business.  After ``failures`` in a row the circuit opens for
``open_seconds``: requests are refused without touching the backend.  Then one probe is
let through (half-open); its success closes the circuit, its failure opens it again.

Refusals raise AWS's INTEGRATION_FAILURE type with status 503 and ``{"message": "Service
Unavailable"}``: API Gateway has no such limit of its own, 503 is what HTTP APIs answer
when an integration cannot be used, and the type keeps the response customisable through
``x-amazon-apigateway-gateway-responses``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred

from twistgw import IntegrationFailure

__all__ = ["HostGuard", "unavailable", "SERVICE_UNAVAILABLE"]

SERVICE_UNAVAILABLE = "Service Unavailable"


def unavailable() -> IntegrationFailure:
    """The immediate 503 for a full backend or an open circuit."""
    return IntegrationFailure(SERVICE_UNAVAILABLE, status=503)


class HostGuard:
    """Slots, queue and breaker state of one backend; see the module docstring."""

    def __init__(self, clock: Any, *, max_concurrent: int, max_pending: int,
                 failures: int, open_seconds: float) -> None:
        self.clock = clock
        self.max_concurrent = max_concurrent
        self.max_pending = max_pending
        self.failures_to_open = failures
        self.open_seconds = open_seconds
        self.active = 0
        self.waiting: deque[Deferred[None]] = deque()
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.probing = False

    # -- breaker ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.opened_at is None:
            return "closed"
        if self.clock.seconds() - self.opened_at < self.open_seconds:
            return "open"
        return "half-open"

    def admit(self) -> bool:
        """Whether the breaker lets a request through now; the half-open probe is marked."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self.probing:
            return False
        self.probing = True
        return True

    def succeeded(self) -> None:
        """The backend answered: close the circuit."""
        self.consecutive_failures = 0
        self.opened_at = None
        self.probing = False

    def answered(self) -> None:
        """An exchange ended with an answer: :meth:`release` then :meth:`succeeded`, in
        one call (the proxied request's path counts calls)."""
        if self.waiting:
            self.release()
        else:
            self.active -= 1
        self.consecutive_failures = 0
        self.opened_at = None
        self.probing = False

    def failed(self) -> None:
        """The backend could not be reached or timed out."""
        self.consecutive_failures += 1
        if self.probing or (self.failures_to_open
                            and self.consecutive_failures >= self.failures_to_open):
            self.opened_at = self.clock.seconds()
        self.probing = False

    def abandoned(self) -> None:
        """The request was cancelled for another reason (client gone): no verdict."""
        self.probing = False

    # -- slots -------------------------------------------------------------------------------

    def acquire(self) -> Deferred[None] | None:
        """Take a slot: ``None`` when taken at once, a Deferred to wait for, or raise 503."""
        if self.active < self.max_concurrent:
            self.active += 1
            return None
        if len(self.waiting) >= self.max_pending:
            raise unavailable()
        d: Deferred[None] = Deferred(self._leave_queue)
        self.waiting.append(d)
        return d

    def _leave_queue(self, d: Deferred[None]) -> None:
        try:
            self.waiting.remove(d)
        except ValueError:
            pass

    def release(self) -> None:
        """Give the slot back, to the first waiter if there is one."""
        while self.waiting:
            d = self.waiting.popleft()
            if not d.called:
                d.callback(None)  # the slot passes on: ``active`` stays the same
                return
        self.active -= 1
