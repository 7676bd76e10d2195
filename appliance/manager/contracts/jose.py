"""Compact JWS with exactly the algorithms FSC allows: RS256/384/512 and ES256/384/512.

The JWS itself is :mod:`appliance.hsm.jws` (signing in the HSM; strict parsing: canonical
base64url, no duplicate header members, no ``crit``); this module gives it FSC's algorithms
and turns its errors into FSC's. Other Peers may sign with RS384, RS512 (manager.yaml's
example signature is RS512) or ES512, which verify here; PS256, which a token signs with an
RSA key unless told RS256, FSC forbids: it is refused when parsing and when signing.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from appliance.errors import SluisError
from appliance.hsm import jws as _jws
from appliance.hsm.jws import MIN_RSA_BITS, CompactJws, JwsError, sign_compact
from appliance.hsm.signer import Signer

__all__ = [
    "FSC_ALGORITHMS",
    "MIN_RSA_BITS",
    "CompactJws",
    "JoseError",
    "UnsupportedAlgorithmError",
    "parse_compact",
    "sign",
    "verify",
]

FSC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


class JoseError(SluisError):
    """A JWS that is malformed or does not verify."""


class UnsupportedAlgorithmError(JoseError):
    """A JWS whose ``alg`` is not one FSC allows."""


def parse_compact(token: str) -> CompactJws:
    """Split and decode a compact JWS; its ``alg`` must be one FSC allows. Nothing verified."""
    try:
        return _jws.parse_compact(token, algorithms=FSC_ALGORITHMS)
    except _jws.AlgorithmError as exc:
        raise UnsupportedAlgorithmError(
            f"JWS algorithm {exc.algorithm!r} is not supported; "
            f"FSC allows {', '.join(FSC_ALGORITHMS)}"
        ) from None
    except JwsError as exc:
        raise JoseError(str(exc)) from None


def verify(jws: CompactJws, public_key: PublicKeyTypes) -> None:
    """Verify the signature with ``public_key``; :class:`JoseError` if it does not."""
    try:
        _jws.verify_signature(jws, public_key)
    except JwsError as exc:
        raise JoseError(str(exc)) from None


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
