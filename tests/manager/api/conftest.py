"""Fixtures for the Manager API tests; helpers live in apitest.py.

The contract tests' helpers (``contracttest``: software signers, the in-memory CA, contract
builders) are reused; pytest's prepend import mode puts their folder on ``sys.path`` only for
tests in it, so it is added here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "contracts"))

from apitest import Api, running_api, sign
from contracttest import (
    OIN_A,
    OIN_B,
    OIN_C,
    Group,
    connection_data,
    content,
    make_group,
    publication_data,
)
from cryptography import x509

PUBLICATION_IV = "0197a000-0000-7000-8000-000000000001"
CONNECTION_IV = "0197a000-0000-7000-8000-000000000002"


@pytest.fixture(scope="session")
def group() -> Group:
    """One in-memory CA and its Peers for the session (keys never touch the disk)."""
    return make_group()


@pytest.fixture(scope="session")
def crls(group: Group) -> list[x509.CertificateRevocationList]:
    return group.ca.crls()


@pytest.fixture
def directory(
    group: Group, crls: list[x509.CertificateRevocationList], tmp_path: Path
) -> Iterator[Api]:
    """The Manager of Peer C, the Group's directory."""
    with running_api(group, OIN_C, tmp_path / "directory.db", crls=crls) as api:
        yield api


@pytest.fixture
def consumer(
    group: Group, crls: list[x509.CertificateRevocationList], tmp_path: Path
) -> Iterator[Api]:
    """The Manager of Peer A, whose outway connects to B's service."""
    with running_api(group, OIN_A, tmp_path / "consumer.db", crls=crls) as api:
        yield api


@pytest.fixture
def bare_provider(
    group: Group, crls: list[x509.CertificateRevocationList], tmp_path: Path
) -> Iterator[Api]:
    """The Manager of Peer B, offering no service yet."""
    with running_api(group, OIN_B, tmp_path / "provider.db", crls=crls) as api:
        yield api


@pytest.fixture
def publication() -> dict[str, Any]:
    """B publishes ``basisregistratie`` in directory C."""
    return content(publication_data(), iv=PUBLICATION_IV)


@pytest.fixture
def provider(bare_provider: Api, publication: dict[str, Any], group: Group) -> Api:
    """Peer B's Manager, offering ``basisregistratie``: B proposed the publication to the
    directory C and C's accept arrived, so the contract is valid."""
    view = bare_provider.service.propose(publication)
    result = bare_provider.put_signature(
        "accept", publication, sign(publication, group[OIN_C]), peer=group[OIN_C]
    )
    assert result.status_code == 201, result.text
    assert bare_provider.service.get(view.content_hash).state == "valid"
    assert bare_provider.service.offered_services() == {"basisregistratie"}
    return bare_provider


@pytest.fixture
def connection(group: Group) -> dict[str, Any]:
    """A (outway, with its certificate's key) may call B's ``basisregistratie``."""
    return content(connection_data(thumbprint=group[OIN_A].public_key_thumbprint), iv=CONNECTION_IV)
