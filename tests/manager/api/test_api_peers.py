"""GET /v1/peer, GET /v1/peers, PUT /v1/announce, GET /v1/services and
GET /v1/.well-known/jwks.json (manager.yaml; core "Peer listing", "Announce", "Service listing",
"Providing X.509 certificates")."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from apitest import Api, address_of, assert_fsc_error, hash_of, sign
from contracttest import (
    OIN_A,
    OIN_B,
    OIN_C,
    OIN_D,
    OIN_E,
    Group,
    content,
    publication_data,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.hsm.jws import b64url_decode
from appliance.manager.contracts.signatures import SignatureType


def _json(result: Any) -> Any:
    assert result.status_code == 200, result.text
    return json.loads(result.text)


# -- /peer ---------------------------------------------------------------------------------


def test_peer_info(bare_provider: Api, group: Group) -> None:
    info = _json(bare_provider.get("/v1/peer", peer=group[OIN_A]))

    assert info == {
        "peer_id": OIN_B,
        "peer_name": "Organisatie 02",
        "fsc_version": "1.0.0",
        # Delegated grants are built in (manager.yaml enabledExtensions).
        "enabled_extensions": {"EXTENSION_DELEGATION": "1.0.0"},
    }


# -- /announce and /peers ------------------------------------------------------------------


def test_announce_stores_the_address(bare_provider: Api, group: Group) -> None:
    result = bare_provider.announce(
        peer=group[OIN_A], address="https://manager-01.test.example:9443/"
    )

    assert result.status_code == 200, result.text
    peer = bare_provider.store.get_peer(OIN_A)
    assert peer is not None
    assert peer.manager_address == "https://manager-01.test.example:9443"
    assert peer.name == "Gemeente Test"  # the O of its certificate

    bare_provider.announce(peer=group[OIN_A], address="https://manager-01.test.example:8443")
    peer = bare_provider.store.get_peer(OIN_A)
    assert peer is not None
    assert peer.manager_address == "https://manager-01.test.example:8443"


def test_announce_without_address_is_refused(bare_provider: Api, group: Group) -> None:
    result = bare_provider.announce(peer=group[OIN_A], address=None)

    body = assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")
    assert "Fsc-Manager-Address" in body["message"]
    assert bare_provider.store.get_peer(OIN_A) is None


def test_announce_with_an_address_without_port_is_refused(bare_provider: Api, group: Group) -> None:
    result = bare_provider.announce(peer=group[OIN_A], address="https://a.test.example")

    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")
    assert bare_provider.store.get_peer(OIN_A) is None


def _announce_all(api: Api, group: Group, *oins: str) -> None:
    for oin in oins:
        assert api.announce(peer=group[oin]).status_code == 200


def test_peers_lists_the_known_peers(bare_provider: Api, group: Group) -> None:
    _announce_all(bare_provider, group, OIN_A, OIN_D)

    peers = _json(bare_provider.get("/v1/peers", peer=group[OIN_A]))

    assert set(peers) == {"peers", "pagination"}
    by_id = {peer["id"]: peer for peer in peers["peers"]}
    # A and D announced; B is this Manager; C is the directory from the configuration.
    assert set(by_id) == {OIN_A, OIN_B, OIN_C, OIN_D}
    assert by_id[OIN_A] == {
        "id": OIN_A,
        "name": "Gemeente Test",
        "manager_address": address_of(OIN_A),
    }
    assert by_id[OIN_B]["name"] == "Organisatie 02"
    assert by_id[OIN_C]["manager_address"] == address_of(OIN_C)


def test_peers_filtered_by_a_comma_separated_peer_id_list(bare_provider: Api, group: Group) -> None:
    _announce_all(bare_provider, group, OIN_A, OIN_D)

    peers = _json(
        bare_provider.get(
            "/v1/peers", peer=group[OIN_A], params={"peer_id": f"{OIN_A},{OIN_D}", "limit": "1"}
        )
    )

    assert sorted(peer["id"] for peer in peers["peers"]) == [OIN_A, OIN_D]
    assert peers["pagination"] == {"next_cursor": ""}


def test_peers_unknown_peer_id_gives_an_empty_list(bare_provider: Api, group: Group) -> None:
    peers = _json(
        bare_provider.get(
            "/v1/peers", peer=group[OIN_A], params={"peer_id": "00000009999999999999"}
        )
    )

    assert peers == {"peers": [], "pagination": {"next_cursor": ""}}


def test_peers_pagination(bare_provider: Api, group: Group) -> None:
    _announce_all(bare_provider, group, OIN_A, OIN_D)  # four peers: A, B, C, D

    ascending = {"limit": "3", "sort_order": "SORT_ORDER_ASCENDING"}
    first = _json(bare_provider.get("/v1/peers", peer=group[OIN_A], params=ascending))
    cursor = first["pagination"]["next_cursor"]
    second = _json(
        bare_provider.get("/v1/peers", peer=group[OIN_A], params={**ascending, "cursor": cursor})
    )

    assert [peer["id"] for peer in first["peers"]] == [OIN_A, OIN_B, OIN_C]
    assert cursor
    assert [peer["id"] for peer in second["peers"]] == [OIN_D]
    # manager.yaml: "an empty string if there are no more results".
    assert second["pagination"]["next_cursor"] == ""
    # manager.yaml's default order is descending.
    newest = _json(bare_provider.get("/v1/peers", peer=group[OIN_A], params={"limit": "3"}))
    assert [peer["id"] for peer in newest["peers"]] == [OIN_D, OIN_C, OIN_B]
    bad = bare_provider.get("/v1/peers", peer=group[OIN_A], params={"sort_order": "SIDEWAYS"})
    assert_fsc_error(bad, 400, "ERROR_CODE_REQUEST_INVALID")


@pytest.mark.parametrize("limit", ["0", "1001", "many"])
def test_peers_bad_limit_is_refused(bare_provider: Api, group: Group, limit: str) -> None:
    result = bare_provider.get("/v1/peers", peer=group[OIN_A], params={"limit": limit})

    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")


# -- /services -----------------------------------------------------------------------------


def _publish(directory: Api, group: Group, name: str, protocol: str, iv: str) -> str:
    """B offers ``name`` to directory C (B's accept); returns the content hash."""
    publication = content(publication_data(name=name, protocol=protocol), iv=iv)
    result = directory.post_contract(
        publication, sign(publication, group[OIN_B]), peer=group[OIN_B]
    )
    assert result.status_code == 201, result.text
    return hash_of(publication)


def test_services_lists_a_publication_once_it_is_valid(directory: Api, group: Group) -> None:
    digest = _publish(
        directory,
        group,
        "basisregistratie",
        "PROTOCOL_TCP_HTTP_2",
        "0197c000-0000-7000-8000-000000000001",
    )
    assert directory.service.get(digest).state == "proposed"
    before = _json(directory.get("/v1/services", peer=group[OIN_A]))
    assert before == {"services": [], "pagination": {"next_cursor": ""}}

    assert directory.service.sign(digest, SignatureType.ACCEPT).state == "valid"

    services = _json(directory.get("/v1/services", peer=group[OIN_A]))
    assert services == {
        "services": [
            {
                "type": "SERVICE_TYPE_SERVICE",
                "data": {
                    "type": "SERVICE_TYPE_SERVICE",
                    "peer": {
                        "id": OIN_B,
                        "name": "Gemeente Test",
                        "manager_address": address_of(OIN_B),
                    },
                    "name": "basisregistratie",
                    "protocol": "PROTOCOL_TCP_HTTP_2",
                },
            }
        ],
        "pagination": {"next_cursor": ""},
    }


def test_services_disappear_when_the_publication_is_revoked(directory: Api, group: Group) -> None:
    publication = content(publication_data(), iv="0197c000-0000-7000-8000-000000000002")
    directory.post_contract(publication, sign(publication, group[OIN_B]), peer=group[OIN_B])
    directory.service.sign(hash_of(publication), SignatureType.ACCEPT)
    assert _json(directory.get("/v1/services", peer=group[OIN_A]))["services"]

    revoke = sign(publication, group[OIN_B], "revoke")
    assert (
        directory.put_signature("revoke", publication, revoke, peer=group[OIN_B]).status_code == 201
    )

    assert _json(directory.get("/v1/services", peer=group[OIN_A]))["services"] == []


def test_services_listed_when_the_submitters_accept_is_the_last_to_arrive(
    directory: Api, group: Group
) -> None:
    # A delegated publication (E delegates to B): deliveries arrive out of order, so the
    # POST of the proposer E, with its accept, is the last signature the directory needs.
    delegated = content(
        publication_data(delegator=OIN_E), iv="0197c000-0000-7000-8000-000000000003"
    )
    digest = hash_of(delegated)
    accept_b = sign(delegated, group[OIN_B])
    assert (
        directory.put_signature("accept", delegated, accept_b, peer=group[OIN_B]).status_code == 201
    )
    directory.service.sign(digest, SignatureType.ACCEPT)
    assert directory.service.get(digest).state == "proposed"

    result = directory.post_contract(delegated, sign(delegated, group[OIN_E]), peer=group[OIN_E])

    assert result.status_code == 201, result.text
    assert directory.service.get(digest).state == "valid"
    services = _json(directory.get("/v1/services", peer=group[OIN_A]))["services"]
    assert [s["data"]["name"] for s in services] == ["basisregistratie"]


def test_services_filters(directory: Api, group: Group) -> None:
    for index, name in enumerate(["Basisregistratie", "kadaster", "parkeren"]):
        digest = _publish(
            directory,
            group,
            name,
            "PROTOCOL_TCP_HTTP_1.1",
            f"0197c000-0000-7000-8000-00000000001{index}",
        )
        directory.service.sign(digest, SignatureType.ACCEPT)

    def names(**params: str) -> list[str]:
        listing = _json(directory.get("/v1/services", peer=group[OIN_A], params=params))
        return sorted(s["data"]["name"] for s in listing["services"])

    assert names() == ["Basisregistratie", "kadaster", "parkeren"]
    assert names(service_name="BASIS") == ["Basisregistratie"]
    assert names(peer_id=OIN_B) == ["Basisregistratie", "kadaster", "parkeren"]
    assert names(peer_id=OIN_D) == []
    # "either condition": a peer_id that matches nothing does not hide a name match.
    assert names(peer_id=OIN_D, service_name="kada") == ["kadaster"]


# -- /.well-known/jwks.json ----------------------------------------------------------------


def test_jwks_publishes_the_signing_certificate(bare_provider: Api, group: Group) -> None:
    own = group[OIN_B]

    jwks = _json(bare_provider.get("/v1/.well-known/jwks.json", peer=group[OIN_A]))

    assert set(jwks) == {"keys"}
    (jwk,) = jwks["keys"]
    chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in jwk["x5c"]]
    assert chain[0] == own.certificate  # the leaf first
    assert chain == own.chain  # then the intermediate, and never the Group's root
    assert all(c.subject != c.issuer for c in chain)
    assert jwk["x5t#S256"] == own.thumbprint
    digest = hashlib.sha256(own.certificate.public_bytes(Encoding.DER)).digest()
    assert jwk["x5t#S256"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    key = own.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    numbers = key.public_numbers()
    assert jwk["kty"] == "EC"
    assert jwk["crv"] == "P-256"
    assert int.from_bytes(b64url_decode(jwk["x"]), "big") == numbers.x
    assert int.from_bytes(b64url_decode(jwk["y"]), "big") == numbers.y
    assert len(b64url_decode(jwk["x"])) == len(b64url_decode(jwk["y"])) == 32
    assert jwk["alg"] == "ES256"
    assert jwk["use"] == "sig"
