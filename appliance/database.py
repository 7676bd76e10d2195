"""The database plumbing every store of the appliance shares (the Manager's, the transaction
log's, the controller's): engines, the UTC time type, constraint names, keyset paging.

SQLite is the default for one appliance: write-ahead logging, foreign keys on, a busy timeout,
and every writing transaction starts with ``BEGIN IMMEDIATE``, so two writers queue for the
lock instead of one of them failing halfway ("database is locked" on the upgrade from a read to
a write lock). Reading transactions (:func:`reading`) start with a plain ``BEGIN`` and never
wait for a writer.

PostgreSQL (psycopg 3) is for production and several nodes: ``postgresql://`` URLs get the
psycopg driver. A URL may name several servers (a Patroni cluster, docs/ha-database.md):
``?host=pg1:5432&host=pg2:5432&target_session_attrs=read-write``, and libpq connects to the
one that takes writes. Such a URL without ``target_session_attrs=read-write`` (or ``primary``)
is refused, because libpq would take the first server that answers, a standby as readily as
the primary. A connection that lost its primary is never used again: the pool pings each
connection before handing it out (``pool_pre_ping``), and one that finds itself on a standby
(SQLSTATE 25006, a primary demoted under it) counts as disconnected, so the pool drops it and
the next transaction connects afresh to whichever server is primary then. The transaction
that met the failure raises: callers fail closed, and recover without a restart. The network
waits have bounds (:data:`POSTGRES_CONNECT_DEFAULTS`), so that a server that vanished from the
network costs seconds, not the kernel's quarter of an hour of TCP retries.

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

# libpq parameters a URL may override (its query wins). connect_timeout counts per server of a
# multi-host URL; tcp_user_timeout and the keepalives end a connection whose server went
# silent (a node powered off, a network split) within about ten seconds, mid-query or idle.
POSTGRES_CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5,
    "tcp_user_timeout": 10_000,  # milliseconds
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
_WRITABLE_SESSION_ATTRS = ("read-write", "primary")
_READ_ONLY_SQL_TRANSACTION = "25006"


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
    return _postgres_engine(parsed, **kwargs)


def _hosts(url: URL) -> list[str]:
    """The servers a PostgreSQL URL names: ``?host=a&host=b``, or ``a,b`` in either place."""
    given = url.query.get("host", ())
    listed = [given] if isinstance(given, str) else list(given)
    if url.host:
        listed.append(url.host)
    return [host for entry in listed for host in entry.split(",") if host]


def _postgres_engine(url: URL, **kwargs: Any) -> Engine:
    if len(_hosts(url)) > 1:
        attrs = url.query.get("target_session_attrs")
        if attrs not in _WRITABLE_SESSION_ATTRS:
            raise ValueError(
                "a PostgreSQL URL with several hosts needs target_session_attrs=read-write "
                f"(or primary), or libpq may connect to a standby; got {attrs!r}"
            )
    connect_args = dict(kwargs.pop("connect_args", {}))
    for name, value in POSTGRES_CONNECT_DEFAULTS.items():
        if name not in url.query:
            connect_args.setdefault(name, value)
    kwargs.setdefault("pool_pre_ping", True)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

    @sa.event.listens_for(engine, "handle_error")
    def _standby_is_a_disconnect(context: sa.engine.ExceptionContext) -> None:
        # A primary demoted under an open connection still answers the pre-ping's SELECT 1
        # and refuses every write: drop the connection (and the pool's others, as old) so
        # that the next transaction finds the new primary.
        if getattr(context.original_exception, "sqlstate", None) == _READ_ONLY_SQL_TRANSACTION:
            context.is_disconnect = True

    return engine


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
    (time, key); the condition every paged listing uses.

    The bound ``time <= pivot`` (``>=`` ascending) repeats what the OR implies, for the
    planners: with it, an index that starts with the time (or with an equality and then the
    time) is read from the pivot on. The OR alone is a filter to both SQLite and PostgreSQL,
    which then walk the index from its start to the pivot, a cost that grows with the page's
    depth.
    """
    if descending:
        return sa.and_(
            time_column <= pivot_time,
            sa.or_(
                time_column < pivot_time,
                sa.and_(time_column == pivot_time, key_column < pivot_key),
            ),
        )
    return sa.and_(
        time_column >= pivot_time,
        sa.or_(
            time_column > pivot_time, sa.and_(time_column == pivot_time, key_column > pivot_key)
        ),
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
