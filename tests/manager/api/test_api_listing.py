"""GET /v1/contracts: the contracts that name the requesting peer, with filters and cursor
pagination (manager.yaml ``/contracts`` get; core "Providing contracts")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from apitest import Api, assert_fsc_error, hash_of, sign
from contracttest import (
    OIN_A,
    OIN_B,
    OIN_C,
    OIN_D,
    Group,
    PeerCredentials,
    T,
    connection_data,
    content,
)

from appliance.hsm.jws import b64url_decode
from appliance.manager.contracts.signatures import SignatureType


def _listing(api: Api, peer: PeerCredentials, **params: str) -> dict[str, Any]:
    result = api.get("/v1/contracts", peer=peer, params=params)
    assert result.status_code == 200, result.text
    body: dict[str, Any] = json.loads(result.text)
    assert set(body) == {"contracts", "pagination"}
    assert set(body["pagination"]) == {"next_cursor"}
    return body


def _hashes(body: dict[str, Any]) -> list[str]:
    return [hash_of(contract["content"]) for contract in body["contracts"]]


def _connections(api: Api, group: Group, count: int) -> list[str]:
    """``count`` contracts between A and B, created one minute apart (oldest first)."""
    digests = []
    for index in range(count):
        item = content(
            connection_data(thumbprint=group[OIN_A].public_key_thumbprint),
            iv=f"0197b000-0000-7000-8000-{index:012d}",
            created_at=T - 3600 + 60 * index,
        )
        result = api.post_contract(item, sign(item, group[OIN_A]), peer=group[OIN_A])
        assert result.status_code == 201, result.text
        digests.append(hash_of(item))
    return digests


def test_only_contracts_naming_the_requesting_peer_are_listed(
    provider: Api, publication: dict[str, Any], connection: dict[str, Any], group: Group
) -> None:
    provider.post_contract(connection, sign(connection, group[OIN_A]), peer=group[OIN_A])

    assert _hashes(_listing(provider, group[OIN_A])) == [hash_of(connection)]
    assert _hashes(_listing(provider, group[OIN_C])) == [hash_of(publication)]
    assert _listing(provider, group[OIN_D]) == {"contracts": [], "pagination": {"next_cursor": ""}}


def test_contract_and_signatures_have_the_manager_yaml_shape(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    accept = sign(connection, group[OIN_A])
    provider.post_contract(connection, accept, peer=group[OIN_A])
    provider.service.sign(hash_of(connection), SignatureType.ACCEPT)  # B accepts too

    (listed,) = _listing(provider, group[OIN_A])["contracts"]

    assert set(listed) == {"content", "signatures"}
    assert listed["content"] == connection
    signatures = listed["signatures"]
    assert set(signatures) == {"accept", "reject", "revoke"}
    assert signatures["reject"] == {}
    assert signatures["revoke"] == {}
    assert set(signatures["accept"]) == {OIN_A, OIN_B}
    assert signatures["accept"][OIN_A] == accept
    own = json.loads(b64url_decode(signatures["accept"][OIN_B].split(".")[1]))
    assert own["contract_content_hash"] == hash_of(connection)
    assert own["type"] == "accept"
    assert own["signed_at"] == T


def test_order_of_grants_is_kept(provider: Api, group: Group) -> None:
    # core "Contracts": the order of items in arrays is persisted (hashes depend on it).
    thumbprint = group[OIN_A].public_key_thumbprint
    grants = [
        connection_data(thumbprint=thumbprint, properties={"purpose": "zeta"}),
        connection_data(thumbprint=thumbprint, properties={"purpose": "alpha"}),
    ]
    two = content(*grants)
    assert (
        provider.post_contract(two, sign(two, group[OIN_A]), peer=group[OIN_A]).status_code == 201
    )

    (listed,) = _listing(provider, group[OIN_A])["contracts"]

    assert listed["content"]["grants"] == grants
    assert hash_of(listed["content"]) == hash_of(two)


def test_grant_type_filter(
    provider: Api, publication: dict[str, Any], connection: dict[str, Any], group: Group
) -> None:
    provider.post_contract(connection, sign(connection, group[OIN_A]), peer=group[OIN_A])
    # B is on both contracts; the directory's peer would see only the publication.
    b = group[OIN_B]

    connections = _listing(provider, b, grant_type="GRANT_TYPE_SERVICE_CONNECTION")
    publications = _listing(provider, b, grant_type="GRANT_TYPE_SERVICE_PUBLICATION")
    delegated = _listing(provider, b, grant_type="GRANT_TYPE_DELEGATED_SERVICE_CONNECTION")

    assert _hashes(connections) == [hash_of(connection)]
    assert _hashes(publications) == [hash_of(publication)]
    assert delegated["contracts"] == []


def test_unknown_grant_type_is_refused(provider: Api, group: Group) -> None:
    result = provider.get(
        "/v1/contracts", peer=group[OIN_A], params={"grant_type": "GRANT_TYPE_NONSENSE"}
    )

    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")


def test_grant_hash_filter_takes_a_comma_separated_list_and_ignores_pagination(
    provider: Api, group: Group
) -> None:
    digests = _connections(provider, group, 4)
    grant_hashes = {d: provider.service.get(d).grant_hashes[0] for d in digests}
    wanted = [grant_hashes[digests[0]], grant_hashes[digests[2]]]

    body = _listing(
        provider,
        group[OIN_A],
        grant_hash=",".join(wanted),
        limit="1",
        cursor=digests[3],
        grant_type="GRANT_TYPE_SERVICE_PUBLICATION",
    )

    assert sorted(_hashes(body)) == sorted([digests[0], digests[2]])
    assert body["pagination"]["next_cursor"] == ""


def test_grant_hash_filter_still_only_shows_the_requesting_peers_contracts(
    provider: Api, publication: dict[str, Any], group: Group
) -> None:
    grant = provider.service.get(hash_of(publication)).grant_hashes[0]

    assert _listing(provider, group[OIN_A], grant_hash=grant)["contracts"] == []
    assert _hashes(_listing(provider, group[OIN_C], grant_hash=grant)) == [hash_of(publication)]


def test_cursor_pagination_newest_first_by_default(provider: Api, group: Group) -> None:
    digests = _connections(provider, group, 5)
    newest_first = list(reversed(digests))

    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = _listing(provider, group[OIN_A], **params)
        seen += _hashes(body)
        pages += 1
        cursor = body["pagination"]["next_cursor"]
        if not cursor:
            break
        assert pages < 10

    assert seen == newest_first
    assert pages == 3


def test_cursor_pagination_ascending(provider: Api, group: Group) -> None:
    digests = _connections(provider, group, 3)

    first = _listing(provider, group[OIN_A], limit="2", sort_order="SORT_ORDER_ASCENDING")
    second = _listing(
        provider,
        group[OIN_A],
        limit="2",
        sort_order="SORT_ORDER_ASCENDING",
        cursor=first["pagination"]["next_cursor"],
    )

    assert _hashes(first) == digests[:2]
    assert first["pagination"]["next_cursor"] == digests[1]
    assert _hashes(second) == digests[2:]
    assert second["pagination"]["next_cursor"] == ""
    descending = _listing(provider, group[OIN_A], sort_order="SORT_ORDER_DESCENDING")
    assert _hashes(descending) == list(reversed(digests))


@pytest.mark.parametrize(
    "params",
    [
        {"sort_order": "SORT_ORDER_SIDEWAYS"},
        {"cursor": "$1$1$unknown"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
    ],
)
def test_bad_pagination_parameters_are_refused(
    provider: Api, group: Group, params: dict[str, str]
) -> None:
    result = provider.get("/v1/contracts", peer=group[OIN_A], params=params)

    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")


def test_a_cursor_must_be_one_of_the_callers_own_contracts(provider: Api, group: Group) -> None:
    """Otherwise the cursor would tell any peer whether a content hash exists here."""
    digests = _connections(provider, group, 2)
    # D is on none of A and B's contracts: their hashes are unknown cursors to D.
    result = provider.get("/v1/contracts", peer=group[OIN_D], params={"cursor": digests[0]})
    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")
    # A itself may page from it.
    assert _listing(provider, group[OIN_A], cursor=digests[1], limit="1")["contracts"]
