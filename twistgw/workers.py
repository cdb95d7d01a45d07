"""``twistd apigw --workers N``: one supervisor, N gateway processes on the same sockets.

One Twisted process uses one core.  With ``--workers N`` the twistd process becomes a
supervisor: it binds every listener itself (before twistd drops privileges), never
accepts on them, and starts N workers, each an ordinary ``twistd -n apigw`` that inherits
the bound sockets and adopts them (``reactor.adoptStreamPort``) instead of binding.  All
workers accept from one kernel queue per listener.

Why inherited sockets rather than ``SO_REUSEPORT`` per worker (docs/operations.rst):

* ``tcp:0`` binds one free port once; with ``SO_REUSEPORT`` each worker would get a
  different port.
* Linux spreads ``SO_REUSEPORT`` connections by hash over the sockets of the group and
  resets those still queued on a socket whose worker dies; a shared queue keeps them
  for the surviving workers.
* Any process of the same user may join a ``SO_REUSEPORT`` group and steal traffic.
* TLS and allow-lists wrap the protocol factory, not the socket, so every worker applies
  them to the adopted socket exactly as a single process does.

The supervisor replaces a worker that dies, after a delay that doubles while workers keep
dying young (capped), so a crash loop cannot spin.  SIGHUP and SIGTERM are forwarded to
every worker (what one process does on them is the gateway's business); on SIGTERM the
supervisor closes its own copies of the sockets at once, waits for the workers to drain
and exits 0.  Workers send their log events to the supervisor as JSON lines on stdout and
it re-publishes them, so twistd's ``--logfile``, ``--syslog`` and ``--logger`` options
apply to every worker's log, with a ``worker`` field naming it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import (
    FileLogObserver,
    Logger,
    eventAsJSON,
    eventFromJSON,
    globalLogPublisher,
)
from twisted.python.failure import Failure

from .errors import ConfigError
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .config import GatewayConfig, ListenerConfig
    from .gateway import Gateway
    from .registry import Registry

__all__ = ["Supervisor", "worker_plugins", "worker_log_observer", "check_workers",
           "LISTENERS_ENV", "WORKER_ENV"]

log = Logger()

#: Set by the supervisor in a worker's environment: ``name=fd:family,...``.
LISTENERS_ENV = "TWISTGW_WORKER_LISTENERS"
#: The worker's number (1..N), for its log events.
WORKER_ENV = "TWISTGW_WORKER_ID"

#: A worker that lived this long before dying was healthy: it is replaced at once.
HEALTHY_AFTER = 10.0
#: Replacement delays while workers keep dying young: first, then doubled up to the cap.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
#: Seconds after SIGTERM a worker gets beyond the config's drain grace before SIGKILL.
KILL_MARGIN = 10.0
#: Longest log line a worker may send (longer ones are dropped, counted in the log).
MAX_LINE = 1 << 20


# -- inside a worker --------------------------------------------------------------------


class AdoptListeners:
    """In-process plugin of a worker: listeners adopt the supervisor's sockets.

    A listener wrapper replaces the endpoint only; plugins that wrap the factory (TLS,
    allow-lists) stay in charge of what is spoken on the socket.
    """

    def __init__(self, sockets: Mapping[str, tuple[int, int]]) -> None:
        self.sockets = dict(sockets)

    @hookimpl
    def register(self, registry: Registry) -> None:
        """Claim nothing; shape listeners."""
        registry.add_listener_wrapper(self.wrap)

    def wrap(self, listener: ListenerConfig, endpoint: Any, factory: Any, reactor: Any
             ) -> tuple[Any, Any]:
        """The adopted socket of ``listener``; a listener the supervisor did not bind
        (added to the file since) binds as usual."""
        found = self.sockets.pop(listener.name, None)
        if found is None:
            return endpoint, factory
        fd, family = found
        return AdoptedStreamServerEndpoint(reactor, fd, family), factory


def parse_listeners(spec: str) -> dict[str, tuple[int, int]]:
    """``name=fd:family,...`` as the supervisor writes it."""
    out: dict[str, tuple[int, int]] = {}
    for item in filter(None, spec.split(",")):
        name, _sep, rest = item.partition("=")
        fd, _sep, family = rest.partition(":")
        out[name] = (int(fd), int(family))
    return out


def worker_plugins(environ: Mapping[str, str] = os.environ) -> list[tuple[str, Any]]:
    """The in-process plugins of a worker (none outside a worker).

    Also ignores SIGHUP until the gateway installs its own handler, so a reload the
    supervisor forwards while the worker is still starting cannot kill it.
    """
    spec = environ.get(LISTENERS_ENV)
    if not spec:
        return []
    if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return [("workers", AdoptListeners(parse_listeners(spec)))]


def worker_log_observer() -> FileLogObserver:
    """``--logger`` of a worker: every event as one JSON line on stdout for the
    supervisor, which re-publishes it to twistd's own observers."""
    from .redaction import redact_event

    out: IO[str] = sys.stdout
    worker = os.environ.get(WORKER_ENV, "")

    def fmt(event: Any) -> str:
        event = redact_event(dict(event))
        if worker:
            event["worker"] = worker
        return eventAsJSON(event) + "\n"

    return FileLogObserver(out, fmt)


# -- configs that do not spread over processes ------------------------------------------


def check_workers(gateway: Gateway, workers: int) -> list[str]:
    """Run every plugin's worker check; returns warnings, raises ConfigError to refuse.

    Plugins declare state that lives in one process (in-memory counters) with
    :meth:`~twistgw.registry.Registry.add_worker_check`.
    """
    warnings: list[str] = []
    if workers <= 1:
        return warnings
    for listener in gateway.config.listeners:
        endpoint = _shareable_endpoint(gateway.config, listener, gateway.reactor)
        if listener.admin and getattr(endpoint, "_port", 0) != 0:
            # The admin plugin binds in each worker: a fixed port would let one bind and
            # the others die and be replaced forever.
            raise ConfigError(gateway.config.source, f"listener {listener.name!r}.endpoint",
                              f"an admin listener is served by every worker separately, so "
                              f"{workers} workers cannot share the fixed port of "
                              f"{listener.endpoint!r}; run --workers 1 for the admin "
                              "endpoints, or remove the admin listener")
    for _plugin, check in gateway.pm.registry.worker_checks:
        warnings.extend(check(gateway.config, workers))
    return warnings


def _shareable_endpoint(config: GatewayConfig, listener: ListenerConfig, reactor: Any
                        ) -> Any:
    try:
        endpoint = serverFromString(reactor, listener.endpoint)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(config.source, f"listener {listener.name!r}.endpoint",
                          f"{listener.endpoint!r} is not a valid Twisted endpoint "
                          f"description: {e}") from None
    if not isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint):
        # systemd: sockets would be parsed again in each worker, where systemd's
        # LISTEN_PID names the supervisor; unix: and ssl: need their own handling.
        raise ConfigError(config.source, f"listener {listener.name!r}.endpoint",
                          f"--workers shares tcp: and tcp6: sockets only, not "
                          f"{listener.endpoint!r}; for TLS use a tcp: endpoint with the "
                          "listener's tls: key")
    return endpoint


# -- the supervisor ---------------------------------------------------------------------


class _NoAccept(Factory):
    """Never used: the supervisor's ports stop reading at once."""

    noisy = False


class _Worker(ProcessProtocol):
    """One worker process: forwards its log lines, tells the supervisor when it ends."""

    def __init__(self, supervisor: Supervisor, slot: int) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self.started = time.monotonic()
        self.pid: int | None = None
        self.ended = False
        self._buffers: dict[int, bytes] = {1: b"", 2: b""}
        self._dropped = 0

    def connectionMade(self) -> None:
        """Close the child's stdin: workers read nothing from it."""
        self.pid = self.transport.pid  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """Split into lines (bounded) and publish each."""
        buf = self._buffers.get(childFD, b"") + data
        *lines, rest = buf.split(b"\n")
        if len(rest) > MAX_LINE:
            rest = b""
            self._dropped += 1
            log.warn("worker {worker} sent a log line over {limit} bytes; dropped "
                     "({count} so far)", worker=self.slot, limit=MAX_LINE,
                     count=self._dropped)
        self._buffers[childFD] = rest
        for line in lines:
            if line.strip():
                self.supervisor.publish(self, childFD, line)

    def processEnded(self, reason: Failure) -> None:
        """Flush what is left and let the supervisor decide."""
        for fd, rest in self._buffers.items():
            if rest.strip():
                self.supervisor.publish(self, fd, rest)
        self._buffers = {}
        self.ended = True
        self.supervisor.worker_ended(self, reason)


def _signal_ready(pid: int, signum: int) -> bool:
    """Whether ``pid`` catches or ignores ``signum`` (Linux ``/proc``; elsewhere assume
    so): a signal whose default action kills must not reach a starting worker."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return True
    bit = 1 << (signum - 1)
    caught = int(fields.get("SigCgt", "0").strip(), 16)
    ignored = int(fields.get("SigIgn", "0").strip(), 16)
    return bool((caught | ignored) & bit)


class Supervisor(Service):
    """The twistd service when ``--workers`` > 1.

    :param gateway: the gateway built from the config in ``postOptions`` (checked, never
        started here: it only says which listeners to bind).
    :param workers: how many worker processes to keep running.
    :param config_path: the config file the workers load.
    :param warnings: what :func:`check_workers` said, logged at start.
    :param worker_argv: the command that starts one worker (tests may pass another).
    """

    def __init__(self, gateway: Gateway, workers: int, config_path: str, *,
                 warnings: list[str] | None = None,
                 worker_argv: list[str] | None = None) -> None:
        self.warnings = list(warnings or ())
        self.gateway = gateway
        self.reactor = gateway.reactor
        self.count = workers
        self.config_path = config_path
        self.worker_argv = worker_argv or [
            sys.executable, "-c",
            "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
            "--nodaemon", "--pidfile=", "--logger", "twistgw.workers.worker_log_observer",
            "apigw", "--config", config_path]
        self.ports: dict[str, Any] = {}
        self.workers: dict[int, _Worker] = {}
        self.failures: dict[int, int] = {}
        self.pending: dict[int, Any] = {}
        self.stopping = False
        self._all_ended: defer.Deferred[None] | None = None
        self._kill_call: Any = None
        self._previous_hup: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind every listener once (port 0 picks one port for all workers)."""
        super().privilegedStartService()
        config = self.gateway.config
        for listener in config.listeners:
            if listener.admin:
                continue
            endpoint = _shareable_endpoint(config, listener, self.reactor)
            result: list[Any] = []
            endpoint.listen(_NoAccept()).addBoth(result.append)
            outcome: Any = result[0] if result else Failure(RuntimeError("not synchronous"))
            if isinstance(outcome, Failure):
                raise RuntimeError(f"listener {listener.name!r} cannot listen on "
                                   f"{listener.endpoint}: {outcome.getErrorMessage()}")
            outcome.stopReading()  # the workers accept; this process only holds it
            self.ports[listener.name] = outcome
            log.info("listener {name} bound to {address}, shared by {n} workers",
                     name=listener.name, address=_address(outcome), n=self.count)

    def startService(self) -> None:
        """Start the workers and forward SIGHUP to them."""
        if not self.ports:
            self.privilegedStartService()
        super().startService()
        self.gateway.deployment.close()  # the supervisor never serves
        for warning in self.warnings:
            log.warn("--workers {n}: {warning}", n=self.count, warning=warning)
        self.reactor.callWhenRunning(self._install_signal_handlers)
        for slot in range(1, self.count + 1):
            self._spawn(slot)

    def stopService(self) -> defer.Deferred[None]:
        """Stop accepting everywhere, forward SIGTERM, wait for the workers to drain."""
        super().stopService()
        self.stopping = True
        for call in self.pending.values():
            if call.active():
                call.cancel()
        self.pending.clear()
        for port in self.ports.values():
            port.stopListening()
        self.ports.clear()
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
        live = [w for w in self.workers.values() if not w.ended]
        if not live:
            return defer.succeed(None)
        self._all_ended = defer.Deferred()
        log.info("stopping: SIGTERM to {n} workers", n=len(live))
        for worker in live:
            self._signal(worker, signal.SIGTERM)
        grace = _drain_grace(self.gateway.config) + KILL_MARGIN
        self._kill_call = self.reactor.callLater(grace, self._kill_rest)
        return self._all_ended

    # -- workers --------------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        self.pending.pop(slot, None)
        if self.stopping:
            return
        names = ",".join(f"{name}={3 + i}:{_family(port)}"
                         for i, (name, port) in enumerate(self.ports.items()))
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        for i, port in enumerate(self.ports.values()):
            child_fds[3 + i] = port.fileno()
        env = dict(os.environ)
        env[LISTENERS_ENV] = names
        env[WORKER_ENV] = str(slot)
        worker = _Worker(self, slot)
        self.workers[slot] = worker
        self.reactor.spawnProcess(worker, self.worker_argv[0], self.worker_argv, env=env,
                                  childFDs=child_fds)
        log.info("worker {worker} started (pid {pid})", worker=slot, pid=worker.pid)

    def worker_ended(self, worker: _Worker, reason: Failure) -> None:
        """Replace a worker that died, with backoff while workers die young."""
        how = _how(reason)
        if self.stopping:
            log.info("worker {worker} (pid {pid}) {how}", worker=worker.slot,
                     pid=worker.pid, how=how)
            if all(w.ended for w in self.workers.values()) and self._all_ended is not None:
                if self._kill_call is not None and self._kill_call.active():
                    self._kill_call.cancel()
                d, self._all_ended = self._all_ended, None
                d.callback(None)
            return
        if time.monotonic() - worker.started >= HEALTHY_AFTER:
            self.failures[worker.slot] = 0
        failures = self.failures.get(worker.slot, 0)
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (failures - 1)) if failures else 0.0
        self.failures[worker.slot] = failures + 1
        log.error("worker {worker} (pid {pid}) {how}; starting a replacement in "
                  "{delay:.1f}s", worker=worker.slot, pid=worker.pid, how=how, delay=delay)
        self.pending[worker.slot] = self.reactor.callLater(delay, self._spawn, worker.slot)

    def _kill_rest(self) -> None:
        for worker in self.workers.values():
            if not worker.ended:
                log.error("worker {worker} (pid {pid}) did not drain in time; SIGKILL",
                          worker=worker.slot, pid=worker.pid)
                self._signal(worker, signal.SIGKILL)

    # -- signals --------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """Replace the reactor's ``SIGTERM`` handler (installed when it starts running,
        after ``startService``): Twisted would re-raise the signal at exit (status 143),
        and a drained supervisor exits 0."""
        self._previous_hup = signal.signal(signal.SIGHUP, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            self.reactor.callFromThread(self.forward, signal.SIGHUP)
        else:
            self.reactor.callFromThread(self.terminate)

    def terminate(self) -> None:
        """Stop (``SIGTERM``); a second one kills the workers still draining."""
        if not self.stopping:
            self.reactor.stop()
            return
        log.warn("second SIGTERM: killing the workers still draining")
        self._kill_rest()

    def forward(self, signum: int, attempts: int = 150) -> None:
        """Send ``signum`` to every live worker that handles it; retry the others (still
        starting) every 0.2 s for up to 30 s."""
        waiting = []
        for worker in self.workers.values():
            if worker.ended or worker.pid is None:
                continue
            if _signal_ready(worker.pid, signum):
                self._signal(worker, signum)
            else:
                waiting.append(worker)
        if not waiting:
            log.info("forwarded {signal} to the workers", signal=signal.Signals(signum).name)
            return
        if attempts <= 0 or self.stopping:
            log.error("{signal} not forwarded to workers {workers}: they never installed a "
                      "handler", signal=signal.Signals(signum).name,
                      workers=[w.slot for w in waiting])
            return
        self.reactor.callLater(0.2, self._forward_to, waiting, signum, attempts - 1)

    def _forward_to(self, waiting: list[_Worker], signum: int, attempts: int) -> None:
        left = [w for w in waiting if not w.ended and w.pid is not None]
        ready = [w for w in left if _signal_ready(w.pid, signum)]  # type: ignore[arg-type]
        for worker in ready:
            self._signal(worker, signum)
        rest = [w for w in left if w not in ready]
        if rest and attempts > 0 and not self.stopping:
            self.reactor.callLater(0.2, self._forward_to, rest, signum, attempts - 1)

    def _signal(self, worker: _Worker, signum: int) -> None:
        try:
            worker.transport.signalProcess(signum)  # type: ignore[union-attr]
        except (error.ProcessExitedAlready, OSError):
            pass

    # -- logs -----------------------------------------------------------------------------

    def publish(self, worker: _Worker, fd: int, line: bytes) -> None:
        """Re-publish one worker log line (a JSON event on stdout, text otherwise)."""
        text = line.decode("utf-8", "replace")
        if fd == 1 and text.startswith("{"):
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
            if isinstance(event, dict):
                event["worker"] = worker.slot
                event["worker_pid"] = worker.pid
                event["log_system"] = f"worker-{worker.slot}"
                globalLogPublisher(event)
                return
        log.info("worker {worker}: {line}", worker=worker.slot, line=text.rstrip())


def _drain_grace(config: GatewayConfig) -> float:
    """The config's drain grace in seconds (30 s, the issue's default, when absent)."""
    for name in ("shutdown_grace", "drain_grace", "grace"):
        value = getattr(config, name, None)
        if isinstance(value, int | float):
            return float(value)
    return 30.0


def _family(port: Any) -> int:
    return int(port.socket.family)


def _address(port: Any) -> str:
    addr = port.getHost()
    return f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', '?')}"


def _how(reason: Failure) -> str:
    value: Any = reason.value
    if getattr(value, "signal", None):
        return f"was killed by signal {value.signal}"
    return f"exited with status {getattr(value, 'exitCode', '?')}"

