"""Every storage test runs on SQLite and on PostgreSQL, each time on a new empty database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.manager.storage import ManagerStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new empty database: a file on SQLite, a new database on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'manager.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[ManagerStore]:
    """A migrated store on a new database of each backend."""
    with ManagerStore.open(store_url) as opened:
        yield opened
