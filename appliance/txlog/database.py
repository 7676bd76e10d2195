"""The transaction log's database: engines (the Manager's recipe) and its own migrations.

Engines come from :func:`appliance.database.create_engine`: SQLite in WAL mode
with ``synchronous = FULL``, a busy timeout and ``BEGIN IMMEDIATE`` for writers; PostgreSQL
through psycopg 3. The transaction log adds one thing on PostgreSQL: a server configured with
``synchronous_commit = off`` would acknowledge a commit before it is on disk, so every
connection of the log sets it back to ``on``.

Migrations live in ``migrations/`` (no ``alembic.ini``), record their state in
``txlog_alembic_version`` and take their own PostgreSQL advisory lock, so the log can share a
database with the Manager or have one of its own. To write the next revision::

    from alembic import command
    from appliance.txlog.database import alembic_config
    command.revision(alembic_config("sqlite:////tmp/t.db"), "what changes", autogenerate=True,
                     rev_id="0002")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy.engine import URL, Connection, Engine

from appliance.database import create_engine as _manager_engine
from appliance.database import normalise_url, reading
from appliance.migrations import Migrations

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "txlog_alembic_version"
SQLITE_BUSY_TIMEOUT_SECONDS = 5.0  # a gateway request should fail closed, not hang for long

__all__ = [
    "VERSION_TABLE",
    "alembic_config",
    "create_engine",
    "current_revision",
    "migrate",
    "reading",
]


def create_engine(
    url: str | URL, *, sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS, **kwargs: Any
) -> Engine:
    """An engine for the transaction log (the Manager's set-up, durable commits enforced).

    SQL parameters are left out of error messages (``hide_parameters``): an error that reaches
    a log file or a SIEM names no peer, pseudonym or trace id of a record.
    """
    kwargs.setdefault("hide_parameters", True)
    engine = _manager_engine(url, sqlite_busy_timeout=sqlite_busy_timeout, **kwargs)
    if engine.dialect.name == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _durable_commit(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SHOW synchronous_commit")
                row = cursor.fetchone()
                if row is not None and str(row[0]).lower() == "off":
                    cursor.execute("SET synchronous_commit = on")
            finally:
                cursor.close()
            # psycopg opens a transaction for SHOW: end it before the pool hands it out.
            dbapi_connection.commit()

    return engine


TXLOG_MIGRATIONS = Migrations(
    name="txlog",
    directory=MIGRATIONS,
    version_table=VERSION_TABLE,
    engine_factory=lambda url: create_engine(url),
    normalise_url=normalise_url,
)


def alembic_config(url: str | URL | None = None, *, connection: Connection | None = None) -> Config:
    """The Alembic configuration of the transaction log's migrations, built in code."""
    return TXLOG_MIGRATIONS.config(url, connection=connection)


def migrate(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Upgrade the log's tables to ``revision`` (the newest by default), in one transaction."""
    TXLOG_MIGRATIONS.upgrade(engine_or_url, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the log's tables are at, or None when never migrated."""
    return TXLOG_MIGRATIONS.current(reading(engine))
