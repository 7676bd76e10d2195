"""Accept, reject and revoke signatures on a contract (core "Signatures").

A signature is a compact JWS whose protected header carries ``alg`` and ``x5t#S256`` (the
thumbprint of the signing certificate) and whose payload holds the normative fields
``contract_content_hash``, ``type`` and ``signed_at`` (READING.md item 3).

Verification trusts nothing the other Peer says about itself: the certificate is looked up by
its thumbprint, chained to the Group's trust anchors at ``now``, checked against fresh CRLs of
every issuer in the chain (fail closed), and its subject serialNumber (the PeerID) must be the
Peer expected to sign. Only then is the payload read.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from appliance.errors import SluisError
from appliance.hsm.signer import Signer
from appliance.jcs import JcsError, canonicalize, loads
from appliance.manager.contracts import jose
from appliance.manager.contracts.errors import ContractError, ErrorCode
from appliance.manager.contracts.hashing import check_hash_text, content_hash
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.validation import MAX_TIMESTAMP, PEER_ID, epoch_seconds
from appliance.pki.crl import CrlError, verify_crl
from appliance.tls.peer import PeerIdentity, PeerIdentityError, certificate_thumbprint

# base64url without padding of a SHA-256 digest (RFC 7515 section 4.1.8).
X5T_S256 = re.compile(r"[A-Za-z0-9_-]{43}")

ChainLookup = Callable[[str], list[x509.Certificate] | None]


class SignatureType(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    REVOKE = "revoke"


class SigningError(SluisError):
    """This Manager cannot sign: its key or certificate does not fit FSC."""


@dataclass(frozen=True, kw_only=True)
class VerifiedSignature:
    """A signature that passed :func:`verify_signature`, with what it proved."""

    peer_id: str
    type: SignatureType
    signed_at: datetime
    certificate_thumbprint: str
    jws: str
    contract_content_hash: str
    # An accept counts only while the certificate that made it is valid (core "Certificate
    # renewal": the Peer re-signs with its new certificate).
    certificate_not_after: datetime


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def create_signature(
    contract: Contract,
    sig_type: SignatureType,
    signer: Signer,
    certificate_der: bytes,
    signed_at: datetime,
) -> str:
    """This Peer's signature of ``sig_type`` on ``contract``, signed by ``signer``."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    if certificate.public_key() != signer.public_key():
        raise SigningError("the certificate does not belong to the signing key")
    payload = {
        "contract_content_hash": content_hash(contract),
        "type": SignatureType(sig_type).value,
        "signed_at": epoch_seconds(signed_at),
    }
    header = {"x5t#S256": certificate_thumbprint(certificate_der)}
    try:
        return jose.sign(signer, canonicalize(payload), header)
    except jose.JoseError as exc:
        raise SigningError(str(exc)) from exc


def _failed(message: str) -> ContractError:
    return ContractError(ErrorCode.SIGNATURE_VERIFICATION_FAILED, message)


def verify_signature(
    jws: str,
    contract: Contract,
    *,
    expected_type: SignatureType,
    expected_peer_id: str,
    chain_for_thumbprint: ChainLookup,
    trust_anchors: list[x509.Certificate],
    crls: list[x509.CertificateRevocationList],
    now: datetime,
) -> VerifiedSignature:
    """Verify ``jws`` as ``expected_peer_id``'s ``expected_type`` signature on ``contract``.

    ``chain_for_thumbprint`` maps an ``x5t#S256`` to the certificate it names followed by its
    intermediates (a Manager publishes its chain without the root), or None if unknown.
    """
    if not trust_anchors:
        raise ValueError("no trust anchors: nothing can be verified")
    epoch_seconds(now)  # refuses a naive datetime
    try:
        parsed = jose.parse_compact(jws)
    except jose.UnsupportedAlgorithmError as exc:
        raise ContractError(ErrorCode.UNKNOWN_ALGORITHM_SIGNATURE, str(exc)) from None
    except jose.JoseError as exc:
        raise _failed(str(exc)) from None

    thumbprint = parsed.header.get("x5t#S256")
    # Checked before the lookup, which may ask the other Peer's Manager for the chain.
    if not isinstance(thumbprint, str) or not X5T_S256.fullmatch(thumbprint):
        raise _failed("the JWS header has no x5t#S256 certificate thumbprint (base64url SHA-256)")
    chain = chain_for_thumbprint(thumbprint)
    if not chain:
        raise _failed(f"unable to retrieve certificate with thumbprint {thumbprint!r}")
    leaf = chain[0]
    if certificate_thumbprint(_der(leaf)) != thumbprint:
        raise _failed(f"the certificate found for thumbprint {thumbprint!r} has another one")
    verified_chain = _verify_chain(leaf, chain[1:], trust_anchors, now)
    _check_revocation(verified_chain, crls, now)
    identity = _identity(leaf)

    try:
        jose.verify(parsed, leaf.public_key())
    except jose.JoseError as exc:
        raise _failed(f"signature of peer {identity.peer_id!r}: {exc}") from None
    if identity.peer_id != expected_peer_id:
        raise ContractError(
            ErrorCode.PEER_ID_SIGNATURE_MISMATCH,
            f"peer id {expected_peer_id!r} does not match signature peer id {identity.peer_id!r}",
        )

    fields = _payload(parsed.payload)
    check_hash_text(fields["contract_content_hash"])
    expected_hash = content_hash(contract)
    if fields["contract_content_hash"] != expected_hash:
        raise ContractError(
            ErrorCode.SIGNATURE_CONTRACT_CONTENT_HASH_MISMATCH,
            f"signature contract content hash {fields['contract_content_hash']!r} does not "
            f"match the contract content hash {expected_hash!r}",
        )
    if fields["type"] != expected_type:
        raise _failed(f"signature type is {fields['type']!r}, expected {str(expected_type)!r}")
    if identity.peer_id not in contract.peer_ids():
        # core "Signatures": only Peers named in a grant sign.
        raise ContractError(
            ErrorCode.PEER_NOT_PART_OF_CONTRACT,
            f"peer {identity.peer_id!r} is not part of the contract",
        )
    return VerifiedSignature(
        peer_id=identity.peer_id,
        type=SignatureType(fields["type"]),
        signed_at=datetime.fromtimestamp(fields["signed_at"], UTC),
        certificate_thumbprint=thumbprint,
        jws=jws,
        contract_content_hash=expected_hash,
        certificate_not_after=leaf.not_valid_after_utc,
    )


def _verify_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    trust_anchors: list[x509.Certificate],
    now: datetime,
) -> list[x509.Certificate]:
    subject = leaf.subject.rfc4514_string()
    # The verifier says "expired" too, but less plainly.
    if leaf.not_valid_after_utc < now:
        raise _failed(f"certificate {subject} expired at {leaf.not_valid_after_utc.isoformat()}")
    if leaf.not_valid_before_utc > now:
        raise _failed(f"certificate {subject} is not valid before {leaf.not_valid_before_utc}")
    verifier = PolicyBuilder().store(Store(trust_anchors)).time(now).build_client_verifier()
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise _failed(
            f"certificate {subject} does not chain to the Group's trust anchors: {exc}"
        ) from None
    return list(verified.chain)


def _check_revocation(
    chain: list[x509.Certificate], crls: list[x509.CertificateRevocationList], now: datetime
) -> None:
    # Every certificate below the trust anchor needs its issuer's CRL, verified and fresh;
    # without one the certificate might be revoked, so it is refused (fail closed).
    for certificate, issuer in itertools.pairwise(chain):
        subject = certificate.subject.rfc4514_string()
        usable = []
        problems = []
        for crl in crls:
            if crl.issuer != issuer.subject:
                continue
            try:
                verify_crl(crl, issuer, source="CRL", now=now)
            except CrlError as exc:
                problems.append(str(exc))
                continue
            usable.append(crl)
        if not usable:
            detail = f" ({'; '.join(problems)})" if problems else ""
            raise _failed(
                f"no valid, fresh CRL of {issuer.subject.rfc4514_string()} to check "
                f"certificate {subject}{detail}"
            )
        serial = certificate.serial_number
        if any(crl.get_revoked_certificate_by_serial_number(serial) for crl in usable):
            raise _failed(f"certificate {subject} is revoked")


def _identity(leaf: x509.Certificate) -> PeerIdentity:
    try:
        identity = PeerIdentity.from_der(_der(leaf))
    except PeerIdentityError as exc:
        raise ContractError(ErrorCode.PEER_CERTIFICATE_VERIFICATION_FAILED, str(exc)) from None
    if not PEER_ID.fullmatch(identity.peer_id):
        raise ContractError(
            ErrorCode.PEER_CERTIFICATE_VERIFICATION_FAILED,
            f"the peer id {identity.peer_id!r} is in an incorrect format (an OIN: 20 digits)",
        )
    return identity


def _payload(payload: bytes) -> dict[str, Any]:
    try:
        fields = loads(payload)
    except JcsError as exc:
        raise _failed(f"signature payload is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise _failed("signature payload is not a JSON object")
    content = fields.get("contract_content_hash")
    sig_type = fields.get("type")
    signed_at = fields.get("signed_at")
    if not isinstance(content, str):
        raise _failed("signature payload has no contract_content_hash")
    if sig_type not in set(SignatureType):
        raise _failed(f"signature payload type {sig_type!r} is not accept, reject or revoke")
    if isinstance(signed_at, bool) or not isinstance(signed_at, int):
        raise _failed("signature payload signed_at is not a Unix timestamp")
    if not 0 <= signed_at <= MAX_TIMESTAMP:
        raise _failed(f"signature payload signed_at {signed_at} is not a valid date")
    return fields


def thumbprint_of(certificate: x509.Certificate) -> str:
    """``x5t#S256`` of a certificate (for the store's thumbprint -> chain index)."""
    return certificate_thumbprint(_der(certificate))
