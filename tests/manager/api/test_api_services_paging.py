"""GET /v1/services in pages (the directory's listing, keyset paging in the store): every
service once, in order, following ``next_cursor``; the peers named on a page are the peers
table's; a cursor that names no listed service is a 400 in the FSC format."""

from __future__ import annotations

import json

from apitest import Api, assert_fsc_error, hash_of, sign
from contracttest import OIN_A, OIN_B, OIN_D, Group, content, publication_data

from appliance.manager.contracts.signatures import SignatureType


def _services(directory: Api, group: Group) -> str:
    """B's publication, valid at the directory; 12 more services of B and D listed under it."""
    publication = content(publication_data(), iv="0197c000-0000-7000-8000-000000000021")
    directory.post_contract(publication, sign(publication, group[OIN_B]), peer=group[OIN_B])
    digest = hash_of(publication)
    directory.service.sign(digest, SignatureType.ACCEPT)
    for n in range(6):
        for peer in (OIN_B, OIN_D):
            directory.store.put_service(peer, f"dienst-{n}", digest, "PROTOCOL_TCP_HTTP_1.1")
    directory.store.upsert_peer(OIN_D, name="Gemeente D", manager_address=None)
    return digest


def _walk(directory: Api, group: Group, **params: str) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    cursor = ""
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        result = directory.get("/v1/services", peer=group[OIN_A], params=query)
        assert result.status_code == 200, result.text
        body = json.loads(result.text)
        seen.extend((s["data"]["peer"]["id"], s["data"]["name"]) for s in body["services"])
        cursor = body["pagination"]["next_cursor"]
        if not cursor:
            return seen


def test_pages_list_every_service_once_in_order(directory: Api, group: Group) -> None:
    _services(directory, group)
    expected = sorted(
        [(OIN_B, "basisregistratie")]
        + [(p, f"dienst-{n}") for n in range(6) for p in (OIN_B, OIN_D)]
    )

    assert _walk(directory, group, limit="5", sort_order="SORT_ORDER_ASCENDING") == expected
    assert _walk(directory, group, limit="4") == expected[::-1]  # descending by default
    either = sorted([(OIN_B, "basisregistratie")] + [(OIN_D, f"dienst-{n}") for n in range(6)])
    assert _walk(directory, group, limit="1", peer_id=OIN_D, service_name="BASIS") == either[::-1]


def test_the_page_names_each_peer_from_the_peers_table(directory: Api, group: Group) -> None:
    _services(directory, group)

    result = directory.get("/v1/services", peer=group[OIN_A], params={"peer_id": OIN_D})

    peers = {
        json.dumps(s["data"]["peer"], sort_keys=True) for s in json.loads(result.text)["services"]
    }
    # D is known by name only (no address): the name, and an empty address.
    assert peers == {
        json.dumps({"id": OIN_D, "manager_address": "", "name": "Gemeente D"}, sort_keys=True)
    }


def test_an_unknown_cursor_is_refused(directory: Api, group: Group) -> None:
    digest = _services(directory, group)

    for cursor in ("nonsense", f"{OIN_D}/no-such-service/{digest}", f"{OIN_B}/dienst-1"):
        result = directory.get("/v1/services", peer=group[OIN_A], params={"cursor": cursor})
        assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")
    # Listed, but not under this filter.
    result = directory.get(
        "/v1/services",
        peer=group[OIN_A],
        params={"peer_id": OIN_B, "cursor": f"{OIN_D}/dienst-1/{digest}"},
    )
    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")
