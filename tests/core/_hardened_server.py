"""Tiny listener for the hardening tests: a GatewaySite on the real reactor.

Run as ``python _hardened_server.py --port-file F [--header-timeout 1 ...]``.  It binds
127.0.0.1 on an ephemeral port, writes the port number to ``F`` once listening and
serves until killed.  A separate process keeps the tests' blocking socket clients and
the server's event loop from ever waiting on each other.

Resources:

* ``GET /`` (any path not below) -> ``200 ok``
* ``POST /echo`` -> ``200`` with the body length in decimal
* ``GET /headers`` -> ``200`` with the request's header names, lower-case, one a line
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from twistgw.http import GatewaySite, HttpRequest
from twistgw.limits import Limits


def echo(request: HttpRequest) -> None:
    """The trivial application behind the channel: ``ok``, the header names for
    ``GET /headers``, the body length for ``POST``.

    :param request: the request.
    """
    if request.method == b"POST":
        body = str(len(request.body)).encode("ascii")
    elif request.target == b"/headers":
        body = "\n".join(sorted(name.lower() for name, _ in request.headers)).encode()
    else:
        body = b"ok"
    request.respond(200, b"Content-Type: text/plain\r\n", body)


def build_site(limits: Limits) -> GatewaySite:
    """Return the site serving :func:`echo` under ``limits``.

    :param limits: the limits of the listener.
    """
    return GatewaySite(echo, limits, name="test")


def main(argv: list[str] | None = None) -> None:
    """Parse the options, listen and run the reactor.

    :param argv: command line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--idle-timeout", type=float, default=60.0)
    parser.add_argument("--max-headers", type=int, default=100)
    parser.add_argument("--max-header-bytes", type=int, default=16384)
    parser.add_argument("--max-request-line", type=int, default=8192)
    parser.add_argument("--max-body-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--max-connections", type=int, default=10000)
    parser.add_argument("--underscore-headers", default="drop")
    args = parser.parse_args(argv)
    limits = Limits(
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
        max_headers=args.max_headers,
        max_header_bytes=args.max_header_bytes,
        max_request_line=args.max_request_line,
        max_body_bytes=args.max_body_bytes,
        max_connections=args.max_connections,
        underscore_headers=args.underscore_headers,
    )

    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor  # zope interfaces are opaque to mypy without mypy-zope
    port = reactor.listenTCP(0, build_site(limits), interface="127.0.0.1")
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port.getHost().port))
    os.replace(tmp, args.port_file)
    reactor.run()


if __name__ == "__main__":
    main()
