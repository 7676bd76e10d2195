"""Alembic migrations shipped inside the package, run in code (no alembic.ini).

The Manager's store and the transaction log each have their own migrations, version table and
PostgreSQL advisory lock, so they can share one database or live apart; this module is what
they have in common: building the Alembic configuration, upgrading under a lock, reading the
current revision, and the ``env.py`` body.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Connection, Engine

EngineFactory = Callable[[str | URL], Engine]


@dataclass(frozen=True)
class Migrations:
    """One set of migrations: where they are, where their state is kept, how engines are made."""

    name: str
    directory: Path
    version_table: str
    engine_factory: EngineFactory
    normalise_url: Callable[[str | URL], URL]

    @property
    def lock_id(self) -> int:
        return zlib.crc32(f"sluis {self.name} migrations".encode())

    def config(
        self, url: str | URL | None = None, *, connection: Connection | None = None
    ) -> Config:
        """The Alembic configuration, built in code."""
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
        if url is not None:
            rendered = self.normalise_url(url).render_as_string(hide_password=False)
            config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
        config.attributes["connection"] = connection
        config.attributes["version_table"] = self.version_table
        return config

    def upgrade(self, engine_or_url: Engine | str | URL, revision: str = "head") -> None:
        """Upgrade to ``revision`` (the newest by default), in one transaction.

        SQLite: BEGIN IMMEDIATE (the engines' begin event) makes a second migrator wait for the
        first; PostgreSQL: a transaction-scoped advisory lock does the same.
        """
        if not isinstance(engine_or_url, Engine):
            own_engine = self.engine_factory(engine_or_url)
            try:
                self.upgrade(own_engine, revision)
            finally:
                own_engine.dispose()
            return
        with engine_or_url.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(self.lock_id)))
            command.upgrade(self.config(connection=connection), revision)

    def current(self, engine: Engine) -> str | None:
        """The revision the database is at, or None when never migrated."""
        from alembic.runtime.migration import MigrationContext

        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": self.version_table}
            )
            return context.get_current_revision()


def run_env(
    migrations: Migrations,
    metadata: sa.MetaData,
    *,
    include_name: Callable[[str | None, str, Any], bool] | None = None,
) -> None:
    """The body of a migrations ``env.py``: offline or online, on a given connection or URL."""
    from alembic import context

    config = context.config
    version_table: str = config.attributes.get("version_table", migrations.version_table)
    options: dict[str, Any] = {"target_metadata": metadata, "version_table": version_table}
    if include_name is not None:
        options["include_name"] = include_name

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
            **options,
        )
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            f"no connection and no sqlalchemy.url for the {migrations.name} migrations"
        )
    engine = migrations.engine_factory(url)
    try:
        with engine.begin() as new_connection:
            run(new_connection)
    finally:
        engine.dispose()
