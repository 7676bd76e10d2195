"""The controller's database: engines (the Manager's recipe) and its own Alembic migrations.

Migrations live in ``migrations/`` (no ``alembic.ini``), record their state in
``controller_alembic_version`` and take their own PostgreSQL advisory lock, so the controller
can share a database with the Manager or have one of its own (the default).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, Engine

from appliance.database import create_engine, normalise_url, reading
from appliance.migrations import Migrations

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "controller_alembic_version"

CONTROLLER_MIGRATIONS = Migrations(
    name="controller",
    directory=MIGRATIONS,
    version_table=VERSION_TABLE,
    engine_factory=lambda url: create_engine(url),
    normalise_url=normalise_url,
)

__all__ = ["VERSION_TABLE", "create_engine", "current_revision", "migrate", "reading"]


def migrate(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Upgrade the controller's tables to ``revision`` (the newest by default)."""
    CONTROLLER_MIGRATIONS.upgrade(engine_or_url, revision)


def current_revision(engine: Engine) -> str | None:
    return CONTROLLER_MIGRATIONS.current(reading(engine))
