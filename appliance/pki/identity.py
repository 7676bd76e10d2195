"""The organisation's identity as PKIoverheid Private Services certificates carry it.

Subject ``C=NL, O=<organisation name>, serialNumber=<OIN>, CN=<first FQDN>``; SAN lists every
FQDN. The OIN (Organisatie-identificatienummer) is 20 digits and is the FSC PeerID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from appliance.errors import SluisError

_OIN = re.compile(r"[0-9]{20}")
_FQDN_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class IdentityError(SluisError):
    """An organisation name, OIN or FQDN that a PKIoverheid-style certificate cannot carry."""


def validate_oin(oin: str) -> str:
    if not _OIN.fullmatch(oin):
        raise IdentityError(f"OIN must be exactly 20 digits, got {oin!r}")
    return oin


def validate_fqdn(fqdn: str) -> str:
    if not fqdn.isascii():
        raise IdentityError(f"not a fully qualified domain name (ASCII only): {fqdn!r}")
    name = fqdn.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_FQDN_LABEL.fullmatch(lb) for lb in labels):
        raise IdentityError(f"not a fully qualified domain name: {fqdn!r}")
    return name


@dataclass(frozen=True)
class OrganisationIdentity:
    name: str
    oin: str
    fqdns: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name.strip() or len(self.name) > 64:
            raise IdentityError("organisation name must be 1 to 64 characters")
        validate_oin(self.oin)
        if not self.fqdns:
            raise IdentityError("at least one FQDN is needed")
        object.__setattr__(self, "fqdns", tuple(validate_fqdn(f) for f in self.fqdns))

    @property
    def common_name(self) -> str:
        return self.fqdns[0]

    def subject(self) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, self.oin),
                x509.NameAttribute(NameOID.COMMON_NAME, self.common_name),
            ]
        )

    def subject_alternative_name(self) -> x509.SubjectAlternativeName:
        return x509.SubjectAlternativeName([x509.DNSName(f) for f in self.fqdns])
