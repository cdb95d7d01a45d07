"""The TLS baseline of bench/tls.py: bench/hello_twisted.py's resource over TLS.

A stock :class:`twisted.web.server.Site` (no access log) wrapped in Twisted's TLS with
the given PEM certificate and key and Twisted's default ``CertificateOptions``.

Usage: ``python bench/hello_twisted_tls.py CERT.pem KEY.pem [PORT]``; prints
``listening on 127.0.0.1:PORT`` once bound.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hello_twisted import Hello, QuietSite
from twisted.internet import reactor, ssl


def main() -> None:
    cert, key = Path(sys.argv[1]).read_text(), Path(sys.argv[2]).read_text()
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    options = ssl.PrivateCertificate.loadPEM(cert + key).options()
    listening = reactor.listenSSL(port, QuietSite(Hello()), options, interface="127.0.0.1")
    print(f"listening on 127.0.0.1:{listening.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
