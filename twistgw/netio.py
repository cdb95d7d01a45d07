"""Send small writes straight to a TCP socket instead of through Twisted's write buffer.

``ITransport.write`` on a TCP connection only queues the bytes: the transport asks epoll
for writability, sends on the reactor's next turn and then takes the registration back.
For a request/response protocol whose answers are one small write on a connection that
is almost never congested, that is a reactor event and two ``epoll_ctl`` calls per
answer for nothing -- a visible share of a request in the gateway's live profiles (the
listeners, the Runtime API server and the outbound HTTP client all paid it).

:class:`DirectWriter` tries ``socket.send`` first and hands whatever the kernel did not
take to ``transport.write``.  From that moment on every write goes through the transport
for the rest of the connection, so bytes can never overtake bytes Twisted still holds;
Twisted's buffering, producer pausing and error handling then work exactly as before.
Transports that are not Twisted socket connections (TLS, protocol wrappers, test
transports) always use ``transport.write``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

__all__ = ["DirectWriter"]


class DirectWriter:
    """Writes for one connection: to the socket while nothing is queued, else buffered."""

    __slots__ = ("_sock", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        #: The connected socket while direct sends are safe; ``None`` once they are not.
        self._sock: Any = (transport.getHandle()
                           if isinstance(transport, tcp.Connection) else None)

    def write(self, data: bytes) -> None:
        """Send ``data`` in order after everything written before."""
        sock = self._sock
        transport = self._transport
        # ``_aborting``: abortConnection() drops every later write, but the transport
        # stays ``connected`` until the next reactor turn (tested in test_netio).
        if (sock is not None and transport.connected and not transport.disconnecting
                and not transport._aborting):
            try:
                sent = sock.send(data)
            except OSError:  # EAGAIN, or a broken connection the transport will notice
                sent = 0
            if sent == len(data):
                return
            self._sock = None
            data = data[sent:]
        transport.write(data)  # after a close began, the transport decides as always
