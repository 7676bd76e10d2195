"""The contract state as SQL (storage/states.py): the stored inputs follow every change, the
clock-dependent part is computed at query time, and migration 0002 backfills existing rows."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from alembic import command
from managerdata import START, Contract, connection_grant, jws, make_contract

from appliance.manager.storage import ManagerStore, migrate
from appliance.manager.storage import schema as t
from appliance.manager.storage.database import alembic_config
from appliance.manager.storage.rows import SignatureType
from appliance.manager.storage.states import STATES, awaiting, state_column, state_is

A, B, C = "00000001000000000001", "00000001000000000002", "00000001000000000003"
LATER = START + timedelta(days=1)  # inside every contract's validity below


def _sign(
    store: ManagerStore, contract: Contract, peer: str, kind: SignatureType, cert: str = ""
) -> bool:
    return store.add_signature(
        contract.content_hash,
        peer,
        kind,
        jws(contract.content_hash, peer, kind, LATER),
        LATER,
        cert or f"cert-{peer}",
    )


def _certificate(store: ManagerStore, peer: str, not_after: datetime, thumb: str = "") -> None:
    store.put_certificate(thumb or f"cert-{peer}", peer, "PEM", not_after)


def _state(store: ManagerStore, contract: Contract, now: datetime) -> str:
    """The state column, and check that exactly that one of the filters selects it."""
    c = t.contracts.c
    with store.engine.connect() as conn:
        where = c.content_hash == contract.content_hash
        state = conn.execute(sa.select(state_column(now)).where(where)).scalar_one()
        matching = [
            name
            for name in STATES
            if conn.execute(sa.select(c.content_hash).where(where, state_is(name, now))).first()
        ]
    assert matching == [state]
    _check_awaiting(store, now)
    return str(state)


def _check_awaiting(store: ManagerStore, now: datetime) -> None:
    """``awaiting`` (read from contract_peers alone) holds for exactly the peers that have
    not signed a proposed contract: its decided and not_after follow the contract's,
    and a peer that signed nothing leaves accepted_until NULL."""
    cp = t.contract_peers.alias("cp")
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(cp.c.contract_hash, cp.c.peer_id, cp.c.signed, state_column(now)).join(
                t.contracts, t.contracts.c.content_hash == cp.c.contract_hash
            )
        ).all()
        assert rows
        for row in rows:
            found = conn.execute(
                sa.select(sa.func.count()).where(
                    cp.c.contract_hash == row.contract_hash, *awaiting(row.peer_id, now, cp)
                )
            ).scalar_one()
            assert found == (row.state == "proposed" and not row.signed), row


def _signed(store: ManagerStore, contract: Contract) -> dict[str, bool]:
    cp = t.contract_peers.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(cp.peer_id, cp.signed).where(cp.contract_hash == contract.content_hash)
        )
        return {row.peer_id: bool(row.signed) for row in rows}


def test_state_follows_signatures_certificates_and_the_clock(store: ManagerStore) -> None:
    far = START + timedelta(days=1000)
    _certificate(store, A, far)
    contract = make_contract([connection_grant(A, B)])
    store.put_contract(**contract.kwargs())
    assert _state(store, contract, LATER) == "proposed"
    assert _signed(store, contract) == {A: False, B: False}

    _sign(store, contract, A, "accept")
    assert _state(store, contract, LATER) == "proposed"
    assert _signed(store, contract) == {A: True, B: False}

    # B's accept arrives before B's certificate: it counts only once that is stored.
    _sign(store, contract, B, "accept")
    assert _signed(store, contract) == {A: True, B: True}
    assert _state(store, contract, LATER) == "proposed"
    _certificate(store, B, START + timedelta(days=30))
    assert _state(store, contract, LATER) == "valid"
    # The clock alone: before not_before, after B's certificate ended, after not_after.
    assert _state(store, contract, START - timedelta(seconds=1)) == "accepted"
    assert _state(store, contract, START + timedelta(days=31)) == "proposed"
    assert _state(store, contract, START + timedelta(days=366)) == "expired"

    # B signs again with a renewed certificate: valid again until that one ends.
    renewed = store.add_signature(
        contract.content_hash,
        B,
        "accept",
        jws(contract.content_hash, B, "accept", LATER + timedelta(days=1)),
        LATER + timedelta(days=1),
        "cert-B-renewed",
    )
    assert renewed
    _certificate(store, B, far, "cert-B-renewed")
    assert _state(store, contract, START + timedelta(days=31)) == "valid"

    _sign(store, contract, B, "reject")
    assert _state(store, contract, LATER) == "rejected"
    assert _state(store, contract, START + timedelta(days=366)) == "rejected"  # before expired
    _sign(store, contract, A, "revoke")
    assert _state(store, contract, LATER) == "revoked"  # before rejected


def test_a_signer_outside_the_contract_does_not_count(store: ManagerStore) -> None:
    far = START + timedelta(days=1000)
    for peer in (A, B, C):
        _certificate(store, peer, far)
    contract = make_contract([connection_grant(A, B)])
    store.put_contract(**contract.kwargs())
    _sign(store, contract, A, "accept")
    _sign(store, contract, C, "accept")
    _sign(store, contract, C, "revoke")
    assert _state(store, contract, LATER) == "proposed"
    assert _signed(store, contract) == {A: True, B: False}


def test_counts_by_state_are_exact(store: ManagerStore) -> None:
    far = START + timedelta(days=1000)
    for peer in (A, B):
        _certificate(store, peer, far)
    made = [
        make_contract([connection_grant(A, B)], created_at=START - timedelta(seconds=n))
        for n in range(7)
    ]
    for contract in made:
        store.put_contract(**contract.kwargs())
    for contract in made[:3]:  # valid
        _sign(store, contract, A, "accept")
        _sign(store, contract, B, "accept")
    _sign(store, made[3], B, "reject")
    _sign(store, made[4], A, "revoke")
    _sign(store, made[5], A, "accept")  # proposed, as is made[6]
    expected = dict.fromkeys(STATES, 0) | {"valid": 3, "rejected": 1, "revoked": 1, "proposed": 2}
    assert store.contract_counts_by_state(LATER) == expected
    # B's reject and A's revoke end the wait of the peer that has not signed.
    _check_awaiting(store, LATER)
    # At the end of their validity the undecided ones are expired; the decided ones stay.
    after = START + timedelta(days=400)
    expected_after = dict.fromkeys(STATES, 0) | {"expired": 5, "rejected": 1, "revoked": 1}
    assert store.contract_counts_by_state(after) == expected_after
    _check_awaiting(store, after)


def test_migration_0002_backfills_existing_contracts(store: ManagerStore) -> None:
    far = START + timedelta(days=1000)
    _certificate(store, A, far)
    _certificate(store, B, START + timedelta(days=30))
    valid, rejected, waiting, revoked = (
        make_contract([connection_grant(A, B)], created_at=START - timedelta(seconds=n))
        for n in range(4)
    )
    for contract in (valid, rejected, waiting, revoked):
        store.put_contract(**contract.kwargs())
        _sign(store, contract, A, "accept")
    _sign(store, valid, B, "accept")
    _sign(store, rejected, B, "reject")
    _sign(store, revoked, B, "reject")
    _sign(store, revoked, A, "revoke")  # revoked before rejected
    columns = sa.select(
        t.contracts.c.content_hash, t.contracts.c.decision, t.contracts.c.accepted_until
    ).order_by(t.contracts.c.content_hash)
    peers = sa.select(t.contract_peers).order_by(
        t.contract_peers.c.contract_hash, t.contract_peers.c.peer_id
    )
    with store.engine.connect() as conn:
        before = (conn.execute(columns).all(), conn.execute(peers).all())
    counts = store.contract_counts_by_state(LATER)
    assert counts["valid"] == counts["rejected"] == counts["proposed"] == counts["revoked"] == 1

    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection=connection), "0001")
    migrate(store.engine)
    with store.engine.connect() as conn:
        after = (conn.execute(columns).all(), conn.execute(peers).all())
    assert after == before
    assert store.contract_counts_by_state(LATER) == counts
    _check_awaiting(store, LATER)
