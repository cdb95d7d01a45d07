"""The baseline of bench/run: a bare twisted.web hello-world.

One leaf resource returning a small fixed JSON body (the size of the gateway's MOCK
answer in bench/configs/mock-api.yaml), served by a stock :class:`twisted.web.server.Site`
with default settings on the default (epoll) reactor.  The only change to the Site is
that it writes no access log, like the gateway's own Site (the gateway's access log is
measured separately).

Usage: ``python bench/hello_twisted.py [PORT]`` (PORT 0, the default, picks a free one);
prints ``listening on 127.0.0.1:PORT`` once bound, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

BODY = b'{"message": "hello, world"}'


class Hello(Resource):
    """Every path and method gets the same small body."""

    isLeaf = True

    def render(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"content-type", b"application/json")
        return BODY


class QuietSite(Site):
    """A stock Site that writes no access log."""

    def log(self, request):  # type: ignore[no-untyped-def]
        pass


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    listening = reactor.listenTCP(port, QuietSite(Hello()), interface="127.0.0.1")
    print(f"listening on 127.0.0.1:{listening.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
