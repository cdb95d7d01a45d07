"""The shipped Lambda worker: a lean client of the Lambda Runtime API.

Run by the gateway as ``python -m twistgw_lambda.worker`` with Lambda's environment
(``_HANDLER``, ``LAMBDA_TASK_ROOT``, ``AWS_LAMBDA_RUNTIME_API``, ``AWS_LAMBDA_*``).  Like
Lambda's own Python runtime it imports the handler module once (so init code runs once
per worker), then loops: ``GET /next``, call the handler with the event and a context
object, ``POST /response`` or ``/error``.  It uses only the standard library and never
imports twistgw or Twisted, so the handler's process holds nothing it did not ask for.

The HTTP client is a raw keep-alive socket rather than ``http.client`` (whose header
parsing through ``email`` cost more than a trivial handler): each result is sent in the
same write as the next ``GET /next`` (HTTP/1.1 pipelining), so an invoke costs the
worker one ``sendall`` and one wake-up.

Events sent ahead, an extension of the Runtime API between twistgw and this worker only:
when the gateway offers it (token pipes named by ``_TWISTGW_LAMBDA_AHEAD_FDS``), the
worker's polls say ``Twistgw-Ahead: 1`` and the gateway may send the next events while the
worker still runs one, as the early answers to the polls the worker sends with its results.
Such an event carries ``Twistgw-Ahead: <pipe> <timeout ms>`` instead of a deadline; the
worker reads one byte from that pipe before it starts it (the deadline is set then), and
skips it if the byte is gone: the gateway took it back for another worker.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import sys
import time
import traceback
from typing import Any

__all__ = ["LambdaContext", "main"]

_BASE = "/2018-06-01/runtime"
_BASE_BYTES = _BASE.encode("ascii")


class LambdaContext:
    """The context object handlers receive, with the attributes of Lambda's.

    ``memory_limit_in_mb`` is a string, as in the AWS runtime interface client.
    """

    #: The function's constants from the environment, read once per process.
    _static: tuple[str, str, str, str, str] | None = None

    def __init__(self, request_id: str, deadline_ms: int, invoked_function_arn: str,
                 client_context: Any = None, identity: Any = None) -> None:
        static = LambdaContext._static
        if static is None:
            get = os.environ.get
            static = LambdaContext._static = (
                get("AWS_LAMBDA_FUNCTION_NAME", ""),
                get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
                get("AWS_LAMBDA_LOG_GROUP_NAME", ""), get("AWS_LAMBDA_LOG_STREAM_NAME", ""))
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        (self.function_name, self.function_version, self.memory_limit_in_mb,
         self.log_group_name, self.log_stream_name) = static
        self.client_context = client_context
        self.identity = identity
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the function's timeout (never negative)."""
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def __repr__(self) -> str:
        return (f"LambdaContext([aws_request_id={self.aws_request_id},"
                f"function_name={self.function_name},"
                f"invoked_function_arn={self.invoked_function_arn}])")


class RuntimeApiGone(Exception):
    """The Runtime API closed the connection or answered what a client cannot read."""


_NEXT = "GET %s/invocation/next HTTP/1.1\r\nHost: %s\r\n\r\n"
#: The gateway's answer to a result, always these bytes (dropped unparsed when seen).
_ACCEPTED = (b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
             b"Content-Length: 16\r\n\r\n{\"status\": \"OK\"}")
#: How the gateway starts every event it hands out, and the names of the four headers
#: that follow ``Content-Length`` in its order (read by position, see :meth:`event`).
_EVENT_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
_ID, _DEADLINE, _ARN, _TRACE = (b"Lambda-Runtime-Aws-Request-Id:", b"Lambda-Runtime-Deadline-Ms:",
                                b"Lambda-Runtime-Invoked-Function-Arn:",
                                b"Lambda-Runtime-Trace-Id:")
#: An event sent ahead has this header in place of the deadline (see the module doc).
_AHEAD = b"Twistgw-Ahead:"
_AHEAD_FDS = "_TWISTGW_LAMBDA_AHEAD_FDS"


#: Bytes asked of one ``recv`` (a larger body is asked for whole, see ``_take``).
_READ_SIZE = 65536


class _Client:
    """One keep-alive connection to the Runtime API, spoken over a raw socket.

    Each invoke costs a worker two requests, so this client is on the hot path of every
    Lambda route: it sends a request in one ``sendall`` and parses only the status line,
    the header names it reads and the body's framing (``Content-Length``, ``chunked``, or
    up to the close).  :meth:`exchange` pipelines an invocation's result with the poll
    for the next one (one write, one wake-up of the gateway instead of two).
    """

    #: The token pipes of events sent ahead, when the gateway offers them.
    ahead_fds: tuple[int, ...] | None = None
    #: Results sent whose answer (a 202) has not been read yet (events sent ahead come
    #: before them on the connection).
    unanswered = 0

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)))
        # Small request/response pairs on loopback: never wait for Nagle's algorithm.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = address.encode("ascii")
        self.buffer = b""
        self.next_request = (_NEXT % (_BASE, address)).encode("ascii")
        fds = os.environ.pop(_AHEAD_FDS, "").split(",")
        if len(fds) >= 2 and all(fd.isdigit() for fd in fds):
            try:
                for fd in fds:
                    os.set_blocking(int(fd), False)
                    os.set_inheritable(int(fd), False)  # not the handler's subprocesses'
            except OSError:
                pass  # not open: no events ahead
            else:
                self.ahead_fds = tuple(int(fd) for fd in fds)
                self.next_request = self.next_request[:-2] + b"Twistgw-Ahead: 1\r\n\r\n"

    def encode(self, method: str, path: str, body: bytes,
               headers: dict[str, str] | None = None) -> bytes:
        """One request's bytes (every one of ours has a body, so a Content-Length)."""
        head = f"{method} {_BASE}{path} HTTP/1.1\r\nHost: {self.host.decode()}\r\n" \
               f"Content-Length: {len(body)}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        return head.encode("latin-1") + b"\r\n" + body

    def request(self, method: str, path: str, body: bytes,
                headers: dict[str, str] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send one request and read its response."""
        self.sock.sendall(self.encode(method, path, body, headers))
        return self.response()

    def exchange(self, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send ``data`` (a result, if any, then the poll) and return the poll's response;
        a result's own response (202, or 4xx for a refused one) is read and dropped."""
        self.sock.sendall(data + self.next_request)
        if self.ahead_fds is not None:
            return self._next_event(bool(data))
        if data:
            if not self.buffer:
                self._fill()
            if self.buffer.startswith(_ACCEPTED):
                self.buffer = self.buffer[len(_ACCEPTED):]
            else:
                self.skip_response()
        return self.event()

    def _next_event(self, result_sent: bool) -> tuple[int, dict[bytes, bytes], bytes]:
        """:meth:`exchange`'s reading with events sent ahead: the next event to run (one
        already here or the answer to the poll), the answers to results dropped where
        they come (after an event sent ahead, which overtakes them)."""
        self.unanswered += result_sent
        fds = self.ahead_fds
        assert fds is not None
        while True:
            if self.unanswered:
                if not self.buffer:
                    self._fill()
                if self.buffer.startswith(_ACCEPTED):
                    self.buffer = self.buffer[len(_ACCEPTED):]
                    self.unanswered -= 1
                    continue
            status, headers, body = self.event()
            ahead = headers.get(b"twistgw-ahead")
            if ahead is None:
                if self.unanswered:  # the answer to a result (a 4xx for a refused one)
                    self.unanswered -= 1
                    continue
                return status, headers, body
            pipe, _, timeout = ahead.partition(b" ")
            try:
                if not os.read(fds[int(pipe)], 1):
                    continue
            except BlockingIOError:
                continue  # taken back by the gateway: another worker runs it
            headers[b"lambda-runtime-deadline-ms"] = b"%d" % (
                int(time.time() * 1000) + int(timeout))
            return status, headers, body

    def event(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """:meth:`response` for the answer to a poll: the head the gateway writes (its
        six headers in its order, nothing else) is read by position; any other head, or
        one not complete yet, goes to :meth:`response`, which gives the same result."""
        buffer = self.buffer
        if buffer.startswith(_EVENT_HEAD):
            end = buffer.find(b"\r\n\r\n")
            lines = buffer[len(_EVENT_HEAD):end].split(b"\r\n") if end > 0 else ()
            if len(lines) == 5:
                length, request_id, deadline, arn, trace = lines
                if deadline.startswith(_DEADLINE):
                    key, skip = b"lambda-runtime-deadline-ms", len(_DEADLINE)
                else:  # an event sent ahead: its pipe and timeout instead
                    key, skip = b"twistgw-ahead", len(_AHEAD) if \
                        deadline.startswith(_AHEAD) else -1
                if length.isdigit() and request_id.startswith(_ID) and skip > 0 and \
                        arn.startswith(_ARN) and trace.startswith(_TRACE):
                    self.buffer = buffer[end + 4:]
                    return 200, {
                        b"content-type": b"application/json", b"content-length": length,
                        b"lambda-runtime-aws-request-id": request_id[len(_ID):].strip(),
                        key: deadline[skip:].strip(),
                        b"lambda-runtime-invoked-function-arn": arn[len(_ARN):].strip(),
                        b"lambda-runtime-trace-id": trace[len(_TRACE):].strip(),
                    }, self._take(int(length))
        return self.response()

    def skip_response(self) -> None:
        """Read one response and drop it: only its framing is parsed when it has a
        ``Content-Length`` (a 202 to a result, every invoke), else :meth:`response`."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = buffer[:end].lower()
            at = head.find(b"\r\ncontent-length:")
            if at >= 0 and b"\r\ntransfer-encoding:" not in head:
                stop = head.find(b"\r\n", at + 17)
                value = head[at + 17:stop if stop >= 0 else len(head)].strip()
                if value.isdigit() and head.rfind(b"\r\ncontent-length:") == at:
                    self.buffer = buffer[end + 4:]
                    self._take(int(value))
                    return
        self.response()

    def _fill(self) -> None:
        # Below malloc's mmap threshold (128 KiB): recv allocates its whole size first,
        # and 256 KiB cost an mmap, an mremap, a munmap and a page fault per invoke.
        data = self.sock.recv(_READ_SIZE)
        if not data:
            raise RuntimeApiGone("the Runtime API closed the connection")
        self.buffer += data

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """Read one response: ``(status, headers with lower-cased names, body)``."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buffer) > 65536:
                raise RuntimeApiGone("response head too large")
            self._fill()
        lines = self.buffer[:end].split(b"\r\n")
        self.buffer = self.buffer[end + 4:]
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise RuntimeApiGone(f"bad status line {lines[0]!r}") from None
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get(b"content-length")
        if length is not None:
            return status, headers, self._take(int(length))
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            return status, headers, self._chunked()
        if status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        body = [self.buffer]  # no framing: the body runs to the close
        self.buffer = b""
        while True:
            data = self.sock.recv(_READ_SIZE)
            if not data:
                return status, headers, b"".join(body)
            body.append(data)

    def _take(self, size: int) -> bytes:
        if len(self.buffer) < size:
            parts, have = [self.buffer], len(self.buffer)
            while have < size:
                data = self.sock.recv(max(size - have, _READ_SIZE))
                if not data:
                    raise RuntimeApiGone("the Runtime API closed the connection mid-body")
                parts.append(data)
                have += len(data)
            self.buffer = b"".join(parts)
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return body

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
        return line

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            try:
                size = int(self._line().split(b";", 1)[0], 16)
            except ValueError:
                raise RuntimeApiGone("bad chunk size") from None
            if size == 0:
                while self._line():
                    pass  # trailers
                return b"".join(parts)
            parts.append(self._take(size))
            self._line()


def _dumps(obj: Any) -> str:
    """``json.dumps(obj)``: the C encoder it builds for its default arguments, called
    directly (``dumps``, ``encode`` and ``iterencode`` are three Python calls per
    result); a new one each time, as its cycle check keeps state while it runs."""
    if _c_make_encoder is None:
        return json.dumps(obj)
    return "".join(_c_make_encoder({}, _default, _encode_string, None, ": ", ", ", False,
                                   False, True)(obj, 0))


_c_make_encoder = json.encoder.c_make_encoder  # type: ignore[attr-defined]
_encode_string = json.encoder.encode_basestring_ascii
_default = json.JSONEncoder().default

_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads's C scanner


def _loads(body: bytes) -> Any:
    """``json.loads(body)``: an event is UTF-8 JSON text with nothing around it, so the C
    scanner takes it directly (``json.loads`` spends four Python calls on encoding
    detection and framing first); anything else goes through ``json.loads``."""
    try:
        text = body.decode("utf-8")
        doc, end = _scan(text, 0)
        if end == len(text):
            return doc
    except (StopIteration, ValueError):
        pass
    return json.loads(body)


def _error_doc(exc: BaseException, error_type: str | None = None,
               message: str | None = None) -> dict[str, Any]:
    return {
        "errorMessage": str(exc) if message is None else message,
        "errorType": error_type or type(exc).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__))[1:],
    }


def _load_handler(name: str) -> Any:
    module_name, _, function_name = name.rpartition(".")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except SyntaxError as e:
        raise _InitError(_error_doc(e, "Runtime.UserCodeSyntaxError",
                                    f"Syntax error in module '{module_name}': {e}")) from e
    except Exception as e:
        raise _InitError(_error_doc(e, "Runtime.ImportModuleError",
                                    f"Unable to import module '{module_name}': {e}")) from e
    handler = getattr(module, function_name, None)
    if handler is None:
        raise _InitError({"errorMessage": f"Handler '{function_name}' missing on module "
                                          f"'{module_name}'",
                          "errorType": "Runtime.HandlerNotFound", "requestId": "",
                          "stackTrace": []})
    return handler


class _InitError(Exception):
    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__(doc["errorMessage"])
        self.doc = doc


def _install_logging() -> None:
    """A root handler in the Lambda runtime's format, unless the code configured one."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(_RequestIdFilter())
    root.addHandler(handler)


class _RequestIdFilter(logging.Filter):
    request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _RequestIdFilter.request_id
        return True


def _error_request(client: _Client, request_id: str, doc: dict[str, Any]) -> bytes:
    return client.encode("POST", f"/invocation/{request_id}/error", json.dumps(doc).encode(),
                         {"Lambda-Runtime-Function-Error-Type": doc["errorType"]})


def main() -> int:
    """Serve invocations until the Runtime API goes away."""
    os.environ.pop("_TWISTGW_LAMBDA_WORKER", None)
    client = _Client(os.environ["AWS_LAMBDA_RUNTIME_API"])
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # The gateway starts this worker without a working directory (posix_spawn, see
    # runtime.Worker.spawn): the handler's code folder is its own, as on Lambda.
    os.chdir(task_root)
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    _install_logging()
    try:
        handler = _load_handler(os.environ["_HANDLER"])
    except _InitError as e:
        print(f"[ERROR] {e.doc['errorType']}: {e.doc['errorMessage']}", flush=True)
        client.request("POST", "/init/error", json.dumps(e.doc).encode(),
                       {"Lambda-Runtime-Function-Error-Type": e.doc["errorType"]})
        return 1
    environ = os.environ
    dumps = _dumps
    result_bytes = b""  # the previous invocation's result, sent with the next poll
    while True:
        try:
            status, headers, body = client.exchange(result_bytes)
        except (OSError, RuntimeApiGone):
            return 0  # the gateway went away: so does the worker
        if status != 200:
            return 0
        request_id = headers.get(b"lambda-runtime-aws-request-id", b"").decode()
        trace = headers.get(b"lambda-runtime-trace-id")
        if trace:
            environ["_X_AMZN_TRACE_ID"] = trace.decode()
        else:
            environ.pop("_X_AMZN_TRACE_ID", None)
        context = LambdaContext(
            request_id, int(headers.get(b"lambda-runtime-deadline-ms", b"0")),
            headers.get(b"lambda-runtime-invoked-function-arn", b"").decode())
        _RequestIdFilter.request_id = request_id
        try:
            event = _loads(body) if body else {}
            result = handler(event, context)
        except Exception as e:
            doc = _error_doc(e)
            doc["requestId"] = request_id
            print(f"[ERROR] {doc['errorType']}: {doc['errorMessage']}", flush=True)
            result_bytes = _error_request(client, request_id, doc)
            continue
        try:
            payload = dumps(result).encode("utf-8")
        except (TypeError, ValueError) as e:
            result_bytes = _error_request(client, request_id, {
                "errorMessage": f"Unable to marshal response: {e}",
                "errorType": "Runtime.MarshalError", "requestId": request_id,
                "stackTrace": []})
            continue
        result_bytes = b"POST %s/invocation/%s/response HTTP/1.1\r\nHost: %s\r\n" \
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                _BASE_BYTES, request_id.encode(), client.host, len(payload), payload)


if __name__ == "__main__":
    sys.exit(main())
