"""TLS listeners, mutual TLS and source allow-lists (issue 7, first slice).

A shipped plugin that claims the listener keys ``tls`` and ``allow_sources`` and shapes
those listeners through :meth:`~twistgw.registry.Registry.add_listener_wrapper`:

* ``tls: {certificate: chain.pem, key: key.pem}`` (RSA or ECDSA; paths relative to the
  gateway config) wraps the listener's site in TLS (``TLSMemoryBIOFactory`` with a
  ``CertificateOptions``): TLS 1.2 or newer, Mozilla "intermediate"'s six ECDHE-AEAD
  cipher suites for TLS 1.2, ALPN ``http/1.1`` only (no HTTP/2).
* ``tls.policy`` takes AWS security policy names (see :data:`POLICIES`); ``TLS_1_0`` is
  refused because the gateway never serves below TLS 1.2.
* ``tls.client_ca: bundle.pem`` turns on mutual TLS: the handshake fails without a client
  certificate, with one not issued by the bundle's CAs or with an expired one; the
  certificate reaches ``$context.identity.clientCert`` and the Lambda events.
* ``allow_sources: [CIDR, ...]`` (IPv4 and IPv6) closes connections from other peers in
  ``buildProtocol``, before TLS or HTTP see a byte.

Certificates, keys and bundles are read and checked when the config is loaded (missing
files, unreadable PEM, a key that does not match the certificate are config errors naming
the key); an expired server certificate, or one expiring within 30 days, is a warning.
"""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import ssl
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from twistgw import hookimpl
from twistgw.errors import ConfigError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress

    from twistgw import Registry
    from twistgw.config import GatewayConfig, ListenerConfig

__all__ = ["register", "configure", "wrap_listener", "POLICIES", "MOZILLA_INTERMEDIATE",
           "AllowListFactory", "load_tls_options", "parse_sources"]

log = Logger()

#: Mozilla "intermediate" TLS 1.2 suites: ECDHE key exchange with AEAD ciphers only.
MOZILLA_INTERMEDIATE = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")

#: AWS security policy name -> lowest TLS version served (``None``: refused).
POLICIES: dict[str, ssl.TLSVersion | None] = {
    "TLS_1_0": None,
    "TLS_1_2": ssl.TLSVersion.TLSv1_2,
    "SecurityPolicy_TLS12_2018_EDGE": ssl.TLSVersion.TLSv1_2,
    "SecurityPolicy_TLS12_PFS_2025_EDGE": ssl.TLSVersion.TLSv1_2,
    "SecurityPolicy_TLS13_1_2_2021_06": ssl.TLSVersion.TLSv1_2,
    "SecurityPolicy_TLS13_1_2_PQ_2025_09": ssl.TLSVersion.TLSv1_2,
    "SecurityPolicy_TLS13_1_2_PFS_PQ_2025_09": ssl.TLSVersion.TLSv1_2,
    "SecurityPolicy_TLS13_1_2_FIPS_PQ_2025_09": ssl.TLSVersion.TLSv1_2,
    "SecurityPolicy_TLS13_1_2_FIPS_PFS_PQ_2025_09": ssl.TLSVersion.TLSv1_2,
    "SecurityPolicy_TLS13_1_3_2025_09": ssl.TLSVersion.TLSv1_3,
    "SecurityPolicy_TLS13_1_3_FIPS_2025_09": ssl.TLSVersion.TLSv1_3,
    "SecurityPolicy_TLS13_2025_EDGE": ssl.TLSVersion.TLSv1_3,
}
DEFAULT_POLICY = "TLS_1_2"
EXPIRY_WARNING = datetime.timedelta(days=30)
_TLS_KEYS = frozenset({"certificate", "key", "client_ca", "policy"})

#: Options prepared by ``configure`` for each listener object (kept alive with it).
_prepared: dict[int, tuple[ListenerConfig, Any]] = {}


@hookimpl
def register(registry: Registry) -> None:
    """Claim ``tls`` and ``allow_sources``; wrap the listeners that use them."""
    registry.add_listener_option("tls")
    registry.add_listener_option("allow_sources")
    registry.add_listener_wrapper(wrap_listener)


@hookimpl
def configure(config: GatewayConfig) -> None:
    """Read and check every listener's certificates and allow-list before anything binds."""
    for i, listener in enumerate(config.listeners):
        if listener.admin:
            continue
        where = f"listeners[{i}]"
        sources = parse_sources(listener.allow_sources, config.source, where)
        options = None
        if listener.tls is not None:
            options = load_tls_options(listener.tls, config.base_dir, config.source,
                                       f"{where}.tls")
        _prepared[id(listener)] = (listener, (options, sources))


def wrap_listener(listener: ListenerConfig, endpoint: Any, factory: Any,
                  reactor: Any) -> tuple[Any, Any]:
    """TLS around the site, and the allow-list around that (refusal before the handshake)."""
    entry = _prepared.get(id(listener))
    if entry is None or entry[0] is not listener:
        return endpoint, factory
    options, sources = entry[1]
    if options is not None:
        factory = TLSMemoryBIOFactory(options, False, factory)
    if sources:
        factory = AllowListFactory(factory, sources, listener.name, reactor)
    return endpoint, factory


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


def _fail(source: str, where: str, message: str) -> ConfigError:
    return ConfigError(source, where, message)


def _read(tls: Mapping[str, Any], key: str, base_dir: Path, source: str, where: str
          ) -> tuple[Path, bytes]:
    value = tls.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(source, f"{where}.{key}", "must be the path of a PEM file")
    path = Path(value)
    if not path.is_absolute():
        path = base_dir / path
    try:
        return path, path.read_bytes()
    except OSError as e:
        raise _fail(source, f"{where}.{key}",
                    f"cannot read {path}: {e.strerror or e}") from None


def _certificates(path: Path, data: bytes, source: str, where: str) -> list[Any]:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise _fail(source, where, f"{path} holds no readable PEM certificate: {e}") from None
    return certs


def _check_expiry(cert: Any, path: Path, where: str, now: datetime.datetime) -> None:
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        log.warn("{where}: the certificate in {path} EXPIRED on {when}; clients will "
                 "refuse it", where=where, path=str(path), when=not_after.isoformat())
    elif not_after - now <= EXPIRY_WARNING:
        log.warn("{where}: the certificate in {path} expires on {when} (in {days} days)",
                 where=where, path=str(path), when=not_after.isoformat(),
                 days=(not_after - now).days)


def load_tls_options(tls: Mapping[str, Any], base_dir: Path, source: str, where: str
                     ) -> ssl.CertificateOptions:
    """The ``CertificateOptions`` of a listener's ``tls`` mapping (checked, with warnings).

    :raises ConfigError: naming the key for an unknown key or policy, a missing or
        unreadable file, or a key that does not belong to the certificate.
    """
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )
    from OpenSSL import crypto

    for key in tls:
        if key not in _TLS_KEYS:
            raise _fail(source, f"{where}.{key}", f"unknown key; known: "
                        f"{', '.join(sorted(_TLS_KEYS))}")
    policy = tls.get("policy", DEFAULT_POLICY)
    if not isinstance(policy, str) or policy not in POLICIES:
        raise _fail(source, f"{where}.policy", f"unknown TLS policy {policy!r}; known: "
                    f"{', '.join(POLICIES)}")
    minimum = POLICIES[policy]
    if minimum is None:
        raise _fail(source, f"{where}.policy", f"{policy} allows TLS 1.0 and 1.1, which "
                    "this gateway never serves; use TLS_1_2 (TLS 1.2 and 1.3) or a "
                    "SecurityPolicy_TLS13_* name")
    cert_path, cert_data = _read(tls, "certificate", base_dir, source, where)
    chain = _certificates(cert_path, cert_data, source, f"{where}.certificate")
    key_path, key_data = _read(tls, "key", base_dir, source, where)
    try:
        private_key = load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as e:
        raise _fail(source, f"{where}.key", f"{key_path} holds no readable unencrypted "
                    f"PEM private key: {e}") from None
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(*spki) != chain[0].public_key().public_bytes(
            *spki):
        raise _fail(source, f"{where}.key", f"the key in {key_path} does not match the "
                    f"certificate in {cert_path} (the first certificate of the chain)")
    now = datetime.datetime.now(datetime.UTC)
    _check_expiry(chain[0], cert_path, f"{where}.certificate", now)
    kwargs: dict[str, Any] = {}
    if "client_ca" in tls:
        ca_path, ca_data = _read(tls, "client_ca", base_dir, source, where)
        cas = _certificates(ca_path, ca_data, source, f"{where}.client_ca")
        kwargs["trustRoot"] = ssl.trustRootFromCertificates(
            [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in cas])
    return ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(private_key),  # type: ignore[arg-type]
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        raiseMinimumTo=minimum,
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(MOZILLA_INTERMEDIATE),
        acceptableProtocols=[b"http/1.1"],
        **kwargs,
    )
