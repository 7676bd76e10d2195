"""One connection contract for a consumer with two gateway nodes (docs/ha.md).

Each outway node has its own key (never copied), so the contract holds one grant per outway
key: the same outway peer and service, another ``public_key_thumbprint``. Each node gets
tokens for its own grant only (the outway picks the grant naming its own key,
appliance.outway.grants.StoreGrants), and both grants are valid together in one contract.
"""

from __future__ import annotations

import pytest
from contracttest import GROUP_ID, NOW, OIN_A, OIN_B, Group, connection_data, contract

from appliance.manager.contracts.hashing import grant_hash
from appliance.manager.contracts.tokens import (
    TokenError,
    authorize_token_request,
    build_access_token_claims,
)
from appliance.manager.contracts.validation import validate_contract
from appliance.tls.peer import PeerIdentity

INWAY = "https://inway.provider.example:443"
CLIENT_X5T = "DpAyDYakmVAQ4oOJC3UYLRk_ONRCqMj00TeGJemMiLA"


def test_one_contract_holds_a_grant_per_outway_node_and_each_node_uses_its_own(
    group: Group,
) -> None:
    node1 = group[OIN_A]
    node2 = group.ca.issue(OIN_A)  # the consumer's second node: the same peer, its own key
    assert node1.public_key_thumbprint != node2.public_key_thumbprint
    both = contract(
        *(
            connection_data(outway=OIN_A, service_peer=OIN_B, thumbprint=n.public_key_thumbprint)
            for n in (node1, node2)
        )
    )
    validate_contract(both, group_id=GROUP_ID, now=NOW)
    hashes = {grant_hash(both, grant) for grant in both.grants}
    assert len(hashes) == 2  # each node's token names its own grant

    for node, own, other in ((node1, 0, 1), (node2, 1, 0)):
        client = PeerIdentity.from_der(node.der)
        authorize_token_request(
            both, both.grants[own], issuer_peer_id=OIN_B, client_id=OIN_A, client=client
        )
        with pytest.raises(TokenError) as refused:  # not for the other node's key
            authorize_token_request(
                both, both.grants[other], issuer_peer_id=OIN_B, client_id=OIN_A, client=client
            )
        assert refused.value.oauth_error == "invalid_grant"
        claims = build_access_token_claims(
            both,
            both.grants[own],
            issuer_peer_id=OIN_B,
            inway_address=INWAY,
            client_certificate_thumbprint=CLIENT_X5T,
            now=NOW,
            lifetime_seconds=300,
        )
        assert claims["gth"] == grant_hash(both, both.grants[own])
        assert claims["sub"] == OIN_A
