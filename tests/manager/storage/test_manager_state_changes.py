"""The store's change number (``state_changes``, migration 0003) and
``ManagerStore.connection_grants``, which the outway's grant refresh reads every few seconds per
worker: each change of a contract's state columns gets the next number, a read after a number
returns only the contracts changed since (through ``ix_contracts_state_seq``, not every grant
of the outway: 5 us per grant and refresh before, 0.5 s of CPU per worker every 5 s at
100,000), and ``states.valid_at``/``next_clock_change`` follow the clock as the SQL state does
(docs/performance.md, "Cost growth")."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from managerdata import START, Contract, connection_grant, jws, make_contract
from queryplans import plan_text, statements_of

from appliance.manager.storage import ManagerStore
from appliance.manager.storage import schema as t
from appliance.manager.storage.rows import SignatureType
from appliance.manager.storage.states import clock_view, last_change, state_is, valid_at

A, B, C = "00000001000000000001", "00000001000000000002", "00000001000000000003"
THUMBPRINT = "ab" * 32  # managerdata.connection_grant's outway key
TYPES = ("GRANT_TYPE_SERVICE_CONNECTION", "GRANT_TYPE_DELEGATED_SERVICE_CONNECTION")
SIGNED = START + timedelta(hours=1)
CERTIFICATE_END = START + timedelta(days=30, milliseconds=250)  # not on a whole second


def _sign(store: ManagerStore, contract: Contract, peer: str, kind: SignatureType) -> bool:
    return store.add_signature(
        contract.content_hash,
        peer,
        kind,
        jws(contract.content_hash, peer, kind, SIGNED),
        SIGNED,
        f"cert-{peer}",
    )


def _accept(store: ManagerStore, contract: Contract) -> None:
    for peer in (A, B):
        _sign(store, contract, peer, "accept")


def _grants(store: ManagerStore, changed_after: int | None, now: datetime) -> tuple[int, set[str]]:
    seq, rows = store.connection_grants(A, THUMBPRINT, TYPES, changed_after=changed_after, now=now)
    return seq, {row.contract_hash for row in rows}


def test_each_state_change_gets_the_next_number_and_is_read_once(store: ManagerStore) -> None:
    now = START + timedelta(days=1)
    store.put_certificate(f"cert-{A}", A, "PEM", CERTIFICATE_END)
    first, second = (
        make_contract([connection_grant(B, A)], created_at=START - timedelta(seconds=n))
        for n in (1, 2)
    )
    theirs = make_contract([connection_grant(A, C)])  # C's outway, not A's
    for contract in (first, second, theirs):
        store.put_contract(**contract.kwargs())
    assert _grants(store, None, now) == (0, set())  # proposed: not yet usable
    assert _grants(store, 0, now) == (0, set())

    _accept(store, first)  # A's accept counts (its certificate is stored), B's not yet
    assert _grants(store, 0, now) == (2, {first.content_hash})  # changed, still proposed
    assert _grants(store, None, now) == (2, set())
    _sign(store, theirs, A, "accept")
    assert _grants(store, 2, now) == (3, set())  # another outway's contract

    # B's certificate makes B's accept count: the contract is valid, read once.
    store.put_certificate(f"cert-{B}", B, "PEM", CERTIFICATE_END)
    seq, changed = _grants(store, 3, now)
    assert seq == 4
    assert changed == {first.content_hash}
    assert _grants(store, 4, now) == (4, set())
    assert _grants(store, None, now) == (4, {first.content_hash})

    _accept(store, second)
    _sign(store, first, B, "revoke")
    assert _grants(store, 4, now) == (7, {first.content_hash, second.content_hash})
    assert _grants(store, None, now) == (7, {second.content_hash})
    # The same signature again changes nothing, and takes no number.
    assert not _sign(store, second, A, "accept")
    assert _grants(store, 7, now) == (7, set())
    with store.engine.connect() as conn:
        assert last_change(conn) == 7


def test_valid_at_and_next_clock_change_follow_the_sql_state(store: ManagerStore) -> None:
    for peer in (A, B):
        store.put_certificate(f"cert-{peer}", peer, "PEM", CERTIFICATE_END)
    contract = make_contract([connection_grant(B, A)])
    store.put_contract(**contract.kwargs())
    _accept(store, contract)
    _, (row,) = store.connection_grants(A, THUMBPRINT, TYPES, changed_after=0)
    boundaries = (row.not_before, row.accepted_until, row.not_after)
    assert row.accepted_until == CERTIFICATE_END
    moments = sorted(
        {
            edge + timedelta(microseconds=offset)
            for edge in boundaries
            if edge is not None
            for offset in (-1_000_001, -1_000_000, -999_999, -1, 0, 1, 999_999, 1_000_000)
        }
    )
    c = t.contracts.c
    for moment in moments:
        with store.engine.connect() as conn:
            in_sql = conn.execute(
                sa.select(sa.func.count())
                .select_from(t.contracts)
                .where(c.content_hash == contract.content_hash, state_is("valid", moment))
            ).scalar_one()
        here = valid_at(row.decision, row.not_before, row.not_after, row.accepted_until, moment)
        assert here == bool(in_sql), moment
        valid, change = clock_view(row.not_before, row.not_after, row.accepted_until, moment)
        assert valid == here
        if change is None:
            assert not here
            later = [m for m in moments if m > moment]
        else:
            assert change > moment
            later = [m for m in moments if moment < m < change]
        # Nothing changes before the moment it names (or ever, when it names none).
        for then in later:
            assert valid_at(
                row.decision, row.not_before, row.not_after, row.accepted_until, then
            ) == (here if change is not None else False), (moment, then)


def test_a_read_after_a_number_starts_at_the_changed_contracts(store: ManagerStore) -> None:
    contracts = [
        make_contract([connection_grant(B, A)], created_at=START - timedelta(seconds=n))
        for n in range(1000)
    ]
    with store.transaction() as tx:
        for contract in contracts:
            tx.put_contract(**contract.kwargs())
    for contract in contracts[:3]:
        _sign(store, contract, A, "accept")
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    (statement, parameters) = next(
        s
        for s in statements_of(
            store.engine,
            lambda: store.connection_grants(A, THUMBPRINT, TYPES, changed_after=2),
        )
        if "FROM contracts" in s[0]
    )
    plan = plan_text(store.engine, statement, parameters)
    if store.engine.dialect.name == "sqlite":
        assert "SEARCH contracts USING INDEX ix_contracts_state_seq (state_seq>?)" in plan, plan
        assert "SEARCH grants USING INDEX sqlite_autoindex_grants_1 (contract_hash=?)" in plan
        # Before: SEARCH grants USING INDEX ix_grants_outway_peer_id (outway_peer_id=?), or
        # SCAN grants: every grant of the outway, or every grant.
        assert "SCAN grants" not in plan, plan
        assert "SCAN contracts" not in plan, plan
        assert "ix_grants_outway_peer_id" not in plan, plan
    else:
        assert "ix_contracts_state_seq" in plan, plan
        assert "Seq Scan" not in plan, plan
        assert "ix_grants_outway_peer_id" not in plan, plan
