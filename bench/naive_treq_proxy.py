"""The naive treq proxy of bench/run's ``proxy`` part (issue 4's reference point).

A twisted.web resource that forwards every request to one backend the straightforward
way: ``treq.request(method, backend + path, headers=..., data=...)``, then
``treq.content``, then writes the status, the content type and the body back.  It uses
treq's default connection pool (Twisted's ``HTTPConnectionPool``, persistent, at most
two idle connections per host) and no access log -- deliberately no tuning at all.

Usage: ``python bench/naive_treq_proxy.py BACKEND_URL [PORT]`` (PORT 0, the default,
picks a free one); prints ``listening on 127.0.0.1:PORT`` once bound, then serves until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import sys

import treq
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site


class NaiveProxy(Resource):
    isLeaf = True

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backend.rstrip("/")

    def render(self, request):  # type: ignore[no-untyped-def]
        headers = request.requestHeaders.copy()
        headers.removeHeader(b"host")
        body = request.content.read()
        d = treq.request(request.method.decode("ascii"),
                         self.backend + request.uri.decode("latin-1"),
                         headers=headers, data=body or None)

        def got(response):  # type: ignore[no-untyped-def]
            request.setResponseCode(response.code)
            ctype = response.headers.getRawHeaders(b"content-type")
            if ctype:
                request.setHeader(b"content-type", ctype[0])
            return treq.content(response)

        def write(content: bytes) -> None:
            if not request.finished and not request._disconnected:
                request.write(content)
                request.finish()

        def failed(failure):  # type: ignore[no-untyped-def]
            if not request.finished and not request._disconnected:
                request.setResponseCode(502)
                request.write(b"bad gateway\n")
                request.finish()

        d.addCallback(got).addCallback(write).addErrback(failed)
        return NOT_DONE_YET


class QuietSite(Site):
    """A stock Site that writes no access log."""

    def log(self, request):  # type: ignore[no-untyped-def]
        pass


def main() -> None:
    backend = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    listening = reactor.listenTCP(port, QuietSite(NaiveProxy(backend)), interface="127.0.0.1")
    print(f"listening on 127.0.0.1:{listening.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
