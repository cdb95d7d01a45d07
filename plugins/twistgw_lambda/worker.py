"""The shipped Lambda worker: a lean client of the Lambda Runtime API.

Run by the gateway as ``python -m twistgw_lambda.worker`` with Lambda's environment
(``_HANDLER``, ``LAMBDA_TASK_ROOT``, ``AWS_LAMBDA_RUNTIME_API``, ``AWS_LAMBDA_*``).  Like
Lambda's own Python runtime it imports the handler module once (so init code runs once
per worker), then loops: ``GET /next``, call the handler with the event and a context
object, ``POST /response`` or ``/error``.  It uses only the standard library and never
imports twistgw or Twisted, so the handler's process holds nothing it did not ask for.
"""

from __future__ import annotations

import http.client
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


class LambdaContext:
    """The context object handlers receive, with the attributes of Lambda's.

    ``memory_limit_in_mb`` is a string, as in the AWS runtime interface client.
    """

    def __init__(self, request_id: str, deadline_ms: int, invoked_function_arn: str,
                 client_context: Any = None, identity: Any = None) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
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


class _Client:
    """One keep-alive connection to the Runtime API."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port))
        self.conn.connect()
        # Small request/response pairs on loopback: never wait for Nagle's algorithm.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse,
                                                                 bytes]:
        self.conn.request(method, _BASE + path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        return response, response.read()


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


def main() -> int:
    """Serve invocations until the Runtime API goes away."""
    os.environ.pop("_TWISTGW_LAMBDA_WORKER", None)
    client = _Client(os.environ["AWS_LAMBDA_RUNTIME_API"])
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
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
    while True:
        try:
            response, body = client.request("GET", "/invocation/next")
        except (OSError, http.client.HTTPException):
            return 0  # the gateway went away: so does the worker
        if response.status != 200:
            return 0
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id", "")
        trace = response.getheader("Lambda-Runtime-Trace-Id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        context = LambdaContext(
            request_id, int(response.getheader("Lambda-Runtime-Deadline-Ms", "0")),
            response.getheader("Lambda-Runtime-Invoked-Function-Arn", ""))
        _RequestIdFilter.request_id = request_id
        try:
            event = json.loads(body) if body else {}
            result = handler(event, context)
        except Exception as e:
            doc = _error_doc(e)
            doc["requestId"] = request_id
            print(f"[ERROR] {doc['errorType']}: {doc['errorMessage']}", flush=True)
            client.request("POST", f"/invocation/{request_id}/error",
                           json.dumps(doc).encode(),
                           {"Lambda-Runtime-Function-Error-Type": doc["errorType"]})
            continue
        try:
            payload = json.dumps(result).encode("utf-8")
        except (TypeError, ValueError) as e:
            doc = {"errorMessage": f"Unable to marshal response: {e}",
                   "errorType": "Runtime.MarshalError", "requestId": request_id,
                   "stackTrace": []}
            client.request("POST", f"/invocation/{request_id}/error",
                           json.dumps(doc).encode(),
                           {"Lambda-Runtime-Function-Error-Type": "Runtime.MarshalError"})
            continue
        client.request("POST", f"/invocation/{request_id}/response", payload,
                       {"Content-Type": "application/json"})


if __name__ == "__main__":
    sys.exit(main())
