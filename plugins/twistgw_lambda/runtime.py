"""Warm worker pools and the Lambda Runtime API they poll.

Design (docs/lambda.rst has the operator's view):

* One :class:`FunctionPool` per configured function, with ``min_workers`` kept warm and
  at most ``max_workers`` alive; invocations wait in a FIFO queue for an idle worker.
* Each worker is a child process (``python -m twistgw_lambda.worker``, or any Runtime API
  client) given its **own** Runtime API endpoint on ``127.0.0.1:<ephemeral port>`` through
  ``AWS_LAMBDA_RUNTIME_API``.  One endpoint per worker means every ``/next`` poll and every
  ``/response`` is attributable to a process without trusting what it says, so a timeout
  kills exactly the process that overran.
* A worker is idle while its ``GET /runtime/invocation/next`` is held open; handing it an
  invocation answers that request.  ``/response`` and ``/error`` complete the invocation;
  ``/init/error`` records why the handler could not load.
* Every wait is bounded: the function's timeout kills and replaces a worker, the
  integration timeout (the core's ``addTimeout``) cancels a queued or running invocation
  (a running one keeps its worker busy until it ends or times out, as on Lambda), init
  is bounded to 10 s, bodies posted by a worker are capped at Lambda's 6 MB, and a
  worker's exit fails its invocation at once.
* When every worker is busy and the pool at its size, queued invocations are sent ahead
  to busy shipped workers (at most :data:`AHEAD_DEPTH` each), to start when the ones
  before them end (``Worker.send_ahead``): a token in a pipe decides whether the worker
  started one or the gateway took it back, so it runs once, its clock starts when it
  does, and a worker's death re-queues it if it never started.
* ``reserved_concurrency`` caps invocations running or waiting for a worker; beyond it an
  invoke is throttled at once (Lambda's ``TooManyRequestsException``), never queued.
* Asynchronous invokes (``X-Amz-Invocation-Type: Event``) are accepted into a bounded
  queue per function and answered 202 at once; they run when a worker is free and the
  synchronous queue is empty.  Their outcome (and anything dropped) is logged.
* ``memory`` is enforced by a watchdog that samples each worker's resident set size
  (``/proc/<pid>/statm``) every :data:`MEMORY_POLL_INTERVAL` seconds; a worker over its
  size is killed with SIGKILL, as Lambda's cgroup limit kills it, and its invocation gets
  Lambda's ``Runtime.OutOfMemory`` error.
"""

from __future__ import annotations

import functools
import json
import os
import resource as _resource
import sys
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer, protocol, task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistgw.answer import Answer
from twistgw.randomhex import RandomHex

from .functions import FunctionConfig
from .runtime_api import MAX_BODY, RuntimeApiFactory, RuntimeApiProtocol, RuntimeRequest

if TYPE_CHECKING:
    from .remote import RemoteFunction

__all__ = ["InvokeResult", "FunctionPool", "LambdaRuntime", "MAX_PAYLOAD_BYTES",
           "INIT_TIMEOUT", "RUNTIME_PREFIX"]

log = Logger()

#: Lambda's synchronous invocation payload limit, request and response (6 MB).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
#: Lambda's init phase limit for on-demand functions.
INIT_TIMEOUT = 10.0
#: Queued invocations beyond this per function are refused (the function is throttled).
MAX_QUEUE = 1000
RUNTIME_PREFIX = b"/2018-06-01/runtime/"
_NEXT_PATH = RUNTIME_PREFIX + b"invocation/next"
_INVOCATION_PREFIX = RUNTIME_PREFIX + b"invocation/"
_INIT_ERROR_PATH = RUNTIME_PREFIX + b"init/error"
#: The headers of an invocation event (the answer to ``/next``).
_INVOCATION_HEADERS = (b"Lambda-Runtime-Aws-Request-Id: %s\r\nLambda-Runtime-Deadline-Ms: %d\r\n"
                       b"Lambda-Runtime-Invoked-Function-Arn: %s\r\n"
                       b"Lambda-Runtime-Trace-Id: %s\r\n")
#: A ``/next`` answer's head and body (keep-alive): ``respond``'s bytes, one format.
_INVOCATION = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
               + _INVOCATION_HEADERS + b"\r\n%s")
_RESULT_PREFIX = _INVOCATION_PREFIX.join((b"POST ", b""))
#: An event sent ahead to a busy shipped worker (:meth:`Worker.send_ahead`): in place of
#: the absolute deadline (its clock has not started), the pipe of its token and its
#: timeout in milliseconds, from which the worker sets the deadline when it starts it.
_AHEAD_EVENT = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
                b"\r\nLambda-Runtime-Aws-Request-Id: %s\r\nTwistgw-Ahead: %d %d\r\n"
                b"Lambda-Runtime-Invoked-Function-Arn: %s\r\nLambda-Runtime-Trace-Id: %s\r\n"
                b"\r\n%s")
#: The header of the shipped worker's polls that takes up the offer of events sent ahead.
_AHEAD_POLL = b"twistgw-ahead"
#: The variable naming the token pipes' descriptors in the shipped worker.
AHEAD_FDS_VARIABLE = "_TWISTGW_LAMBDA_AHEAD_FDS"
#: The shipped worker's command after the interpreter: only it is offered events ahead.
_SHIPPED_WORKER = ["-m", "twistgw_lambda.worker"]
#: Seconds a worker's invocation may run before the events sent ahead to it are taken
#: back for a worker that asks for work (they are not left waiting behind a slow invoke).
AHEAD_PATIENCE = 0.005
#: Events sent ahead to one busy worker at most (each has its token pipe, and one more
#: pipe serves the event that runs: a pipe holds one token, see ``Worker.send_ahead``).
AHEAD_DEPTH = 2
#: ``request.respond(202, b'{"status": "OK"}')``'s bytes (keep-alive).
_ACCEPTED = (b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
             b"Content-Length: 16\r\n\r\n{\"status\": \"OK\"}")
_OUTPUT_LINE_LIMIT = 8192
#: Output lines per worker per second that reach the log; the rest are counted.
OUTPUT_LINES_PER_SECOND = 1000
#: Seconds between two samples of every worker's resident memory.
MEMORY_POLL_INTERVAL = 0.1
_PAGE_SIZE = _resource.getpagesize()
#: How Lambda's runtime (Go's ``os/exec``) names the signal that ended a process.
_SIGNAL_NAMES = {1: "hangup", 2: "interrupt", 3: "quit", 4: "illegal instruction",
                 6: "aborted", 7: "bus error", 8: "floating point exception", 9: "killed",
                 11: "segmentation fault", 13: "broken pipe", 15: "terminated"}


def exit_status(code: int | None, sig: int | None) -> str:
    """``exit status 3`` / ``signal: killed``, as Lambda words a runtime's exit."""
    if sig:
        return f"signal: {_SIGNAL_NAMES.get(sig, f'signal {sig}')}"
    return f"exit status {code}"


def resident_bytes(pid: int) -> int | None:
    """The resident set size of ``pid`` (Linux ``/proc``), or ``None`` if unknown."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


@attrs.frozen
class InvokeResult:
    """What an invocation produced.

    :ivar function_error: ``"Unhandled"`` when the function failed (Lambda's
        ``X-Amz-Function-Error``), else ``None``; ``payload`` is then the error document.
    """

    request_id: str
    payload: bytes
    function_error: str | None = None
    #: The version that ran (the Invoke API's ``X-Amz-Executed-Version``).
    executed_version: str = "$LATEST"
    #: The Invoke API's status: 200 (ran), 202 (queued ``Event``), 204 (``DryRun``).
    status: int = 200

    @property
    def error_message(self) -> str:
        """The ``errorMessage`` of an error payload (empty if there is none)."""
        try:
            doc = json.loads(self.payload)
        except ValueError:
            return self.payload.decode("utf-8", "replace")
        if isinstance(doc, dict):
            return str(doc.get("errorMessage", ""))
        return ""


def throttled(request_id: str | None = None) -> InvokeResult:
    """Lambda's answer to an invoke over the function's concurrency or queue (429)."""
    return InvokeResult(request_id or str(uuid.uuid4()), _error_payload(
        "Rate Exceeded.", "TooManyRequestsException"), "Throttled")


def _error_payload(message: str, error_type: str | None = None) -> bytes:
    doc: dict[str, Any] = {"errorMessage": message}
    if error_type is not None:
        doc["errorType"] = error_type
    return json.dumps(doc).encode("utf-8")


#: 32 random hex digits per request id.
_random = RandomHex(32)


def new_request_id() -> str:
    """A random (version 4) UUID string, as Lambda's request ids are; formatted from
    random hex digits directly (``str(uuid.uuid4())`` costs several times more)."""
    h = _random.take()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


#: The variant digit (8, 9, a or b: RFC 4122) for a random hex digit, looked up rather
#: than parsed (``int(digit, 16)`` was a sixth of the id's cost).
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class Invocation(Answer[InvokeResult]):
    """One invoke on its way through a pool, and its answer: settled with the
    :class:`InvokeResult` (:meth:`~twistgw.answer.Answer.settle` ignores a result for
    a caller that gave up: timeout, client gone); ``canceller`` takes it out of the
    queue if it is still there."""

    #: Sent ahead to a worker (:meth:`Worker.send_ahead`): the pipe of its token (class
    #: defaults: set on the instance only when it is sent ahead).
    pipe = -1
    #: A take-back found its token gone: the worker started it (it runs there).
    claimed = False

    def __init__(self, payload: bytes, function_arn: str, trace_id: str, timeout: float,
                 asynchronous: bool = False,
                 canceller: Callable[[Invocation], object] | None = None) -> None:
        # Answer.__init__'s fields, set here (a call less on every invoke)
        self._canceller = canceller  # type: ignore[assignment]
        self._stages = None
        self.called = False
        self.result = None
        self.id = new_request_id()
        self.asynchronous = asynchronous
        self.payload = payload
        self.function_arn = function_arn
        self.trace_id = trace_id
        self.timeout = timeout


def _route(worker: Worker, request: RuntimeRequest) -> None:
    """Dispatch one Runtime API request (``/2018-06-01/runtime/...``) of ``worker``."""
    path = request.path
    method = request.method
    if path == _NEXT_PATH and method == b"GET":
        worker.next_request(request)
        return
    if not path.startswith(RUNTIME_PREFIX):
        request.respond_json(404, {"errorMessage": "Not found", "errorType": "InvalidRequest"})
        return
    if request.too_large:
        worker.too_large(request, path[len(RUNTIME_PREFIX):].decode("ascii", "replace"))
        return
    if method == b"POST":
        if path.startswith(_INVOCATION_PREFIX):
            # invocation/{id}/response or invocation/{id}/error (an id has no "/")
            request_id, sep, kind = path[len(_INVOCATION_PREFIX):].partition(b"/")
            if sep and (kind == b"response" or kind == b"error"):
                worker.completed(request, request_id.decode("ascii", "replace"), request.body,
                                 kind == b"error")
                return
        elif path == _INIT_ERROR_PATH:
            worker.init_error(request, request.body)
            return
    request.respond_json(404, {"errorMessage": "Not found", "errorType": "InvalidRequest"})


class _WorkerProcess(protocol.ProcessProtocol):
    """Relays a worker's output to the log, tagged, and reports its exit."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.buffers = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buf = self.buffers.get(childFD, b"") + data
        *lines, rest = buf.split(b"\n")
        if len(rest) > _OUTPUT_LINE_LIMIT:  # a flood without newlines: cut it into lines
            lines.append(rest)
            rest = b""
        self.buffers[childFD] = rest
        for line in lines:
            self.worker.output(line[:_OUTPUT_LINE_LIMIT])

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self.buffers.items():
            if rest:
                self.worker.output(rest[:_OUTPUT_LINE_LIMIT])
            self.buffers[fd] = b""
        code: int | None = None
        sig: int | None = None
        value = reason.value
        if isinstance(value, ProcessDone):
            code = 0
        elif isinstance(value, ProcessTerminated):
            code, sig = value.exitCode, value.signal
        self.worker.exited(code, sig)


class Worker:
    """One worker process and its Runtime API endpoint."""

    def __init__(self, pool: FunctionPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self.state = "starting"  # starting | idle | busy | between | retiring | dead
        self.pending_next: RuntimeRequest | None = None
        self.current: Invocation | None = None
        self.init_failure: bytes | None = None
        self.killed_because: str | None = None
        #: Resident bytes seen when the memory watchdog killed the worker.
        self.out_of_memory: int | None = None
        self.timer: Any = None
        self.port: Any = None
        self.transport: Any = None
        self.started_at = time.monotonic()
        self.invocations = 0
        self.last_id = "-"  # an id, not the invocation: its payload may be 6 MB
        self._window = 0.0
        self._lines = 0
        self._dropped = 0
        #: The idle reaper and the function timeout are lazy timers: each is scheduled
        #: once and, when it fires early (the worker was busy, a later invocation is
        #: running), re-armed for what is left, instead of a callLater and a cancel per
        #: invoke.  ``_idle_since`` and ``_deadline`` are reactor times.
        self._reaper: Any = None
        self._idle_since = 0.0
        self._deadline_call: Any = None
        self._deadline = 0.0
        self._began = 0.0  # when the running invocation started (reactor time)
        #: Fires (with None) when init ends: the first /next, or the process is gone.
        self.initialized: defer.Deferred[None] = defer.Deferred()
        #: Events sent ahead (:meth:`send_ahead`): the invocations sent to this busy
        #: worker to run after ``current``, in the order it runs them (not started: each
        #: can be taken back or re-queued), at most :attr:`ahead_depth`.
        self.aheads: list[Invocation] = []
        self.ahead_depth = AHEAD_DEPTH
        #: The token pipes (read end, write end) offered to the shipped worker, the ones
        #: holding no token of a live event (least recently used first), and whether it
        #: took up the offer (its polls say so); the connection it polls on.
        self._pipes: tuple[tuple[int, int], ...] | None = None
        self._free_pipes: list[int] = []
        #: Pipes of events taken back, not free until the worker is past those events in
        #: its stream (it reads their pipe to find them taken back): ``[pipe, ends]``,
        #: free after that many more invocations of the worker ended (:meth:`_promote`).
        self._stale_pipes: list[list[int]] = []
        self.ahead_ok = False
        self.channel: RuntimeApiProtocol | None = None
        #: ``current`` came from ahead: its token's pipe (-1: it did not).
        self._current_pipe = -1
        self._no_ahead = False  # taken back: none until ``current`` ends (see take_back)
        #: ``ahead`` became ``current`` when a result came through the parser, and the
        #: worker's next poll, which it answered, is still to come.
        self._poll_answered = False
        self._exit_status = ""
        self._take_back_call: Any = None  # a pending take_back_now
        #: The invocations whose results were on their way when the worker died in an
        #: event sent ahead (read before the connection closes, else failed then).
        self._ended: list[Invocation] = []
        self.expect_client(b"")  # spawn() names the real Host

    def spawn(self, command: list[str], env: dict[str, str]) -> None:
        reactor = self.pool.reactor
        self.port = reactor.listenTCP(0, RuntimeApiFactory(functools.partial(_route, self),
                                                           self.fast_lane),
                                      interface="127.0.0.1")
        env = dict(env)
        env["AWS_LAMBDA_RUNTIME_API"] = address = f"127.0.0.1:{self.port.getHost().port}"
        fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        argv: list[str] = command
        path: str | None = str(self.pool.config.code)
        if command[1:] == _SHIPPED_WORKER:
            for i, (read, _write) in enumerate(self.open_pipes()):
                fds[3 + i] = read
            env[AHEAD_FDS_VARIABLE] = ",".join(str(fd) for fd in fds if fd > 2)
            # No working directory given: Twisted then starts the worker with
            # posix_spawn instead of fork, so no Python code of the gateway runs in the
            # child (a signal landing between fork and exec ran the gateway's handler
            # there, against a closed wakeup fd).  The worker changes to
            # LAMBDA_TASK_ROOT itself; -P keeps the gateway's directory off its sys.path.
            argv, path = [command[0], "-P", *command[1:]], None
        self.expect_client(address.encode("ascii"))
        try:
            self.transport = reactor.spawnProcess(
                _WorkerProcess(self), argv[0], argv, env=env, path=path, childFDs=fds)
        except Exception:
            self.close_pipes()
            raise
        cpus = self.pool.config.cpus
        if cpus is not None:
            self.place(cpus)
        self.timer = reactor.callLater(INIT_TIMEOUT, self._init_timeout)

    def place(self, cpus: tuple[int, ...]) -> None:
        """Keep the worker on ``cpus`` (the function's ``cpus``), set right after the
        fork; threads it starts later inherit it.  A CPU the system will not give it
        (outside the gateway's cgroup cpuset, offline) is logged and the worker runs
        where the system puts it: placement is a matter of speed, never of service."""
        try:
            os.sched_setaffinity(self.transport.pid, cpus)
        except OSError as e:
            log.warn("lambda {function}: worker #{n} cannot be kept on CPUs {cpus} ({error});"
                     " it runs where the system puts it", function=self.pool.config.name,
                     n=self.number, cpus=",".join(map(str, cpus)), error=e.strerror or e)

    def open_pipes(self) -> tuple[tuple[int, int], ...]:
        """The token pipes of events sent ahead (:attr:`ahead_depth` + 1); their read ends
        are non-blocking (the flag is shared with the worker, which never waits on them
        either)."""
        pipes = self._pipes = tuple(os.pipe() for _ in range(self.ahead_depth + 1))
        self._free_pipes = list(range(len(pipes)))
        for read, _write in pipes:
            os.set_blocking(read, False)
        return pipes

    def close_pipes(self) -> None:
        pipes, self._pipes = self._pipes, None
        if pipes is not None:
            for pair in pipes:
                for fd in pair:
                    os.close(fd)

    # -- Runtime API ------------------------------------------------------------------

    def expect_client(self, host: bytes) -> None:
        """The exact bytes the shipped worker sends around a result (``Host`` is the
        ``AWS_LAMBDA_RUNTIME_API`` it was given, its poll takes up events sent ahead when
        they are offered), for :meth:`fast_lane`."""
        self._host = host
        self._result_head = (b"/response HTTP/1.1\r\nHost: " + host +
                             b"\r\nContent-Type: application/json\r\nContent-Length: ")
        self._next_poll = b"GET " + _NEXT_PATH + b" HTTP/1.1\r\nHost: " + host + (
            b"\r\nTwistgw-Ahead: 1\r\n\r\n" if self._pipes is not None else b"\r\n\r\n")

    def fast_lane(self, channel: RuntimeApiProtocol, data: bytes) -> bool:
        """Take the read that ends nearly every invoke without the general parser.

        The shipped worker writes its result and its next poll at once, always as
        ``POST .../invocation/<id>/response`` with the same three headers, then ``GET
        .../invocation/next`` with its ``Host`` (and ``Twistgw-Ahead: 1`` when it was
        offered events ahead).  When ``data`` is exactly those bytes for the running
        invocation, or for it and then events sent ahead, in order (a worker that ran them
        before the gateway read), this does what parsing them and routing the requests does
        (:meth:`completed`, its 202, :meth:`next_request`); anything else (another client,
        a split read, an error, another id) returns False untouched and goes to the
        parser.  ``test_lambda_runtime_fastlane`` holds both paths to the same bytes out
        and the same state.

        The worker's next invocation, if one is queued, is handed to it and sent before
        the caller gets this one's result (whose answer to the client then runs while the
        worker already works): the worker's round trip is the Lambda route's latency, and
        with the gateway's answer taken out of it the same workers serve more invokes
        (bench/RESULTS.md).  The parser's path keeps the protocol's order.
        """
        current = self.current
        if current is None or self.state != "busy" or self.pending_next is not None or \
                self._poll_answered:
            return False
        segment = self._segment(data, 0, current.id)
        if segment is None:
            return False
        segments = [segment]
        end = segment[2]
        if end != len(data):
            # The worker ran events sent ahead before the gateway read: one segment each.
            for inv in self.aheads:
                segment = self._segment(data, end, inv.id)
                if segment is None:
                    return False
                segments.append(segment)
                end = segment[2]
                if end == len(data):
                    break
            else:
                return False
        finished = []
        pool = self.pool
        for segment in segments:
            current = self.current
            assert current is not None
            finished.append((current, data[segment[0]:segment[1]]))
            # completed(), its success branch
            self.current = None
            if self._promote():  # the event sent ahead runs now: it answered the poll
                channel._out.append(_ACCEPTED)
                if pool.queue:
                    _send_ahead(pool)
                continue
            self.state = "between"
            if not channel._closing:
                if self._reaper is not None and pool.queue and pool.saturated():
                    # Invocations wait and no other worker could take one (this one is
                    # "between"): it takes the first, its event after the held 202 (what
                    # the poll below, made idle and dispatched, would do, without the
                    # poll and dispatch's search)
                    self._idle_since = pool.reactor.seconds()
                    self._begin(pool.queue.popleft(), channel)
                    if pool.queue:
                        _send_ahead(pool)
                    continue
                request = RuntimeRequest(channel, b"GET", _NEXT_PATH, {b"host": self._host},
                                         True)
                channel.hold(request, _ACCEPTED)
                if self._reaper is None:  # (pending_next is None: checked on entry)
                    self.next_request(request)
                else:
                    self.state = "idle"
                    self.pending_next = request
                    request.long_poll = True
                    self._idle_since = pool.reactor.seconds()
                    request.on_lost = self._poll_lost
                    if not pool.queue:
                        _take_back_for(self)
                    if pool.queue or pool.events:
                        pool.dispatch()
        writer = channel._writer
        if writer is not None:  # the next event (with the held 202) leaves now
            writer.flush()
        for inv, body in finished:
            inv.settle(InvokeResult(inv.id, body))
        return True

    def _segment(self, data: bytes, at: int, request_id: str) -> tuple[int, int, int] | None:
        """Where the body of the shipped worker's result for ``request_id`` and its poll
        starting at ``at`` are: (body start, body end, end of the poll), or None."""
        if not data.startswith(_RESULT_PREFIX, at):
            return None
        rid = request_id.encode()
        at += len(_RESULT_PREFIX)
        head = self._result_head
        if not data.startswith(rid, at) or not data.startswith(head, at + len(rid)):
            return None
        at += len(rid) + len(head)
        end = data.find(b"\r\n\r\n", at, at + 12)
        if end < 0:
            return None
        length = data[at:end]
        if not length.isdigit():
            return None
        stop = end + 4 + int(length)
        poll = self._next_poll
        if stop - end - 4 > MAX_BODY or not data.startswith(poll, stop):
            return None
        return end + 4, stop, stop + len(poll)

    # -- events sent ahead ------------------------------------------------------------
    #
    # The shipped worker may be sent its next event while it still runs one, so that it
    # finds it at hand instead of sleeping until the gateway gets to its result (the send
    # that wakes a sleeping worker is the costliest part of an invoke, and a worker that
    # ran several events answers them in one read).  Only when an invoke would otherwise
    # wait in the queue: every worker busy and the pool at its size; at most
    # ``ahead_depth`` per worker.  Each event sent ahead has a token, one byte written to
    # one of the pipes the worker inherited, one free of any live event's token (so a pipe
    # never holds two, and the pipe of the running event still tells whether it started);
    # the worker reads it before it starts the event, and the gateway takes an event back
    # by reading it first.  Whoever reads the byte owns the event, so it runs once, or is
    # re-queued if it never started.  docs/lambda.rst.

    @property
    def ahead(self) -> Invocation | None:
        """The event sent ahead that the worker runs next, if any."""
        return self.aheads[0] if self.aheads else None

    def can_take_ahead(self) -> bool:
        """Whether an event may be sent ahead to this worker now."""
        channel = self.channel
        return len(self.aheads) < self.ahead_depth and self.ahead_ok and \
            self.state == "busy" and not self._no_ahead and bool(self._free_pipes) and \
            not self._poll_answered and channel is not None and not channel._closing

    def send_ahead(self, inv: Invocation) -> None:
        """Send ``inv`` to this busy worker, to start when the invocations before it end:
        its token first (in a free pipe), then the event with its timeout (the clock
        starts when the worker starts it, and here when the result of the one before it
        arrives: :meth:`_promote`)."""
        pipes = self._pipes
        channel = self.channel
        assert pipes is not None and channel is not None
        self.aheads.append(inv)
        inv.pipe = pipe = self._free_pipes.pop(0)
        inv._canceller = self._ahead_cancelled  # type: ignore[assignment]
        os.write(pipes[pipe][1], b"t")
        payload = inv.payload
        channel.write(_AHEAD_EVENT % (len(payload), inv.id.encode(), pipe,
                                      int(inv.timeout * 1000), inv.function_arn.encode(),
                                      inv.trace_id.encode(), payload))

    def _unclaimed(self, pipe: int) -> bool:
        """Read the token of ``pipe`` if it is still there (then the worker never starts
        its event: it finds the pipe empty and skips it)."""
        pipes = self._pipes
        if pipes is None:
            return False
        try:
            return bool(os.read(pipes[pipe][0], 1))
        except BlockingIOError:
            return False

    def take_back(self, inv: Invocation | None = None) -> Invocation | None:
        """``inv``, an event sent ahead to this worker (default: the last one, which it
        would start last), if the worker has not started it (it will skip it); no other
        is sent ahead to it until its invocation ends."""
        aheads = self.aheads
        if inv is None:
            if not aheads:
                return None
            inv = aheads[-1]
        if inv.claimed:
            return None
        if not self._unclaimed(inv.pipe):
            inv.claimed = True  # started, or about to: it runs here
            return None
        # The worker still reads this pipe when it comes to the event (the ends of the
        # ones before it in its stream, then of one after it, tell it has).
        self._stale_pipes.append([inv.pipe, (self.current is not None) +
                                  aheads.index(inv) + 1])
        aheads.remove(inv)
        self._no_ahead = True
        # (no log line: a take-back is a routine scheduling step, and a formatted and
        # written line cost more than the take-back itself)
        inv._canceller = self.pool._cancel  # type: ignore[assignment]
        return inv

    def take_back_now(self) -> None:
        """Still idle and nothing queued: take an event sent ahead to another worker,
        not started yet, and run it here instead of behind that worker's invocation."""
        self._take_back_call = None
        pool = self.pool
        if self.state != "idle" or self.pending_next is None or pool.queue:
            return
        for w in pool.workers:
            if w.aheads and w is not self:
                inv = w.take_back()
                if inv is not None and not inv.called:
                    pool.queue.append(inv)
                    pool.dispatch()
                    return

    def _ahead_cancelled(self, inv: Invocation) -> None:
        """The caller of an event sent ahead gave up: if it has not started it never
        does, as a queued invoke; if it has, it runs on, as a running one does."""
        if inv in self.aheads:
            self.take_back(inv)

    def _promote(self) -> bool:
        """``current`` ended (its token's pipe, if it had one, is free again): the first
        event sent ahead, if any, is the one the worker runs now, and its clock starts;
        True if there was one."""
        if self._current_pipe >= 0:
            self._free_pipes.append(self._current_pipe)
        if self._stale_pipes:
            for stale in list(self._stale_pipes):
                stale[1] -= 1
                if stale[1] <= 0:
                    self._stale_pipes.remove(stale)
                    self._free_pipes.append(stale[0])
        self._no_ahead = False
        aheads = self.aheads
        if not aheads:
            self._current_pipe = -1
            return False
        self.current = ahead = aheads.pop(0)
        self.last_id = ahead.id
        self.invocations += 1
        self._current_pipe = ahead.pipe
        reactor = self.pool.reactor
        self._began = now = reactor.seconds()
        self._deadline = now + ahead.timeout
        if self._deadline_call is None:
            self._deadline_call = reactor.callLater(ahead.timeout, self._function_timeout)
        return True

    def _channel_closed(self) -> None:
        """The worker's connection closed: nothing more is sent ahead on it; the
        invocations whose results were on their way when the worker died fail now."""
        self.channel = None
        ended, self._ended = self._ended, []
        for inv in ended:
            self._fail_exited(inv)

    def next_request(self, request: RuntimeRequest) -> None:
        if self._pipes is not None and request.header(_AHEAD_POLL) == b"1":
            self._ahead_poll(request)
        if self._poll_answered:
            # Answered already, by the event sent ahead, which runs now (_end_current).
            self._poll_answered = False
            request.send(b"")
            _send_ahead(self.pool)
            return
        if self.state in ("dead", "retiring"):
            request.respond_json(410, {"errorMessage": "worker retired",
                                       "errorType": "InvalidRequest"})
            return
        if self.pending_next is not None and self.pending_next.connected:
            request.respond_json(400, {"errorMessage": "already polling",
                                       "errorType": "InvalidRequest"})
            return
        if self.state == "busy":
            # Polling again without answering: the runtime gave up on the invocation.
            self._finish_current(_error_payload("Runtime asked for the next invocation "
                                                "without answering this one",
                                                "Runtime.InvalidResponse"), "Unhandled",
                                 answered=True)
            if self._poll_answered:  # this poll: the event sent ahead answered it
                self._poll_answered = False
                request.send(b"")
                return
        if self.state == "starting":
            self._cancel_timer()
            self.pool.broken = False
            if not self.initialized.called:
                self.initialized.callback(None)
            log.info("lambda {function}: worker #{n} ready (init {ms} ms)",
                     function=self.pool.config.name, n=self.number,
                     ms=int((time.monotonic() - self.started_at) * 1000))
        self.state = "idle"
        self.pending_next = request
        request.long_poll = True
        pool = self.pool
        self._idle_since = pool.reactor.seconds()
        if self._reaper is None:
            self._schedule_reap(pool.config.idle_timeout)
        request.on_lost = self._poll_lost
        if not pool.queue:
            _take_back_for(self)
        if pool.queue or pool.events:
            pool.dispatch()

    def _ahead_poll(self, request: RuntimeRequest) -> None:
        """The shipped worker's poll takes up events sent ahead: note its connection."""
        channel = request._channel
        if channel is not self.channel and channel is not None:
            self.ahead_ok = True
            self.channel = channel
            channel.on_close = self._channel_closed

    def _schedule_reap(self, delay: float) -> None:
        """Stop this worker after ``idle_timeout`` idle, if the pool has more than its
        ``min_workers``: a burst must not leave ``max_workers`` processes forever."""
        if self.pool.config.idle_timeout > 0:
            self._reaper = self.pool.reactor.callLater(delay, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        if self.state != "idle":
            return  # busy: the next poll arms it again
        left = self._idle_since + self.pool.config.idle_timeout - self.pool.reactor.seconds()
        if left > 0:  # it was busy since this was armed
            self._schedule_reap(left)
            return
        staying = sum(1 for w in self.pool.workers if w.state not in ("dead", "retiring"))
        if self.state == "idle" and staying > self.pool.config.min_workers:
            log.info("lambda {function}: stopping worker #{n}, idle for {s:.0f} s",
                     function=self.pool.config.name, n=self.number,
                     s=self.pool.config.idle_timeout)
            self.state = "retiring"  # never handed another invoke
            self.kill("idle", "TERM")

    def _poll_lost(self) -> None:
        """The held ``/next``'s connection closed (``on_lost`` of that request)."""
        request = self.pending_next
        if request is not None and not request.connected:
            self.pending_next = None

    def start(self, inv: Invocation) -> bool:
        """Answer the held ``/next`` with ``inv``; False if the poll is gone."""
        request = self.pending_next
        self.pending_next = None
        if request is None or not request.connected:
            return False
        self._begin(inv, None, request)
        return True

    def _begin(self, inv: Invocation, channel: RuntimeApiProtocol | None,
               request: RuntimeRequest | None = None) -> None:
        """Run ``inv``: its event answers ``request`` (a held ``/next``), or, from the
        fast lane, follows the 202 ``channel`` holds (the answer the poll would get)."""
        self.state = "busy"
        self.current = inv
        self._current_pipe = -1
        self.last_id = inv_id = inv.id
        self.invocations += 1
        timeout = inv.timeout
        fields = (inv_id.encode(), int((time.time() + timeout) * 1000),
                  inv.function_arn.encode(), inv.trace_id.encode())
        payload = inv.payload
        event = _INVOCATION % (len(payload), *fields, payload)
        if request is None:  # RuntimeApiProtocol.answered's write of a held poll's answer
            assert channel is not None and channel._writer is not None
            out = channel._out
            out.append(_ACCEPTED)
            out.append(event)
            channel._out = []
            channel._writer.write(b"".join(out))
        elif not request.send(event):
            request.respond(200, payload, raw_headers=_INVOCATION_HEADERS % fields)
        reactor = self.pool.reactor
        self._began = now = reactor.seconds()
        self._deadline = now + timeout
        if self._deadline_call is None:
            self._deadline_call = reactor.callLater(timeout, self._function_timeout)

    def completed(self, request: RuntimeRequest, request_id: str, body: bytes,
                  is_error: bool) -> None:
        current = self.current
        if current is None or current.id != request_id:
            for ended in self._ended:
                if ended.id == request_id:
                    # Its worker died in an event sent ahead after this result was written.
                    self._ended.remove(ended)
                    ended.settle(InvokeResult(ended.id, body,
                                              "Unhandled" if is_error else None))
                    request.respond(202, b'{"status": "OK"}')
                    return
            request.respond_json(400, {"errorMessage": "Invalid request ID",
                                       "errorType": "InvalidRequestID"})
            return
        if is_error:
            if not body.strip():
                error_type = request.header(b"lambda-runtime-function-error-type")
                body = _error_payload("Unknown application error occurred",
                                      error_type.decode("utf-8", "replace")
                                      if isinstance(error_type, bytes) else "Unhandled")
            self._finish_current(body, "Unhandled", answered=True)
        else:
            self._finish_current(body, None, answered=True)
        request.respond(202, b'{"status": "OK"}')

    def too_large(self, request: RuntimeRequest, rest: str) -> None:
        if self.current is not None and rest.startswith(f"invocation/{self.current.id}/"):
            self._finish_current(_error_payload(
                f"Response payload size exceeded maximum allowed payload size "
                f"({MAX_PAYLOAD_BYTES} bytes).", "Function.ResponseSizeTooLarge"), "Unhandled",
                answered=True)
        request.respond_json(413, {"errorMessage": "Payload Too Large",
                                   "errorType": "RequestEntityTooLarge"})

    def init_error(self, request: RuntimeRequest, body: bytes) -> None:
        self.init_failure = body[:65536] or _error_payload("init failed", "Runtime.Unknown")
        log.error("lambda {function}: init failed in worker #{n}: {error}",
                  function=self.pool.config.name, n=self.number,
                  error=self.init_failure.decode("utf-8", "replace"))
        request.respond(202, b'{"status": "OK"}')

    # -- lifecycle --------------------------------------------------------------------

    def _finish_current(self, payload: bytes, function_error: str | None,
                        answered: bool = False) -> None:
        """Finish the running invocation.  ``answered``: the worker answered it (or gave
        up on it) and goes on: the event sent ahead, if any, runs now and answers the
        worker's next poll; else (a timeout, an exit) it stays for the exit to settle."""
        inv = self.current
        self.current = None
        if answered and self._promote():
            self._poll_answered = True
        elif self.state == "busy":
            self.state = "idle" if self.pending_next is not None else "between"
        if inv is not None:
            inv.settle(InvokeResult(request_id=inv.id, payload=payload,
                                    function_error=function_error))

    def _cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _function_timeout(self) -> None:
        self._deadline_call = None
        inv = self.current
        if inv is None:
            return
        left = self._deadline - self.pool.reactor.seconds()
        if left > 0:  # armed for an earlier invocation: this one has time left
            self._deadline_call = self.pool.reactor.callLater(left, self._function_timeout)
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        message = f"{stamp}.000Z {inv.id} Task timed out after {inv.timeout:.2f} seconds"
        log.error("lambda {function}: {message}; killing worker #{n} and replacing it",
                  function=self.pool.config.name, message=message, n=self.number)
        self._finish_current(_error_payload(message), "Unhandled")
        self.kill("function timeout")

    def _init_timeout(self) -> None:
        self.timer = None
        if self.state == "starting":
            log.error("lambda {function}: worker #{n} did not finish init within {s:.0f} s;"
                      " killing it", function=self.pool.config.name, n=self.number,
                      s=INIT_TIMEOUT)
            self.init_failure = _error_payload(
                f"Init timed out after {INIT_TIMEOUT:.2f} seconds", "Runtime.InitTimeout")
            self.kill("init timeout")

    def check_memory(self, limit: int) -> None:
        """Kill the worker if its resident set is over ``limit`` bytes (the watchdog)."""
        if self.state == "dead" or self.transport is None or self.out_of_memory is not None:
            return
        pid = getattr(self.transport, "pid", None)
        rss = resident_bytes(pid) if pid else None
        if rss is None or rss <= limit:
            return
        self.out_of_memory = rss
        log.error("lambda {function}: worker #{n} uses {used} MB, over the function's "
                  "memory of {limit} MB; killing it [{request_id}]",
                  function=self.pool.config.name, n=self.number, used=rss // 1048576,
                  limit=self.pool.config.memory,
                  request_id=self.current.id if self.current is not None else "-")
        self.kill("out of memory")

    def kill(self, why: str, sig: str = "KILL") -> None:
        """Stop the process; ``exited`` does the bookkeeping."""
        self.killed_because = self.killed_because or why
        if self.state != "dead" and self.transport is not None:
            try:
                self.transport.signalProcess(sig)
            except Exception:  # already gone: processEnded is on its way
                pass

    def output(self, line: bytes) -> None:
        """Log one line of the worker's output, at most ``OUTPUT_LINES_PER_SECOND``.

        Lines are tagged with the running invocation (or the last one: pipes lag behind
        the Runtime API).  A handler that floods its output must not turn the gateway into
        a log writer, so the excess is counted and reported instead of written.
        """
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._flush_dropped()
            self._window, self._lines = now, 0
        self._lines += 1
        if self._lines > OUTPUT_LINES_PER_SECOND:
            if not self._dropped:
                self.pool.reactor.callLater(1.0, self._flush_dropped)
            self._dropped += 1
            return
        log.info("lambda {function} [{request_id}] {line}", function=self.pool.config.name,
                 request_id=self.current.id if self.current is not None else self.last_id,
                 line=line.decode("utf-8", "replace").rstrip("\r"))

    def _flush_dropped(self) -> None:
        if self._dropped:
            log.warn("lambda {function}: worker #{n} wrote more than {limit} lines a second; "
                     "{count} lines not logged", function=self.pool.config.name,
                     n=self.number, limit=OUTPUT_LINES_PER_SECOND, count=self._dropped)
            self._dropped = 0

    def exited(self, code: int | None, sig: int | None) -> None:
        self._flush_dropped()
        for call in (self._reaper, self._deadline_call, self._take_back_call):
            if call is not None and call.active():
                call.cancel()
        self._reaper = self._deadline_call = self._take_back_call = None
        if not self.initialized.called:
            self.initialized.callback(None)
        was = self.state
        self.state = "dead"
        self._cancel_timer()
        if self.pending_next is not None:
            self.pending_next = None
        if self.port is not None:
            self.port.stopListening()
            self.port = None
        self._exit_status = status = exit_status(code, sig)
        # Lambda's types: a runtime killed for memory is Runtime.OutOfMemory, any other
        # exit Runtime.ExitError; the message is the same "Runtime exited" line.
        error_type = "Runtime.ExitError" if self.out_of_memory is None else \
            "Runtime.OutOfMemory"
        requeue = self._settle_ahead()
        if self.current is not None:
            inv = self.current
            self.current = None
            self._fail_exited(inv)
        elif was == "starting" and self.init_failure is None and (
                self.killed_because is None or self.out_of_memory is not None):
            self.init_failure = _error_payload(
                f"Runtime exited with error: {status}", error_type)
            log.error("lambda {function}: worker #{n} exited during init ({status})",
                      function=self.pool.config.name, n=self.number, status=status)
        pool = self.pool
        for inv in reversed(requeue):
            if inv.called:
                continue  # its caller gave up meanwhile
            if pool.closing:
                inv.settle(InvokeResult(inv.id, _error_payload(
                    "the gateway is shutting down", "Runtime.Shutdown"), "Unhandled"))
                continue
            log.info("lambda {function}: worker #{n} exited before it started the event "
                     "sent ahead to it; queued again [{request_id}]",
                     function=pool.config.name, n=self.number, request_id=inv.id)
            inv._canceller = pool._cancel  # type: ignore[assignment]
            pool.queue.appendleft(inv)
        pool.worker_gone(self, was)

    def _settle_ahead(self) -> list[Invocation]:
        """At the worker's exit: the invocations sent ahead to it that it never started
        (their token is still in its pipe), in order, for the queue.  If it started
        events sent ahead, the last it started was running (``current``, failed as such)
        and the ones before it had ended: their results, written before, are read before
        the connection closes."""
        requeue: list[Invocation] = []
        aheads, self.aheads = self.aheads, []
        current = self.current
        started = []
        for inv in aheads:
            if not inv.claimed and self._unclaimed(inv.pipe):
                requeue.append(inv)
            else:
                started.append(inv)
        if started:
            self.current = started[-1]
            for inv in ([] if current is None else [current]) + started[:-1]:
                if inv.called:
                    continue
                if self.channel is not None:
                    self._ended.append(inv)
                else:  # closed already: the result is not coming
                    self._fail_exited(inv)
        elif current is not None and self._current_pipe >= 0 and \
                self._unclaimed(self._current_pipe):
            # Its result came and the one sent ahead became current, but the worker died
            # before it started it (nor any sent after it).
            self.current = None
            requeue.insert(0, current)
        self._current_pipe = -1
        self.close_pipes()
        return requeue

    def _fail_exited(self, inv: Invocation) -> None:
        """Fail ``inv``: its worker exited while it ran (Lambda's "Runtime exited")."""
        status = self._exit_status
        log.error("lambda {function}: worker #{n} exited mid-invoke ({status}) "
                  "[{request_id}]", function=self.pool.config.name, n=self.number,
                  status=status, request_id=inv.id)
        inv.settle(InvokeResult(inv.id, _error_payload(
            f"RequestId: {inv.id} Error: Runtime exited with error: {status}",
            "Runtime.ExitError" if self.out_of_memory is None else "Runtime.OutOfMemory"),
            "Unhandled"))


def _send_ahead(pool: FunctionPool) -> None:
    """Send queued invocations ahead to busy shipped workers when none could run sooner:
    every worker busy and the pool at its size (else an idle or a new worker takes it).

    Events sent ahead to a worker whose invocation has run longer than
    :data:`AHEAD_PATIENCE` go back to the head of the queue first, those the worker has
    not started: they must not wait behind a slow invoke while others take later ones.
    """
    queue = pool.queue
    if not queue or pool.closing:
        return
    workers = pool.workers
    if len(workers) < pool._limit:
        return
    for w in workers:
        if w.state != "busy":
            return
    now = pool.reactor.seconds()
    for w in workers:
        if w.aheads and now - w._began > AHEAD_PATIENCE:
            back = []  # the last first: each goes to the head of the queue, in order
            while (inv := w.take_back()) is not None:
                back.append(inv)
            for inv in back:
                if not inv.called:
                    queue.appendleft(inv)
    while queue:
        # to the worker with the fewest sent ahead, then the one whose invocation
        # started first (the likeliest to end first)
        chosen = None
        for w in workers:
            if w.can_take_ahead() and (chosen is None or len(w.aheads) < len(chosen.aheads)
                                       or (len(w.aheads) == len(chosen.aheads)
                                           and w._began < chosen._began)):
                chosen = w
        if chosen is None:
            return
        chosen.send_ahead(queue.popleft())


def _take_back_for(idle: Worker) -> None:
    """``idle`` asks for work and none is queued while an event sent ahead waits behind
    another worker's invocation: at the end of the reactor turn, if no request read in
    the same turn gave it work, it takes that event (:meth:`Worker.take_back_now`)."""
    for w in idle.pool.workers:
        if w.aheads and w is not idle:
            if idle._take_back_call is None:
                idle._take_back_call = idle.pool.reactor.callLater(0, idle.take_back_now)
            return


class FunctionPool:
    """The workers of one function and the invocations waiting for them."""

    def __init__(self, config: FunctionConfig, reactor: Any, region: str,
                 command: list[str] | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.region = region
        self.command = command or (list(config.command) if config.command else
                                   [sys.executable, "-m", "twistgw_lambda.worker"])
        self.workers: list[Worker] = []
        self.queue: deque[Invocation] = deque()
        #: Accepted asynchronous invocations waiting for a worker (bounded).
        self.events: deque[Invocation] = deque()
        self.spawned = 0
        self._watchdog: task.LoopingCall | None = None
        self.closing = False
        self.broken = False  # the last worker failed init: no eager respawn
        #: :attr:`concurrency`, read on every invoke (the config does not change).
        self._limit = self.concurrency
        self._gone_waiters: list[defer.Deferred[None]] = []

    def environment(self) -> dict[str, str]:
        """The worker's environment: Lambda's variables, not the gateway's."""
        cfg = self.config
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",
            "_HANDLER": cfg.handler,  # empty for a command that needs none
            "LAMBDA_TASK_ROOT": str(cfg.code),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}."
                                 f"{sys.version_info[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": cfg.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(cfg.memory),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{cfg.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]",
                                                        time.gmtime()) + uuid.uuid4().hex,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "_TWISTGW_LAMBDA_WORKER": "1",
        }
        for key in ("LD_LIBRARY_PATH", "SYSTEMROOT"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update(cfg.environment)
        return env

    # -- invoking ---------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        """The most invocations that may run at once (workers, or the reservation)."""
        reserved = self.config.reserved_concurrency
        return self.config.max_workers if reserved is None else \
            min(reserved, self.config.max_workers)

    def saturated(self) -> bool:
        """True when :meth:`dispatch` could do nothing for a queued invocation: no worker
        is idle with a poll to answer, none is dead, and every worker the function may
        have is there (none to start)."""
        workers = self.workers
        if len(workers) < self._limit:
            return False
        for w in workers:
            state = w.state
            if state == "dead" or (state == "idle" and w.pending_next is not None):
                return False
        return True

    def running(self) -> int:
        """Invocations a worker is running now (async ones included), and the ones sent
        ahead to a busy worker (they left the queue but wait as queued ones do)."""
        return sum((w.current is not None) + len(w.aheads) for w in self.workers)

    def invoke(self, payload: bytes, function_arn: str, trace_id: str,
               invocation_type: str = "RequestResponse") -> defer.Deferred[InvokeResult]:
        """Queue one invocation; the Deferred is cancellable (timeout, client gone).

        ``invocation_type`` ``Event`` queues it asynchronously and fires at once with a
        202 result (or Lambda's throttle if the async queue is full); ``DryRun`` only
        answers 204, as the Invoke API does for a function it could run.
        """
        if invocation_type == "Event":
            return defer.succeed(self.invoke_event(payload, function_arn, trace_id))
        if invocation_type == "DryRun":
            return defer.succeed(InvokeResult(str(uuid.uuid4()), b"", status=204))
        return self.submit(payload, function_arn, trace_id).as_deferred()

    def submit(self, payload: bytes, function_arn: str, trace_id: str) -> Invocation:
        """:meth:`invoke` (``RequestResponse``) answering with the invocation itself, an
        :class:`~twistgw.answer.Answer` (cancellable alike), not a Deferred: what the
        plugin's ``integrate`` returns on every invoke."""
        inv = Invocation(payload, function_arn, trace_id, self.config.timeout,
                         canceller=self._cancel)
        reserved = self.config.reserved_concurrency
        if self.closing or len(self.queue) >= MAX_QUEUE or (
                reserved is not None and len(self.queue) + self.running() >= reserved):
            log.warn("lambda {function}: throttled [{request_id}] ({running} running, "
                     "{queued} waiting, reserved concurrency {reserved})",
                     function=self.config.name, request_id=inv.id, running=self.running(),
                     queued=len(self.queue), reserved=reserved)
            inv.settle(throttled(inv.id))
            return inv
        queue = self.queue
        if not queue:
            # Nothing waits before it: hand it straight to an idle worker (what
            # dispatch would do, without queueing it first).
            for worker in self.workers:
                if worker.state == "idle" and worker.pending_next is not None:
                    if worker.start(inv):
                        return inv
                    worker.state = "between"
        queue.append(inv)
        if not self.saturated():  # (saturated: dispatch would find nothing to do)
            self.dispatch()
        else:  # though with every worker busy, it goes ahead to one
            _send_ahead(self)
        return inv

    def invoke_event(self, payload: bytes, function_arn: str, trace_id: str
                     ) -> InvokeResult:
        """Accept one asynchronous invocation: 202 now, run later, outcome logged."""
        inv = Invocation(payload, function_arn, trace_id, self.config.timeout,
                         asynchronous=True)
        if self.closing or len(self.events) >= self.config.async_queue or \
                self.config.reserved_concurrency == 0:
            log.error("lambda {function}: asynchronous invocation refused [{request_id}]: "
                      "{queued} already queued (async_queue {limit})",
                      function=self.config.name, request_id=inv.id,
                      queued=len(self.events), limit=self.config.async_queue)
            return throttled(inv.id)
        inv.then(self._event_done, inv)
        self.events.append(inv)
        log.info("lambda {function}: asynchronous invocation queued [{request_id}]",
                 function=self.config.name, request_id=inv.id)
        self.dispatch()
        return InvokeResult(inv.id, b"", status=202)

    def _event_done(self, result: InvokeResult, inv: Invocation) -> None:
        """Log how an asynchronous invocation ended (no caller is waiting for it)."""
        if result.function_error is None:
            log.info("lambda {function}: asynchronous invocation succeeded [{request_id}]",
                     function=self.config.name, request_id=inv.id)
        else:
            log.error("lambda {function}: asynchronous invocation failed [{request_id}]: "
                      "{error}", function=self.config.name, request_id=inv.id,
                      error=result.payload[:4096].decode("utf-8", "replace"))

    def _cancel(self, inv: Invocation) -> None:
        try:
            self.queue.remove(inv)
        except ValueError:
            pass  # already running: the worker finishes or times out on its own

    def _next_invocation(self) -> tuple[deque[Invocation], Invocation] | None:
        """The next invocation to run: synchronous first, then asynchronous ones while
        the function is under its concurrency."""
        if self.queue:
            return self.queue, self.queue[0]
        if self.events and self.running() < self.concurrency:
            return self.events, self.events[0]
        return None

    def dispatch(self) -> None:
        """Hand queued invocations to idle workers; start workers for the rest."""
        while self.queue or self.events:
            found = self._next_invocation()
            if found is None:
                break
            for worker in self.workers:
                if worker.state == "idle" and worker.pending_next is not None:
                    break
            else:
                break
            source, inv = found
            source.popleft()
            if not worker.start(inv):
                source.appendleft(inv)
                worker.state = "between"
        if self.queue:
            _send_ahead(self)
        if self.closing or not (self.queue or self.events):
            return  # nothing waits: no worker to start
        alive = 0
        for w in self.workers:
            if w.state != "dead":
                alive += 1
        concurrency = self.concurrency
        if alive >= concurrency:
            return  # every worker there may be is there (invokes queue at full load)
        starting = sum(1 for w in self.workers if w.state == "starting")
        want = len(self.queue) + min(len(self.events), concurrency - self.running()) \
            - starting
        while want > 0 and alive < concurrency:
            self.spawn()
            alive += 1
            want -= 1

    def _watch_memory(self) -> None:
        limit = self.config.memory * 1024 * 1024
        for w in list(self.workers):
            w.check_memory(limit)
        if not self.workers and self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()

    def spawn(self) -> Worker:
        if self._watchdog is None or not self._watchdog.running:
            self._watchdog = task.LoopingCall(self._watch_memory)
            self._watchdog.clock = self.reactor
            self._watchdog.start(MEMORY_POLL_INTERVAL, now=False)
        self.spawned += 1
        worker = Worker(self, self.spawned)
        self.workers.append(worker)
        try:
            worker.spawn(self.command, self.environment())
        except Exception:
            log.failure("lambda {function}: cannot start a worker", function=self.config.name)
            self.workers.remove(worker)
            worker.state = "dead"
            if worker.port is not None:
                worker.port.stopListening()
            self._fail_queue(_error_payload(traceback.format_exc(limit=1),
                                            "Runtime.StartError"))
        return worker

    def worker_gone(self, worker: Worker, was: str) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        for d in list(self._gone_waiters):
            if not self.workers:
                self._gone_waiters.remove(d)
                d.callback(None)
        if self.closing:
            return
        if worker.init_failure is not None and was == "starting":
            self.broken = True
            if not any(w.state == "starting" for w in self.workers):
                # Nothing else is about to serve the queue: fail it now, as Lambda fails
                # the invoke whose init failed, rather than spin on a broken module.
                self._fail_queue(worker.init_failure)
        else:
            self.broken = False
        self.dispatch()
        if not self.broken:
            self.keep_warm()

    def _fail_queue(self, payload: bytes) -> None:
        """Fail every waiting invocation, asynchronous ones too (each is logged)."""
        while self.queue:
            inv = self.queue.popleft()
            inv.settle(InvokeResult(inv.id, payload, "Unhandled"))
        while self.events:
            inv = self.events.popleft()
            inv.settle(InvokeResult(inv.id, payload, "Unhandled"))

    def keep_warm(self) -> list[defer.Deferred[None]]:
        """Start workers until ``min_workers`` are alive; their init-done Deferreds."""
        alive = sum(1 for w in self.workers if w.state != "dead")
        started: list[defer.Deferred[None]] = []
        while not self.closing and alive < self.config.min_workers:
            started.append(self.spawn().initialized)
            alive += 1
        return started

    def stop(self, grace: float = 2.0) -> defer.Deferred[None]:
        """Terminate every worker (SIGTERM, then SIGKILL after ``grace``)."""
        self.closing = True
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        if self.events:
            log.warn("lambda {function}: {count} queued asynchronous invocations will not "
                     "run: the gateway is shutting down", function=self.config.name,
                     count=len(self.events))
        self._fail_queue(_error_payload("the gateway is shutting down", "Runtime.Shutdown"))
        if not self.workers:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._gone_waiters.append(d)
        for w in list(self.workers):
            w.kill("shutdown", "TERM")

        def hard() -> None:
            for w in list(self.workers):
                w.kill("shutdown")

        call = self.reactor.callLater(grace, hard)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d


class LambdaRuntime:
    """Every function pool of one gateway."""

    def __init__(self, functions: dict[str, FunctionConfig], reactor: Any,
                 regions: dict[str, str] | None = None, default_region: str = "us-east-1"
                 ) -> None:
        self.reactor = reactor
        from .remote import RemoteFunction  # imports this module

        regions = regions or {}
        self.pools: dict[str, FunctionPool | RemoteFunction] = {
            name: RemoteFunction(name, cfg.remote, reactor) if cfg.remote is not None
            else FunctionPool(cfg, reactor, regions.get(name, default_region))
            for name, cfg in functions.items()}

    def start(self) -> defer.Deferred[Any]:
        """Start every pool's ``min_workers``; fires when their init is over.

        The gateway opens its listeners after that, so the first requests find warm
        workers.  Init is bounded (:data:`INIT_TIMEOUT`), and a worker that fails it is
        logged and does not stop the gateway: its function answers 502 until fixed.
        """
        waits = [d for pool in self.pools.values() for d in pool.keep_warm()]
        return defer.DeferredList(waits, consumeErrors=True)

    def stop(self) -> defer.Deferred[Any]:
        return defer.DeferredList([p.stop() for p in self.pools.values()],
                                  consumeErrors=True)

