"""Every transaction log test that touches a database runs on SQLite and on PostgreSQL, each
time on a new empty database (the pattern of tests/manager/storage/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.txlog import Pseudonymiser, TransactionLog


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new empty database: a file on SQLite, a new database on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'txlog.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@pytest.fixture
def log(store_url: str) -> Iterator[TransactionLog]:
    """A migrated transaction log on a new database of each backend."""
    with TransactionLog.open(store_url) as opened:
        yield opened


@pytest.fixture
def pseudonymiser() -> Pseudonymiser:
    return Pseudonymiser(b"k" * 32)
