"""JWS compact serialisation (RFC 7515) signed in the token and verified with ``cryptography``.

Only ES256, ES384, RS256 and PS256 exist here; ``none`` is never accepted, whatever the caller
allows. Verification refuses malformed input (non-canonical base64url, duplicate header
members, ``crit`` extensions) instead of guessing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from appliance.errors import SluisError
from appliance.hsm.signer import Signer, raw_to_der

SUPPORTED_ALGORITHMS = frozenset({"ES256", "ES384", "RS256", "PS256"})
_CURVES = {"ES256": ("secp256r1", 32), "ES384": ("secp384r1", 48)}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "ES256": hashes.SHA256,
    "ES384": hashes.SHA384,
    "RS256": hashes.SHA256,
    "PS256": hashes.SHA256,
}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_MIN_RSA_BITS = 2048


class JwsError(SluisError):
    """A JWS that is malformed, uses a refused algorithm or does not verify."""


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding: only the alphabet, canonical trailing bits."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise JwsError("malformed base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwsError("malformed base64url") from None
    if b64url_encode(data) != text:
        raise JwsError("non-canonical base64url")
    return data


def _json(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_compact(signer: Signer, payload: bytes, header: Mapping[str, object]) -> str:
    """``BASE64URL(header).BASE64URL(payload).BASE64URL(signature)``, signed in the token.

    The protected header is ``{"alg": signer.algorithm, **header}``; an ``alg`` in ``header``
    must equal the signer's.
    """
    alg = signer.algorithm
    if "alg" in header and header["alg"] != alg:
        raise JwsError(f"header alg {header['alg']!r} does not match the signer's {alg}")
    if alg not in SUPPORTED_ALGORITHMS:
        raise JwsError(f"signer algorithm {alg!r} is not supported")
    protected = {"alg": alg, **{k: v for k, v in header.items() if k != "alg"}}
    signing_input = f"{b64url_encode(_json(protected))}.{b64url_encode(payload)}"
    signature = signer.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise JwsError(f"duplicate header member {name!r}")
        result[name] = value
    return result


def _check_key(alg: str, public_key: PublicKeyTypes) -> None:
    if alg in _CURVES:
        curve, _ = _CURVES[alg]
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != curve:
            raise JwsError(f"{alg} needs an EC {curve} public key")
    elif not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < _MIN_RSA_BITS:
        raise JwsError(f"{alg} needs an RSA public key of at least {_MIN_RSA_BITS} bits")


def _verify(alg: str, public_key: PublicKeyTypes, signature: bytes, data: bytes) -> None:
    hash_algorithm = _HASHES[alg]()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        _, size = _CURVES[alg]
        if len(signature) != 2 * size:
            raise JwsError(f"{alg} signature must be {2 * size} bytes")
        public_key.verify(raw_to_der(signature), data, ec.ECDSA(hash_algorithm))
    elif isinstance(public_key, rsa.RSAPublicKey):
        if len(signature) != (public_key.key_size + 7) // 8:
            raise JwsError(f"{alg} signature length does not match the key")
        pad: padding.AsymmetricPadding
        if alg == "PS256":
            pad = padding.PSS(
                mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.DIGEST_LENGTH
            )
        else:
            pad = padding.PKCS1v15()
        public_key.verify(signature, data, pad, hash_algorithm)
    else:  # pragma: no cover - _check_key ran first
        raise JwsError(f"{alg}: unsupported key")


def verify_compact(
    token: str, public_key: PublicKeyTypes, *, algorithms: Collection[str]
) -> tuple[dict[str, Any], bytes]:
    """Verify a compact JWS with ``public_key``; return its protected header and payload.

    ``algorithms`` lists the ``alg`` values the caller accepts; ``none`` and anything this
    module cannot verify are refused regardless.
    """
    if not isinstance(token, str):
        raise JwsError("a compact JWS is a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwsError("a compact JWS has exactly three dot-separated parts")
    encoded_header, encoded_payload, encoded_signature = parts
    header_bytes = b64url_decode(encoded_header)
    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise JwsError("JWS header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise JwsError("JWS header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise JwsError("JWS header has no alg")
    if alg.lower() == "none":
        raise JwsError("alg none is never accepted")
    if alg not in algorithms or alg not in SUPPORTED_ALGORITHMS:
        raise JwsError(f"alg {alg!r} is not accepted here")
    if "crit" in header:
        raise JwsError("JWS uses critical header extensions this verifier does not implement")
    _check_key(alg, public_key)
    payload = b64url_decode(encoded_payload)
    signature = b64url_decode(encoded_signature)
    if not signature:
        raise JwsError("JWS signature is empty")
    signing_input = f"{encoded_header}.{encoded_payload}".encode("ascii")
    try:
        _verify(alg, public_key, signature, signing_input)
    except InvalidSignature:
        raise JwsError("JWS signature does not verify") from None
    return header, payload
