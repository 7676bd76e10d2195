"""The state of a contract from its verified signatures (core architecture "Contract states").

Valid once every Peer named in a grant accepted (each grant type's "Signature requirements",
with the delegator of a delegated publication on connection grants as core "Signatures" and
the architecture say); invalid for good once any of them rejects or revokes, or the validity
period ends. Precedence: revoked, rejected, expired; otherwise proposed until every required
Peer accepted, accepted until ``not_before``, then valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from appliance.manager.contracts.hashing import content_hash
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.signatures import SignatureType, VerifiedSignature
from appliance.manager.contracts.validation import epoch_seconds


class ContractState(StrEnum):
    PROPOSED = "proposed"
    # Every required Peer accepted but validity.not_before is still ahead: not usable yet.
    ACCEPTED = "accepted"
    VALID = "valid"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


def contract_state(
    contract: Contract, signatures: Iterable[VerifiedSignature], now: datetime
) -> ContractState:
    """The state of ``contract`` at ``now`` given signatures that :func:`verify_signature`
    accepted for it."""
    current = epoch_seconds(now)
    expected_hash = content_hash(contract)
    required = contract.peer_ids()
    accepted: set[str] = set()
    rejected = revoked = False
    for signature in signatures:
        if signature.contract_content_hash != expected_hash:
            raise ValueError(f"signature of {signature.peer_id} is for another contract")
        if signature.peer_id not in required:
            continue
        if signature.type == SignatureType.REVOKE:
            revoked = True
        elif signature.type == SignatureType.REJECT:
            rejected = True
        elif signature.certificate_not_after > now:
            accepted.add(signature.peer_id)
    if revoked:
        return ContractState.REVOKED
    if rejected:
        return ContractState.REJECTED
    if current > contract.validity.not_after:  # valid up to and including not_after
        return ContractState.EXPIRED
    if accepted != required:
        return ContractState.PROPOSED
    if current < contract.validity.not_before:
        return ContractState.ACCEPTED
    return ContractState.VALID
