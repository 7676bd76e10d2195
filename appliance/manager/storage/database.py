"""The Manager's database migrations (Alembic, run from code); engines come from
:mod:`appliance.database`.

Migrations take an advisory lock on PostgreSQL, so several workers that start at once migrate
one after the other.

Migrations live in the package (``migrations/``) and need no ``alembic.ini``. To write the next
revision, point :func:`alembic_config` at a database migrated to head and let Alembic compare::

    from alembic import command
    from appliance.manager.storage.database import alembic_config
    command.revision(alembic_config("sqlite:////tmp/m.db"), "what changes", autogenerate=True,
                     rev_id="0002")
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import URL, Connection, Engine

from appliance.database import create_engine, normalise_url, reading
from appliance.migrations import Migrations

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "manager_alembic_version"  # not alembic_version: other parts may share the database
MANAGER_MIGRATIONS = Migrations(
    name="manager",
    directory=MIGRATIONS,
    version_table=VERSION_TABLE,
    engine_factory=lambda url: create_engine(url),
    normalise_url=normalise_url,
)


def alembic_config(url: str | URL | None = None, *, connection: Connection | None = None) -> Config:
    """The Alembic configuration of the Manager's migrations, built in code."""
    return MANAGER_MIGRATIONS.config(url, connection=connection)


def migrate(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (the newest by default), in one transaction."""
    MANAGER_MIGRATIONS.upgrade(engine_or_url, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    return MANAGER_MIGRATIONS.current(reading(engine))
