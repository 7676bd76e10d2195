"""The store on SQLite and PostgreSQL: migrations, durable writes, duplicates, the peer-bound
query of ``/logs`` (logging spec "Providing TransactionLog records") and what the database
holds (no content, no raw data subject)."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from txlogtest import (
    GRANT_1,
    GRANT_2,
    PEER_A,
    PEER_B,
    PEER_C,
    PEER_D,
    PEER_E,
    T0,
    record,
    records_at,
    run,
    stored,
    write_all,
)

from appliance.manager.storage import ManagerStore
from appliance.txlog import (
    Direction,
    DuplicateTransactionError,
    LogRecord,
    Pseudonymiser,
    PurposeBinding,
    TransactionLog,
    TransactionLogError,
    UnknownCursorError,
)
from appliance.txlog.database import (
    VERSION_TABLE,
    alembic_config,
    create_engine,
    current_revision,
    migrate,
)
from appliance.txlog.schema import metadata

COLUMNS = {
    "id",
    "transaction_id",
    "direction",
    "grant_hash",
    "service_name",
    "source_outway_peer_id",
    "source_delegator_peer_id",
    "destination_service_peer_id",
    "destination_delegator_peer_id",
    "created_at",
    "processing_activity_id",
    "trace_id",
    "data_subject_pseudonym",
    "chain_seq",  # the hash chain: a position and a hash, no content
    "chain_prev",
}


# -- migrations ------------------------------------------------------------------------------


def test_the_migrated_database_matches_the_metadata(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        migrate(engine)  # again: harmless
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert current_revision(engine) == head == "0004"
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            assert list(compare_metadata(context, metadata)) == []
        tables = set(sa.inspect(engine).get_table_names())
        assert tables == {"txlog_records", "txlog_checkpoints", "txlog_alembic_version"}
        assert all(name.startswith("txlog_") for name in tables)
    finally:
        engine.dispose()


def test_the_log_shares_a_database_with_the_manager(store_url: str) -> None:
    with ManagerStore.open(store_url):
        pass
    with TransactionLog.open(store_url) as log:
        run(log.write(record()))
    engine = create_engine(store_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        assert {"manager_alembic_version", "txlog_alembic_version", "txlog_records"} <= tables
        assert "alembic_version" not in tables
        assert current_revision(engine) == "0004"
    finally:
        engine.dispose()
    with ManagerStore.open(store_url):  # the Manager's migrations leave the log alone
        pass
    assert len(stored(store_url)) == 1


def test_the_table_has_no_column_for_content(log: TransactionLog) -> None:
    columns = {c["name"] for c in sa.inspect(log.engine).get_columns("txlog_records")}
    assert columns == COLUMNS


def test_an_in_memory_database_is_refused() -> None:
    with pytest.raises(TransactionLogError, match="durable"):
        TransactionLog.open("sqlite://")
    with pytest.raises(TransactionLogError, match="durable"):
        TransactionLog.open("sqlite:///:memory:")


# -- durability --------------------------------------------------------------------------------


def test_a_written_record_is_visible_from_a_new_connection(
    log: TransactionLog, store_url: str
) -> None:
    item = record(source_delegator=PEER_C, destination_delegator=PEER_D)
    run(log.write(item))
    # Right after write returned: another engine, another connection, sees it.
    rows = stored(store_url)
    assert len(rows) == 1
    row = rows[0]
    assert row["transaction_id"] == item.transaction_id
    assert row["direction"] == "DIRECTION_OUTGOING"
    assert row["source_delegator_peer_id"] == PEER_C
    assert row["destination_delegator_peer_id"] == PEER_D
    if make_url(store_url).get_backend_name() == "sqlite":
        database = make_url(store_url).database
        assert database is not None
        with sqlite3.connect(database) as raw:  # not even SQLAlchemy
            count = raw.execute("SELECT count(*) FROM txlog_records").fetchone()[0]
        assert count == 1


def test_the_connections_commit_durably(log: TransactionLog) -> None:
    with log.engine.connect() as connection:
        if log.engine.dialect.name == "sqlite":
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        else:
            # The test cluster runs with synchronous_commit=off; the log's sessions do not.
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def test_a_record_survives_closing_and_reopening(store_url: str) -> None:
    item = record(purpose=PurposeBinding(trace_id="4bf92f3577b34da6a3ce929d0e0e4736"))
    with TransactionLog.open(store_url) as log:
        run(log.write(item))
    with TransactionLog.open(store_url) as log:
        (found,), cursor = log.query(PEER_A)
    assert found == item
    assert cursor == ""


# -- duplicates --------------------------------------------------------------------------------


def test_a_transaction_id_is_logged_once_per_direction(log: TransactionLog) -> None:
    first = record()
    run(log.write(first))
    with pytest.raises(DuplicateTransactionError) as caught:
        run(log.write(record(transaction_id=first.transaction_id)))
    assert caught.value.transaction_id == first.transaction_id
    # The inway of the same appliance logs the same transaction in the other direction.
    run(log.write(record(transaction_id=first.transaction_id, direction=Direction.INCOMING)))
    assert len(log.query(PEER_A)[0]) == 2


def test_a_duplicate_in_a_batch_fails_alone(log: TransactionLog, store_url: str) -> None:
    stored_before = record()
    run(log.write(stored_before))
    twin = record()
    batch = [
        record(),
        record(transaction_id=twin.transaction_id),
        twin,
        record(transaction_id=stored_before.transaction_id),
        record(),
    ]
    outcomes = run(write_all(log, batch))
    assert outcomes[0] is None
    assert outcomes[4] is None
    assert isinstance(outcomes[3], DuplicateTransactionError)
    # Of the twins exactly one is stored, the other refused.
    assert sorted(type(o).__name__ for o in outcomes[1:3]) == [
        "DuplicateTransactionError",
        "NoneType",
    ]
    assert len(stored(store_url)) == 4


# -- the peer-bound query --------------------------------------------------------------------


def _write(log: TransactionLog, items: list[LogRecord]) -> None:
    assert run(write_all(log, items)) == [None] * len(items)


def test_only_records_naming_the_peer_are_returned(log: TransactionLog) -> None:
    plain = record(source=PEER_A, destination=PEER_B, created_at=T0)
    source_delegated = record(source=PEER_B, destination=PEER_E, source_delegator=PEER_C)
    destination_delegated = record(source=PEER_E, destination=PEER_B, destination_delegator=PEER_D)
    unrelated = record(source=PEER_E, destination=PEER_B)
    _write(log, [plain, source_delegated, destination_delegated, unrelated])

    def ids(peer: str) -> set[str]:
        return {r.transaction_id for r in log.query(peer, limit=1000)[0]}

    assert ids(PEER_A) == {plain.transaction_id}  # as source outway
    assert ids(PEER_C) == {source_delegated.transaction_id}  # as source delegator
    assert ids(PEER_D) == {destination_delegated.transaction_id}  # as destination delegator
    assert ids(PEER_B) == {
        r.transaction_id for r in (plain, source_delegated, destination_delegated, unrelated)
    }
    assert ids(PEER_E) == {
        r.transaction_id for r in (source_delegated, destination_delegated, unrelated)
    }
    assert ids("00000009999999999999") == set()
    with pytest.raises(ValueError, match="peer_id"):
        log.query("")


def test_pages_cover_everything_once_in_both_orders(log: TransactionLog) -> None:
    # 7 records in one second, then one per second: ties on created_at are broken by insertion.
    items = records_at(7, step=timedelta(microseconds=0)) + records_at(
        23, start=T0 + timedelta(seconds=1)
    )
    _write(log, items)
    for descending in (False, True):
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page, cursor = log.query(PEER_A, limit=4, cursor=cursor, descending=descending)
            pages += 1
            seen.extend(r.transaction_id for r in page)
            if not cursor:
                break
        assert pages == 8
        assert len(seen) == len(set(seen)) == 30
        times = [r.created_at for r in log.query(PEER_A, limit=30, descending=descending)[0]]
        assert times == sorted(times, reverse=descending)
    # A page that exactly ends the results has no next cursor.
    assert log.query(PEER_A, limit=30)[1] == ""
    assert log.query(PEER_A, limit=29)[1] != ""


def test_the_default_order_is_newest_first_and_default_limit_25(log: TransactionLog) -> None:
    items = records_at(30)
    _write(log, items)
    page, cursor = log.query(PEER_A)
    assert len(page) == 25
    assert cursor
    assert page[0].transaction_id == items[-1].transaction_id


def test_bad_cursors_and_limits_are_refused(log: TransactionLog) -> None:
    for cursor in ("garbage", "1-", "-1", "99999999999999999999-1", "1-2-3"):
        with pytest.raises(UnknownCursorError):
            log.query(PEER_A, cursor=cursor)
    for limit in (0, 1001):
        with pytest.raises(ValueError, match="limit"):
            log.query(PEER_A, limit=limit)


def test_after_and_before_compare_whole_seconds(log: TransactionLog) -> None:
    # Records at T0 + 0.5 s, 1.5 s, 2.5 s, 3.5 s: the API shows T0, T0+1, T0+2, T0+3.
    items = records_at(4, start=T0 + timedelta(milliseconds=500))
    _write(log, items)
    t0 = int(T0.timestamp())

    def shown(**kw: object) -> list[int]:
        return [r.created_at_unix - t0 for r in log.query(PEER_A, descending=False, **kw)[0]]  # type: ignore[arg-type]

    assert shown() == [0, 1, 2, 3]
    assert shown(after=t0) == [1, 2, 3]
    assert shown(before=t0 + 3) == [0, 1, 2]
    assert shown(after=t0, before=t0 + 3) == [1, 2]
    assert shown(after=t0 + 3) == []
    assert shown(after=T0 + timedelta(seconds=1)) == [2, 3]  # datetimes work too
    for bad in (-1, True, 10**30):
        with pytest.raises(ValueError, match="after"):
            log.query(PEER_A, after=bad)  # type: ignore[arg-type]


def test_grant_and_service_filters_match_either(log: TransactionLog) -> None:
    one = record(grant=GRANT_1, service="basisregistratie")
    two = record(grant=GRANT_2, service="basisregistratie")
    three = record(grant=GRANT_2, service="kadaster")
    _write(log, [one, two, three])

    def ids(**kw: object) -> set[str]:
        return {r.transaction_id for r in log.query(PEER_A, **kw)[0]}  # type: ignore[arg-type]

    assert ids(grant_hashes=[GRANT_1]) == {one.transaction_id}
    assert ids(grant_hashes=[GRANT_1, GRANT_2]) == {
        one.transaction_id,
        two.transaction_id,
        three.transaction_id,
    }
    assert ids(service_names=["kadaster"]) == {three.transaction_id}
    # logging.yaml: "When multiple filters are used the records where either condition is true
    # should be returned".
    assert ids(grant_hashes=[GRANT_1], service_names=["kadaster"]) == {
        one.transaction_id,
        three.transaction_id,
    }
    assert ids(grant_hashes=["$1$3$none"]) == set()
    assert ids(grant_hashes=[]) == ids()  # an empty list filters nothing


def test_transaction_ids_ignore_pagination_and_filters(log: TransactionLog) -> None:
    items = records_at(5)
    incoming = record(
        transaction_id=items[0].transaction_id, direction=Direction.INCOMING, created_at=T0
    )
    foreign = record(source=PEER_E, destination=PEER_D)
    _write(log, [*items, incoming, foreign])
    wanted = [
        items[0].transaction_id,
        items[3].transaction_id.upper(),
        foreign.transaction_id,
        "junk",
    ]
    found, cursor = log.query(
        PEER_A, transaction_ids=wanted, limit=1, grant_hashes=["$1$3$none"], after=10**9 * 3
    )
    assert cursor == ""
    assert sorted((r.transaction_id, r.direction) for r in found) == sorted(
        [
            (items[0].transaction_id, Direction.OUTGOING),
            (items[0].transaction_id, Direction.INCOMING),
            (items[3].transaction_id, Direction.OUTGOING),
        ]
    )  # the foreign transaction does not name PEER_A
    assert log.query(PEER_A, transaction_ids=["junk"]) == ([], "")
    # A foreign outway's UUIDv4, let in by the inway, can be asked for as well.
    v4 = record(transaction_id="6f1c1e0e-1b7a-4c57-9d59-0c6a3f0e8a11")
    _write(log, [v4])
    assert log.query(PEER_A, transaction_ids=[v4.transaction_id.upper()])[0] == [v4]
    with pytest.raises(ValueError, match="500"):
        log.query(PEER_A, transaction_ids=["x"] * 501)


# -- purpose fields, locally -------------------------------------------------------------------


def test_purpose_fields_are_stored_and_searchable_locally(
    log: TransactionLog, pseudonymiser: Pseudonymiser
) -> None:
    subject = pseudonymiser.pseudonymise("999993653")
    about = record(
        purpose=PurposeBinding(
            processing_activity_id="urn:sluis:pa:bijstand",
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            data_subject_pseudonym=subject,
        )
    )
    other = record(purpose=PurposeBinding(processing_activity_id="urn:sluis:pa:wmo"))
    _write(log, [about, other])
    (found,), _ = log.query(PEER_A, data_subject_pseudonym=pseudonymiser.pseudonymise(" 999993653"))
    assert found == about
    assert log.query(PEER_A, processing_activity_id="urn:sluis:pa:wmo")[0] == [other]
    assert "999993653" not in repr(found)


def test_the_data_subject_is_never_in_the_database_in_plain_text(
    log: TransactionLog, store_url: str, pseudonymiser: Pseudonymiser, tmp_path: Path
) -> None:
    bsn = "999993653"
    pseudonym = pseudonymiser.pseudonymise(bsn)
    _write(
        log, [record(purpose=PurposeBinding(data_subject_pseudonym=pseudonym)) for _ in range(20)]
    )
    if make_url(store_url).get_backend_name() == "sqlite":
        # Every byte the database consists of: the file, the write-ahead log, the index.
        database = Path(str(make_url(store_url).database))
        files = [p for p in database.parent.iterdir() if p.name.startswith(database.name)]
        assert any(p.name.endswith("-wal") for p in files)
        data = b"".join(p.read_bytes() for p in files)
    else:
        engine = sa.create_engine(store_url)
        try:
            with engine.connect() as connection:
                data = "\n".join(
                    connection.execute(sa.text("SELECT t::text FROM txlog_records t")).scalars()
                ).encode()
        finally:
            engine.dispose()
    assert pseudonym.encode() in data  # the check looks in the right place
    assert bsn.encode() not in data
    assert bsn.encode("utf-16-le") not in data


def test_the_sqlite_fast_path_stores_what_the_core_insert_stores(tmp_path: Path) -> None:
    """The writer inserts on the driver's connection (no SQLAlchemy per row); a record must
    read back the same, and be stored as the same text, as one inserted through Core."""
    from appliance.txlog.store import _row

    url = f"sqlite:///{tmp_path / 'txlog.db'}"
    purpose = PurposeBinding(
        processing_activity_id="https://register.example/activities/42",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        data_subject_pseudonym="ab" * 32,
    )
    moment = T0 + timedelta(microseconds=123456)
    fast = record(
        source_delegator=PEER_C, destination_delegator=PEER_D, purpose=purpose, created_at=moment
    )
    core = record(
        source_delegator=PEER_C, destination_delegator=PEER_D, purpose=purpose, created_at=moment
    )
    with TransactionLog.open(url) as log:
        run(log.write(fast))
        with log.engine.begin() as connection:
            connection.execute(sa.insert(metadata.tables["txlog_records"]), [_row(core)])
        read, _ = log.query(PEER_A, transaction_ids=[fast.transaction_id, core.transaction_id])
    assert {r.transaction_id: r for r in read} == {
        fast.transaction_id: fast,
        core.transaction_id: core,
    }
    database = make_url(url).database
    assert database is not None
    with sqlite3.connect(database) as raw:
        rows = raw.execute("SELECT * FROM txlog_records ORDER BY id").fetchall()
    # Every column but id, transaction_id and the chain (the Core insert has none) holds the
    # same value, created_at text included.
    assert [row[0] for row in rows] == [1, 2]
    assert rows[0][2:-2] == rows[1][2:-2]
    assert rows[0][-2:] == (1, "0" * 64)
    assert rows[0][9] == "2026-11-01 12:00:00.123456"
