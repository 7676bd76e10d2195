"""``GET /v1/logs`` pages (``TransactionLog.query``) on SQLite and PostgreSQL: the same records
as one ordered read of the old single query (every record naming the peer in any of its four
columns, the filters, newest or oldest first), page by page through the cursors; and each page
is four index ranges of ``(peer column, created_at, id)`` that start at the cursor, never every
record naming the peer read and sorted (SQLite: 202 ms of CPU per page at 1,000,000 records)
nor a walk of the time index down to the cursor (PostgreSQL: 808 ms halfway down);
docs/performance.md, "Cost growth"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from queryplans import plan_text, statements_of

from appliance.txlog import TransactionLog, schema

START = datetime(2026, 3, 1, tzinfo=UTC)
A, B, C, D = (f"0000000100000000000{n}" for n in (1, 2, 3, 4))
GRANTS = ("$1$4$grant-one", "$1$4$grant-two", "$1$4$grant-three")
SERVICES = ("basisregistratie", "kadaster", "brp")
PEER_INDEXES = (
    "ix_txlog_records_source_outway_peer_id_created_at_id",
    "ix_txlog_records_destination_service_peer_id_created_at_id",
    "ix_txlog_records_source_delegator_peer_id_created_at_id",
    "ix_txlog_records_destination_delegator_peer_id_created_at_id",
)


@pytest.fixture
def log(store_url: str) -> Iterator[TransactionLog]:
    with TransactionLog.open(store_url) as opened:
        yield opened


def _row(n: int, **peers: str | None) -> dict[str, Any]:
    return {
        "transaction_id": f"01900000-0000-7000-8000-{n:012d}",
        "direction": "DIRECTION_INCOMING" if n % 2 else "DIRECTION_OUTGOING",
        "grant_hash": GRANTS[n % 3],
        "service_name": SERVICES[n % 5 % 3],
        "source_outway_peer_id": peers.get("source", C),
        "source_delegator_peer_id": peers.get("source_delegator"),
        "destination_service_peer_id": peers.get("destination", B),
        "destination_delegator_peer_id": peers.get("destination_delegator"),
        # Three records a second: ties on the time, broken by insertion order.
        "created_at": START + timedelta(seconds=n // 3, microseconds=0 if n % 7 else 1),
        "processing_activity_id": "verwerking-1" if n % 4 == 0 else None,
        "data_subject_pseudonym": "a" * 64 if n % 6 == 0 else None,
    }


def _mixed(count: int) -> list[dict[str, Any]]:
    """A names in each of the four columns, in two columns at once, or not at all."""
    places: tuple[dict[str, str | None], ...] = (
        {"source": A},
        {"destination": A},
        {"source_delegator": A},
        {"destination_delegator": A},
        {"source": A, "source_delegator": A},  # twice in one record: listed once
        {"source": A, "destination_delegator": A, "destination": D},
        {},  # C to B: not A's
        {"source": D, "source_delegator": C},
    )
    return [_row(n, **places[n % len(places)]) for n in range(count)]


def _load(log: TransactionLog, rows: list[dict[str, Any]]) -> None:
    engine = log.engine
    with engine.begin() as conn:
        conn.execute(schema.records.insert(), rows)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))


def _old_query(log: TransactionLog, peer: str, descending: bool, **filters: Any) -> list[str]:
    """Every matching record in one read, as the single OR query before the change read it."""
    c = schema.records.c
    query = sa.select(c.transaction_id).where(
        sa.or_(
            c.source_outway_peer_id == peer,
            c.destination_service_peer_id == peer,
            c.source_delegator_peer_id == peer,
            c.destination_delegator_peer_id == peer,
        )
    )
    if "after" in filters:
        query = query.where(c.created_at >= filters["after"] + timedelta(seconds=1))
    if "before" in filters:
        query = query.where(c.created_at < filters["before"])
    either = []
    if filters.get("grant_hashes"):
        either.append(c.grant_hash.in_(filters["grant_hashes"]))
    if filters.get("service_names"):
        either.append(c.service_name.in_(filters["service_names"]))
    if either:
        query = query.where(sa.or_(*either))
    if "processing_activity_id" in filters:
        query = query.where(c.processing_activity_id == filters["processing_activity_id"])
    if "data_subject_pseudonym" in filters:
        query = query.where(c.data_subject_pseudonym == filters["data_subject_pseudonym"])
    order = (c.created_at.desc(), c.id.desc()) if descending else (c.created_at, c.id)
    with log.engine.connect() as conn:
        return list(conn.execute(query.order_by(*order)).scalars())


def _walk(
    log: TransactionLog, peer: str, limit: int, descending: bool, **filters: Any
) -> list[str]:
    found: list[str] = []
    cursor = None
    while True:
        page, cursor = log.query(peer, cursor=cursor, limit=limit, descending=descending, **filters)
        assert len(page) <= limit
        found.extend(record.transaction_id for record in page)
        if not cursor:
            return found


FILTERS: list[dict[str, Any]] = [
    {},
    {"after": START + timedelta(seconds=10), "before": START + timedelta(seconds=40)},
    {"grant_hashes": [GRANTS[0]]},
    {"grant_hashes": [GRANTS[1]], "service_names": ["kadaster"]},  # either condition
    {"service_names": ["brp", "kadaster"]},
    {"processing_activity_id": "verwerking-1"},
    {"data_subject_pseudonym": "a" * 64, "before": START + timedelta(seconds=30)},
]


@pytest.mark.parametrize("descending", [True, False], ids=["newest-first", "oldest-first"])
def test_the_pages_are_the_old_query_s_records_in_order(
    log: TransactionLog, descending: bool
) -> None:
    _load(log, _mixed(96))
    for filters in FILTERS:
        expected = _old_query(log, A, descending, **filters)
        assert expected, filters  # every filter leaves something to page through
        for limit in (1, 3, 1000) if filters else (1, 2, 3, 8, 1000):
            if limit == 1 and filters and len(expected) > 12:
                continue  # a page per record: the unfiltered walk and the short ones do it
            assert _walk(log, A, limit, descending, **filters) == expected, (filters, limit)
    # A peer named by no record, and one named only as a delegator.
    assert _walk(log, "00000009999999999999", 5, descending) == []
    assert _walk(log, D, 4, descending) == _old_query(log, D, descending)


def test_transaction_ids_return_only_the_peer_s_records(log: TransactionLog) -> None:
    rows = _mixed(16)
    _load(log, rows)
    ids = [row["transaction_id"] for row in rows]
    page, cursor = log.query(A, transaction_ids=ids)
    assert cursor == ""
    assert [r.transaction_id for r in page] == _old_query(log, A, True)
    assert {r.transaction_id for r in log.query(D, transaction_ids=ids)[0]} == {
        row["transaction_id"] for row in rows if D in row.values()
    }


def _plans(log: TransactionLog, **kwargs: Any) -> str:
    engine = log.engine
    ((statement, parameters),) = statements_of(engine, lambda: log.query(A, **kwargs))
    return plan_text(engine, statement, parameters)


@pytest.mark.parametrize("descending", [True, False], ids=["newest-first", "oldest-first"])
def test_a_page_reads_four_index_ranges_that_start_at_the_cursor(
    log: TransactionLog, descending: bool
) -> None:
    # A in one record of ten, spread over the four columns; 20,000 records.
    places = ("source", "destination", "source_delegator", "destination_delegator")
    _load(
        log,
        [
            _row(n, **({places[n // 10 % 4]: A} if n % 10 == 0 else {"source": D}))
            for n in range(20_000)
        ],
    )
    _, cursor = log.query(A, limit=25, descending=descending)
    for _ in range(20):  # a deep page: 500 records down
        _, cursor = log.query(A, limit=25, cursor=cursor, descending=descending)
    assert cursor

    for kwargs in ({}, {"cursor": cursor}, {"cursor": cursor, "grant_hashes": [GRANTS[0]]}):
        plan = _plans(log, descending=descending, **kwargs)
        if log.engine.dialect.name == "sqlite":
            for index in PEER_INDEXES:
                assert f"SEARCH txlog_records USING INDEX {index} " in plan, plan
            # Before: MULTI-INDEX OR over the peer columns and a sort of all their records.
            assert "SCAN txlog_records" not in plan, plan
            assert "MULTI-INDEX OR" not in plan, plan
            if "cursor" in kwargs:  # the range starts at the cursor
                assert plan.count("created_at<?" if descending else "created_at>?") == 4, plan
        else:
            for index in PEER_INDEXES:
                assert index in plan, plan
            assert "Seq Scan" not in plan, plan
            assert "BitmapOr" not in plan, plan
            # The sort is of the four ranges' rows only (at most 4 x 26), never of a table.
            assert "ix_txlog_records_created_at_id" not in plan, plan
            if "cursor" in kwargs:  # the bound is part of each range, not a filter after it
                bound = "AND (created_at <=" if descending else "AND (created_at >="
                conditions = [line for line in plan.splitlines() if "Index Cond:" in line]
                assert sum(bound in line for line in conditions) == 4, plan
