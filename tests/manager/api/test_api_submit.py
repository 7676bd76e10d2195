"""POST /v1/contracts: a peer offers a contract with its accept signature (manager.yaml
``submitContract``; core "Contract validation" and "Signatures")."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from apitest import Api, address_of, assert_fsc_error, hash_of, peer_headers, pem, sign
from contracttest import (
    DAY,
    NOW,
    OIN_A,
    OIN_B,
    OIN_C,
    OIN_D,
    Group,
    connection_data,
    content,
    publication_data,
)

from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.signatures import SignatureType, create_signature
from appliance.manager.peer_client import PeerCallError


def test_valid_contract_is_created(provider: Api, connection: dict[str, Any], group: Group) -> None:
    result = provider.post_contract(connection, sign(connection, group[OIN_A]), peer=group[OIN_A])

    assert result.status_code == 201, result.text
    view = provider.service.get(hash_of(connection))
    assert view.content == connection
    assert set(view.signatures["accept"]) == {OIN_A}
    assert view.state == "proposed"  # B has not accepted yet
    # The submitter is remembered with the address from Fsc-Manager-Address.
    peer = provider.store.get_peer(OIN_A)
    assert peer is not None
    assert peer.manager_address == "https://manager-01.test.example:8443"


def test_repeated_submission_is_idempotent(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    signature = sign(connection, group[OIN_A])
    first = provider.post_contract(connection, signature, peer=group[OIN_A])
    again = provider.post_contract(connection, signature, peer=group[OIN_A])

    assert first.status_code == again.status_code == 201
    listed = provider.store.list_contracts(peer_id=OIN_A)
    assert [row.content_hash for row in listed] == [hash_of(connection)]
    assert provider.service.get(hash_of(connection)).signatures["accept"] == {OIN_A: signature}


def test_missing_manager_address_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    result = provider.post_contract(
        connection, sign(connection, group[OIN_A]), peer=group[OIN_A], address=None
    )

    body = assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")
    assert "Fsc-Manager-Address" in body["message"]
    assert provider.store.get_contract(hash_of(connection)) is None


@pytest.mark.parametrize(
    "address", ["http://manager.test.example:8443", "https://manager.test.example", "nonsense"]
)
def test_manager_address_must_be_https_with_port(
    provider: Api, connection: dict[str, Any], group: Group, address: str
) -> None:
    result = provider.post_contract(
        connection, sign(connection, group[OIN_A]), peer=group[OIN_A], address=address
    )

    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")


@pytest.mark.parametrize("body", [b"not json", b"{", b"[1, 2]", b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_refused(
    provider: Api, group: Group, body: bytes
) -> None:
    headers = {"Fsc-Manager-Address": "https://manager-01.test.example:8443"}
    result = provider.client.simulate_post(
        "/v1/contracts",
        body=body,
        headers={**headers, **peer_headers(group[OIN_A]), "Content-Type": "application/json"},
    )

    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")


def test_missing_signature_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    result = provider.post_contract(connection, None, peer=group[OIN_A])

    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")
    assert provider.store.get_contract(hash_of(connection)) is None


def test_content_breaking_the_schema_is_refused(provider: Api, group: Group) -> None:
    broken = content(connection_data())
    del broken["validity"]

    result = provider.post_contract(broken, "a.b.c", peer=group[OIN_A])

    assert_fsc_error(result, 400, "ERROR_CODE_CONTRACT_INVALID")


def test_wrong_group_id_is_refused(provider: Api, group: Group) -> None:
    other = content(
        connection_data(thumbprint=group[OIN_A].public_key_thumbprint),
        group_id="another-group",
    )

    result = provider.post_contract(other, sign(other, group[OIN_A]), peer=group[OIN_A])

    body = assert_fsc_error(result, 422, "ERROR_CODE_INCORRECT_GROUP_ID")
    assert "another-group" in body["message"]


def test_submitting_peer_not_on_the_contract_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    # D is on no grant of the A -> B contract; it sends it signed by itself.
    result = provider.post_contract(connection, sign(connection, group[OIN_D]), peer=group[OIN_D])

    body = assert_fsc_error(result, 422, "ERROR_CODE_PEER_NOT_PART_OF_CONTRACT")
    assert OIN_D in body["message"]
    assert provider.store.get_contract(hash_of(connection)) is None


def test_receiving_peer_not_on_the_contract_is_refused(provider: Api, group: Group) -> None:
    # A connection from A to a service of C, sent to B.
    elsewhere = content(
        connection_data(service_peer=OIN_C, thumbprint=group[OIN_A].public_key_thumbprint)
    )

    result = provider.post_contract(elsewhere, sign(elsewhere, group[OIN_A]), peer=group[OIN_A])

    body = assert_fsc_error(result, 422, "ERROR_CODE_PEER_NOT_PART_OF_CONTRACT")
    assert OIN_B in body["message"]


def test_signature_of_another_peer_than_the_sender_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    # A sends the contract with an accept signature that D made (a valid one, of the Group).
    result = provider.post_contract(connection, sign(connection, group[OIN_D]), peer=group[OIN_A])

    body = assert_fsc_error(result, 422, "ERROR_CODE_PEER_ID_SIGNATURE_MISMATCH")
    assert OIN_A in body["message"]
    assert OIN_D in body["message"]
    assert provider.store.get_contract(hash_of(connection)) is None


def test_tampered_content_with_the_original_signature_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    signature = sign(connection, group[OIN_A])
    tampered = copy.deepcopy(connection)
    tampered["validity"]["not_after"] += DAY

    result = provider.post_contract(tampered, signature, peer=group[OIN_A])

    body = assert_fsc_error(result, 422, "ERROR_CODE_SIGNATURE_CONTRACT_CONTENT_HASH_MISMATCH")
    assert hash_of(connection) in body["message"]
    assert hash_of(tampered) in body["message"]
    assert provider.store.get_contract(hash_of(tampered)) is None


def _corrupt(jws: str) -> str:
    header, payload, signature = jws.split(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


def test_bad_signature_bytes_are_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    result = provider.post_contract(
        connection, _corrupt(sign(connection, group[OIN_A])), peer=group[OIN_A]
    )

    assert_fsc_error(result, 422, "ERROR_CODE_SIGNATURE_VERIFICATION_FAILED")
    assert provider.store.get_contract(hash_of(connection)) is None


@pytest.mark.parametrize("signature", ["not-a-jws", "a.b", "...", "eyJ9.e30.AAAA"])
def test_malformed_signature_is_refused(
    provider: Api, connection: dict[str, Any], group: Group, signature: str
) -> None:
    result = provider.post_contract(connection, signature, peer=group[OIN_A])

    assert_fsc_error(result, 422, "ERROR_CODE_SIGNATURE_VERIFICATION_FAILED")


def test_signature_with_an_algorithm_fsc_does_not_allow_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    _header, payload, signature = sign(connection, group[OIN_A]).split(".")
    hs256 = "eyJhbGciOiJIUzI1NiJ9"  # {"alg":"HS256"}

    result = provider.post_contract(connection, f"{hs256}.{payload}.{signature}", peer=group[OIN_A])

    assert_fsc_error(result, 422, "ERROR_CODE_UNKNOWN_ALGORITHM_SIGNATURE")


def test_signature_by_a_certificate_of_another_ca_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    # group.foreign carries OIN_A but was issued by a CA the Group does not trust.
    foreign = group.foreign
    provider.store.put_certificate(
        foreign.thumbprint, foreign.oin, pem(foreign.chain), foreign.certificate.not_valid_after_utc
    )
    signature = create_signature(
        Contract.from_json(connection), SignatureType.ACCEPT, foreign.signer, foreign.der, NOW
    )

    result = provider.post_contract(connection, signature, peer=group[OIN_A])

    assert_fsc_error(result, 422, "ERROR_CODE_SIGNATURE_VERIFICATION_FAILED")


def test_signature_of_the_wrong_type_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    result = provider.post_contract(
        connection, sign(connection, group[OIN_A], "reject"), peer=group[OIN_A]
    )

    assert_fsc_error(result, 422, "ERROR_CODE_SIGNATURE_VERIFICATION_FAILED")


def test_publication_grant_mixed_with_a_connection_grant_is_refused(
    provider: Api, group: Group
) -> None:
    mixed = content(
        connection_data(thumbprint=group[OIN_A].public_key_thumbprint),
        publication_data(),
    )

    result = provider.post_contract(mixed, "a.b.c", peer=group[OIN_A])

    body = assert_fsc_error(result, 422, "ERROR_CODE_GRANT_COMBINATION_NOT_ALLOWED")
    assert "GRANT_TYPE_SERVICE_PUBLICATION" in body["message"]


def test_unknown_hash_algorithm_is_refused(provider: Api, group: Group) -> None:
    unknown = content(
        connection_data(thumbprint=group[OIN_A].public_key_thumbprint),
        hash_algorithm="HASH_ALGORITHM_SHA2_256",
    )

    result = provider.post_contract(unknown, "a.b.c", peer=group[OIN_A])

    body = assert_fsc_error(result, 422, "ERROR_CODE_UNKNOWN_HASH_ALGORITHM_HASH")
    assert "HASH_ALGORITHM_SHA2_256" in body["message"]


def test_badly_formed_public_key_thumbprint_is_refused(provider: Api, group: Group) -> None:
    upper = content(connection_data(thumbprint=group[OIN_A].public_key_thumbprint.upper()))

    result = provider.post_contract(upper, "a.b.c", peer=group[OIN_A])

    assert_fsc_error(result, 422, "ERROR_CODE_INCORRECT_PUBLIC_KEY_THUMBPRINT")


def test_connection_to_a_service_this_peer_does_not_offer_is_refused(
    provider: Api, group: Group
) -> None:
    unknown = content(
        connection_data(name="onbekend", thumbprint=group[OIN_A].public_key_thumbprint)
    )

    result = provider.post_contract(unknown, sign(unknown, group[OIN_A]), peer=group[OIN_A])

    body = assert_fsc_error(result, 422, "ERROR_CODE_CONTRACT_INVALID")
    assert "onbekend" in body["message"]
    assert provider.store.get_contract(hash_of(unknown)) is None


def test_connection_before_any_publication_is_refused(
    bare_provider: Api, connection: dict[str, Any], group: Group
) -> None:
    result = bare_provider.post_contract(
        connection, sign(connection, group[OIN_A]), peer=group[OIN_A]
    )

    assert_fsc_error(result, 422, "ERROR_CODE_CONTRACT_INVALID")


def test_publication_offered_by_another_peer_than_the_service_is_refused(
    directory: Api, group: Group
) -> None:
    # D asks directory C to publish a service of B, on a contract that names D as well.
    publication = content(
        publication_data(service_peer=OIN_B), publication_data(service_peer=OIN_D)
    )

    result = directory.post_contract(
        publication, sign(publication, group[OIN_D]), peer=group[OIN_D]
    )

    assert_fsc_error(result, 422, "ERROR_CODE_PEER_NOT_PART_OF_CONTRACT")


class _JwksFailing:
    """The signer's Manager, asked for its certificates (GET /.well-known/jwks.json), fails."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.asked: list[str] = []

    async def jwks(self, address: str) -> dict[str, Any]:
        self.asked.append(address)
        raise PeerCallError(address, "no answer", status=self.status, code=None)

    async def check_resolution(self, address: str) -> None:
        return None  # the address resolves to where a Manager may be


@pytest.mark.parametrize(
    ("status", "answer", "code"),
    [
        (None, 503, "ERROR_CODE_SIGNER_CERTIFICATE_UNAVAILABLE"),  # unreachable: try again
        (502, 503, "ERROR_CODE_SIGNER_CERTIFICATE_UNAVAILABLE"),
        (404, 422, "ERROR_CODE_SIGNATURE_VERIFICATION_FAILED"),  # it has no such certificate
    ],
)
def test_a_signer_certificate_that_cannot_be_fetched_now_is_no_refusal(
    provider: Api,
    connection: dict[str, Any],
    group: Group,
    status: int | None,
    answer: int,
    code: str,
) -> None:
    """The sender takes a 4xx as a refusal and tries again an hour later; a Manager that
    merely could not be asked gets a 503, which the sender retries within seconds."""
    renewed = group.ca.issue(OIN_A, key=group[OIN_A].key)  # a certificate not known here
    signature = create_signature(
        Contract.from_json(connection), SignatureType.ACCEPT, group[OIN_A].signer, renewed.der, NOW
    )
    failing = _JwksFailing(status)
    provider.service.client = failing  # type: ignore[assignment]

    result = provider.post_contract(connection, signature, peer=group[OIN_A])

    assert_fsc_error(result, answer, code)
    assert failing.asked == [address_of(OIN_A)]
    assert provider.store.get_contract(hash_of(connection)) is None
    assert PeerCallError("x", "y", status=result.status_code, code=code).permanent == (answer < 500)
