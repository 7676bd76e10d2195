"""The controller's transaction log pages (``TransactionReader.query``) on SQLite and
PostgreSQL: following the cursors gives every record once, newest first, ties on the time
broken by insertion order; and a page after a cursor is a range of the (created_at, id) index
that starts at the cursor, not a walk from the newest record down to it (its cost grew with
the depth of the page: 19 ms at the top, 696 ms halfway through a million records;
docs/performance.md, "Cost growth")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from queryplans import plan_text, statements_of

from appliance.controller.transactions import TransactionFilter, TransactionReader
from appliance.txlog import schema
from appliance.txlog.store import TransactionLog

START = datetime(2026, 3, 1, tzinfo=UTC)
A, B, C = "00000001000000000001", "00000001000000000002", "00000001000000000003"


@pytest.fixture(params=["sqlite", "postgresql"])
def reader(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TransactionReader]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'txlog.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    TransactionLog.open(url).close()  # the log's own tables, migrated
    opened = TransactionReader.open(url)
    try:
        yield opened
    finally:
        opened.close()


def _engine(reader: TransactionReader) -> sa.Engine:
    engine = reader._engine
    assert engine is not None
    return engine


def _load(reader: TransactionReader, count: int) -> None:
    """``count`` records, three at a time sharing one creation time; every other from A."""
    rows = [
        {
            "transaction_id": f"01900000-0000-7000-8000-{n:012d}",
            "direction": "DIRECTION_INCOMING",
            "grant_hash": "$1$4$grant",
            "service_name": "basisregistratie",
            "source_outway_peer_id": A if n % 2 else C,
            "destination_service_peer_id": B,
            "created_at": START + timedelta(seconds=n // 3),
        }
        for n in range(count)
    ]
    engine = _engine(reader)
    with engine.begin() as conn:
        conn.execute(schema.records.insert(), rows)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))


def _walk(reader: TransactionReader, where: TransactionFilter, limit: int) -> list[str]:
    found: list[str] = []
    cursor = None
    while True:
        page, cursor = reader.query(where, cursor=cursor, limit=limit)
        found.extend(record["transaction_id"] for record in page)
        if not cursor:
            return found


@pytest.mark.parametrize("where", [TransactionFilter(), TransactionFilter(peer_id=A)])
def test_the_pages_give_every_record_once_newest_first(
    reader: TransactionReader, where: TransactionFilter
) -> None:
    _load(reader, 61)
    c = schema.records.c
    with _engine(reader).connect() as conn:
        query = reader._select(where).order_by(c.created_at.desc(), c.id.desc())
        expected = [row.transaction_id for row in conn.execute(query)]
    assert len(expected) == (61 if where.peer_id is None else 30)

    for limit in (1, 2, 3, 4, 7, 50):
        assert _walk(reader, where, limit) == expected, limit


def test_a_page_after_a_cursor_starts_its_index_range_at_the_cursor(
    reader: TransactionReader,
) -> None:
    _load(reader, 20_000)
    middle = START + timedelta(seconds=10_000 // 3) - datetime(1970, 1, 1, tzinfo=UTC)
    cursor = f"{middle // timedelta(microseconds=1)}-10000"  # halfway down the log
    engine = _engine(reader)
    ((statement, parameters),) = statements_of(
        engine, lambda: reader.query(TransactionFilter(), cursor=cursor)
    )
    plan = plan_text(engine, statement, parameters)

    if engine.dialect.name == "sqlite":
        # Before: "SCAN txlog_records USING INDEX ix_txlog_records_created_at_id".
        assert "SEARCH txlog_records USING INDEX ix_txlog_records_created_at_id" in plan, plan
    else:
        # Before: an Index Scan Backward with only a Filter, from the newest record down.
        assert "ix_txlog_records_created_at_id" in plan, plan
        assert "Index Cond: (created_at <=" in plan, plan
