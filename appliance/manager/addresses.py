"""What a peer's Manager address may be (docs/manager.md, "Peer Manager addresses").

A Manager connects to the addresses other peers give it (``Fsc-Manager-Address`` on announce,
contracts and signatures) and to those the directory lists. Such an address must not point the
Manager at something other than a peer's Manager (169.254.169.254, its own loopback services):

- ``https://host:port``, nothing else (no user, path, query or fragment);
- ``host`` is a DNS name, never an IP literal (nor a number that resolvers read as one);
- the sending peer's certificate names that host (subjectAltName dNSName), so a peer can only
  give an address that its own certificate proves, and TLS checks the same name on connecting;
- the name resolves to no loopback, link-local, unspecified or multicast address. Loopback is
  allowed only with ``[manager] allow_loopback_peer_addresses`` (the demo and the tests run
  every Manager on 127.0.0.1); the others never. This is checked when an address is learnt and
  again on every connection (a name may resolve differently later).
"""

from __future__ import annotations

import errno
import ipaddress
import re
from urllib.parse import urlsplit

from cryptography import x509

from appliance.errors import SluisError
from appliance.tls.peer import PeerIdentity

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class AddressError(SluisError):
    """A Manager address that breaks the rules of this module."""


class AddressRefused(OSError):
    """A Manager's host name resolved to an address it may not have (an OSError, so that the
    HTTP client treats it as the failed connection it is)."""

    def __init__(self, message: str) -> None:
        # aiohttp reports a failed lookup by its strerror alone.
        super().__init__(errno.EACCES, message)


def check_manager_address(address: str) -> str:
    """``address`` in its normal form ``https://host:port``, or :class:`AddressError`."""
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    if parts.scheme != "https" or not host or port is None or port == 0:
        raise AddressError(f"not a Manager address (https://host:port): {address!r}")
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise AddressError(f"a Manager address has no user, path, query or fragment: {address!r}")
    if _is_ip_literal(host):
        raise AddressError(f"a Manager address names a host, not an IP address: {address!r}")
    labels = host.split(".")
    # A numeric last label is no top-level domain: resolvers read "127.1" as an IP address.
    if len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels) or labels[-1].isdigit():
        raise AddressError(f"a Manager address needs a fully qualified host name: {address!r}")
    return f"https://{host}:{port}"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def host_of(address: str) -> str:
    return urlsplit(address).hostname or ""


def certificate_dns_names(certificate_der: bytes) -> list[str]:
    certificate = x509.load_der_x509_certificate(certificate_der)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.value.get_values_for_type(x509.DNSName)]


def _matches(pattern: str, host: str) -> bool:
    # RFC 6125 6.4.3: a wildcard stands for exactly one whole left-most label.
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first and dot) and rest == pattern[2:]
    return pattern == host


def check_certificate_names(address: str, peer: PeerIdentity) -> None:
    """The host of ``address`` must be a subjectAltName dNSName of ``peer``'s certificate."""
    host = host_of(address)
    names = certificate_dns_names(peer.certificate_der)
    if not any(_matches(name, host) for name in names):
        raise AddressError(
            f"the certificate of peer {peer.peer_id} does not name host {host!r} "
            f"(its DNS names: {', '.join(names) or 'none'})"
        )


def refusal(ip: str, *, allow_loopback: bool) -> str | None:
    """Why a Manager may not connect to ``ip`` (None: it may)."""
    try:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return f"{ip!r} is not an IP address"
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if parsed.is_loopback:
        return None if allow_loopback else "a loopback address"
    if parsed.is_link_local:
        return "a link-local address"
    if parsed.is_unspecified:
        return "the unspecified address"
    if parsed.is_multicast:
        return "a multicast address"
    return None


__all__ = [
    "AddressError",
    "AddressRefused",
    "certificate_dns_names",
    "check_certificate_names",
    "check_manager_address",
    "host_of",
    "refusal",
]
