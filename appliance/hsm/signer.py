"""Signatures made inside the token, in the formats JWS and X.509 want.

:class:`Pkcs11Signer` keeps one session open and signs with the organisation key:

* EC keys: ES256 (P-256) or ES384 (P-384). If the token offers ``CKM_ECDSA_SHA256``/``384`` it
  hashes; otherwise (SoftHSM 2.6) the data is hashed here with hashlib and the digest signed
  with ``CKM_ECDSA``. PKCS#11 returns ``r || s``, each padded to the curve size: exactly the
  JWS signature format (RFC 7518 section 3.4). :func:`der_signature` converts it for X.509.
* RSA keys: PS256 (default; ``CKM_SHA256_RSA_PKCS_PSS``, MGF1-SHA256, 32-byte salt) or RS256
  (``CKM_SHA256_RSA_PKCS``); tokens without the hashing variants get the digest signed with
  ``CKM_RSA_PKCS_PSS`` / ``CKM_RSA_PKCS`` over a DigestInfo.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, cast

import pkcs11.exceptions as p11e
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import MGF, Attribute, KeyType, Mechanism, Session
from pkcs11.types import SignMixin

from appliance.hsm.errors import HsmError, translate, translated
from appliance.hsm.keys import (
    SigningPublicKey,
    check_protection,
    find_private_key,
    read_public_key,
)
from appliance.hsm.observe import timed
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import PKCS11_LOCK, logout, open_persistent_session, token_mechanisms

EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384"}
RSA_ALGORITHMS = ("PS256", "RS256")
DEFAULT_RSA_ALGORITHM = "PS256"

# DER DigestInfo prefixes (RFC 8017 section 9.2, note 1) for CKM_RSA_PKCS over a digest.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
}
# Errors after which reopening the session (and logging in again) may help.
_RECOVERABLE = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.UserNotLoggedIn,
    p11e.KeyHandleInvalid,
    p11e.ObjectHandleInvalid,
)


class Signer(Protocol):
    """Something that signs with the organisation key, in JWS format."""

    algorithm: str
    """The JWS ``alg``: ES256, ES384, PS256 or RS256."""

    def sign(self, data: bytes) -> bytes:
        """The JWS signature of ``data`` (``r || s`` for ECDSA)."""
        ...

    def public_key(self) -> SigningPublicKey:
        """The public key that verifies the signatures."""
        ...


@dataclass(frozen=True)
class _Plan:
    """How to make one JWS algorithm's signature with this token."""

    mechanism: Mechanism
    param: Any
    digest: Callable[[bytes], bytes] | None  # hash here first (token lacks the hashing mechanism)
    prefix: bytes = b""


_HASH_FUNCTIONS: dict[str, Callable[[bytes], Any]] = {
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
}


def _sha(name: str) -> Callable[[bytes], bytes]:
    constructor = _HASH_FUNCTIONS[name]

    def digest(data: bytes) -> bytes:
        result: bytes = constructor(data).digest()
        return result

    return digest


def _plan(algorithm: str, offered: frozenset[int]) -> _Plan | None:
    bits = algorithm[2:]
    sha = f"sha{bits}"
    hash_mech = {"256": Mechanism.SHA256, "384": Mechanism.SHA384}[bits]
    mgf = {"256": MGF.SHA256, "384": MGF.SHA384}[bits]
    if algorithm.startswith("ES"):
        hashing = {"256": Mechanism.ECDSA_SHA256, "384": Mechanism.ECDSA_SHA384}[bits]
        if hashing in offered:
            return _Plan(hashing, None, None)
        if Mechanism.ECDSA in offered:
            return _Plan(Mechanism.ECDSA, None, _sha(sha))
        return None
    if algorithm.startswith("PS"):
        params = (hash_mech, mgf, _HASH_FUNCTIONS[sha](b"").digest_size)
        hashing = {"256": Mechanism.SHA256_RSA_PKCS_PSS, "384": Mechanism.SHA384_RSA_PKCS_PSS}[bits]
        if hashing in offered:
            return _Plan(hashing, params, None)
        if Mechanism.RSA_PKCS_PSS in offered:
            return _Plan(Mechanism.RSA_PKCS_PSS, params, _sha(sha))
        return None
    hashing = {"256": Mechanism.SHA256_RSA_PKCS, "384": Mechanism.SHA384_RSA_PKCS}[bits]
    if hashing in offered:
        return _Plan(hashing, None, None)
    if Mechanism.RSA_PKCS in offered:
        return _Plan(Mechanism.RSA_PKCS, None, _sha(sha), _DIGEST_INFO[sha])
    return None


class Pkcs11Signer:
    """Signs with the organisation key in the token; keeps one session open.

    Thread-safe: its calls, like every PKCS#11 call of the process, hold ``PKCS11_LOCK``.
    """

    algorithm: str

    def __init__(self, settings: HsmSettings, algorithm: str | None = None) -> None:
        self._settings = settings
        self._requested = algorithm
        # All PKCS#11 calls of the process go through one lock (see token.PKCS11_LOCK).
        self._lock = PKCS11_LOCK
        self._session: Session | None = None
        self._key: SignMixin | None = None
        self._closed = False
        with self._lock:
            self._open()

    def _open(self) -> None:
        settings = self._settings
        session = open_persistent_session(settings)
        try:
            key = find_private_key(session, settings)
            if not isinstance(key, SignMixin):
                # python-pkcs11 leaves sign() out when CKA_SIGN is false: a retired key.
                raise HsmError(
                    f"key {settings.key_label!r} in token {settings.token_label!r} may not sign "
                    "(CKA_SIGN is false: retired, see sluis hsm retire-key)"
                )
            check_protection(key, settings)
            public = read_public_key(session, settings)
            with translated(settings, "probing the token's mechanisms"):
                offered = token_mechanisms(session.token)
                key_type = key.key_type
            algorithm = self._choose_algorithm(key_type, public)
            plan = _plan(algorithm, offered)
            if plan is None:
                raise HsmError(
                    f"token {settings.token_label!r} offers no mechanism for {algorithm} "
                    f"(key {settings.key_label!r})"
                )
        except BaseException:
            session.close()
            raise
        self._session, self._key, self._public = session, cast(SignMixin, key), public
        self.algorithm, self._plan_ = algorithm, plan
        if isinstance(public, rsa.RSAPublicKey):
            self._buffer = max(512, public.key_size // 8)
        else:
            self._buffer = 256

    def _choose_algorithm(self, key_type: Any, public: SigningPublicKey) -> str:
        label, wanted = self._settings.key_label, self._requested
        if key_type == KeyType.EC and isinstance(public, ec.EllipticCurvePublicKey):
            fitting = EC_ALGORITHMS.get(public.curve.name)
            if fitting is None:
                raise HsmError(f"key {label!r} is on curve {public.curve.name}; not supported")
            if wanted not in (None, fitting):
                raise HsmError(f"key {label!r} is a {public.curve.name} key; it signs {fitting}")
            return fitting
        if key_type == KeyType.RSA and isinstance(public, rsa.RSAPublicKey):
            chosen = wanted or DEFAULT_RSA_ALGORITHM
            if chosen not in RSA_ALGORITHMS:
                raise HsmError(f"key {label!r} is an RSA key; it signs {', '.join(RSA_ALGORITHMS)}")
            return chosen
        raise HsmError(f"key {label!r} is neither an EC nor an RSA key with a matching public key")

    @property
    def key_id(self) -> bytes:
        """CKA_ID of the key (shared with its public key and certificate)."""
        with self._lock, translated(self._settings, "reading the key id"):
            return bytes(self._require_key()[Attribute.ID])

    def public_key(self) -> SigningPublicKey:
        return self._public

    def _require_key(self) -> SignMixin:
        """The key handle; re-opens the session if an earlier recovery failed half-way."""
        if self._key is None:
            if self._closed:
                raise HsmError(f"signer for key {self._settings.key_label!r} is closed")
            self._reopen()
        assert self._key is not None
        return self._key

    def _reopen(self) -> None:
        algorithm = self.algorithm
        self._close_session()
        logout(self._settings)
        self._open()
        if self.algorithm != algorithm:
            self._close_session()
            raise HsmError(
                f"key {self._settings.key_label!r} changed from {algorithm} to "
                f"{self.algorithm} while in use; restart the service"
            )

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` inside the token; the JWS signature bytes."""
        plan = self._plan_
        message = plan.prefix + plan.digest(data) if plan.digest is not None else data
        with self._lock, timed("sign"):
            key = self._require_key()
            try:
                return key.sign(
                    message,
                    mechanism=plan.mechanism,
                    mechanism_param=plan.param,
                    buffer_size=self._buffer,
                )
            except _RECOVERABLE:
                # The HSM restarted, the session died or someone logged this process out:
                # log in again once and retry.
                self._reopen()
                key = self._require_key()
                try:
                    return key.sign(
                        message,
                        mechanism=plan.mechanism,
                        mechanism_param=plan.param,
                        buffer_size=self._buffer,
                    )
                except p11e.PKCS11Error as exc:
                    raise translate(exc, self._settings, "signing") from exc
            except p11e.PKCS11Error as exc:
                raise translate(exc, self._settings, "signing") from exc

    def der_signature(self, data: bytes) -> bytes:
        """The signature in X.509/CMS form (DER ECDSA-Sig-Value for EC keys)."""
        return der_signature(self, data)

    def _close_session(self) -> None:
        session, self._session, self._key = self._session, None, None
        if session is not None:
            with suppress(p11e.PKCS11Error):
                session.close()

    def close(self) -> None:
        """Close the session (the process's login stays for other users)."""
        with self._lock:
            self._closed = True
            self._close_session()

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def raw_to_der(signature: bytes) -> bytes:
    """ECDSA ``r || s`` (PKCS#11, JWS) to a DER ECDSA-Sig-Value (X.509, CMS)."""
    if not signature or len(signature) % 2:
        raise ValueError("an ECDSA r||s signature has an even, non-zero length")
    half = len(signature) // 2
    r = int.from_bytes(signature[:half], "big")
    s = int.from_bytes(signature[half:], "big")
    return encode_dss_signature(r, s)


def der_signature(signer: Signer, data: bytes) -> bytes:
    """Sign ``data`` and return the signature as X.509 wants it."""
    signature = signer.sign(data)
    if signer.algorithm.startswith("ES"):
        return raw_to_der(signature)
    return signature
