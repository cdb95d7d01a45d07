"""Helpers for testing twistgw and its plugins.

Three levels, from fastest to most real:

* :func:`make_inbound` / :func:`make_context` build the values hooks receive, to unit-test
  one hook implementation by calling it.
* :class:`GatewayHarness` runs the whole pipeline in-process (no sockets, a
  ``task.Clock``), with plugins passed as objects: ``harness.request("GET", "/prod/x")``.
* :class:`RunningGateway` starts the real ``twistd -n apigw`` as a subprocess on a free
  loopback port and gives its base URL, for end-to-end tests over HTTP.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from .config import GatewayConfig, load_config, parse_config
from .gateway import Gateway
from .models import Context, Headers, InboundRequest, Response
from .pipeline import Exchange
from .routing import parse_query

__all__ = ["make_inbound", "make_context", "GatewayHarness", "RunningGateway",
           "write_config"]


def make_inbound(
    method: str = "GET",
    path: str = "/",
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes | str = b"",
    query: str = "",
    listener: str = "default",
    client_ip: str = "127.0.0.1",
) -> InboundRequest:
    """An :class:`InboundRequest` as the HTTP layer would build it.

    ``path`` may carry a query string (``/prod/x?a=1``); ``Host: localhost`` is added
    unless given.
    """
    raw_path, _, raw_query = path.partition("?")
    raw_query = raw_query or query
    pairs = Headers.of(headers)
    if "host" not in pairs:
        pairs = pairs.with_added("Host", "localhost")
    return InboundRequest(
        method=method.upper(), raw_path=raw_path, raw_query=raw_query,
        query=parse_query(raw_query), headers=pairs,
        body=body.encode("utf-8") if isinstance(body, str) else body,
        listener=listener, client_ip=client_ip, received_at=time.time(),
    )


def make_context(request: InboundRequest | None = None, **fields: Any) -> Context:
    """A :class:`Context` for unit-testing a hook without a gateway."""
    request = request or make_inbound()
    fields.setdefault("request_id", "c6af9ac6-7b61-11e6-9a41-93e8deadbeef")
    fields.setdefault("extended_request_id", "EXqgWgXxSK4EJug=")
    fields.setdefault("received_at", request.received_at)
    return Context(request=request, **fields)


def write_config(directory: Path, config: Mapping[str, Any],
                 definitions: Mapping[str, Any] = {}) -> Path:
    """Write a gateway config and its API definitions (as YAML) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in definitions.items():
        target = directory / name
        target.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False),
                          encoding="utf-8")
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


class GatewayHarness:
    """The whole pipeline in-process, driven without sockets.

    :param config: a :class:`GatewayConfig`, a path to a config file, or a mapping (then
        ``definitions`` maps file names to definition documents, written to a temporary
        folder).
    :param plugins: ``(name, plugin)`` pairs registered in-process, called before the
        shipped plugins.
    """

    def __init__(self, config: GatewayConfig | str | os.PathLike[str] | Mapping[str, Any],
                 *, definitions: Mapping[str, Any] = {},
                 plugins: Sequence[tuple[str, Any]] = ()) -> None:
        self.clock = Clock()
        if isinstance(config, GatewayConfig):
            cfg = config
        elif isinstance(config, Mapping):
            self._tmp = tempfile.TemporaryDirectory(prefix="twistgw-harness-")
            path = write_config(Path(self._tmp.name), config, definitions)
            cfg = load_config(path)
        else:
            cfg = load_config(config)
        self.config = cfg
        self.gateway = Gateway(cfg, reactor=self.clock, extra_plugins=plugins)
        self.gateway.ready = True
        self.default_listener = next(
            (lst.name for lst in cfg.listeners if not lst.admin), "default")

    @staticmethod
    def from_documents(config: Mapping[str, Any], definitions: Mapping[str, Any],
                       plugins: Sequence[tuple[str, Any]] = ()) -> GatewayHarness:
        """Shorthand for a mapping config plus definition documents."""
        return GatewayHarness(config, definitions=definitions, plugins=plugins)

    def exchange(self, method: str, path: str, **kw: Any) -> Exchange | Deferred[Exchange]:
        """Run one request; returns the :class:`Exchange` or a Deferred of it."""
        kw.setdefault("listener", self.default_listener)
        inbound = make_inbound(method, path, **kw)
        result = self.gateway.pipeline.handle(self.gateway.deployment, inbound)
        if isinstance(result, Deferred):
            return result.addCallback(self._finish)
        return self._finish(result)

    def _finish(self, exchange: Exchange) -> Exchange:
        self.gateway.pipeline.finished(exchange)
        return exchange

    def request(self, method: str, path: str, **kw: Any) -> Response:
        """Run one request that completes synchronously (advancing the clock if needed)."""
        result = self.exchange(method, path, **kw)
        if isinstance(result, Deferred):
            box: list[Any] = []
            result.addBoth(box.append)
            for _ in range(1000):
                if box:
                    break
                self.clock.advance(0.1)
            if not box:
                raise AssertionError("the request did not complete")
            outcome = box[0]
            if hasattr(outcome, "raiseException"):
                outcome.raiseException()
            return outcome.response  # type: ignore[no-any-return]
        return result.response


class RunningGateway:
    """``twistd -n apigw --config PATH`` as a subprocess, for end-to-end tests.

    Every non-admin listener endpoint in the config should bind port 0; the real ports
    are read from the gateway's "serving ..." log lines.  Use as a context manager::

        with RunningGateway(config_path) as gw:
            urlopen(gw.url("/prod/pets"))
    """

    _SERVING = re.compile(r"serving (https?://[^ ]+?)(/[^ ]*)? -> ")

    def __init__(self, config: str | os.PathLike[str] | None, *, timeout: float = 20.0,
                 extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None
                 ) -> None:
        self.config = config
        self.timeout = timeout
        self.extra_args = list(extra_args)
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen[bytes] | None = None
        self.base_urls: list[str] = []
        self._log = tempfile.NamedTemporaryFile(prefix="twistgw-", suffix=".log",
                                                delete=False)

    @property
    def log_text(self) -> str:
        """Everything the gateway logged so far."""
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def start(self) -> RunningGateway:
        """Start twistd and wait until it logs the URLs it serves."""
        args = [sys.executable, "-c",
                "import sys; from twisted.scripts.twistd import run; sys.argv[0]='twistd';"
                " run()", "-n", "--pidfile=", "apigw"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        args += self.extra_args
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self.env, cwd=tempfile.gettempdir())
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            text = self.log_text
            found = self._SERVING.findall(text)
            if found:
                self.base_urls = sorted({m[0] for m in found})
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"twistd did not start within {self.timeout}s:\n{self.log_text}")

    def url(self, path: str = "/") -> str:
        """An absolute URL on the first listener."""
        return self.base_urls[0] + path

    @property
    def port(self) -> int:
        """The first listener's port."""
        return int(self.base_urls[0].rsplit(":", 1)[1])

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the daemon and wait; returns its exit status."""
        proc = self.process
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def __enter__(self) -> RunningGateway:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass


def parse_config_dict(doc: Mapping[str, Any], base_dir: Path) -> GatewayConfig:
    """Check a config given as a mapping (paths resolve against ``base_dir``)."""
    return parse_config(doc, "<test config>", base_dir)
