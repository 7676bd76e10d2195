"""PUT /v1/contracts/{hash}/accept|reject|revoke: a peer signs a contract (manager.yaml
``acceptContract``, ``rejectContract``, ``revokeContract``; core "Signatures")."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import quote

import pytest
from apitest import Api, assert_fsc_error, hash_of, sign
from contracttest import DAY, OIN_A, OIN_B, OIN_D, Group, T, connection_data, content

from appliance.jcs import canonicalize
from appliance.manager.contracts import jose
from appliance.tls.peer import certificate_thumbprint


def _state(api: Api, content_hash: str, peer: Any) -> tuple[str, dict[str, dict[str, str]]]:
    """The contract as GET /v1/contracts shows it to ``peer``, and its state."""
    result = api.get(
        "/v1/contracts", peer=peer, params={"grant_hash": _grant_hash(api, content_hash)}
    )
    assert result.status_code == 200, result.text
    (listed,) = json.loads(result.text)["contracts"]
    return api.service.get(content_hash).state, listed["signatures"]


def _grant_hash(api: Api, content_hash: str) -> str:
    return api.service.get(content_hash).grant_hashes[0]


@pytest.mark.parametrize("kind", ["accept", "reject", "revoke"])
def test_signature_is_created(
    provider: Api, connection: dict[str, Any], group: Group, kind: str
) -> None:
    provider.service.propose(connection)

    result = provider.put_signature(
        kind, connection, sign(connection, group[OIN_A], kind), peer=group[OIN_A]
    )

    assert result.status_code == 201, result.text
    view = provider.service.get(hash_of(connection))
    assert OIN_A in view.signatures[kind]


def test_state_moves_from_proposed_to_valid_to_revoked(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    digest = provider.service.propose(connection).content_hash  # B's accept
    state, signatures = _state(provider, digest, group[OIN_A])
    assert state == "proposed"
    assert set(signatures["accept"]) == {OIN_B}

    accept = sign(connection, group[OIN_A])
    assert (
        provider.put_signature("accept", connection, accept, peer=group[OIN_A]).status_code == 201
    )
    state, signatures = _state(provider, digest, group[OIN_A])
    assert state == "valid"
    assert signatures["accept"][OIN_A] == accept
    assert set(signatures["accept"]) == {OIN_A, OIN_B}

    revoke = sign(connection, group[OIN_A], "revoke")
    assert (
        provider.put_signature("revoke", connection, revoke, peer=group[OIN_A]).status_code == 201
    )
    state, signatures = _state(provider, digest, group[OIN_A])
    assert state == "revoked"
    assert signatures["revoke"] == {OIN_A: revoke}
    assert signatures["reject"] == {}


def test_reject_makes_the_contract_rejected(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    digest = provider.service.propose(connection).content_hash

    reject = sign(connection, group[OIN_A], "reject")
    assert (
        provider.put_signature("reject", connection, reject, peer=group[OIN_A]).status_code == 201
    )

    assert provider.service.get(digest).state == "rejected"


def test_repeated_signature_is_idempotent(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    provider.service.propose(connection)
    accept = sign(connection, group[OIN_A])

    first = provider.put_signature("accept", connection, accept, peer=group[OIN_A])
    again = provider.put_signature("accept", connection, accept, peer=group[OIN_A])

    assert first.status_code == again.status_code == 201
    assert provider.service.get(hash_of(connection)).signatures["accept"][OIN_A] == accept


def test_signature_may_arrive_before_the_contract(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    # The accept of a contract this Manager has not seen yet stores the contract with it.
    result = provider.put_signature(
        "accept", connection, sign(connection, group[OIN_A]), peer=group[OIN_A]
    )

    assert result.status_code == 201, result.text
    view = provider.service.get(hash_of(connection))
    assert view.state == "proposed"
    assert set(view.signatures["accept"]) == {OIN_A}


def test_path_hash_that_does_not_match_the_body_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    provider.service.propose(connection)
    other = copy.deepcopy(connection)
    other["created_at"] -= 1

    result = provider.put_signature(
        "accept",
        connection,
        sign(connection, group[OIN_A]),
        peer=group[OIN_A],
        path_hash=hash_of(other),
    )

    body = assert_fsc_error(result, 422, "ERROR_CODE_URL_PATH_CONTENT_HASH_MISMATCH")
    assert hash_of(other) in body["message"]
    assert OIN_A not in provider.service.get(hash_of(connection)).signatures["accept"]


def test_path_hash_may_be_sent_unencoded(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    provider.service.propose(connection)
    digest = hash_of(connection)
    assert quote(digest, safe="") != digest  # the "$" are percent-encoded by the client

    result = provider.client.simulate_put(
        f"/v1/contracts/{digest}/accept",
        json={"contract_content": connection, "signature": sign(connection, group[OIN_A])},
        headers=provider.headers(group[OIN_A], ""),
    )

    assert result.status_code == 201, result.text


def test_missing_manager_address_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    provider.service.propose(connection)

    result = provider.put_signature(
        "accept", connection, sign(connection, group[OIN_A]), peer=group[OIN_A], address=None
    )

    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")


def test_signature_of_another_type_than_the_path_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    provider.service.propose(connection)

    result = provider.put_signature(
        "revoke", connection, sign(connection, group[OIN_A], "accept"), peer=group[OIN_A]
    )

    assert_fsc_error(result, 422, "ERROR_CODE_SIGNATURE_VERIFICATION_FAILED")
    assert provider.service.get(hash_of(connection)).state == "proposed"


def test_signature_of_another_peer_than_the_sender_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    provider.service.propose(connection)

    result = provider.put_signature(
        "revoke", connection, sign(connection, group[OIN_D], "revoke"), peer=group[OIN_A]
    )

    assert_fsc_error(result, 422, "ERROR_CODE_PEER_ID_SIGNATURE_MISMATCH")
    assert provider.service.get(hash_of(connection)).state == "proposed"


def test_signature_of_a_peer_not_on_the_contract_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    provider.service.propose(connection)

    result = provider.put_signature(
        "revoke", connection, sign(connection, group[OIN_D], "revoke"), peer=group[OIN_D]
    )

    assert_fsc_error(result, 422, "ERROR_CODE_PEER_NOT_PART_OF_CONTRACT")
    assert provider.service.get(hash_of(connection)).state == "proposed"


def test_signature_for_other_content_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    provider.service.propose(connection)
    other = copy.deepcopy(connection)
    other["validity"]["not_after"] += DAY

    result = provider.put_signature(
        "accept", connection, sign(other, group[OIN_A]), peer=group[OIN_A]
    )

    assert_fsc_error(result, 422, "ERROR_CODE_SIGNATURE_CONTRACT_CONTENT_HASH_MISMATCH")


def test_unknown_contract_for_a_service_this_peer_does_not_offer_is_refused(
    provider: Api, group: Group
) -> None:
    # A signature can bring a contract the Manager has not seen: the contract is validated
    # as POST /v1/contracts would (core "Contract validation": the Service is offered).
    unknown = content(
        connection_data(name="onbekend", thumbprint=group[OIN_A].public_key_thumbprint)
    )

    result = provider.put_signature(
        "accept", unknown, sign(unknown, group[OIN_A]), peer=group[OIN_A]
    )

    assert_fsc_error(result, 422, "ERROR_CODE_CONTRACT_INVALID")
    assert provider.store.get_contract(hash_of(unknown)) is None


def _unknown_algorithm(content: dict[str, Any], group: Group, kind: str) -> str:
    """A's signature whose contract_content_hash names hash algorithm 2 (there is none)."""
    payload = {
        "contract_content_hash": "$2$" + hash_of(content)[3:],
        "type": kind,
        "signed_at": T,
    }
    header = {"x5t#S256": certificate_thumbprint(group[OIN_A].der)}
    return jose.sign(group[OIN_A].signer, canonicalize(payload), header)


@pytest.mark.parametrize("kind", ["accept", "reject", "revoke"])
def test_an_unknown_hash_algorithm_is_named_as_such(
    provider: Api, connection: dict[str, Any], group: Group, kind: str
) -> None:
    # core error table: ERROR_CODE_UNKNOWN_HASH_ALGORITHM_HASH (422), not a hash mismatch.
    provider.service.propose(connection)
    signature = _unknown_algorithm(connection, group, kind)

    result = provider.put_signature(kind, connection, signature, peer=group[OIN_A])
    assert_fsc_error(result, 422, "ERROR_CODE_UNKNOWN_HASH_ALGORITHM_HASH")

    path_hash = "$2$" + hash_of(connection)[3:]
    result = provider.put_signature(
        kind, connection, sign(connection, group[OIN_A], kind), peer=group[OIN_A],
        path_hash=path_hash,
    )  # fmt: skip
    assert_fsc_error(result, 422, "ERROR_CODE_UNKNOWN_HASH_ALGORITHM_HASH")
