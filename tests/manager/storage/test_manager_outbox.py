"""The outbox: deliveries to other Managers are written with the change and retried until sent."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from managerdata import START, connection_grant, make_contract

from appliance.manager.storage import Delivery, ManagerStore, UnknownContractError
from appliance.manager.storage import schema as t

P1, P2, P3 = "00000000000000000001", "00000000000000000002", "00000000000000000003"


class Crash(Exception):
    """Stands in for the process failing in the middle of a transaction."""


def _count(store: ManagerStore, table: sa.Table) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_a_failed_delivery_is_tried_again_later(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    store.put_contract(**contract.kwargs())
    entry = store.enqueue(P2, "contract", contract.content_hash, '{"c":1}', now=START)

    (due,) = store.due_deliveries(START)
    assert (due.id, due.target_peer_id, due.kind, due.attempts) == (entry, P2, "contract", 0)
    assert due.payload_json == '{"c":1}'

    retry_at = START + timedelta(seconds=30)
    assert store.mark_failed(entry, "connection refused", retry_at) is True
    assert store.due_deliveries(START + timedelta(seconds=29)) == []
    (again,) = store.due_deliveries(retry_at)
    assert (again.attempts, again.last_error, again.next_attempt_at) == (
        1,
        "connection refused",
        retry_at,
    )

    store.mark_failed(entry, "x" * 10_000, retry_at + timedelta(minutes=1))
    stored = store.get_delivery(entry)
    assert stored is not None
    assert stored.attempts == 2
    assert stored.last_error is not None
    assert len(stored.last_error) == 2000


def test_delivered_entries_are_not_returned(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    store.put_contract(**contract.kwargs())
    sent = store.enqueue(P2, "contract", contract.content_hash, "{}", now=START)
    pending = store.enqueue(P3, "signature", contract.content_hash, "{}", now=START)

    assert store.mark_delivered(sent, START + timedelta(seconds=1)) is True
    assert store.mark_delivered(sent, START + timedelta(seconds=2)) is False
    assert store.mark_failed(sent, "late failure", START) is False  # delivered stays delivered
    assert [row.id for row in store.due_deliveries(START + timedelta(days=1))] == [pending]
    delivered = store.get_delivery(sent)
    assert delivered is not None
    assert delivered.delivered_at == START + timedelta(seconds=1)
    assert delivered.attempts == 1

    assert store.delete_delivered(START + timedelta(seconds=1)) == 0
    assert store.delete_delivered(START + timedelta(seconds=2)) == 1
    assert store.get_delivery(sent) is None


def test_due_deliveries_come_oldest_first_and_limited(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    store.put_contract(**contract.kwargs())
    ids = [
        store.enqueue(
            P2, "signature", contract.content_hash, "{}", now=START + timedelta(seconds=s)
        )
        for s in (3, 1, 2)
    ]
    due = store.due_deliveries(START + timedelta(seconds=10), limit=2)
    assert [row.id for row in due] == [ids[1], ids[2]]


def test_a_lease_keeps_other_workers_off_an_entry(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    store.put_contract(**contract.kwargs())
    entry = store.enqueue(P2, "contract", contract.content_hash, "{}", now=START)

    (claimed,) = store.due_deliveries(START, lease=timedelta(seconds=60))
    assert claimed.id == entry
    assert store.due_deliveries(START + timedelta(seconds=59), lease=timedelta(seconds=60)) == []
    # A worker that died holding the lease: the entry comes back when the lease ends.
    (back,) = store.due_deliveries(START + timedelta(seconds=60))
    assert back.id == entry


def test_put_contract_and_enqueue_writes_both(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    deliveries = [Delivery(P2, "contract", '{"to":"two"}'), Delivery(P3, "contract", "{}")]
    assert store.put_contract_and_enqueue(**contract.kwargs(), deliveries=deliveries, now=START)
    due = store.due_deliveries(START)
    assert [(row.target_peer_id, row.contract_hash) for row in due] == [
        (P2, contract.content_hash),
        (P3, contract.content_hash),
    ]
    # The same contract again: nothing new is stored, so nothing new is sent.
    assert not store.put_contract_and_enqueue(**contract.kwargs(), deliveries=deliveries)
    assert _count(store, t.outbox) == 2


def test_add_signature_and_enqueue_sends_only_new_signatures(store: ManagerStore) -> None:
    contract = make_contract([connection_grant(P1, P2)])
    store.put_contract(**contract.kwargs())
    arguments = (contract.content_hash, P1, "accept", "jws", START, "x5t")
    to_two = [Delivery(P2, "signature", '{"signature":"jws"}')]
    assert store.add_signature_and_enqueue(*arguments, deliveries=to_two, now=START)
    assert not store.add_signature_and_enqueue(*arguments, deliveries=to_two, now=START)
    assert [row.kind for row in store.due_deliveries(START)] == ["signature"]


def test_a_failing_transaction_leaves_neither_contract_nor_outbox_row(
    store: ManagerStore,
) -> None:
    contract = make_contract([connection_grant(P1, P2)])

    def write_then_crash() -> None:
        with store.transaction() as tx:
            tx.put_contract_and_enqueue(
                **contract.kwargs(), deliveries=[Delivery(P2, "contract", "{}")], now=START
            )
            assert len(tx.due_deliveries(START)) == 1  # written, inside the transaction
            raise Crash

    with pytest.raises(Crash):
        write_then_crash()

    assert store.get_contract(contract.content_hash) is None
    assert store.due_deliveries(START + timedelta(days=1)) == []
    for table in (t.contracts, t.grants, t.contract_peers, t.outbox):
        assert _count(store, table) == 0, table.name


def test_an_enqueue_that_fails_undoes_the_contract(store: ManagerStore) -> None:
    """The second delivery is refused after the contract and the first one were written."""
    contract = make_contract([connection_grant(P1, P2)])
    deliveries = [Delivery(P2, "contract", "{}"), Delivery(P3, "telegram", "{}")]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outbox kind"):
        store.put_contract_and_enqueue(**contract.kwargs(), deliveries=deliveries, now=START)
    assert store.get_contract(contract.content_hash) is None
    assert _count(store, t.outbox) == 0
    assert _count(store, t.grants) == 0


def test_a_delivery_needs_its_contract(store: ManagerStore) -> None:
    with pytest.raises(UnknownContractError):
        store.enqueue(P2, "contract", "$1$1$missing", "{}")


def test_outbox_times_must_be_aware(store: ManagerStore) -> None:
    naive = START.replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.due_deliveries(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.mark_failed(1, "error", naive)
