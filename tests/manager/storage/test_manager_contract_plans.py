"""How ``ManagerStore.list_contracts`` reads, on SQLite and PostgreSQL: a peer's page walks
ix_contract_peers_listing in order and stops (it sorted every contract of the peer before: a
page of 10 took 1.1 s at 100,000 contracts on SQLite), and a grant hash goes from
ix_grants_grant_hash to its contract (it probed every contract before: the token endpoint took
207 ms at 100,000). Paging results are checked in test_manager_store.py; this checks the plans
(docs/performance.md, "Cost growth")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
from managerdata import START, connection_grant, make_contract
from queryplans import plan_text, statements_of

from appliance.manager.storage import ManagerStore

P1, P2 = "00000001000000000001", "00000001000000000002"
COUNT = 1000


def _fill(store: ManagerStore) -> list[str]:
    """COUNT connections of P1 to P2 (each with its contract_peers rows, as stored);
    returns the grant hashes."""
    contracts = [
        make_contract([connection_grant(P2, P1)], created_at=START - timedelta(seconds=n))
        for n in range(COUNT)
    ]
    with store.transaction() as tx:
        for contract in contracts:
            tx.put_contract(**contract.kwargs())
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    return [c.grants[0].grant_hash for c in contracts]


def _plan(store: ManagerStore, action: Callable[[], object]) -> str:
    """The plan of the page's SELECT of contracts that ``action`` runs."""
    statement, parameters = next(
        s
        for s in statements_of(store.engine, action)
        if "FROM contracts" in s[0] and "ORDER BY" in s[0]
    )
    return plan_text(store.engine, statement, parameters)


def test_the_listing_reads_indexes_in_order(store: ManagerStore) -> None:
    """One filled store (filling is most of the time) for both checks."""
    hashes = _fill(store)
    _peer_pages_walk_the_listing_index(store)
    _a_grant_hash_reads_its_contract_from_the_grant_index(store, hashes)


def _peer_pages_walk_the_listing_index(store: ManagerStore) -> None:
    for descending in (True, False):
        last = store.list_contracts(peer_id=P1, limit=1000, descending=descending)[-1]
        for after in (None, last.content_hash):
            plan = _plan(
                store,
                lambda d=descending, a=after: store.list_contracts(
                    peer_id=P1, limit=10, after=a, descending=d
                ),
            )

            assert "ix_contract_peers_listing" in plan, plan
            if store.engine.dialect.name == "sqlite":
                assert "TEMP B-TREE" not in plan, plan
                continue
            assert "Sort" not in plan, plan
            if after is not None:  # a range that starts at the cursor, not a walk down to it
                cond = next(line for line in plan.splitlines() if "Index Cond: ((peer_id" in line)
                assert "created_at" in cond, plan


def _a_grant_hash_reads_its_contract_from_the_grant_index(
    store: ManagerStore, hashes: list[str]
) -> None:

    plan = _plan(store, lambda: store.list_contracts(grant_hashes=[hashes[567]], limit=100))

    assert "ix_grants_grant_hash" in plan, plan
    if store.engine.dialect.name == "sqlite":
        assert "SCAN contracts" not in plan, plan
    else:
        assert "Seq Scan" not in plan, plan
        assert "Index Scan using ix_contracts_created_at" not in plan, plan
    (found,) = store.list_contracts(grant_hashes=[hashes[567]])
    assert found.grants[0].grant_hash == hashes[567]
