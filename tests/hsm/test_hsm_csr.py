"""Certificate requests signed inside the token verify and carry the organisation identity."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from appliance.hsm.csr import make_csr
from appliance.hsm.keys import public_key
from appliance.hsm.settings import HsmSettings
from appliance.pki.identity import OrganisationIdentity

EXPECTED = {
    "ec-p256": (SignatureAlgorithmOID.ECDSA_WITH_SHA256, hashes.SHA256),
    "ec-p384": (SignatureAlgorithmOID.ECDSA_WITH_SHA384, hashes.SHA384),
    "rsa-3072": (SignatureAlgorithmOID.RSA_WITH_SHA256, hashes.SHA256),
}


@pytest.mark.parametrize("algorithm", list(EXPECTED))
def test_csr_verifies_and_matches_identity(
    algorithm: str,
    token_for: Callable[[str], HsmSettings],
    identity: OrganisationIdentity,
) -> None:
    settings = token_for(algorithm)
    pem = make_csr(settings, identity)
    assert pem.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    request = x509.load_pem_x509_csr(pem)
    assert request.is_signature_valid
    oid, hash_class = EXPECTED[algorithm]
    assert request.signature_algorithm_oid == oid
    assert isinstance(request.signature_hash_algorithm, hash_class)
    assert request.subject == identity.subject()
    assert [a.oid for a in request.subject] == [
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.SERIAL_NUMBER,
        NameOID.COMMON_NAME,
    ]
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value == identity.subject_alternative_name()
    assert san.critical is False
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert request.public_key().public_bytes(*spki) == public_key(settings).public_bytes(*spki)


def test_csr_subject_encoding_matches_cryptography(
    p256_token: HsmSettings, identity: OrganisationIdentity
) -> None:
    request = x509.load_pem_x509_csr(make_csr(p256_token, identity))
    assert request.subject.public_bytes() == identity.subject().public_bytes()
