"""Contract state from verified signatures: who must accept, and what ends a contract."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pytest
from contracttest import (
    DAY,
    NOW,
    OIN_A,
    OIN_B,
    OIN_C,
    OIN_D,
    OIN_E,
    OIN_OUTSIDER,
    Group,
    T,
    connection_data,
    contract,
    publication_data,
)

from appliance.manager.contracts.hashing import content_hash
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.signatures import (
    SignatureType,
    VerifiedSignature,
    create_signature,
    verify_signature,
)
from appliance.manager.contracts.state import ContractState, contract_state

ACCEPT, REJECT, REVOKE = SignatureType.ACCEPT, SignatureType.REJECT, SignatureType.REVOKE


def _signature(
    parsed: Contract,
    peer: str,
    sig_type: SignatureType = ACCEPT,
    *,
    certificate_not_after: datetime = NOW + timedelta(days=365),
) -> VerifiedSignature:
    return VerifiedSignature(
        peer_id=peer,
        type=sig_type,
        signed_at=NOW,
        certificate_thumbprint="thumbprint",
        jws="a.b.c",
        contract_content_hash=content_hash(parsed),
        certificate_not_after=certificate_not_after,
    )


def _state(parsed: Contract, signers: Iterable[Any], now: datetime = NOW) -> ContractState:
    """Signers: a VerifiedSignature, a (peer, type) pair or a peer that accepted."""
    signatures = []
    for signer in signers:
        if isinstance(signer, VerifiedSignature):
            signatures.append(signer)
        elif isinstance(signer, tuple):
            signatures.append(_signature(parsed, *signer))
        else:
            signatures.append(_signature(parsed, signer))
    return contract_state(parsed, signatures, now)


@pytest.mark.parametrize(
    ("grant", "required"),
    [
        (connection_data(outway=OIN_A, service_peer=OIN_B), {OIN_A, OIN_B}),
        (connection_data(service_delegator=OIN_E), {OIN_A, OIN_B, OIN_E}),
        (connection_data(delegator=OIN_D), {OIN_A, OIN_B, OIN_D}),
        (connection_data(delegator=OIN_D, service_delegator=OIN_E), {OIN_A, OIN_B, OIN_D, OIN_E}),
        (publication_data(directory=OIN_C, service_peer=OIN_B), {OIN_B, OIN_C}),
        (publication_data(delegator=OIN_D), {OIN_B, OIN_C, OIN_D}),
    ],
)
def test_valid_once_every_required_peer_accepted(grant: dict[str, Any], required: set[str]) -> None:
    parsed = contract(grant)
    assert parsed.peer_ids() == required
    assert _state(parsed, []) is ContractState.PROPOSED
    for missing in required:
        assert _state(parsed, required - {missing}) is ContractState.PROPOSED
    assert _state(parsed, required) is ContractState.VALID
    assert _state(parsed, [*required, *required]) is ContractState.VALID  # duplicates are fine


def test_every_grant_counts() -> None:
    parsed = contract(
        connection_data(outway=OIN_A, service_peer=OIN_B),
        connection_data(outway=OIN_A, service_peer=OIN_C, name="other"),
    )
    assert _state(parsed, [OIN_A, OIN_B]) is ContractState.PROPOSED
    assert _state(parsed, [OIN_A, OIN_B, OIN_C]) is ContractState.VALID


def test_outsiders_do_not_count() -> None:
    parsed = contract()
    assert _state(parsed, [OIN_A, OIN_OUTSIDER]) is ContractState.PROPOSED
    assert _state(parsed, [OIN_A, OIN_B, (OIN_OUTSIDER, REVOKE)]) is ContractState.VALID


def test_reject_and_revoke() -> None:
    parsed = contract()
    assert _state(parsed, [(OIN_B, REJECT)]) is ContractState.REJECTED
    assert _state(parsed, [OIN_A, OIN_B, (OIN_B, REJECT)]) is ContractState.REJECTED
    assert _state(parsed, [OIN_A, OIN_B, (OIN_A, REVOKE)]) is ContractState.REVOKED
    assert _state(parsed, [(OIN_A, REJECT), (OIN_B, REVOKE)]) is ContractState.REVOKED


def test_expired() -> None:
    parsed = contract(not_before=T - DAY, not_after=T + DAY)
    end = NOW + timedelta(days=1)
    assert _state(parsed, [OIN_A, OIN_B], end) is ContractState.VALID  # up to not_after
    after = end + timedelta(seconds=1)
    assert _state(parsed, [OIN_A, OIN_B], after) is ContractState.EXPIRED
    assert _state(parsed, [OIN_A], after) is ContractState.EXPIRED
    assert _state(parsed, [(OIN_A, REVOKE)], after) is ContractState.REVOKED


def test_accepted_before_the_validity_period() -> None:
    parsed = contract(not_before=T + DAY, not_after=T + 2 * DAY)
    assert _state(parsed, [OIN_A]) is ContractState.PROPOSED
    assert _state(parsed, [OIN_A, OIN_B]) is ContractState.ACCEPTED
    assert _state(parsed, [OIN_A, OIN_B], NOW + timedelta(days=1)) is ContractState.VALID


def test_accept_made_with_an_expired_certificate_no_longer_counts() -> None:
    parsed = contract()
    old = _signature(parsed, OIN_B, certificate_not_after=NOW - timedelta(seconds=1))
    assert _state(parsed, [OIN_A, old]) is ContractState.PROPOSED
    renewed = _signature(parsed, OIN_B)
    assert _state(parsed, [OIN_A, old, renewed]) is ContractState.VALID
    # A reject or revoke stays, whatever became of the certificate.
    stale_revoke = _signature(parsed, OIN_B, REVOKE, certificate_not_after=NOW - timedelta(1))
    assert _state(parsed, [OIN_A, renewed, stale_revoke]) is ContractState.REVOKED


def test_signatures_of_another_contract_are_a_bug() -> None:
    parsed, other = contract(), contract(group_id="other")
    with pytest.raises(ValueError, match="another contract"):
        contract_state(parsed, [_signature(other, OIN_A)], NOW)
    with pytest.raises(ValueError, match="timezone"):
        contract_state(parsed, [], datetime(2025, 6, 1))


def test_end_to_end_with_real_signatures(group: Group) -> None:
    parsed = contract(connection_data(outway=OIN_A, service_peer=OIN_B, delegator=OIN_D))
    verified = []
    for oin in (OIN_D, OIN_A, OIN_B):
        peer = group[oin]
        jws = create_signature(parsed, ACCEPT, peer.signer, peer.der, NOW)
        verified.append(
            verify_signature(
                jws,
                parsed,
                expected_type=ACCEPT,
                expected_peer_id=oin,
                chain_for_thumbprint=group.directory(),
                trust_anchors=group.ca.anchors,
                crls=group.ca.crls(),
                now=NOW,
            )
        )
        expected = ContractState.VALID if oin == OIN_B else ContractState.PROPOSED
        assert contract_state(parsed, verified, NOW) is expected
