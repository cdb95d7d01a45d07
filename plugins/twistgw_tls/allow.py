"""Source allow-lists: peers outside ``allow_sources`` are closed before any byte is read."""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from twistgw.errors import ConfigError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress

__all__ = ["AllowListFactory", "Network", "parse_sources"]

log = Logger()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_sources(values: tuple[str, ...], source: str, where: str) -> tuple[Network, ...]:
    """CIDRs (or single addresses) of ``allow_sources``; a bad one is a config error."""
    out: list[Network] = []
    for j, value in enumerate(values):
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as e:
            raise ConfigError(source, f"{where}.allow_sources[{j}]",
                              f"{value!r} is not an IPv4 or IPv6 CIDR: {e}") from None
    return tuple(out)


@implementer(IProtocolFactory)
class AllowListFactory(Factory):
    """Builds the wrapped factory's protocol only for peers inside the allow-list.

    A refused peer gets no protocol, so Twisted closes the connection at once: nothing of
    what it sent is parsed, not even a TLS ClientHello.
    """

    #: At most one refusal log line per this many seconds (a scan must not flood the log).
    log_interval = 60.0

    def __init__(self, wrapped: Any, networks: tuple[Network, ...], name: str,
                 clock: Any = None) -> None:
        self.wrapped = wrapped
        self.networks = networks
        self.name = name
        self.clock = clock
        self.refused = 0
        self._not_logged = 0
        self._last_log: float | None = None

    def allowed(self, host: str) -> bool:
        """Whether ``host`` (an IP literal; IPv4-mapped IPv6 counts as IPv4) may connect."""
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            mapped = ip.ipv4_mapped
            return any(mapped in n for n in self.networks if n.version == 4)
        return any(ip in n for n in self.networks if n.version == ip.version)

    def buildProtocol(self, addr: IAddress | None) -> Any:
        host = getattr(addr, "host", None)
        if host is None or not self.allowed(str(host)):
            self._note_refusal(host)
            return None
        return self.wrapped.buildProtocol(addr)

    def _note_refusal(self, host: object) -> None:
        self.refused += 1
        self._not_logged += 1
        now = self.clock.seconds() if self.clock is not None else time.monotonic()
        if self._last_log is None or now - self._last_log >= self.log_interval:
            log.info("listener {name}: connection from {peer} refused (not in "
                     "allow_sources; {count} refused since the last such line)",
                     name=self.name, peer=host, count=self._not_logged)
            self._last_log = now
            self._not_logged = 0

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


