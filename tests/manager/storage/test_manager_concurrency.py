"""Several writers at once (threads with stores of their own, as gunicorn workers would be)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import sqlalchemy as sa
from managerdata import START, connection_grant, make_contract

from appliance.manager.storage import Delivery, ManagerStore
from appliance.manager.storage import schema as t
from appliance.manager.storage.database import current_revision

P1, P2 = "00000000000000000001", "00000000000000000002"
PER_WRITER = 40

T = TypeVar("T")


def _in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(0..count-1)`` in threads that start together; re-raise the first error."""
    barrier = threading.Barrier(count)
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    if errors:
        raise errors[0]
    return [results[i] for i in range(count)]


def test_two_writers_lose_no_write(store_url: str) -> None:
    ManagerStore.open(store_url).close()  # migrated once; each writer opens its own

    def write(writer: int) -> list[str]:
        written = []
        with ManagerStore.open(store_url) as store:
            for n in range(PER_WRITER):
                created = START + timedelta(seconds=writer * PER_WRITER + n)
                contract = make_contract([connection_grant(P1, P2)], created_at=created)
                store.put_contract_and_enqueue(
                    **contract.kwargs(), deliveries=[Delivery(P2, "contract", "{}")], now=created
                )
                store.add_signature(contract.content_hash, P1, "accept", "jws", created, "x5t")
                store.upsert_peer(P2, name=f"writer {writer}", now=created)
                written.append(contract.content_hash)
        return written

    written = [h for hashes in _in_threads(2, write) for h in hashes]

    with ManagerStore.open(store_url) as store:
        stored: list[str] = []
        cursor: str | None = None
        while page := store.list_contracts(after=cursor, limit=1000):
            stored.extend(row.content_hash for row in page)
            cursor = page[-1].content_hash
        assert sorted(stored) == sorted(written)
        assert len(stored) == 2 * PER_WRITER
        assert len(store.due_deliveries(START + timedelta(days=1), limit=1000)) == 2 * PER_WRITER
        with store.engine.connect() as connection:
            signatures = connection.execute(
                sa.select(sa.func.count()).select_from(t.signatures)
            ).scalar_one()
        assert signatures == 2 * PER_WRITER
        assert [peer.peer_id for peer in store.list_peers()] == [P2]


def test_two_writers_of_the_same_contracts_store_each_once(store_url: str) -> None:
    contracts = [
        make_contract([connection_grant(P1, P2)], created_at=START + timedelta(seconds=n))
        for n in range(20)
    ]
    ManagerStore.open(store_url).close()

    def write(_writer: int) -> list[tuple[bool, bool]]:
        with ManagerStore.open(store_url) as store:
            return [
                (
                    store.put_contract_and_enqueue(
                        **contract.kwargs(), deliveries=[Delivery(P2, "contract", "{}")], now=START
                    ),
                    store.add_signature(contract.content_hash, P1, "accept", "jws", START, "x"),
                )
                for contract in contracts
            ]

    first, second = _in_threads(2, write)
    for mine, theirs in zip(first, second, strict=True):
        assert mine[0] != theirs[0], "the contract was stored by exactly one writer"
        assert mine[1] != theirs[1], "the signature was stored by exactly one writer"
    with ManagerStore.open(store_url) as store:
        assert len(store.list_contracts(limit=1000)) == len(contracts)
        assert len(store.due_deliveries(START + timedelta(days=1), limit=1000)) == len(contracts)


def test_workers_that_start_together_migrate_once(store_url: str) -> None:
    def open_and_read(_worker: int) -> str | None:
        with ManagerStore.open(store_url) as store:
            return current_revision(store.engine)

    assert _in_threads(3, open_and_read) == ["0003", "0003", "0003"]
