"""Every transaction log test that touches a database runs on SQLite and on PostgreSQL, each
time on a new empty database (the pattern of tests/manager/storage/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from txlogtest import MakeToken, SigningOrganisation, provision_signing

from appliance.pki.ca import DemoCA
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


def _fresh_organisation(
    make_token: MakeToken, tmp_path_factory: pytest.TempPathFactory, name: str, oin: str
) -> SigningOrganisation:
    """An organisation under its own demo CA, its token labelled after ``name``."""
    root = tmp_path_factory.mktemp(name)
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    return provision_signing(make_token, root / "appliance", ca, f"txlog-{name}", oin)


@pytest.fixture(scope="module")
def organisation(
    make_token: MakeToken, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> SigningOrganisation:
    """This appliance's organisation (its key signs the checkpoints)."""
    name = request.module.__name__.rsplit("_", 1)[-1]
    return _fresh_organisation(make_token, tmp_path_factory, name, "00000001000000000011")


@pytest.fixture(scope="module")
def other_organisation(
    make_token: MakeToken, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> SigningOrganisation:
    """Another organisation, under another CA: a key that must not be able to sign for us."""
    name = "other-" + request.module.__name__.rsplit("_", 1)[-1]
    return _fresh_organisation(make_token, tmp_path_factory, name, "00000001000000000012")
