"""The --workers supervisor's decisions, on a fake clock: replacement backoff, forwarding."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from twistgw import workers
from twistgw.workers import AdoptListeners, Supervisor, parse_listeners, worker_plugins


class _Transport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def closeStdin(self) -> None:
        pass

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


class _Reactor(Clock):
    """A clock that 'spawns' processes by handing their protocol a fake transport."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[Any] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any,
                     childFDs: Any) -> None:
        self.spawned.append((protocol, env, childFDs))
        protocol.makeConnection(_Transport(1000 + len(self.spawned)))


class _Config:
    listeners: tuple[Any, ...] = ()
    shutdown_grace = 30.0


class _Gateway:
    def __init__(self) -> None:
        self.reactor = _Reactor()
        self.config = _Config()


def _died(code: int = 1) -> Failure:
    return Failure(ProcessTerminated(exitCode=code))


@pytest.fixture
def sup(monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    clock = [0.0]
    monkeypatch.setattr(workers.time, "monotonic", lambda: clock[0])
    s = Supervisor(_Gateway(), 2, "/etc/gw.yaml")  # type: ignore[arg-type]
    s._now = clock  # type: ignore[attr-defined]
    s._spawn(1)
    s._spawn(2)
    return s


def _pending_delay(s: Supervisor, slot: int) -> float:
    call = s.pending[slot]
    return float(call.getTime() - s.reactor.seconds())


def test_a_crash_loop_backs_off_doubling_up_to_the_cap(sup: Supervisor) -> None:
    delays = []
    for _ in range(10):
        worker = sup.workers[1]
        worker.processEnded(_died())
        delays.append(_pending_delay(sup, 1))
        sup.reactor.advance(delays[-1])  # the replacement starts, and dies young again
    assert delays[:8] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert max(delays) == workers.MAX_BACKOFF
    assert sup.workers[2].ended is False  # the other slot is untouched


def test_a_worker_that_ran_long_is_replaced_at_once(sup: Supervisor) -> None:
    for _ in range(3):
        sup.workers[1].processEnded(_died())
        sup.reactor.advance(_pending_delay(sup, 1))
    sup._now[0] += workers.HEALTHY_AFTER + 1  # type: ignore[attr-defined]
    sup.workers[1].processEnded(_died())
    assert _pending_delay(sup, 1) == 0.0


def test_sighup_waits_for_a_worker_that_cannot_handle_it_yet(sup: Supervisor,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    ready = {1001: True, 1002: False}
    monkeypatch.setattr(workers, "_signal_ready", lambda pid, signum: ready[pid])
    sup.forward(signal.SIGHUP)
    first, second = (sup.workers[i].transport for i in (1, 2))
    assert first.signals == [signal.SIGHUP] and second.signals == []  # type: ignore[union-attr]
    ready[1002] = True
    sup.reactor.advance(0.2)
    assert second.signals == [signal.SIGHUP]  # type: ignore[union-attr]


def test_stop_forwards_sigterm_and_kills_after_the_grace(sup: Supervisor) -> None:
    d = sup.stopService()
    transports = [sup.workers[i].transport for i in (1, 2)]
    assert all(t.signals == [signal.SIGTERM] for t in transports)  # type: ignore[union-attr]
    sup.workers[1].processEnded(_died(0))
    sup.reactor.advance(30.0 + workers.KILL_MARGIN)
    assert transports[1].signals[-1] == signal.SIGKILL  # type: ignore[union-attr]
    assert not d.called
    sup.workers[2].processEnded(_died(-9))
    assert d.called
    assert not sup.pending  # nothing is replaced while stopping


def test_worker_environment_round_trips_and_adopts_only_named_listeners() -> None:
    assert parse_listeners("public=3:2,private=4:10") == {"public": (3, 2),
                                                          "private": (4, 10)}
    assert worker_plugins({}) == []
    plugin = AdoptListeners({"public": (3, 2)})

    class L:
        name = "other"

    assert plugin.wrap(L(), "endpoint", "factory", None) == ("endpoint", "factory")  # type: ignore[arg-type]
