"""The directory's service listing in keyset pages (``ManagerStore.services_page``), on SQLite
and PostgreSQL: the pages hold exactly what the listing held when it was read whole, sorted
and filtered in Python (the way ``GET /v1/services`` worked before), and a page is read on
the primary key's index without sorting the table (docs/performance.md, "Cost growth")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from managerdata import make_contract, publication_grant
from queryplans import plan_text, statements_of

from appliance.manager.storage import ManagerStore, ServiceRow, UnknownCursorError
from appliance.manager.storage import schema as t

DIR = "00000001000000000099"
PEERS = [f"0000000100000000001{n}" for n in range(4)]
NAMES = ["Basisregistratie", "kadaster", "parkeren", "KADASTER-oud", "zaken_2", "a.b-c"]


def _key(row: ServiceRow) -> tuple[str, str, str]:
    return (row.peer_id, row.service_name, row.contract_hash)


def _fill(store: ManagerStore) -> list[ServiceRow]:
    """Every name for every peer under two publication contracts: 48 services."""
    contracts = [make_contract([publication_grant(PEERS[0], DIR, f"dienst{n}")]) for n in (1, 2)]
    for contract in contracts:
        store.put_contract(**contract.kwargs())
    for peer in PEERS:
        for name in NAMES:
            for contract in contracts:
                store.put_service(peer, name, contract.content_hash, "PROTOCOL_TCP_HTTP_1.1")
    return store.list_services()


def _old_listing(
    rows: list[ServiceRow], peer_id: str | None, name: str | None, descending: bool
) -> list[ServiceRow]:
    """What ``GET /v1/services`` listed before the keyset pages: everything, sorted and
    filtered in Python."""
    ordered = sorted(rows, key=_key, reverse=descending)
    wanted = (name or "").lower()
    if peer_id is None and not wanted:
        return ordered
    return [
        r for r in ordered if r.peer_id == peer_id or (wanted and wanted in r.service_name.lower())
    ]


def _walk(store: ManagerStore, limit: int, **filters: Any) -> list[ServiceRow]:
    found: list[ServiceRow] = []
    after = None
    while True:
        page = store.services_page(after=after, limit=limit, **filters)
        found.extend(page)
        if len(page) < limit:
            return found
        after = _key(page[-1])


FILTERS = [
    (None, None),
    (PEERS[2], None),
    (None, "kada"),
    (None, "KADA"),
    (PEERS[1], "parkeren"),  # either condition
    ("00000001000000000098", "%"),  # neither: LIKE's wildcard is a plain character
    (None, "_"),
]


def test_pages_hold_what_the_whole_listing_held(store: ManagerStore) -> None:
    rows = _fill(store)

    for peer_id, name in FILTERS:
        for descending in (False, True):
            expected = [_key(r) for r in _old_listing(rows, peer_id, name, descending)]
            for limit in (1, 5, 48, 100):
                walked = _walk(
                    store, limit, peer_id=peer_id, name_contains=name, descending=descending
                )
                assert [_key(r) for r in walked] == expected, (peer_id, name, descending, limit)


def test_a_cursor_must_be_a_listed_service(store: ManagerStore) -> None:
    rows = _fill(store)
    kadaster = next(r for r in rows if r.peer_id == PEERS[0] and r.service_name == "kadaster")

    with pytest.raises(UnknownCursorError):
        store.services_page(after=("00000001000000000098", "x", "$1$1$none"))
    with pytest.raises(UnknownCursorError):  # stored, but not listed under this filter
        store.services_page(peer_id=PEERS[3], after=_key(kadaster))
    assert store.services_page(name_contains="kada", after=_key(kadaster), limit=1)


def _plan(store: ManagerStore, **filters: Any) -> str:
    ((statement, parameters),) = statements_of(
        store.engine, lambda: store.services_page(limit=11, **filters)
    )
    return plan_text(store.engine, statement, parameters)


def test_a_page_reads_the_primary_key_index_without_sorting(store: ManagerStore) -> None:
    """Before the keyset pages, the listing read (and sorted) every row for each page."""
    contract = make_contract([publication_grant(PEERS[0], DIR, "dienst")])
    store.put_contract(**contract.kwargs())
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(
            t.services.insert(),
            [
                {
                    "peer_id": f"{n % 500:020d}",
                    "service_name": f"dienst-{n}",
                    "contract_hash": contract.content_hash,
                    "protocol": "PROTOCOL_TCP_HTTP_1.1",
                    "created_at": now,
                }
                for n in range(20_000)
            ],
        )
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))

    for filters in ({}, {"peer_id": PEERS[1]}, {"descending": True}):
        plan = _plan(store, **filters)

        if store.engine.dialect.name == "sqlite":
            assert (
                "USING INDEX sqlite_autoindex_services_1" in plan or "USING PRIMARY KEY" in plan
            ), plan
            assert "TEMP B-TREE" not in plan, plan
        else:
            assert "Index Scan" in plan, plan
            assert "pk_services" in plan, plan
            assert "Sort" not in plan, plan
