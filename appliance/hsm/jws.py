"""JWS compact serialisation (RFC 7515) signed in the token and verified with ``cryptography``.

The one JWS implementation of Sluis; each caller names the ``alg`` values it accepts
(:mod:`appliance.manager.contracts.jose` passes FSC's). Verification knows ES256, ES384,
ES512, RS256, RS384, RS512 and PS256 (:data:`ALGORITHMS`); a token signs ES256, ES384, RS256
or PS256 (:data:`SUPPORTED_ALGORITHMS`). ``none`` is never accepted, whatever the caller
allows. Parsing refuses malformed input (non-canonical base64url, duplicate header members,
``crit`` extensions) instead of guessing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from appliance.errors import SluisError
from appliance.hsm.signer import Signer, raw_to_der
from appliance.strictjson import unique_members

# What a token signer makes: sign_compact signs these, verify_compact accepts only these.
SUPPORTED_ALGORITHMS = frozenset({"ES256", "ES384", "RS256", "PS256"})
_EC: dict[str, tuple[str, int, type[hashes.HashAlgorithm]]] = {
    "ES256": ("secp256r1", 32, hashes.SHA256),
    "ES384": ("secp384r1", 48, hashes.SHA384),
    "ES512": ("secp521r1", 66, hashes.SHA512),
}
_RSA: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
    "PS256": hashes.SHA256,  # RSASSA-PSS; the RS algorithms are RSASSA-PKCS1-v1_5
}
ALGORITHMS = frozenset(_EC) | frozenset(_RSA)  # what verify_signature can verify
MIN_RSA_BITS = 2048
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class JwsError(SluisError):
    """A JWS that is malformed, uses a refused algorithm or does not verify."""


class AlgorithmError(JwsError):
    """A JWS whose ``alg`` the caller does not accept (or nobody does: ``none``)."""

    def __init__(self, algorithm: str, message: str) -> None:
        super().__init__(message)
        self.algorithm = algorithm


@dataclass(frozen=True)
class CompactJws:
    """A compact JWS as :func:`parse_compact` decoded it; the signature covers ``signing_input``."""

    header: dict[str, Any]
    payload: bytes
    signature: bytes
    signing_input: bytes

    @property
    def algorithm(self) -> str:
        """The header's ``alg``, once :func:`parse_compact` has checked it."""
        alg: str = self.header["alg"]
        return alg


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


_unique_header_members = unique_members(
    lambda name: JwsError(f"duplicate JWS header member {name!r}")
)


def parse_compact(token: str, *, algorithms: Collection[str]) -> CompactJws:
    """Split and decode a compact JWS whose ``alg`` is one of ``algorithms``. Nothing verified.

    :class:`AlgorithmError` for an ``alg`` not in ``algorithms``, ``none`` or one this module
    cannot verify; :class:`JwsError` for anything else malformed.
    """
    if not isinstance(token, str):
        raise JwsError("a compact JWS is a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwsError("a compact JWS has exactly three dot-separated parts")
    try:
        header_bytes, payload, signature = (b64url_decode(part) for part in parts)
    except JwsError as exc:
        raise JwsError(f"JWS is not base64url: {exc}") from None
    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=_unique_header_members)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise JwsError("JWS header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise JwsError("JWS header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise JwsError("JWS header has no alg")
    if alg.lower() == "none":
        raise AlgorithmError(alg, "alg none is never accepted")
    if alg not in algorithms or alg not in ALGORITHMS:
        raise AlgorithmError(alg, f"alg {alg!r} is not accepted here")
    if "crit" in header:
        raise JwsError("JWS uses critical header extensions this verifier does not implement")
    if not signature:
        raise JwsError("JWS signature is empty")
    return CompactJws(header, payload, signature, f"{parts[0]}.{parts[1]}".encode("ascii"))


def verify_signature(jws: CompactJws, public_key: PublicKeyTypes) -> None:
    """Verify the signature with ``public_key``, which must fit the ``alg``, or JwsError."""
    alg = jws.algorithm
    try:
        if alg in _EC:
            curve, size, digest = _EC[alg]
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or (
                public_key.curve.name != curve
            ):
                raise JwsError(f"{alg} needs an EC {curve} key")
            if len(jws.signature) != 2 * size:
                raise JwsError(f"an {alg} signature is {2 * size} bytes")
            public_key.verify(raw_to_der(jws.signature), jws.signing_input, ec.ECDSA(digest()))
        else:
            if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < MIN_RSA_BITS:
                raise JwsError(f"{alg} needs an RSA key of at least {MIN_RSA_BITS} bits")
            if len(jws.signature) != (public_key.key_size + 7) // 8:
                raise JwsError(f"{alg} signature length does not match the key")
            hash_algorithm = _RSA[alg]()
            pad: padding.AsymmetricPadding
            if alg.startswith("PS"):
                mgf = padding.MGF1(hash_algorithm)
                pad = padding.PSS(mgf=mgf, salt_length=padding.PSS.DIGEST_LENGTH)
            else:
                pad = padding.PKCS1v15()
            public_key.verify(jws.signature, jws.signing_input, pad, hash_algorithm)
    except InvalidSignature:
        raise JwsError("JWS signature does not verify") from None


def verify_compact(
    token: str, public_key: PublicKeyTypes, *, algorithms: Collection[str]
) -> tuple[dict[str, Any], bytes]:
    """Verify a compact JWS with ``public_key``; return its protected header and payload.

    ``algorithms`` lists the ``alg`` values the caller accepts; ``none`` and anything outside
    :data:`SUPPORTED_ALGORITHMS` are refused regardless.
    """
    jws = parse_compact(token, algorithms=SUPPORTED_ALGORITHMS.intersection(algorithms))
    verify_signature(jws, public_key)
    return jws.header, jws.payload
