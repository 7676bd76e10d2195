"""A PKCS#10 certificate request for the organisation key, signed inside the token.

``cryptography``'s CSR builder wants a private key object, which the token never gives out, so
the CertificationRequestInfo is built with asn1crypto, its DER signed by :class:`Pkcs11Signer`
and the request assembled around that signature.
"""

from __future__ import annotations

from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from asn1crypto.core import Null
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance.hsm.errors import HsmError
from appliance.hsm.keys import public_key
from appliance.hsm.settings import HsmSettings
from appliance.hsm.signer import Pkcs11Signer, Signer, der_signature
from appliance.pki.identity import OrganisationIdentity

# JWS alg of the signer -> X.509 signature algorithm (asn1crypto name).
_SIGNATURE_ALGORITHMS = {
    "ES256": "sha256_ecdsa",  # ecdsa-with-SHA256
    "ES384": "sha384_ecdsa",  # ecdsa-with-SHA384
    "RS256": "sha256_rsa",  # sha256WithRSAEncryption
}


def certification_request_info(
    identity: OrganisationIdentity, public_key_der: bytes
) -> asn1_csr.CertificationRequestInfo:
    """The to-be-signed part: subject C, O, serialNumber (OIN), CN; SAN with every FQDN."""
    subject = asn1_x509.Name.load(identity.subject().public_bytes())
    san = asn1_x509.GeneralNames(
        [asn1_x509.GeneralName(name="dns_name", value=fqdn) for fqdn in identity.fqdns]
    )
    extensions = asn1_x509.Extensions(
        [{"extn_id": "subject_alt_name", "critical": False, "extn_value": san}]
    )
    return asn1_csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": subject,
            "subject_pk_info": asn1_keys.PublicKeyInfo.load(public_key_der),
            "attributes": [{"type": "extension_request", "values": [extensions]}],
        }
    )


def sign_csr(signer: Signer, identity: OrganisationIdentity) -> bytes:
    """Build and sign the request with ``signer``; PEM."""
    algorithm = _SIGNATURE_ALGORITHMS.get(signer.algorithm)
    if algorithm is None:
        raise HsmError(
            f"a certificate request cannot be signed with {signer.algorithm}; use "
            f"{', '.join(_SIGNATURE_ALGORITHMS)}"
        )
    spki = signer.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    info = certification_request_info(identity, spki)
    signature = der_signature(signer, info.dump())
    signature_algorithm: dict[str, object] = {"algorithm": algorithm}
    if algorithm.endswith("_rsa"):
        signature_algorithm["parameters"] = Null()  # RFC 4055: NULL for PKCS#1 v1.5
    request = asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": signature_algorithm,
            "signature": signature,
        }
    )
    pem: bytes = asn1_pem.armor("CERTIFICATE REQUEST", request.dump())
    return pem


def make_csr(settings: HsmSettings, identity: OrganisationIdentity) -> bytes:
    """A PEM certificate request for the token's organisation key, signed in the token.

    EC keys sign with ecdsa-with-SHA256 (P-256) or ecdsa-with-SHA384 (P-384), RSA keys with
    sha256WithRSAEncryption.
    """
    algorithm = "RS256" if isinstance(public_key(settings), rsa.RSAPublicKey) else None
    with Pkcs11Signer(settings, algorithm) as signer:
        return sign_csr(signer, identity)
