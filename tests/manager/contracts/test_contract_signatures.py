"""Contract signatures: creation, verification, and every way a signature is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contracttest import (
    NOW,
    OIN_A,
    OIN_B,
    OIN_D,
    OIN_OUTSIDER,
    CertificateDirectory,
    Group,
    PeerCredentials,
    SoftwareSigner,
    connection_data,
    contract,
    peer_subject,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from appliance.hsm.jws import b64url_decode, b64url_encode
from appliance.manager.contracts.errors import ContractError, ErrorCode
from appliance.manager.contracts.hashing import content_hash
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.signatures import (
    SignatureType,
    SigningError,
    VerifiedSignature,
    create_signature,
    thumbprint_of,
    verify_signature,
)

CONTRACT = contract(connection_data(outway=OIN_A, service_peer=OIN_B))
SIGNED_AT = NOW - timedelta(minutes=5, microseconds=1)


def _sign(
    peer: PeerCredentials,
    parsed: Contract = CONTRACT,
    sig_type: SignatureType = SignatureType.ACCEPT,
) -> str:
    return create_signature(parsed, sig_type, peer.signer, peer.der, SIGNED_AT)


def _verify(
    group: Group,
    jws: str,
    parsed: Contract = CONTRACT,
    *,
    peer: str = OIN_A,
    sig_type: SignatureType = SignatureType.ACCEPT,
    lookup: Any = None,
    anchors: list[x509.Certificate] | None = None,
    crls: list[x509.CertificateRevocationList] | None = None,
    now: datetime = NOW,
) -> VerifiedSignature:
    return verify_signature(
        jws,
        parsed,
        expected_type=sig_type,
        expected_peer_id=peer,
        chain_for_thumbprint=lookup if lookup is not None else group.directory(),
        trust_anchors=anchors if anchors is not None else group.ca.anchors,
        crls=crls if crls is not None else group.ca.crls(),
        now=now,
    )


def _refused(group: Group, jws: str, code: str, **kwargs: Any) -> ContractError:
    with pytest.raises(ContractError) as caught:
        _verify(group, jws, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


def _compact(signer: SoftwareSigner, header: dict[str, Any], payload: bytes) -> str:
    """A JWS built by hand, as another implementation could (any alg the signer makes)."""
    signing_input = (
        b64url_encode(json.dumps(header).encode()) + "." + b64url_encode(payload)
    ).encode()
    return signing_input.decode() + "." + b64url_encode(signer.sign(signing_input))


def _payload(parsed: Contract = CONTRACT, **changes: Any) -> bytes:
    fields = {
        "contract_content_hash": content_hash(parsed),
        "type": "accept",
        "signed_at": int(SIGNED_AT.timestamp()),
    }
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


# -- what a signature is -------------------------------------------------------------------


@pytest.mark.parametrize("sig_type", list(SignatureType))
def test_round_trip(group: Group, sig_type: SignatureType) -> None:
    peer = group[OIN_A]
    jws = _sign(peer, sig_type=sig_type)
    verified = _verify(group, jws, sig_type=sig_type)
    assert verified == VerifiedSignature(
        peer_id=OIN_A,
        type=sig_type,
        signed_at=SIGNED_AT.replace(microsecond=0),
        certificate_thumbprint=peer.thumbprint,
        jws=jws,
        contract_content_hash=content_hash(CONTRACT),
        certificate_not_after=peer.certificate.not_valid_after_utc,
    )


def test_format(group: Group) -> None:
    peer = group[OIN_A]
    header, payload, _ = _sign(peer).split(".")
    assert json.loads(b64url_decode(header)) == {"alg": "ES256", "x5t#S256": peer.thumbprint}
    assert peer.thumbprint == thumbprint_of(peer.certificate)
    # READING.md item 3: exactly the normative payload fields.
    assert json.loads(b64url_decode(payload)) == {
        "contract_content_hash": content_hash(CONTRACT),
        "type": "accept",
        "signed_at": int(SIGNED_AT.timestamp()),
    }


@pytest.mark.parametrize(
    ("make_key", "alg"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    ],
)
def test_other_keys(group: Group, make_key: Any, alg: str) -> None:
    peer = group.ca.issue(OIN_A, key=make_key())
    jws = _sign(peer)
    assert json.loads(b64url_decode(jws.split(".")[0]))["alg"] == alg
    assert _verify(group, jws, lookup=CertificateDirectory().add(peer)).peer_id == OIN_A


@pytest.mark.parametrize(
    ("make_key", "alg"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS384"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS512"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "ES512"),
    ],
)
def test_every_fsc_algorithm_verifies(group: Group, make_key: Any, alg: str) -> None:
    # Other Peers may sign with these (manager.yaml's example is RS512).
    peer = group.ca.issue(OIN_A, key=make_key(), algorithm=alg)
    jws = _compact(peer.signer, {"alg": alg, "x5t#S256": peer.thumbprint}, _payload())
    assert _verify(group, jws, lookup=CertificateDirectory().add(peer)).peer_id == OIN_A


def test_create_refuses_what_fsc_does_not_allow(group: Group) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pss = group.ca.issue(OIN_A, key=key, algorithm="PS256")
    with pytest.raises(SigningError, match="PS256"):
        _sign(pss)
    with pytest.raises(SigningError, match="does not belong"):
        create_signature(
            CONTRACT, SignatureType.ACCEPT, group[OIN_B].signer, group[OIN_A].der, SIGNED_AT
        )
    with pytest.raises(ValueError, match="timezone"):
        create_signature(
            CONTRACT,
            SignatureType.ACCEPT,
            group[OIN_A].signer,
            group[OIN_A].der,
            datetime(2025, 6, 1),
        )


# -- algorithms ----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["PS256", "HS256", "none", "EdDSA", "RS1"])
def test_unsupported_algorithms(group: Group, alg: str) -> None:
    peer = group[OIN_A]
    jws = _compact(peer.signer, {"alg": alg, "x5t#S256": peer.thumbprint}, _payload())
    error = _refused(group, jws, ErrorCode.UNKNOWN_ALGORITHM_SIGNATURE)
    assert error.status == 422


def test_algorithm_must_fit_the_key(group: Group) -> None:
    peer = group[OIN_A]  # a P-256 key
    jws = _compact(peer.signer, {"alg": "ES384", "x5t#S256": peer.thumbprint}, _payload())
    _refused(group, jws, ErrorCode.SIGNATURE_VERIFICATION_FAILED)


# -- tampering -----------------------------------------------------------------------------


def test_tampering_with_any_character_of_the_jws_is_detected(group: Group) -> None:
    jws = _sign(group[OIN_A])
    lookup, crls = group.directory(), group.ca.crls()
    for index, char in enumerate(jws):
        replacement = "A" if char != "A" else "B"
        tampered = jws[:index] + replacement + jws[index + 1 :]
        with pytest.raises(ContractError):
            _verify(group, tampered, lookup=lookup, crls=crls)


def _replacement(char: str) -> str:
    if char.isdigit():
        return str((int(char) + 1) % 10)
    if char.isalpha():
        return char.swapcase() if char.swapcase() != char else "x"
    return "x"


def test_tampering_with_any_byte_of_the_content_is_detected(group: Group) -> None:
    parsed = contract(connection_data(outway=OIN_A, properties={"purpose": "test", "n": 1}))
    jws = _sign(group[OIN_A], parsed)
    lookup, crls = group.directory(), group.ca.crls()
    text = json.dumps(parsed.to_json(), separators=(",", ":"))
    parsed_variants = 0
    for index, char in enumerate(text):
        tampered_text = text[:index] + _replacement(char) + text[index + 1 :]
        try:
            tampered = Contract.from_json(json.loads(tampered_text))
        except (ValueError, ContractError):
            continue  # not even a contract any more
        parsed_variants += 1
        with pytest.raises(ContractError) as caught:
            _verify(group, jws, tampered, lookup=lookup, crls=crls)
        assert caught.value.code in (
            ErrorCode.SIGNATURE_CONTRACT_CONTENT_HASH_MISMATCH,
            ErrorCode.UNKNOWN_HASH_ALGORITHM_HASH,  # the hash_algorithm itself was changed
        )
    assert parsed_variants > 100  # most changes still make a contract; all were caught


def test_signature_for_another_contract(group: Group) -> None:
    jws = _sign(group[OIN_A], contract(connection_data(name="another")))
    error = _refused(group, jws, ErrorCode.SIGNATURE_CONTRACT_CONTENT_HASH_MISMATCH)
    assert content_hash(CONTRACT) in error.message


# -- who signed ----------------------------------------------------------------------------


def test_signature_by_another_peer(group: Group) -> None:
    jws = _sign(group[OIN_B])  # B is on the contract, but A is submitting
    error = _refused(group, jws, ErrorCode.PEER_ID_SIGNATURE_MISMATCH)
    assert OIN_A in error.message
    assert OIN_B in error.message


def test_another_peers_certificate_with_own_key(group: Group) -> None:
    # Header names B's certificate, but A's key signed: B's public key does not verify it.
    payload = _payload()
    jws = _compact(
        group[OIN_A].signer, {"alg": "ES256", "x5t#S256": group[OIN_B].thumbprint}, payload
    )
    _refused(group, jws, ErrorCode.SIGNATURE_VERIFICATION_FAILED, peer=OIN_B)


def test_certificate_of_another_ca(group: Group) -> None:
    jws = _sign(group.foreign)  # OIN_A, but from a CA the Group does not trust
    error = _refused(group, jws, ErrorCode.SIGNATURE_VERIFICATION_FAILED)
    assert "trust anchors" in error.message


def test_signer_not_on_the_contract(group: Group) -> None:
    jws = _sign(group[OIN_OUTSIDER])
    error = _refused(group, jws, ErrorCode.PEER_NOT_PART_OF_CONTRACT, peer=OIN_OUTSIDER)
    assert error.status == 422


def test_unexpected_type(group: Group) -> None:
    jws = _sign(group[OIN_A], sig_type=SignatureType.REJECT)
    error = _refused(group, jws, ErrorCode.SIGNATURE_VERIFICATION_FAILED)
    assert "reject" in error.message


@pytest.mark.parametrize(
    "subject",
    [peer_subject(None), peer_subject("1234"), peer_subject("0000000100000000000A")],
)
def test_certificate_without_a_valid_peer_id(group: Group, subject: x509.Name) -> None:
    peer = group.ca.issue(None, subject=subject)
    jws = _sign(peer)
    error = _refused(
        group,
        jws,
        ErrorCode.PEER_CERTIFICATE_VERIFICATION_FAILED,
        lookup=CertificateDirectory().add(peer),
    )
    assert error.status == 400


def test_certificate_with_two_peer_ids(group: Group) -> None:
    subject = x509.Name(
        [
            *peer_subject(OIN_A),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, OIN_B),
        ]
    )
    peer = group.ca.issue(None, subject=subject)
    _refused(
        group,
        _sign(peer),
        ErrorCode.PEER_CERTIFICATE_VERIFICATION_FAILED,
        lookup=CertificateDirectory().add(peer),
    )


# -- the certificate -----------------------------------------------------------------------


def test_unknown_thumbprint(group: Group) -> None:
    error = _refused(
        group, _sign(group[OIN_A]), ErrorCode.SIGNATURE_VERIFICATION_FAILED, lookup=lambda _: None
    )
    assert "unable to retrieve certificate" in error.message


def test_lookup_returning_another_certificate(group: Group) -> None:
    error = _refused(
        group,
        _sign(group[OIN_A]),
        ErrorCode.SIGNATURE_VERIFICATION_FAILED,
        lookup=lambda _: list(group[OIN_B].chain),
    )
    assert "another" in error.message


@pytest.mark.parametrize("thumbprint", [None, "", 5, "abc", "A" * 44, "+" * 43, "x5t#S256"])
def test_missing_or_malformed_thumbprint_header(group: Group, thumbprint: Any) -> None:
    def lookup(_: str) -> None:
        raise AssertionError("a malformed thumbprint must not be looked up")

    header: dict[str, Any] = {"alg": "ES256"}
    if thumbprint is not None:
        header["x5t#S256"] = thumbprint
    jws = _compact(group[OIN_A].signer, header, _payload())
    _refused(group, jws, ErrorCode.SIGNATURE_VERIFICATION_FAILED, lookup=lookup)


def test_critical_header(group: Group) -> None:
    peer = group[OIN_A]
    header = {"alg": "ES256", "x5t#S256": peer.thumbprint, "crit": ["exp"], "exp": 1}
    _refused(
        group, _compact(peer.signer, header, _payload()), ErrorCode.SIGNATURE_VERIFICATION_FAILED
    )


def test_revoked_certificate(group: Group) -> None:
    peer = group.ca.issue(OIN_A)
    crls = group.ca.crls(revoked=[peer.certificate])
    error = _refused(
        group,
        _sign(peer),
        ErrorCode.SIGNATURE_VERIFICATION_FAILED,
        lookup=CertificateDirectory().add(peer),
        crls=crls,
    )
    assert "revoked" in error.message


def test_revoked_intermediate(group: Group) -> None:
    error = _refused(
        group,
        _sign(group[OIN_A]),
        ErrorCode.SIGNATURE_VERIFICATION_FAILED,
        crls=group.ca.crls(revoke_intermediate=True),
    )
    assert "revoked" in error.message


def test_expired_certificate(group: Group) -> None:
    peer = group.ca.issue(
        OIN_A, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(seconds=1)
    )
    error = _refused(
        group,
        _sign(peer),
        ErrorCode.SIGNATURE_VERIFICATION_FAILED,
        lookup=CertificateDirectory().add(peer),
    )
    assert "expired" in error.message


def test_certificate_not_yet_valid(group: Group) -> None:
    peer = group.ca.issue(OIN_A, not_before=NOW + timedelta(hours=1))
    error = _refused(
        group,
        _sign(peer),
        ErrorCode.SIGNATURE_VERIFICATION_FAILED,
        lookup=CertificateDirectory().add(peer),
    )
    assert "not valid before" in error.message


def test_a_signature_stops_verifying_when_its_certificate_expires(group: Group) -> None:
    peer = group[OIN_A]
    later = peer.certificate.not_valid_after_utc + timedelta(seconds=1)
    crls = group.ca.crls(
        this_update=later - timedelta(hours=1), next_update=later + timedelta(days=1)
    )
    _refused(group, _sign(peer), ErrorCode.SIGNATURE_VERIFICATION_FAILED, crls=crls, now=later)


@pytest.mark.parametrize("which", ["none", "intermediate only", "root only"])
def test_missing_crl_fails_closed(group: Group, which: str) -> None:
    intermediate_crl, root_crl = group.ca.crls()
    crls = {"none": [], "intermediate only": [intermediate_crl], "root only": [root_crl]}[which]
    error = _refused(group, _sign(group[OIN_A]), ErrorCode.SIGNATURE_VERIFICATION_FAILED, crls=crls)
    assert "no valid, fresh CRL" in error.message


def test_stale_crl_fails_closed(group: Group) -> None:
    crls = group.ca.crls(
        this_update=NOW - timedelta(days=8), next_update=NOW - timedelta(seconds=1)
    )
    error = _refused(group, _sign(group[OIN_A]), ErrorCode.SIGNATURE_VERIFICATION_FAILED, crls=crls)
    assert "stale" in error.message


def test_crl_not_signed_by_its_issuer_fails_closed(group: Group) -> None:
    forged = x509.CertificateRevocationListBuilder().issuer_name(group.ca.intermediate.subject)
    forged = forged.last_update(NOW - timedelta(hours=1)).next_update(NOW + timedelta(days=1))
    crl = forged.sign(group.other_ca.intermediate_key, hashes.SHA256())
    _, root_crl = group.ca.crls()
    error = _refused(
        group, _sign(group[OIN_A]), ErrorCode.SIGNATURE_VERIFICATION_FAILED, crls=[crl, root_crl]
    )
    assert "does not verify" in error.message


def test_a_good_crl_next_to_a_stale_one_is_used(group: Group) -> None:
    stale = group.ca.crls(this_update=NOW - timedelta(days=9), next_update=NOW - timedelta(days=1))
    assert _verify(group, _sign(group[OIN_A]), crls=stale + group.ca.crls()).peer_id == OIN_A


# -- the payload ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"type": "accept", "signed_at": 1}',
        _payload(type="approve"),
        _payload(type=None),
        _payload(signed_at="yesterday"),
        _payload(signed_at=True),
        _payload(signed_at=1.5),
        _payload(signed_at=-1),
        _payload(signed_at=None),
        _payload(contract_content_hash=5),
        b'{"type": "accept", "type": "revoke", "signed_at": 1, "contract_content_hash": "x"}',
    ],
)
def test_malformed_payload(group: Group, payload: bytes) -> None:
    peer = group[OIN_A]
    jws = _compact(peer.signer, {"alg": "ES256", "x5t#S256": peer.thumbprint}, payload)
    _refused(group, jws, ErrorCode.SIGNATURE_VERIFICATION_FAILED)


def test_payload_with_extra_members_is_accepted(group: Group) -> None:
    peer = group[OIN_A]
    payload = json.dumps({**json.loads(_payload()), "note": "extension"}).encode()
    jws = _compact(peer.signer, {"alg": "ES256", "x5t#S256": peer.thumbprint}, payload)
    assert _verify(group, jws).type is SignatureType.ACCEPT


@pytest.mark.parametrize("jws", ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.AAAA", 5])
def test_malformed_jws(group: Group, jws: Any) -> None:
    _refused(group, jws, ErrorCode.SIGNATURE_VERIFICATION_FAILED)


def test_programming_errors(group: Group) -> None:
    jws = _sign(group[OIN_A])
    with pytest.raises(ValueError, match="timezone"):
        _verify(group, jws, now=datetime(2025, 6, 1))
    with pytest.raises(ValueError, match="trust anchors"):
        verify_signature(
            jws,
            CONTRACT,
            expected_type=SignatureType.ACCEPT,
            expected_peer_id=OIN_A,
            chain_for_thumbprint=group.directory(),
            trust_anchors=[],
            crls=[],
            now=NOW,
        )


def test_delegated_contract_signatures(group: Group) -> None:
    parsed = contract(connection_data(outway=OIN_A, service_peer=OIN_B, delegator=OIN_D))
    jws = _sign(group[OIN_D], parsed)
    assert _verify(group, jws, parsed, peer=OIN_D).signed_at.tzinfo is UTC
