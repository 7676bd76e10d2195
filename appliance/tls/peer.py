"""Who is on the other end of a verified connection: PeerID and certificate thumbprints.

FSC and PKIoverheid: the PeerID is the subject ``serialNumber`` of the peer's certificate, the
20-digit OIN. ``x5t#S256`` (RFC 8705) is base64url(SHA-256(certificate DER)) without padding;
grants bind the public key by lower-case hex SHA-256 of the DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from appliance.errors import SluisError


class PeerIdentityError(SluisError):
    """The peer's certificate does not carry a usable FSC identity."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def certificate_thumbprint(der: bytes) -> str:
    """``x5t#S256`` of a DER certificate."""
    return b64url(hashlib.sha256(der).digest())


def key_thumbprint(key: CertificatePublicKeyTypes) -> str:
    """FSC's public key thumbprint: SHA-256 of the SubjectPublicKeyInfo, lower-case hex."""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def public_key_thumbprint(certificate: x509.Certificate) -> str:
    return key_thumbprint(certificate.public_key())


@dataclass(frozen=True)
class PeerIdentity:
    peer_id: str
    organisation: str
    common_name: str
    certificate_thumbprint: str
    public_key_thumbprint: str
    not_after: datetime
    certificate_der: bytes
    # Issuer and serial name the certificate in a CRL (and in refusal log lines).
    serial_number: int = 0
    issuer: str = ""

    @classmethod
    def from_der(cls, der: bytes) -> PeerIdentity:
        certificate = x509.load_der_x509_certificate(der)
        subject = certificate.subject

        def one(oid: x509.ObjectIdentifier, what: str) -> str:
            values = subject.get_attributes_for_oid(oid)
            if len(values) != 1:
                raise PeerIdentityError(
                    f"peer certificate {subject.rfc4514_string()!r} must have exactly one {what}"
                )
            value = values[0].value
            return value if isinstance(value, str) else value.decode("utf-8")

        return cls(
            peer_id=one(NameOID.SERIAL_NUMBER, "subject serialNumber (OIN)"),
            organisation=one(NameOID.ORGANIZATION_NAME, "organisation (O)"),
            common_name=one(NameOID.COMMON_NAME, "common name (CN)"),
            certificate_thumbprint=certificate_thumbprint(der),
            public_key_thumbprint=public_key_thumbprint(certificate),
            not_after=certificate.not_valid_after_utc,
            certificate_der=der,
            serial_number=certificate.serial_number,
            issuer=certificate.issuer.rfc4514_string(),
        )


def peer_identity(connection: ssl.SSLSocket | ssl.SSLObject) -> PeerIdentity:
    """Identity of the peer of a connection whose handshake verified its certificate."""
    der = connection.getpeercert(binary_form=True)
    if not der:
        raise PeerIdentityError("the peer presented no certificate")
    return PeerIdentity.from_der(der)
