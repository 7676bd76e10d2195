"""Shared constants and CSR builders for the demo PKI tests.

Only tests generate organisation keys in software; in production the key lives in the HSM and
only its CSR reaches the CA.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

OIN = "00000001234567890000"
FQDN = "gw.demo.example"
ORGANISATION = "Gemeente Demo"
CRL_BASE = "http://127.0.0.1:8088/pki"

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def subject_name(
    *,
    country: str = "NL",
    organisation: str = ORGANISATION,
    oin: str = OIN,
    cn: str = FQDN,
) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, oin),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def build_csr(
    key: SigningKey | None = None,
    *,
    subject: x509.Name | None = None,
    sans: Sequence[x509.GeneralName] | None = (x509.DNSName(FQDN),),
) -> bytes:
    """A PEM CSR; ``sans=None`` leaves the subjectAltName extension out."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or subject_name())
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
