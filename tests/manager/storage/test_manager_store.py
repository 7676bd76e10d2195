"""ManagerStore on SQLite and PostgreSQL: contracts, signatures, peers, certificates, services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from managerdata import (
    GROUP,
    START,
    canonical,
    connection_grant,
    jws,
    make_contract,
    publication_grant,
)

from appliance.manager.storage import (
    DuplicateIvError,
    GrantRow,
    ManagerStore,
    UnknownContractError,
    UnknownCursorError,
)

P1, P2, P3, DIR = (
    "00000000000000000001",
    "00000000000000000002",
    "00000000000000000003",
    "0" * 19 + "9",
)


def test_round_trip_keeps_content_and_array_order_byte_for_byte(store: ManagerStore) -> None:
    # Arrays in an order no sort would give, non-ASCII text, nested arrays: all must survive.
    grants = [
        connection_grant(P2, P3, "zaken", scopes=["z", "a", "m"], nested=[[3, 1], [2]]),
        connection_grant(P2, P1, "adressen", label="Gemeente Één — ü"),
        connection_grant(P1, P3, "basis"),
    ]
    contract = make_contract(grants)
    assert store.put_contract(**contract.kwargs()) is True

    stored = store.get_contract(contract.content_hash)
    assert stored is not None
    assert stored.content_json == contract.content_json
    assert stored.content_json.encode() == contract.content_json.encode()
    assert [grant.grant_hash for grant in stored.grants] == [g.grant_hash for g in contract.grants]
    assert [grant.data_json for grant in stored.grants] == [canonical(g) for g in grants]
    assert stored.grants == contract.grants
    assert (stored.group_id, stored.iv, stored.hash_algorithm) == (
        GROUP,
        contract.iv,
        "HASH_ALGORITHM_SHA3_512",
    )
    assert stored.created_at == START
    assert stored.not_after == START + timedelta(days=365)
    assert stored.peer_ids == (P2, P3, P1)


def test_stored_json_is_not_reserialised(store: ManagerStore) -> None:
    """Whatever text was received is what comes back, even if another serialisation exists."""
    text = '{"grants":[{"data":{"b":1,"a":[2,1]}}],"iv":"x"}'
    contract = make_contract([connection_grant(P1, P2)], content_json=text)
    store.put_contract(**contract.kwargs())
    stored = store.get_contract(contract.content_hash)
    assert stored is not None
    assert stored.content_json == text


def test_times_come_back_as_aware_utc(store: ManagerStore) -> None:
    amsterdam_summer = timezone(timedelta(hours=2))
    created = datetime(2026, 6, 1, 14, 30, 15, 123456, tzinfo=amsterdam_summer)
    contract = make_contract([connection_grant(P1, P2)], created_at=created)
    store.put_contract(**contract.kwargs(), received_at=created)
    stored = store.get_contract(contract.content_hash)
    assert stored is not None
    for moment in (stored.created_at, stored.received_at):
        assert moment == created
        assert moment.tzinfo is UTC
        assert moment.hour == 12
        assert moment.microsecond == 123456


def test_naive_times_are_refused(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    arguments = contract.kwargs() | {"created_at": datetime(2026, 1, 1)}
    with pytest.raises(ValueError, match="timezone-aware"):
        store.put_contract(**arguments)
    assert store.get_contract(contract.content_hash) is None


def test_a_contract_without_grants_is_refused(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    with pytest.raises(ValueError, match="at least one grant"):
        store.put_contract(**(contract.kwargs() | {"grants": ()}))


def test_storing_the_same_contract_again_changes_nothing(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    assert store.put_contract(**contract.kwargs()) is True
    assert store.put_contract(**contract.kwargs()) is False
    assert len(store.list_contracts()) == 1


def test_duplicate_iv_in_a_group_is_refused(store: ManagerStore) -> None:
    first = make_contract([connection_grant(P1, P2)])
    other = make_contract([connection_grant(P1, P3)], iv=first.iv)
    store.put_contract(**first.kwargs())
    with pytest.raises(DuplicateIvError) as raised:
        store.put_contract(**other.kwargs())
    assert raised.value.existing_hash == first.content_hash
    assert store.get_contract(other.content_hash) is None
    assert store.list_contracts(peer_id=P3) == []  # no grant or peer row was left behind


def test_the_same_iv_in_another_group_is_a_different_contract(store: ManagerStore) -> None:
    first = make_contract([connection_grant(P1, P2)])
    elsewhere = make_contract([connection_grant(P1, P2)], iv=first.iv, group_id="other-group")
    assert store.put_contract(**first.kwargs())
    assert store.put_contract(**elsewhere.kwargs())


def test_contracts_for_a_peer(store: ManagerStore) -> None:
    one_two = make_contract([connection_grant(P1, P2)])
    two_three = make_contract([connection_grant(P2, P3)], created_at=START + timedelta(hours=1))
    publication = make_contract(
        [publication_grant(P1, DIR, "zaken")], created_at=START + timedelta(hours=2)
    )
    for contract in (one_two, two_three, publication):
        store.put_contract(**contract.kwargs())

    def hashes(**filters: object) -> list[str]:
        return [row.content_hash for row in store.list_contracts(**filters)]  # type: ignore[arg-type]

    assert hashes(peer_id=P1) == [one_two.content_hash, publication.content_hash]
    assert hashes(peer_id=P2) == [one_two.content_hash, two_three.content_hash]
    assert hashes(peer_id=DIR) == [publication.content_hash]
    assert hashes(peer_id="00000000000000000404") == []
    assert hashes(peer_id=P1, grant_type="GRANT_TYPE_SERVICE_PUBLICATION") == [
        publication.content_hash
    ]
    assert hashes(grant_type="GRANT_TYPE_SERVICE_CONNECTION") == [
        one_two.content_hash,
        two_three.content_hash,
    ]
    assert hashes(content_hashes=[two_three.content_hash, "$1$1$none"]) == [two_three.content_hash]
    assert hashes(grant_hashes=[publication.grants[0].grant_hash]) == [publication.content_hash]


def test_a_grant_hash_may_appear_in_several_contracts(store: ManagerStore) -> None:
    first = make_contract([connection_grant(P1, P2)])
    second = make_contract([connection_grant(P1, P3)], created_at=START + timedelta(minutes=1))
    shared = GrantRow.from_data(first.grants[0].grant_hash, second.grants[0].data_json)
    store.put_contract(**first.kwargs())
    store.put_contract(**(second.kwargs() | {"grants": (shared,)}))
    found = store.list_contracts(grant_hashes=[shared.grant_hash])
    assert [row.content_hash for row in found] == [first.content_hash, second.content_hash]


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_pagination_walks_every_contract_once_in_a_stable_order(
    store: ManagerStore, descending: bool
) -> None:
    # Several contracts share a creation time: the content hash breaks the tie (in the
    # database's collation, so the expected order is the one-page listing's, checked apart).
    contracts = [
        make_contract([connection_grant(P1, P2)], created_at=START + timedelta(minutes=i // 3))
        for i in range(11)
    ]
    for contract in contracts:
        store.put_contract(**contract.kwargs())
    one_page = store.list_contracts(peer_id=P1, limit=1000, descending=descending)
    expected = [row.content_hash for row in one_page]
    assert sorted(expected) == sorted(c.content_hash for c in contracts)
    times = [row.created_at for row in one_page]
    assert times == sorted(times, reverse=descending)
    assert expected == [
        row.content_hash
        for row in reversed(store.list_contracts(peer_id=P1, limit=1000, descending=not descending))
    ]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = store.list_contracts(peer_id=P1, after=cursor, limit=4, descending=descending)
        pages += 1
        seen.extend(row.content_hash for row in page)
        if len(page) < 4:
            break
        cursor = page[-1].content_hash
    assert seen == expected
    assert pages == 3
    assert store.list_contracts(after=expected[-1], descending=descending) == []


def test_an_unknown_cursor_is_an_error(store: ManagerStore) -> None:
    with pytest.raises(UnknownCursorError):
        store.list_contracts(after="$1$1$nothing-here")
    with pytest.raises(ValueError, match="limit"):
        store.list_contracts(limit=0)


def test_signatures_are_idempotent(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    store.put_contract(**contract.kwargs())
    signed = START + timedelta(minutes=5)
    token = jws(contract.content_hash, P1, "accept", signed)

    assert store.add_signature(contract.content_hash, P1, "accept", token, signed, "x5t-1") is True
    assert store.add_signature(contract.content_hash, P1, "accept", token, signed, "x5t-1") is False
    assert store.add_signature(contract.content_hash, P2, "accept", "other", signed, "x5t-2")
    assert store.add_signature(contract.content_hash, P1, "revoke", "revoked", signed, "x5t-1")

    found = store.signatures(contract.content_hash)
    assert [(s.signature_type, s.peer_id) for s in found] == [
        ("accept", P1),
        ("accept", P2),
        ("revoke", P1),
    ]
    assert found[0].jws == token
    assert found[0].signed_at == signed
    assert found[0].certificate_thumbprint == "x5t-1"


def test_a_later_signature_replaces_an_earlier_one_and_never_the_reverse(
    store: ManagerStore,
) -> None:
    """A peer signs again after renewing its certificate; a replayed old one changes nothing."""
    contract = make_contract([connection_grant(P1, P2)])
    store.put_contract(**contract.kwargs())
    first, renewed = START + timedelta(days=1), START + timedelta(days=200)
    store.add_signature(contract.content_hash, P1, "accept", "old-jws", first, "old-cert")

    assert store.add_signature(contract.content_hash, P1, "accept", "new-jws", renewed, "new-cert")
    assert not store.add_signature(
        contract.content_hash, P1, "accept", "old-jws", first, "old-cert"
    )
    (kept,) = store.signatures(contract.content_hash)
    assert (kept.jws, kept.signed_at, kept.certificate_thumbprint) == (
        "new-jws",
        renewed,
        "new-cert",
    )


def test_a_signature_needs_its_contract(store: ManagerStore) -> None:
    with pytest.raises(UnknownContractError):
        store.add_signature("$1$1$missing", P1, "accept", "jws", START, "x5t")
    contract = make_contract([connection_grant(P1, P2)])
    store.put_contract(**contract.kwargs())
    with pytest.raises(ValueError, match="signature type"):
        store.add_signature(contract.content_hash, P1, "approve", "jws", START, "x5t")  # type: ignore[arg-type]


def test_signatures_of_several_contracts_at_once(store: ManagerStore) -> None:
    first = make_contract([connection_grant(P1, P2)])
    second = make_contract([connection_grant(P1, P3)])
    unsigned = make_contract([connection_grant(P2, P3)])
    for contract in (first, second, unsigned):
        store.put_contract(**contract.kwargs())
    store.add_signature(first.content_hash, P1, "accept", "a", START, "t")
    store.add_signature(second.content_hash, P3, "reject", "b", START, "t")
    found = store.signatures_by_contract(
        [first.content_hash, second.content_hash, unsigned.content_hash]
    )
    assert {key: [s.jws for s in value] for key, value in found.items()} == {
        first.content_hash: ["a"],
        second.content_hash: ["b"],
    }


def test_peers_are_kept_and_listed(store: ManagerStore) -> None:
    store.upsert_peer(P2, name="Gemeente Twee", manager_address="https://two.example:8443")
    store.upsert_peer(P1, name="Gemeente Een")
    store.upsert_peer(P3, manager_address="https://three.example:8443")
    # A later call with only the address keeps the name: fields given as None stay as they are.
    later = START + timedelta(days=3)
    updated = store.upsert_peer(P1, manager_address="https://one.example:8443", now=later)
    assert (updated.name, updated.manager_address, updated.updated_at) == (
        "Gemeente Een",
        "https://one.example:8443",
        later,
    )

    assert [peer.peer_id for peer in store.list_peers()] == [P1, P2, P3]
    assert [peer.peer_id for peer in store.list_peers([P3, P1, "unknown"])] == [P1, P3]
    assert [peer.peer_id for peer in store.list_peers(name_contains="GEMEENTE")] == [P1, P2]
    assert [peer.peer_id for peer in store.list_peers(name_contains="%")] == []
    assert [peer.peer_id for peer in store.list_peers(after=P1, limit=1)] == [P2]
    three = store.get_peer(P3)
    assert three is not None
    assert (three.name, three.manager_address) == (None, "https://three.example:8443")
    assert store.get_peer("unknown") is None


def test_certificates_by_thumbprint(store: ManagerStore) -> None:
    expires = START + timedelta(days=730)
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" * 2
    assert store.put_certificate("x5t-new", P1, pem, expires) is True
    assert store.put_certificate("x5t-new", P1, pem, expires) is False
    store.put_certificate("x5t-old", P1, "old chain", START + timedelta(days=30))

    found = store.get_certificate("x5t-new")
    assert found is not None
    assert (found.peer_id, found.chain_pem, found.not_after) == (P1, pem, expires)
    assert store.get_certificate("x5t-none") is None
    assert [c.thumbprint for c in store.certificates_of(P1)] == ["x5t-new", "x5t-old"]


def test_services_of_the_directory(store: ManagerStore) -> None:
    zaken = make_contract([publication_grant(P1, DIR, "zaken")])
    adressen = make_contract([publication_grant(P2, DIR, "adressen")])
    for contract in (zaken, adressen):
        store.put_contract(**contract.kwargs())
    assert store.put_service(P1, "zaken", zaken.content_hash, "PROTOCOL_TCP_HTTP_1.1") is True
    assert store.put_service(P1, "zaken", zaken.content_hash, "PROTOCOL_TCP_HTTP_1.1") is False
    store.put_service(
        P2,
        "adressen",
        adressen.content_hash,
        "PROTOCOL_TCP_HTTP_2",
        inway_address="https://inway.two.example:443",
        delegator_peer_id=P3,
    )

    assert [(s.peer_id, s.service_name) for s in store.list_services()] == [
        (P1, "zaken"),
        (P2, "adressen"),
    ]
    (two,) = store.list_services(peer_id=P2)
    assert (two.protocol, two.inway_address, two.delegator_peer_id) == (
        "PROTOCOL_TCP_HTTP_2",
        "https://inway.two.example:443",
        P3,
    )
    assert store.remove_services_of_contract(zaken.content_hash) == 1
    assert [s.peer_id for s in store.list_services()] == [P2]
    with pytest.raises(UnknownContractError):
        store.put_service(P1, "zaken", "$1$1$missing", "PROTOCOL_TCP_HTTP_1.1")


def test_several_changes_in_one_transaction_stand_together(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    with store.transaction() as tx:
        tx.put_contract(**contract.kwargs())
        tx.add_signature(contract.content_hash, P2, "accept", "jws", START, "x5t")
        tx.upsert_peer(P2, manager_address="https://two.example:8443")
        assert tx.get_contract(contract.content_hash) is not None  # visible inside
    assert store.get_contract(contract.content_hash) is not None
    assert len(store.signatures(contract.content_hash)) == 1
    assert store.get_peer(P2) is not None


def test_grant_rows_name_every_peer_of_a_delegated_grant() -> None:
    data = {
        "type": "GRANT_TYPE_DELEGATED_SERVICE_CONNECTION",
        "outway": {"peer_id": P2, "public_key_thumbprint": "cd" * 32},
        "service": {
            "type": "SERVICE_TYPE_DELEGATED_SERVICE",
            "peer_id": P1,
            "name": "zaken",
            "delegator": {"peer_id": DIR},
        },
        "delegator": {"peer_id": P3},
    }
    grant = GrantRow.from_data("$1$4$hash", canonical(data))
    assert (grant.grant_type, grant.service_peer_id, grant.service_name) == (
        "GRANT_TYPE_DELEGATED_SERVICE_CONNECTION",
        P1,
        "zaken",
    )
    assert (grant.outway_peer_id, grant.delegator_peer_id, grant.service_delegator_peer_id) == (
        P2,
        P3,
        DIR,
    )
    assert grant.outway_public_key_thumbprint == "cd" * 32
    assert grant.peer_ids == (P1, P2, P3, DIR)
    with pytest.raises(ValueError, match="type"):
        GrantRow.from_data("$1$4$hash", "[1, 2]")
