"""The hash chain as the writer builds it: one order per stream, however the records arrive
(group commit, several logs on one database as several workers or nodes, duplicates)."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from txlogtest import T0, record, records_at, run, stored, write_all

from appliance.jcs import canonicalize
from appliance.txlog import (
    Direction,
    DuplicateTransactionError,
    PurposeBinding,
    TransactionLog,
    schema,
)
from appliance.txlog import chain as chain_module
from appliance.txlog.audit import verify_engine
from appliance.txlog.chain import GENESIS, record_hash
from appliance.txlog.database import create_engine


def typed(url: str) -> list[dict[str, object]]:
    """Every row through the table's types (created_at as a datetime on SQLite too)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.select(schema.records).order_by(schema.records.c.id)
            return [dict(row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()


def check_chain(url: str) -> dict[str, list[int]]:
    """Every stream's ids in seq order; asserts every link by hand."""
    rows = typed(url)
    by_stream: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_stream.setdefault(str(row["direction"]), []).append(row)
    for members in by_stream.values():
        members.sort(key=lambda row: int(row["chain_seq"]))  # type: ignore[call-overload]
        assert [row["chain_seq"] for row in members] == list(range(1, len(members) + 1))
        prev = GENESIS
        for row in members:
            assert row["chain_prev"] == prev
            prev = record_hash(row, int(row["chain_seq"]), prev)  # type: ignore[call-overload]
    engine = create_engine(url)
    try:
        assert verify_engine(engine).ok  # and the verifier agrees
    finally:
        engine.dispose()
    return {s: [int(r["id"]) for r in m] for s, m in by_stream.items()}  # type: ignore[call-overload]


def test_the_canonical_form_is_the_documented_one(store_url: str) -> None:
    """Recomputed from docs/txlog.md's recipe with nothing but hashlib and JCS."""
    purpose = PurposeBinding(processing_activity_id="urn:pa:1", trace_id="ab" * 16)
    item = record(created_at=T0 + timedelta(microseconds=5), purpose=purpose)
    with TransactionLog.open(store_url) as log:
        run(log.write(item))
    (row,) = stored(store_url)
    digest = hashlib.sha256(
        canonicalize(
            {
                "transaction_id": item.transaction_id,
                "processing_activity_id": "urn:pa:1",
                "trace_id": "ab" * 16,
                "data_subject_pseudonym": None,
            }
        )
    ).hexdigest()
    document = {
        "v": 1,
        "seq": 1,
        "prev": "0" * 64,
        "transaction_id": item.transaction_id,
        "direction": "DIRECTION_OUTGOING",
        "grant_hash": item.grant_hash,
        "service_name": item.service_name,
        "source_outway_peer_id": item.source.outway_peer_id,
        "source_delegator_peer_id": None,
        "destination_service_peer_id": item.destination.service_peer_id,
        "destination_delegator_peer_id": None,
        "created_at": "2026-11-01T12:00:00.000005Z",
        "purpose": digest,
    }
    # JCS of this object is sorted keys, no spaces (all ASCII strings, small integers).
    assert canonicalize(document) == json.dumps(
        document, sort_keys=True, separators=(",", ":")
    ).encode("ascii")
    expected = hashlib.sha256(canonicalize(document)).hexdigest()
    assert row["chain_seq"] == 1
    assert row["chain_prev"] == GENESIS
    second = record(created_at=T0)
    with TransactionLog.open(store_url) as log:
        run(log.write(second))
    assert stored(store_url)[1]["chain_prev"] == expected


def test_group_commit_and_duplicates_keep_one_gapless_chain(store_url: str) -> None:
    items = records_at(40)
    incoming = records_at(10, direction=Direction.INCOMING)
    with TransactionLog.open(store_url) as log:
        results = run(write_all(log, [*items, *incoming, items[3], items[7]]))
        assert results[:50] == [None] * 50
        assert all(isinstance(r, DuplicateTransactionError) for r in results[50:])
        assert log.stats.batches < 52  # batched: the chain is built inside group commits
    seqs = check_chain(store_url)
    assert {stream: len(ids) for stream, ids in seqs.items()} == {
        "DIRECTION_OUTGOING": 40,
        "DIRECTION_INCOMING": 10,
    }


def test_several_logs_on_one_database_share_each_stream(store_url: str) -> None:
    """Four logs (as four gunicorn workers, or nodes on one PostgreSQL) writing at once."""
    TransactionLog.open(store_url).close()  # migrated once, as the first process would
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with TransactionLog.open(store_url, migrate_schema=False) as log:
                results = run(write_all(log, records_at(60)))
                assert results == [None] * 60
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    seqs = check_chain(store_url)
    assert len(seqs["DIRECTION_OUTGOING"]) == 240


def test_an_existing_log_starts_its_chain_at_the_first_new_record(store_url: str) -> None:
    """Records from before revision 0002 are not backfilled: counted, not vouched for."""
    from appliance.txlog.database import migrate
    from appliance.txlog.store import _row

    engine = create_engine(store_url)
    try:
        migrate(engine, "0001")
        old = [_row(item) for item in records_at(3)]
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO txlog_records (transaction_id, direction, grant_hash, "
                    "service_name, source_outway_peer_id, destination_service_peer_id, "
                    "created_at) VALUES (:transaction_id, :direction, :grant_hash, "
                    ":service_name, :source_outway_peer_id, :destination_service_peer_id, "
                    ":created_at)"
                ),
                old,
            )
    finally:
        engine.dispose()
    with TransactionLog.open(store_url) as log:  # upgrades to 0002
        assert run(write_all(log, records_at(4))) == [None] * 4
    rows = typed(store_url)
    assert [row["chain_seq"] for row in rows] == [None, None, None, 1, 2, 3, 4]
    assert rows[3]["chain_prev"] == GENESIS
    engine = create_engine(store_url)
    try:
        result = verify_engine(engine)
    finally:
        engine.dispose()
    assert result.ok
    assert result.unchained == 3
    assert result.records == 4


def test_the_writer_keeps_its_heads_hash_and_rereads_another_writers(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its first batch a writer takes the head's hash from what it committed (no record
    read and hashed again); a head another writer (worker, node) added is read and hashed, so
    the chain stays exact."""
    recomputed: list[int] = []
    original = chain_module._head_of

    def counting(*arguments: Any) -> Any:
        recomputed.append(1)
        return original(*arguments)

    monkeypatch.setattr(chain_module, "_head_of", counting)
    with TransactionLog.open(store_url) as first, TransactionLog.open(store_url) as second:
        for log, count in ((first, 5), (first, 5), (first, 5)):
            assert run(write_all(log, records_at(count, start=T0))) == [None] * count
        assert len(recomputed) == 1  # the first batch only (an empty stream)
        assert run(write_all(second, records_at(3))) == [None] * 3
        assert len(recomputed) == 2  # the other writer reads the head
        assert run(write_all(first, records_at(3))) == [None] * 3
        assert len(recomputed) == 3  # and so does the first, after it
    assert len(check_chain(store_url)["DIRECTION_OUTGOING"]) == 21
