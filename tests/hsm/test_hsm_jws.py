"""JWS signed in the token: round trips, tampering, alg=none and malformed input."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.hsm.jws import JwsError, b64url_decode, b64url_encode, sign_compact, verify_compact
from appliance.hsm.keys import list_objects
from appliance.hsm.settings import HsmSettings
from appliance.hsm.signer import Pkcs11Signer, der_signature
from appliance.hsm.token import logout

CASES = [("ec-p256", "ES256", 64), ("ec-p384", "ES384", 96), ("rsa-3072", "PS256", 384)]
CASES.append(("rsa-3072", "RS256", 384))
ALL = ["ES256", "ES384", "PS256", "RS256"]


def _swap(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


@pytest.mark.parametrize(("algorithm", "alg", "length"), CASES)
def test_round_trip(
    algorithm: str, alg: str, length: int, token_for: Callable[[str], HsmSettings]
) -> None:
    settings = token_for(algorithm)
    with Pkcs11Signer(settings, None if alg in ("ES256", "ES384", "PS256") else alg) as signer:
        assert signer.algorithm == alg
        thumbprint = b64url_encode(hashlib.sha256(b"certificate").digest())
        token = sign_compact(signer, b'{"hello":"world"}', {"x5t#S256": thumbprint, "typ": "JWT"})
        assert "=" not in token
        header, payload = verify_compact(token, signer.public_key(), algorithms=[alg])
        assert header == {"alg": alg, "x5t#S256": thumbprint, "typ": "JWT"}
        assert next(iter(header)) == "alg"
        assert payload == b'{"hello":"world"}'
        assert len(b64url_decode(token.split(".")[2])) == length

        # Tampered payload.
        with pytest.raises(JwsError, match="does not verify"):
            verify_compact(
                _swap(token, 1, b64url_encode(b'{"hello":"mars"}')),
                signer.public_key(),
                algorithms=[alg],
            )
        # Tampered header (same alg, other thumbprint).
        forged = b64url_encode(json.dumps({"alg": alg, "x5t#S256": "AAAA"}).encode())
        with pytest.raises(JwsError, match="does not verify"):
            verify_compact(_swap(token, 0, forged), signer.public_key(), algorithms=[alg])
        # Algorithm not accepted by the caller.
        with pytest.raises(JwsError, match="not accepted"):
            verify_compact(token, signer.public_key(), algorithms=[a for a in ALL if a != alg])


def test_pss_and_pkcs1_are_not_interchangeable(rsa_token: HsmSettings) -> None:
    with Pkcs11Signer(rsa_token, "RS256") as signer:
        token = sign_compact(signer, b"x", {})
    header = b64url_encode(json.dumps({"alg": "PS256"}).encode())
    with pytest.raises(JwsError):
        verify_compact(_swap(token, 0, header), signer.public_key(), algorithms=ALL)


def test_alg_none_is_refused(p256_token: HsmSettings) -> None:
    with Pkcs11Signer(p256_token) as signer:
        key = signer.public_key()
        signed = sign_compact(signer, b"payload", {})
    for none in ("none", "None", "NONE"):
        header = b64url_encode(json.dumps({"alg": none}).encode())
        unsigned = f"{header}.{b64url_encode(b'payload')}."
        with pytest.raises(JwsError):
            verify_compact(unsigned, key, algorithms=[*ALL, "none", none])
        with pytest.raises(JwsError):
            verify_compact(_swap(signed, 0, header), key, algorithms=[*ALL, "none", none])


def test_wrong_key_is_refused(p256_token: HsmSettings) -> None:
    with Pkcs11Signer(p256_token) as signer:
        token = sign_compact(signer, b"payload", {})
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(JwsError, match="does not verify"):
        verify_compact(token, other, algorithms=ALL)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(JwsError, match="secp256r1"):
        verify_compact(token, p384, algorithms=ALL)


def test_header_alg_must_match_signer(p256_token: HsmSettings) -> None:
    with Pkcs11Signer(p256_token) as signer, pytest.raises(JwsError, match="ES384"):
        sign_compact(signer, b"payload", {"alg": "ES384"})


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + ".x",  # four parts
        lambda t: t.rsplit(".", 1)[0],  # two parts
        lambda t: t + "=",  # padding
        lambda t: t.replace(".", "..", 1),  # empty part
        lambda t: "!" + t,  # outside the alphabet
        lambda t: t[:-1] + ("B" if t[-1] == "A" else "A"),  # other signature bytes
        lambda t: _swap(t, 0, b64url_encode(b"not json")),
        lambda t: _swap(t, 0, b64url_encode(b'["ES256"]')),
        lambda t: _swap(t, 0, b64url_encode(b'{"alg":"ES256","alg":"ES256"}')),
        lambda t: _swap(t, 0, b64url_encode(b'{"alg":"ES256","crit":["exp"],"exp":1}')),
        lambda t: _swap(t, 0, b64url_encode(b'{"typ":"JWT"}')),
        lambda t: _swap(t, 2, ""),
        lambda t: _swap(t, 2, b64url_encode(b"\x00" * 63)),
        lambda t: t + "\n",
    ],
)
def test_malformed_input_is_refused(p256_token: HsmSettings, mangle: Callable[[str], str]) -> None:
    with Pkcs11Signer(p256_token) as signer:
        token = sign_compact(signer, b"payload", {})
        key = signer.public_key()
    verify_compact(token, key, algorithms=["ES256"])
    with pytest.raises(JwsError):
        verify_compact(mangle(token), key, algorithms=["ES256"])


def test_non_canonical_base64url_is_refused() -> None:
    assert b64url_decode("AQ") == b"\x01"
    with pytest.raises(JwsError):
        b64url_decode("AR")  # same byte, non-zero trailing bits


def test_der_signature_verifies_with_cryptography(p256_token: HsmSettings) -> None:
    with Pkcs11Signer(p256_token) as signer:
        der = der_signature(signer, b"to be signed")
        public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    from cryptography.hazmat.primitives import hashes

    public.verify(der, b"to be signed", ec.ECDSA(hashes.SHA256()))


def test_signer_is_thread_safe(p256_token: HsmSettings) -> None:
    errors: list[BaseException] = []
    with Pkcs11Signer(p256_token) as signer:
        key = signer.public_key()

        def work(n: int) -> None:
            try:
                for i in range(100):
                    payload = f"{n}-{i}".encode()
                    verify_compact(sign_compact(signer, payload, {}), key, algorithms=["ES256"])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def test_signer_logs_in_again_after_logout(make_token: Callable[..., HsmSettings]) -> None:
    settings = make_token("relogin")
    with Pkcs11Signer(settings) as signer:
        signer.sign(b"before")
        logout(settings)  # every session of this process loses the login
        token = sign_compact(signer, b"after", {})
        verify_compact(token, signer.public_key(), algorithms=["ES256"])


def test_threads_with_separate_sessions_are_serialised(p256_token: HsmSettings) -> None:
    # python-pkcs11 calls C_Initialize(NULL): the module may assume one thread at a time
    # (SoftHSM then disables its mutexes, and two sessions signing at once fail with
    # CKR_GENERAL_ERROR). Separate signers and other calls in other threads must still work.
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def sign_many() -> None:
        try:
            with Pkcs11Signer(p256_token) as signer:
                key = signer.public_key()
                barrier.wait()
                for i in range(300):
                    token = sign_compact(signer, str(i).encode(), {})
                    verify_compact(token, key, algorithms=["ES256"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def list_many() -> None:
        try:
            barrier.wait()
            for _ in range(30):
                assert list_objects(p256_token)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sign_many) for _ in range(3)]
    threads.append(threading.Thread(target=list_many))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
