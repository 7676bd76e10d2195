"""The migrations build exactly the schema that schema.py describes, on both backends."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from appliance.database import create_engine
from appliance.manager.storage import ManagerStore, migrate
from appliance.manager.storage.database import VERSION_TABLE, alembic_config, current_revision
from appliance.manager.storage.schema import metadata


def _differences(engine: sa.Engine, target: sa.MetaData) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        return list(compare_metadata(context, target))


def test_the_migrated_database_matches_the_metadata(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert current_revision(engine) == head
        assert _differences(engine, metadata) == []
        assert set(sa.inspect(engine).get_table_names()) == set(metadata.tables) | {VERSION_TABLE}
    finally:
        engine.dispose()


def test_the_comparison_would_see_a_difference(store_url: str) -> None:
    """The test above is not vacuous: a column the migrations lack is reported."""
    changed = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["peers"].append_column(sa.Column("added_later", sa.Text(), nullable=True))
    engine = create_engine(store_url)
    try:
        migrate(engine)
        differences = _differences(engine, changed)
    finally:
        engine.dispose()
    # ("add_column", schema, table, column)
    summary = [(d[0], d[2], d[3].name) for d in differences]  # type: ignore[index]
    assert summary == [("add_column", "peers", "added_later")]


def test_migrating_again_is_harmless_and_downgrade_works(store_url: str) -> None:
    with ManagerStore.open(store_url) as store:
        migrate(store.engine)
        with store.engine.begin() as connection:
            command.downgrade(alembic_config(connection=connection), "base")
        assert set(sa.inspect(store.engine).get_table_names()) <= {VERSION_TABLE}
        migrate(store.engine)
        assert _differences(store.engine, metadata) == []


def test_sqlite_runs_with_wal_foreign_keys_and_a_busy_timeout(tmp_path: object) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/pragmas.db", sqlite_busy_timeout=7.5)
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar_one() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar_one() == 1
            assert pragma("PRAGMA busy_timeout").scalar_one() == 7500
    finally:
        engine.dispose()


def test_postgresql_urls_get_psycopg_3() -> None:
    engine = create_engine("postgresql://sluis@db.invalid/manager")
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()
