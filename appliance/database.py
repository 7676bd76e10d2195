"""The database plumbing every store of the appliance shares (the Manager's, the transaction
log's, the controller's): engines, the UTC time type, constraint names, keyset paging.

SQLite is the default for one appliance: write-ahead logging, foreign keys on, a busy timeout,
and every writing transaction starts with ``BEGIN IMMEDIATE``, so two writers queue for the
lock instead of one of them failing halfway ("database is locked" on the upgrade from a read to
a write lock). Reading transactions (:func:`reading`) start with a plain ``BEGIN`` and never
wait for a writer.

PostgreSQL (psycopg 3) is for production and several nodes: ``postgresql://`` URLs get the
psycopg driver.

Every time is a ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and an ISO text on SQLite, always in
UTC; :class:`UtcDateTime` refuses naive datetimes and returns aware ones.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
_BEGIN_OPTION = "sluis_sqlite_begin"


def normalise_url(url: str | URL) -> URL:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine(
    url: str | URL, *, sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS, **kwargs: Any
) -> Engine:
    """An engine for ``url`` set up as the module text says."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, sqlite_busy_timeout, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kwargs)


def _use_wal(cursor: Any, busy_timeout: float) -> None:
    """Switch a database file to write-ahead logging (a persistent setting, so done once).

    The switch needs an exclusive lock, and SQLite answers "database is locked" at once, without
    its busy handler, while another connection holds a lock on a new database (several workers
    opening it at the same moment): retry for as long as the busy timeout allows.
    """
    deadline = time.monotonic() + busy_timeout
    delay = 0.01
    while True:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _sqlite_engine(url: URL, busy_timeout: float, **kwargs: Any) -> Engine:
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", busy_timeout)
    in_memory = url.database in (None, "", ":memory:")
    if in_memory:
        # One shared connection, or every checkout would see a new empty database.
        connect_args.setdefault("check_same_thread", False)
        kwargs.setdefault("poolclass", StaticPool)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
    busy_ms = int(busy_timeout * 1000)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: SQLAlchemy's begin event
        # below says BEGIN itself (the module would not, before SELECTs and DDL).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if not in_memory:
                _use_wal(cursor, busy_timeout)
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        connection.exec_driver_sql("BEGIN" if mode == "DEFERRED" else "BEGIN IMMEDIATE")

    return engine


def beyond(
    time_column: Any, key_column: Any, pivot_time: Any, pivot_key: Any, *, descending: bool
) -> Any:
    """Keyset paging: the rows after (``descending``: before) the pivot row in the order
    (time, key); the condition every paged listing uses."""
    if descending:
        return sa.or_(
            time_column < pivot_time, sa.and_(time_column == pivot_time, key_column < pivot_key)
        )
    return sa.or_(
        time_column > pivot_time, sa.and_(time_column == pivot_time, key_column > pivot_key)
    )


def reading(engine: Engine) -> Engine:
    """The same engine (pool, events) for read-only transactions: no write lock on SQLite."""
    return engine.execution_options(**{_BEGIN_OPTION: "DEFERRED"})


# Deterministic constraint names on both backends, so later migrations can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A point in time, stored in UTC; aware datetimes in, aware UTC datetimes out."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: give a timezone-aware time")
        utc = value.astimezone(UTC)
        # SQLite keeps text without an offset: store UTC, so that text order is time order.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
