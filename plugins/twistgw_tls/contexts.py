"""TLS contexts of one listener: the default certificate, SNI certificates, reload, expiry.

A :class:`ListenerTls` is the listener's ``IOpenSSLServerConnectionCreator``: every new
connection starts on the default context, whose server-name callback switches it to the
context of the SNI name the client asked for (an unknown or absent name keeps the default
certificate).  Reloading builds every context again from the files and swaps them in one
assignment: connections already established keep the context they started with, new ones
get the new certificates, and a bad file raises :class:`ConfigError` with the old contexts
left in place.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from twistgw.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["ListenerTls", "Loaded", "POLICIES", "MOZILLA_INTERMEDIATE", "MOZILLA_GROUPS",
           "check_expiry", "DEFAULT_POLICY"]

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
#: Mozilla "intermediate" key exchange groups (OpenSSL's default adds X448, P-521, FFDHE).
MOZILLA_GROUPS = b"X25519:prime256v1:secp384r1"
#: Keys of a listener's ``tls`` mapping and of each ``tls.sni`` entry.
TLS_KEYS = frozenset({"certificate", "key", "client_ca", "policy", "sni"})
SNI_KEYS = frozenset({"certificate", "key", "client_ca"})
#: At most this many SNI names per listener (each is a context in memory).
MAX_SNI_NAMES = 1000
_SNI_NAME_RE = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*"
                          r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@attrs.frozen
class Loaded:
    """One built context and the files it came from (for expiry checks and reloads)."""

    context: SSL.Context
    leaf: x509.Certificate
    cert_path: Path
    files: tuple[Path, ...]
    where: str
    #: The ``client_ca`` truststore's certificates, its file and key path (mutual TLS).
    trusted: tuple[x509.Certificate, ...] = ()
    ca_path: Path | None = None
    ca_where: str = ""


def check_expiry(loaded: Loaded, warn_within: datetime.timedelta,
                 now: datetime.datetime | None = None) -> None:
    """Warn when the server certificate, or a CA of the truststore, expires within
    ``warn_within``; log an error once one has expired."""
    now = now or datetime.datetime.now(datetime.UTC)
    not_after = loaded.leaf.not_valid_after_utc
    if not_after <= now:
        log.error("{where}: the certificate in {path} EXPIRED on {when}; clients will "
                  "refuse it", where=loaded.where, path=str(loaded.cert_path),
                  when=not_after.isoformat())
    elif not_after - now <= warn_within:
        log.warn("{where}: the certificate in {path} expires on {when} (in {days} days)",
                 where=loaded.where, path=str(loaded.cert_path), when=not_after.isoformat(),
                 days=(not_after - now).days)
    for ca in loaded.trusted:
        not_after = ca.not_valid_after_utc
        if not_after <= now:
            log.error("{where}: the CA certificate {subject} in {path} EXPIRED on {when}; "
                      "client certificates it issued are refused", where=loaded.ca_where,
                      subject=ca.subject.rfc4514_string(), path=str(loaded.ca_path),
                      when=not_after.isoformat())
        elif not_after - now <= warn_within:
            log.warn("{where}: the CA certificate {subject} in {path} expires on {when} (in "
                     "{days} days)", where=loaded.ca_where, subject=ca.subject.rfc4514_string(),
                     path=str(loaded.ca_path), when=not_after.isoformat(),
                     days=(not_after - now).days)


def _read(tls: Mapping[str, Any], key: str, base_dir: Path, source: str, where: str
          ) -> tuple[Path, bytes]:
    value = tls.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(source, f"{where}.{key}", "must be the path of a PEM file")
    path = Path(value)
    if not path.is_absolute():
        path = base_dir / path
    try:
        return path, path.read_bytes()
    except OSError as e:
        raise ConfigError(source, f"{where}.{key}",
                          f"cannot read {path}: {e.strerror or e}") from None


def _certificates(path: Path, data: bytes, source: str, where: str) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ConfigError(source, where,
                          f"{path} holds no readable PEM certificate: {e}") from None


def _restrict_groups(ctx: SSL.Context) -> None:
    """Offer Mozilla intermediate's groups only (pyOpenSSL has no public call for it)."""
    try:
        from OpenSSL._util import lib
    except ImportError:  # pragma: no cover - a pyOpenSSL without the binding
        return
    setter = getattr(lib, "SSL_CTX_set1_curves_list", None)
    if setter is not None:
        setter(ctx._context, MOZILLA_GROUPS)


def load_context(tls: Mapping[str, Any], minimum: ssl.TLSVersion, base_dir: Path,
                 source: str, where: str, warn_within: datetime.timedelta) -> Loaded:
    """Read, check and build one certificate's context (``certificate``, ``key``,
    optional ``client_ca``); expiry is checked (and logged) here.

    :raises ConfigError: naming the key, for a missing or unreadable file, a file without
        a PEM certificate or key, or a key that does not belong to the certificate.
    """
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )
    from OpenSSL import crypto

    cert_path, cert_data = _read(tls, "certificate", base_dir, source, where)
    chain = _certificates(cert_path, cert_data, source, f"{where}.certificate")
    key_path, key_data = _read(tls, "key", base_dir, source, where)
    try:
        private_key = load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(source, f"{where}.key", f"{key_path} holds no readable "
                          f"unencrypted PEM private key: {e}") from None
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(*spki) != chain[0].public_key().public_bytes(
            *spki):
        raise ConfigError(source, f"{where}.key", f"the key in {key_path} does not match the "
                          f"certificate in {cert_path} (the first certificate of the chain)")
    files = [cert_path, key_path]
    kwargs: dict[str, Any] = {}
    trust: dict[str, Any] = {}
    if "client_ca" in tls:
        ca_path, ca_data = _read(tls, "client_ca", base_dir, source, where)
        cas = _certificates(ca_path, ca_data, source, f"{where}.client_ca")
        kwargs["trustRoot"] = ssl.trustRootFromCertificates(
            [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in cas])
        files.append(ca_path)
        trust = {"trusted": tuple(cas), "ca_path": ca_path, "ca_where": f"{where}.client_ca"}
    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(private_key),  # type: ignore[arg-type]
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        raiseMinimumTo=minimum,
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(MOZILLA_INTERMEDIATE),
        acceptableProtocols=[b"http/1.1"],
        **kwargs,
    )
    ctx = options.getContext()
    _restrict_groups(ctx)
    loaded = Loaded(context=ctx, leaf=chain[0], cert_path=cert_path, files=tuple(files),
                    where=f"{where}.certificate", **trust)
    check_expiry(loaded, warn_within)
    return loaded


def policy_minimum(tls: Mapping[str, Any], source: str, where: str) -> ssl.TLSVersion:
    """The lowest TLS version of ``tls.policy`` (an AWS policy name)."""
    policy = tls.get("policy", DEFAULT_POLICY)
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ConfigError(source, f"{where}.policy", f"unknown TLS policy {policy!r}; known: "
                          f"{', '.join(POLICIES)}")
    minimum = POLICIES[policy]
    if minimum is None:
        raise ConfigError(source, f"{where}.policy", f"{policy} allows TLS 1.0 and 1.1, which "
                          "this gateway never serves; use TLS_1_2 (TLS 1.2 and 1.3) or a "
                          "SecurityPolicy_TLS13_* name")
    return minimum


def _check_keys(raw: Mapping[str, Any], allowed: frozenset[str], source: str, where: str
                ) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(source, f"{where}.{key}", f"unknown key; known: "
                              f"{', '.join(sorted(allowed))}")


@attrs.frozen
class Contexts:
    """Everything one listener serves: the default context and one per SNI name."""

    default: Loaded
    names: Mapping[str, Loaded]

    def all(self) -> list[Loaded]:
        return [self.default, *self.names.values()]


@implementer(IOpenSSLServerConnectionCreator)
class ListenerTls:
    """The TLS side of one listener (see the module docstring)."""

    def __init__(self, tls: Mapping[str, Any], base_dir: Path, source: str, where: str,
                 name: str, warn_within: datetime.timedelta) -> None:
        self.tls = tls
        self.base_dir = base_dir
        self.source = source
        self.where = where
        self.name = name
        self.warn_within = warn_within
        self.current = self.build()
        self.signature = self.file_signature()

    # -- building and reloading ------------------------------------------------------------

    def build(self) -> Contexts:
        """Every context of this listener, read from the files now.

        :raises ConfigError: for any bad key, policy or file; nothing is changed then.
        """
        tls, source, where = self.tls, self.source, self.where
        _check_keys(tls, TLS_KEYS, source, where)
        minimum = policy_minimum(tls, source, where)
        default = load_context(tls, minimum, self.base_dir, source, where, self.warn_within)
        sni = tls.get("sni") or {}
        if not isinstance(sni, Mapping):
            raise ConfigError(source, f"{where}.sni", "expected a mapping of server names to "
                              "{certificate, key, client_ca}")
        if len(sni) > MAX_SNI_NAMES:
            raise ConfigError(source, f"{where}.sni", f"at most {MAX_SNI_NAMES} names")
        names: dict[str, Loaded] = {}
        for raw_name, entry in sni.items():
            name = str(raw_name).lower().rstrip(".")
            at = f"{where}.sni.{raw_name}"
            if not _SNI_NAME_RE.match(name):
                raise ConfigError(source, at, f"{raw_name!r} is not a host name (a leading "
                                  "'*.' matches one more label)")
            if name in names:
                raise ConfigError(source, at, f"{name!r} is listed twice")
            if not isinstance(entry, Mapping):
                raise ConfigError(source, at, "expected {certificate, key, client_ca}")
            _check_keys(entry, SNI_KEYS, source, at)
            names[name] = load_context(entry, minimum, self.base_dir, source, at,
                                       self.warn_within)
        default.context.set_tlsext_servername_callback(self._select)
        return Contexts(default=default, names=names)

    def reload(self) -> None:
        """Build every context again and swap them in (existing connections unaffected).

        :raises ConfigError: naming the key and file; the old contexts stay in use.
        """
        signature = self.file_signature()
        contexts = self.build()
        self.current = contexts
        self.signature = signature
        log.info("listener {name}: certificates reloaded ({count} context(s))",
                 name=self.name, count=len(contexts.all()))

    def files(self) -> list[Path]:
        """Every file the listener's contexts are read from."""
        return sorted({p for loaded in self.current.all() for p in loaded.files})

    def file_signature(self) -> tuple[tuple[str, int, int, int], ...]:
        """(path, mtime_ns, size, inode) of every file; -1s for a missing one."""
        out: list[tuple[str, int, int, int]] = []
        for path in self.files():
            try:
                st = path.stat()
                out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((str(path), -1, -1, -1))
        return tuple(out)

    def check_expiry(self) -> None:
        """Log every certificate of this listener that expires soon or has expired."""
        for loaded in self.current.all():
            check_expiry(loaded, self.warn_within)

    # -- serving ---------------------------------------------------------------------------

    def lookup(self, server_name: str) -> Loaded | None:
        """The context for ``server_name``: exact name first, then ``*.`` one label up."""
        names = self.current.names
        found = names.get(server_name)
        if found is None and "." in server_name:
            found = names.get("*." + server_name.split(".", 1)[1])
        return found

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.current.default.context, None)
        connection.set_app_data(tlsProtocol)
        return connection

    def _select(self, connection: SSL.Connection) -> None:
        """Server-name callback: switch to the SNI name's context (verify mode included)."""
        raw = connection.get_servername()
        if not raw:
            return
        found = self.lookup(raw.decode("ascii", "replace").lower().rstrip("."))
        if found is None:
            return  # unknown name: the listener's default certificate
        connection.set_context(found.context)
        # The verify mode was copied from the default context when the connection was
        # made; the chosen name's truststore decides whether a client certificate is due.
        connection.set_verify(found.context.get_verify_mode())
