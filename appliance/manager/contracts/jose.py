"""Compact JWS with exactly the algorithms FSC allows: RS256/384/512 and ES256/384/512.

Signing goes through :func:`appliance.hsm.jws.sign_compact` (the key stays in the HSM), which
produces ES256, ES384, RS256 or PS256; FSC forbids PS256, so a PS256 signer is refused here.
Verification cannot reuse :func:`appliance.hsm.jws.verify_compact`: other Peers may sign with
RS384, RS512 (manager.yaml's example signature is RS512) or ES512, which it does not know, and
it would accept PS256. The parsing is as strict: canonical base64url, no duplicate header
members, no ``crit``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from appliance.errors import SluisError
from appliance.hsm.jws import JwsError, b64url_decode, sign_compact
from appliance.hsm.signer import Signer, raw_to_der

FSC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
_EC: dict[str, tuple[str, int, type[hashes.HashAlgorithm]]] = {
    "ES256": ("secp256r1", 32, hashes.SHA256),
    "ES384": ("secp384r1", 48, hashes.SHA384),
    "ES512": ("secp521r1", 66, hashes.SHA512),
}
_RSA: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
}
MIN_RSA_BITS = 2048


class JoseError(SluisError):
    """A JWS that is malformed or does not verify."""


class UnsupportedAlgorithmError(JoseError):
    """A JWS whose ``alg`` is not one FSC allows."""


@dataclass(frozen=True)
class CompactJws:
    header: dict[str, Any]
    payload: bytes
    signature: bytes
    signing_input: bytes

    @property
    def algorithm(self) -> str:
        """The header's ``alg``, once :func:`parse_compact` has checked it."""
        alg: str = self.header["alg"]
        return alg


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise JoseError(f"duplicate JWS header member {name!r}")
        result[name] = value
    return result


def parse_compact(token: str) -> CompactJws:
    """Split and decode a compact JWS; its ``alg`` must be one FSC allows. Nothing verified."""
    if not isinstance(token, str):
        raise JoseError("a compact JWS is a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise JoseError("a compact JWS has exactly three dot-separated parts")
    try:
        header_bytes, payload, signature = (b64url_decode(part) for part in parts)
    except JwsError as exc:
        raise JoseError(f"JWS is not base64url: {exc}") from None
    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise JoseError("JWS header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise JoseError("JWS header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise JoseError("JWS header has no alg")
    if alg not in FSC_ALGORITHMS:
        raise UnsupportedAlgorithmError(
            f"JWS algorithm {alg!r} is not supported; FSC allows {', '.join(FSC_ALGORITHMS)}"
        )
    if "crit" in header:
        raise JoseError("JWS uses critical header extensions this verifier does not implement")
    if not signature:
        raise JoseError("JWS signature is empty")
    return CompactJws(header, payload, signature, f"{parts[0]}.{parts[1]}".encode("ascii"))


def verify(jws: CompactJws, public_key: PublicKeyTypes) -> None:
    """Verify the signature with ``public_key``; :class:`JoseError` if it does not."""
    alg = jws.algorithm
    try:
        if alg in _EC:
            curve, size, digest = _EC[alg]
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or (
                public_key.curve.name != curve
            ):
                raise JoseError(f"{alg} needs an EC {curve} key")
            if len(jws.signature) != 2 * size:
                raise JoseError(f"an {alg} signature is {2 * size} bytes")
            public_key.verify(raw_to_der(jws.signature), jws.signing_input, ec.ECDSA(digest()))
        else:
            if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < MIN_RSA_BITS:
                raise JoseError(f"{alg} needs an RSA key of at least {MIN_RSA_BITS} bits")
            if len(jws.signature) != (public_key.key_size + 7) // 8:
                raise JoseError(f"{alg} signature length does not match the key")
            public_key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), _RSA[alg]())
    except InvalidSignature:
        raise JoseError("JWS signature does not verify") from None


def sign(signer: Signer, payload: bytes, header: Mapping[str, object]) -> str:
    """A compact JWS signed by ``signer``, if its algorithm is one FSC allows."""
    if signer.algorithm not in FSC_ALGORITHMS:
        raise UnsupportedAlgorithmError(
            f"the signer uses {signer.algorithm}, which FSC does not allow; configure the key "
            f"for one of {', '.join(FSC_ALGORITHMS)} (an RSA key: RS256)"
        )
    try:
        return sign_compact(signer, payload, header)
    except JwsError as exc:
        raise JoseError(str(exc)) from exc
