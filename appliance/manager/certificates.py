"""Certificates a Manager signs with, published as a JSON Web Key Set, and read back from peers.

manager.yaml ``/.well-known/jwks.json``: every key this Peer signs contracts and access tokens
with, each with its certificate chain in ``x5c`` (base64 DER, leaf first, without the Group's
root) and ``x5t#S256``. Receiving Managers use it to find the certificate named by the
``x5t#S256`` header of a signature.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.errors import SluisError
from appliance.tls.peer import b64url, certificate_thumbprint

_CURVES = {"secp256r1": ("P-256", 32, "ES256"), "secp384r1": ("P-384", 48, "ES384")}


class JwksError(SluisError):
    """A JWK that does not describe a usable certificate chain."""


def load_chain_pem(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def without_roots(chain: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The chain as published: self-signed (root) certificates left out."""
    return [c for c in chain if c.subject != c.issuer]


def jwk_for_chain(chain: Sequence[x509.Certificate], alg: str | None = None) -> dict[str, Any]:
    leaf = chain[0]
    der = leaf.public_bytes(Encoding.DER)
    key = leaf.public_key()
    jwk: dict[str, Any]
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise JwksError(f"curve {key.curve.name} is not allowed")
        crv, size, default_alg = _CURVES[key.curve.name]
        numbers = key.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": crv,
            "x": b64url(numbers.x.to_bytes(size, "big")),
            "y": b64url(numbers.y.to_bytes(size, "big")),
        }
    elif isinstance(key, rsa.RSAPublicKey):
        numbers_rsa = key.public_numbers()
        default_alg = "RS256"  # FSC allows RS256-512 and ES256-512, not PSS
        jwk = {
            "kty": "RSA",
            "n": b64url(numbers_rsa.n.to_bytes((numbers_rsa.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers_rsa.e.to_bytes((numbers_rsa.e.bit_length() + 7) // 8, "big")),
        }
    else:
        raise JwksError(f"unsupported key type {type(key).__name__}")
    thumbprint = certificate_thumbprint(der)
    jwk.update(
        {
            "use": "sig",
            "alg": alg or default_alg,
            "kid": thumbprint,
            "x5t#S256": thumbprint,
            "x5c": [
                base64.b64encode(c.public_bytes(Encoding.DER)).decode("ascii")
                for c in without_roots(chain)
            ],
        }
    )
    return jwk


def jwks_document(chains: Sequence[Sequence[x509.Certificate]]) -> dict[str, Any]:
    return {"keys": [jwk_for_chain(chain) for chain in chains]}


def chains_from_jwks(document: dict[str, Any]) -> dict[str, list[x509.Certificate]]:
    """Map ``x5t#S256`` -> chain (leaf first) for every key of a peer's JWKS.

    Only the certificates are taken from the JWK (x5c); whether they chain to the Group's
    trust anchors is checked when a signature is verified, never here.
    """
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise JwksError("JWKS has no 'keys' list")
    found: dict[str, list[x509.Certificate]] = {}
    for jwk in keys:
        x5c = jwk.get("x5c") if isinstance(jwk, dict) else None
        if not isinstance(x5c, list) or not x5c:
            continue
        try:
            chain = [
                x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c
            ]
        except (ValueError, TypeError) as exc:
            raise JwksError(f"JWK x5c is not base64 DER certificates: {exc}") from None
        thumbprint = certificate_thumbprint(chain[0].public_bytes(Encoding.DER))
        # Accept either spelling of the member (READING.md item 9) but never a wrong value.
        claimed = jwk.get("x5t#S256") or jwk.get("x5t#s256")
        if claimed is not None and claimed != thumbprint:
            raise JwksError(f"JWK x5t#S256 {claimed} does not match its certificate ({thumbprint})")
        found[thumbprint] = chain
    return found
