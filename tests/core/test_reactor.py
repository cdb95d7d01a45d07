"""The gateway's reactor (twistgw.reactor): the same behaviour as Twisted's epoll reactor
for every event, with a leaner dispatch.

Each scenario runs on a fresh, uninstalled ``EPollReactor`` and ``GatewayReactor`` over
real loopback sockets and must give the same observable result: the bytes delivered,
the legacy log context (``system``) seen inside ``dataReceived``, a ``dataReceived``
that raises (the connection is closed and the error logged under the connection's
prefix), a ``logPrefix`` that raises, and the context stack left as it was.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python import context, log
from twisted.python.failure import Failure

from twistgw.reactor import GatewayReactor

REACTORS = [EPollReactor, GatewayReactor]


class _Server(Protocol):
    """Records what it gets and the log context's ``system`` while it gets it."""

    def __init__(self, seen: dict[str, Any], behaviour: str) -> None:
        self.seen = seen
        self.behaviour = behaviour

    def logPrefix(self) -> str:
        return "Srv"

    def connectionMade(self) -> None:
        if self.behaviour == "buggy-prefix":  # the selectable's own logPrefix raises
            def broken() -> str:
                raise RuntimeError("no prefix")

            self.transport.logPrefix = broken  # type: ignore[method-assign, union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.seen.setdefault("data", b"")
        self.seen["data"] += data
        self.seen.setdefault("systems", []).append(
            context.get(log.ILogContext)["system"])
        log.msg("server got bytes")  # a legacy log line from the handler
        if self.behaviour == "raise":
            raise ValueError("handler bug")
        assert self.transport is not None
        self.transport.write(data.upper())

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.seen["lost"] = reason.type.__name__ if reason is not None else "?"


class _Client(Protocol):
    def __init__(self, seen: dict[str, Any]) -> None:
        self.seen = seen

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"hello")

    def dataReceived(self, data: bytes) -> None:
        self.seen["echo"] = self.seen.get("echo", b"") + data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.seen["client_lost"] = True


@contextmanager
def _legacy_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    log.addObserver(events.append)
    try:
        yield events
    finally:
        log.removeObserver(events.append)


def _stack() -> list[Any]:
    """The log context stack of this thread."""
    tracker: Any = context.theContextTracker
    current = tracker.currentContext() if hasattr(tracker, "currentContext") else tracker
    return current.contexts  # type: ignore[no-any-return]


def _run(reactor_type: Callable[[], Any], behaviour: str) -> dict[str, Any]:
    """One connection of a client and a server on a fresh reactor, driven by hand."""
    reactor = reactor_type()
    seen: dict[str, Any] = {}
    client_seen: dict[str, Any] = {}
    depth = len(_stack())
    port = reactor.listenTCP(0, Factory.forProtocol(lambda: _Server(seen, behaviour)),
                             interface="127.0.0.1")
    try:
        with _legacy_events() as events:
            reactor.connectTCP("127.0.0.1", port.getHost().port,
                               ClientFactory.forProtocol(lambda: _Client(client_seen)))
            for _ in range(200):
                reactor.iterate(0.01)
                if "lost" in seen or client_seen.get("echo") == b"HELLO":
                    break
    finally:
        port.stopListening()
        for _ in range(5):
            reactor.iterate(0)
        reactor.disconnectAll()
        reactor._poller.close()
    assert len(_stack()) == depth
    systems = [e["system"] for e in events if e.get("message") == ("server got bytes",)]
    errors = [(e["system"], e["failure"].type.__name__) for e in events if e.get("isError")]
    return {"data": seen.get("data"), "seen_systems": seen.get("systems"),
            "logged_systems": systems, "errors": errors, "lost": seen.get("lost"),
            "echo": client_seen.get("echo")}


@pytest.mark.parametrize("behaviour", ["echo", "raise"])
def test_events_go_as_under_twisteds_epoll_reactor(behaviour: str) -> None:
    plain, lean = (_run(r, behaviour) for r in REACTORS)
    assert lean == plain
    assert lean["data"] == b"hello"
    # the handler's log context names its connection, as callWithLogger's does
    assert lean["seen_systems"] == lean["logged_systems"] == ["Srv,0,127.0.0.1"]
    if behaviour == "raise":
        # the connection is dropped and the error logged under its prefix
        assert lean["errors"] == [("Srv,0,127.0.0.1", "ValueError")]
        assert lean["lost"] is not None and lean["echo"] is None
    else:
        assert lean["errors"] == [] and lean["echo"] == b"HELLO"


def test_a_buggy_log_prefix_is_logged_and_the_event_still_dispatched() -> None:
    plain, lean = (_run(r, "buggy-prefix") for r in REACTORS)
    assert lean == plain
    assert lean["echo"] == b"HELLO"
    assert lean["seen_systems"] == ["(buggy logPrefix method)"]
    assert ("(buggy logPrefix method)", "RuntimeError") in lean["errors"]


def test_another_context_tracker_gets_twisteds_dispatch() -> None:
    """With a context tracker that is not Twisted's own, events go through
    ``callWithLogger`` (which speaks to whatever tracker is installed)."""
    original = context.theContextTracker
    calls: list[str] = []

    class _Tracker(context.ContextTracker):
        def callWithContext(self, newContext: Any, func: Any, *args: Any, **kw: Any
                            ) -> Any:
            calls.append(newContext[log.ILogContext]["system"])
            return super().callWithContext(newContext, func, *args, **kw)

    context.installContextTracker(_Tracker())
    try:
        result = _run(GatewayReactor, "echo")
    finally:
        context.installContextTracker(original)
    assert result["echo"] == b"HELLO"
    assert "Srv,0,127.0.0.1" in calls


@pytest.mark.parametrize(("before", "expected"), [
    ("", "twistgw.reactor.GatewayReactor"),
    ("from twisted.internet import pollreactor; pollreactor.install()",
     "twisted.internet.pollreactor.PollReactor"),
    ("from twisted.internet import reactor", "twisted.internet.epollreactor.EPollReactor"),
])
def test_the_gateways_reactor_is_installed_only_when_none_was_chosen(before: str,
                                                                     expected: str) -> None:
    code = (f"{before}\nfrom twistgw.reactor import install_if_unchosen\n"
            "r = install_if_unchosen()\n"
            "from twisted.internet import reactor\nassert r is reactor\n"
            "print(type(r).__module__ + '.' + type(r).__qualname__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == expected
