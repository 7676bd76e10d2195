"""Fixtures for the controller tests; helpers live in controllertest.py.

The Manager API tests' helpers (``apitest``) and the contract tests' (``contracttest``: software
signers, the in-memory CA) are reused; their folders are put on ``sys.path`` here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "manager" / "contracts"))
sys.path.insert(0, str(Path(__file__).parents[1] / "manager" / "api"))

from contracttest import Group, make_group
from controllertest import SERVICE, Env, controller_env
from cryptography import x509


@pytest.fixture(scope="module")
def group() -> Group:
    return make_group()


@pytest.fixture(scope="module")
def crls(group: Group) -> list[x509.CertificateRevocationList]:
    return group.ca.crls()


@pytest.fixture(scope="module")
def env(
    group: Group,
    crls: list[x509.CertificateRevocationList],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    """Peer B's controller with ``basisregistratie`` published (valid) and one connection
    request of Peer A waiting for B's approval."""
    with controller_env(group, crls, tmp_path_factory.mktemp("controller")) as env:
        env.published(SERVICE)
        env.connection_from_a()
        yield env


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashes() -> Iterator[None]:
    """Accounts made by the tests get scrypt with n=2**10 instead of 2**14 (a login costs
    ~3 ms instead of ~60 ms). Verification reads the parameters from the stored hash, so every
    path is the production one; test_controller_auth checks the real parameters directly."""
    from appliance.controller import auth, passwords

    cheap = passwords.Parameters(n=2**10, r=8, p=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "hash_password", lambda password: passwords.hash_password(password, cheap))
        mp.setattr(auth, "needs_rehash", lambda stored: passwords.needs_rehash(stored, cheap))
        mp.setattr(auth, "dummy_hash", lambda: _CHEAP_DUMMY)
        yield


_CHEAP_DUMMY = "scrypt$1024$8$1$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U"
